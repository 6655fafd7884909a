"Fast DP modes (dpmed.fast_dp) against the naive per-record loop: norms, clipped sums, noise, accumulation."
import warnings

import pytest
import torch
from torch import nn

import dpmed.fast_dp as fd
from dpmed.core import DpmedError
from dpmed.config import ModelConfig
from dpmed.dpsgd import FAST_MODES, PerSampleBCE, clipped_sum_reference, empty_step, make_private, naive_per_sample_grads
from dpmed.models import build_model

warnings.filterwarnings('ignore', message='.*Secure RNG.*')
MODELS = {  # tiny widths/sizes, same topology as the real ones
    'resnet9': (ModelConfig(name='resnet9', width=0.125), (1, 32, 32), 3),
    'resnet9_3d': (ModelConfig(name='resnet9_3d', width=0.125), (1, 20, 20, 20), 1),
    'monai_resnet18': (ModelConfig(name='monai_resnet18', width=0.0625), (1, 16, 16, 16), 1),
    'monai_densenet121': (ModelConfig(name='monai_densenet121', width=0.125), (1, 32, 32, 32), 1),
}
rel = lambda a, b: float((a - b).norm() / b.norm())


def _setup(name, n=3, seed=2):
    torch.manual_seed(0)
    cfg, shape, L = MODELS[name]
    m = build_model(cfg, L).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    y = (torch.rand(n, L, generator=g) > 0.5).double()
    return m, x, y


def _step(m, mode, x, y, C, sigma=0.0, chunks=1):
    parts = make_private(m, torch.optim.SGD(m.parameters(), lr=0.0), PerSampleBCE(), grad_sample_mode=mode,
                         noise_multiplier=sigma, max_grad_norm=C, sample_rate=0.5, expected_batch_size=len(x),
                         noise_generator=torch.Generator().manual_seed(1))
    norms = []
    for k, idx in enumerate(torch.arange(len(x)).chunk(chunks)):
        loss = parts.criterion(parts.model(x[idx]), y[idx])
        loss.backward()
        norms.append(parts.model.per_sample_gradient_norms.detach().clone())
        parts.optimizer.signal_skip_step(do_skip=k < chunks - 1)
        parts.optimizer.step()
        if k < chunks - 1: parts.optimizer.zero_grad(set_to_none=True)
    grad = torch.cat([p.grad.reshape(-1) for p in m.parameters() if p.requires_grad]).detach().clone()
    return torch.cat(norms), grad, parts


def assert_equals_naive_loop(m, x, y, mode='fast_bk'):
    """Per-record norms and the clipped sum of one step in `mode` equal the naive batch-size-1 loop (float64, 1e-5),
    with the clipping norm at the median so that clipping acts on some records, not on others; returns the parts."""
    ref = naive_per_sample_grads(m, PerSampleBCE(), x, y)
    C = float(ref.norm(dim=1).median())
    norms, grad, parts = _step(m, mode, x, y, C)
    assert rel(norms, ref.norm(dim=1)) < 1e-5
    assert rel(grad, clipped_sum_reference(ref, C) / len(x)) < 1e-5
    return parts


@pytest.mark.parametrize('name', list(MODELS))
@pytest.mark.parametrize('mode', FAST_MODES)
def test_norms_and_clipped_sum_equal_the_naive_loop(name, mode):
    assert_equals_naive_loop(*_setup(name), mode)


@pytest.mark.parametrize('method, impl, form', [('ghost', None, 'ghost'), ('ghost', None, 'input_gram'),
                                                ('direct', None, None), ('grouped', 'grouped', None),
                                                ('grouped', 'shifted', None)])
@pytest.mark.parametrize('name', ['resnet9', 'resnet9_3d'])
def test_every_norm_method_through_the_engine(monkeypatch, name, method, impl, form):
    "Force one norm method (per-sample form, Gram form) for every convolution; the cost rules would mix them."
    monkeypatch.setattr(fd, 'conv_norm_method', lambda *a: method)
    if impl: monkeypatch.setattr(fd, 'per_sample_impl', lambda C, T: impl)
    used = []
    if form:    # the input Gram is meant for stride-1 layers (for strided 3D ones its P x P matrix is needlessly slow)
        pick = lambda layer, *a: form if form == 'ghost' or max(layer.stride) == 1 else 'ghost'
        monkeypatch.setattr(fd, 'ghost_form', lambda *a: used.append(pick(*a)) or used[-1])
    assert_equals_naive_loop(*_setup(name, seed=3))
    if form: assert form in used, 'no layer took the Gram form under test'


@pytest.mark.parametrize('conv, shape', [
    (nn.Conv2d(3, 4, 3, stride=2, padding=1), (3, 3, 9, 8)),
    (nn.Conv2d(2, 3, (3, 2), padding=(2, 0), dilation=(2, 1)), (2, 2, 10, 7)),
    (nn.Conv2d(4, 2, 1), (3, 4, 5, 5)),
    (nn.Conv3d(2, 3, 3, stride=(1, 2, 1), padding=(1, 0, 2), dilation=(1, 1, 2)), (2, 2, 7, 8, 6)),
])
def test_per_sample_impls_equal_one_record_autograd(conv, shape):
    torch.manual_seed(0)
    conv = conv.double()
    x = torch.randn(*shape, dtype=torch.float64)
    g = torch.randn_like(conv(x))
    ref = torch.stack([torch.autograd.grad((conv(x[i:i + 1]) * g[i:i + 1]).sum(), conv.weight)[0] for i in range(len(x))])
    for impl in ('grouped', 'shifted'):
        got = fd.conv_per_sample_grads(conv, x, g, impl)
        assert got.shape == ref.shape and rel(got, ref) < 1e-12, impl
        assert torch.allclose(fd._sample_norms(got), ref.flatten(1).norm(dim=1), rtol=1e-12)


def test_group_norm_grad_sample_equals_opacus_and_autograd():
    from opacus.grad_sample.group_norm import compute_group_norm_grad_sample
    torch.manual_seed(0)
    gn = nn.GroupNorm(3, 6).double()
    with torch.no_grad(): gn.weight.uniform_(0.5, 2); gn.bias.normal_()
    x = torch.randn(4, 6, 5, 3, dtype=torch.float64) * 3 + 1
    g = torch.randn(4, 6, 5, 3, dtype=torch.float64)
    ours, theirs = fd.group_norm_grad_sample(gn, [x], g), compute_group_norm_grad_sample(gn, [x], g)
    for p in (gn.weight, gn.bias):
        assert torch.allclose(ours[p], theirs[p], rtol=1e-12)
        ref = torch.stack([torch.autograd.grad((gn(x[i:i + 1]) * g[i:i + 1]).sum(), p)[0] for i in range(len(x))])
        assert torch.allclose(ours[p], ref, rtol=1e-10)


def test_group_norm_grad_sample_in_chunks_of_records_is_exact():
    "Large maps are normalized a few records at a time (here 2 of 4 per chunk): same numbers as Opacus' sampler."
    from opacus.grad_sample.group_norm import compute_group_norm_grad_sample
    torch.manual_seed(1)
    gn = nn.GroupNorm(2, 4).double()
    x, g = torch.randn(4, 4, 300, 300, dtype=torch.float64), torch.randn(4, 4, 300, 300, dtype=torch.float64)
    assert (1 << 20) // x[0].numel() == 2
    ours, theirs = fd.group_norm_grad_sample(gn, [x], g), compute_group_norm_grad_sample(gn, [x], g)
    assert torch.allclose(ours[gn.weight], theirs[gn.weight], rtol=1e-12)


class TwoStems(nn.Module):
    "Two convolutions read the image (two source layers), a third reads their sum; bias-free and biased."
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.Conv2d(1, 4, 5, padding=2)
        self.c, self.h = nn.Conv2d(4, 4, 3, stride=2), nn.Linear(4, 2)
    def forward(self, x):
        return self.h(torch.tanh(self.c(torch.tanh(self.a(x)) * torch.sigmoid(self.b(x)))).mean((2, 3)))


def test_single_pass_targets_every_source_layer():
    torch.manual_seed(0)
    m = TwoStems().double()
    x, y = torch.randn(4, 1, 9, 9, dtype=torch.float64), (torch.rand(4, 2) > 0.5).double()
    parts = assert_equals_naive_loop(m, x, y)
    parts.model(x)                                      # the forward records both stems as sources
    assert [layer for layer, _ in parts.model._sources] == [m.a, m.b]
    targets = parts.model.backward_targets()            # their raw outputs: no weight gradient is computed
    assert len(targets) == 2 and not any(t is p for t in targets for p in m.parameters())
    for t, layer in zip(targets, (m.a, m.b)):
        with torch.no_grad(): out = layer(x)
        assert torch.equal(t, out) and type(t.grad_fn).__name__ == "ConvolutionBackward0"


class CutBranch(nn.Module):
    "A layer whose output reaches the loss only through a detach: no gradient ever reaches it."
    def __init__(self):
        super().__init__()
        self.a, self.h = nn.Conv2d(1, 3, 3), nn.Linear(3, 2)
    def forward(self, x):
        return self.h(self.a(x).mean((2, 3)).detach())


def test_a_layer_without_output_gradient_is_an_error_not_a_stale_norm():
    torch.manual_seed(0)
    m = CutBranch().double()
    parts = make_private(m, torch.optim.SGD(m.parameters(), lr=0.0), PerSampleBCE(), grad_sample_mode='fast_bk',
                         noise_multiplier=0.0, max_grad_norm=1.0, sample_rate=0.5, expected_batch_size=2)
    x, y = torch.randn(2, 1, 6, 6, dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="layer 'a' got no output gradient"):
        parts.criterion(parts.model(x), y).backward()


class Odd(nn.Module):
    "Layers the fast rules do not cover (grouped conv, 'same' padding, bias) next to ones they do."
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding='same', bias=True)
        self.b = nn.Conv2d(4, 4, 3, groups=2, stride=2, bias=True)
        self.c = nn.Conv2d(4, 6, (3, 2), padding=(1, 0), dilation=(2, 1), bias=True)
        self.n = nn.GroupNorm(2, 6)
        self.h = nn.Linear(6, 2)
    def forward(self, x):
        x = torch.tanh(self.n(self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))))
        return self.h(x.mean((2, 3)))


@pytest.mark.parametrize('mode', FAST_MODES)
def test_uncovered_layers_fall_back_to_opacus_and_stay_exact(mode):
    torch.manual_seed(0)
    m = Odd().double()
    x, y = torch.randn(4, 2, 11, 9, dtype=torch.float64), (torch.rand(4, 2) > 0.5).double()
    assert_equals_naive_loop(m, x, y, mode)


def test_physical_batches_accumulate_like_one_batch():
    m, x, y = _setup('resnet9', n=5)
    ref = naive_per_sample_grads(m, PerSampleBCE(), x, y)
    C = float(ref.norm(dim=1).median())
    _, grad, _ = _step(m, 'fast_bk', x, y, C, chunks=2)
    assert rel(grad, clipped_sum_reference(ref, C) / len(x)) < 1e-5


def test_noise_std_and_empty_step():
    m, x, y = _setup('resnet9', n=4)
    C, sigma = 0.5, 2.0
    _, clean, _ = _step(m, 'fast_bk', x, y, C)
    _, noisy, parts = _step(_setup('resnet9', n=4)[0], 'fast_bk', x, y, C, sigma=sigma)
    d = (noisy - clean) * len(x)                        # optimizer divides (sum + noise) by the batch size
    assert abs(float(d.std()) / (sigma * C) - 1) < 0.05 and abs(float(d.mean())) < 0.05 * sigma * C
    parts.optimizer.zero_grad(set_to_none=True)
    empty_step(parts)                                   # a step on an empty batch: noise only, accounted
    assert sum(h[2] for h in parts.accountant.history) == 2


def test_float32_within_1e3():
    m, x, y = _setup('resnet9', n=4)
    ref = naive_per_sample_grads(m, PerSampleBCE(), x, y)
    C = float(ref.norm(dim=1).median())
    _, grad, _ = _step(m.float(), 'fast_bk', x.float(), y.float(), C)
    assert rel(grad.double(), clipped_sum_reference(ref, C) / len(x)) < 1e-3


def test_stock_ghost_registry_untouched():
    "The fast rules live in FastGradSampleModule's own registry: stock ghost mode keeps Opacus' behaviour."
    from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import GradSampleModuleFastGradientClipping as G
    assert nn.Conv2d not in G.NORM_SAMPLERS and nn.Conv2d in fd.FastGradSampleModule.NORM_SAMPLERS
    assert G.GRAD_SAMPLERS[nn.GroupNorm] is not fd.group_norm_grad_sample
    assert fd.FastGradSampleModule.GRAD_SAMPLERS[nn.GroupNorm] is fd.group_norm_grad_sample
    assert fd.FastGradSampleModule.GRAD_SAMPLERS[nn.Linear] is G.GRAD_SAMPLERS[nn.Linear]   # Opacus' own, live


def test_training_run_with_fast_bk_matches_ghost(tiny):
    """End to end through dpmed.train (Poisson batches, physical batches, noise, accountant): same as stock ghost.
    SGD, because Adam-type updates g/sqrt(v) amplify float32 rounding (stock hooks and ghost differ by 1e-2 there)."""
    import dpmed.train as T
    from dpmed.config import load_config
    runs = {}
    for mode in ('ghost', 'fast_bk'):
        cfg = load_config(overrides=tiny + ['privacy.epsilon=8', f'privacy.grad_sample_mode={mode}', 'train.optimizer=sgd',
                                            'privacy.reproducible_noise=true'])    # same noise in both runs
        runs[mode] = T.train(cfg, progress=False)
    a, b = runs['ghost'].model.state_dict(), runs['fast_bk'].model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    assert runs['ghost'].privacy['epsilon'] == runs['fast_bk'].privacy['epsilon']
    assert runs['ghost'].privacy['steps'] == runs['fast_bk'].privacy['steps'] > 0
    assert runs['fast_bk'].privacy['grad_sample_mode'] == 'fast_bk'


def test_auto_mode_is_fast_bk_where_supported_else_hooks_with_the_reason():
    from dpmed.config import PrivacyConfig
    from dpmed.dpsgd import check_grad_sample_mode, resolve_grad_sample_mode
    assert PrivacyConfig().grad_sample_mode == 'auto'
    assert resolve_grad_sample_mode('auto', build_model(MODELS['resnet9'][0], 3)) == ('fast_bk', None)
    assert resolve_grad_sample_mode('ghost') == ('ghost', None)             # an explicit choice is kept
    mode, why = resolve_grad_sample_mode('auto', amp=True)
    assert mode == 'hooks' and 'train.amp' in why and '\n' not in why
    assert resolve_grad_sample_mode('auto', distributed=True)[0] == 'hooks'
    from opacus.layers import DPLSTM
    mode, why = resolve_grad_sample_mode('auto', nn.Sequential(nn.Linear(3, 3), DPLSTM(3, 4)))
    assert mode == 'hooks' and "layer '1'" in why
    assert check_grad_sample_mode('auto', amp=True) == 'hooks' and check_grad_sample_mode('auto') == 'fast_bk'


def test_auto_mode_warns_once_and_the_parts_carry_the_resolved_mode():
    m = build_model(MODELS['resnet9'][0], 3)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        parts = make_private(m, torch.optim.SGD(m.parameters(), lr=0.0), PerSampleBCE(), grad_sample_mode='auto',
                             noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, expected_batch_size=2, amp=True)
    assert parts.mode == 'hooks' and sum('instead of' in str(x.message) for x in w) == 1


# ---- adversarial models (issue 12 part 3): handled exactly, or refused naming the layer, in every mode ----
ALL_MODES = ('hooks', 'functorch', 'ew', 'ghost') + FAST_MODES


class Padded(nn.Module):
    "Convolutions that pad by 'reflect', 'replicate' and a string ('same'); Opacus' sampler unfolds with zeros."
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1, padding_mode='reflect')
        self.b = nn.Conv2d(4, 4, 3, stride=2, padding=(2, 1), padding_mode='replicate', bias=False)
        self.c = nn.Conv2d(4, 4, 3, padding='same', bias=False)
        self.h = nn.Linear(4, 2)
    def forward(self, x):
        return self.h(torch.tanh(self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))).mean((2, 3)))


class CircularOnly(nn.Module):
    "The only layer: a convolution with circular padding (the review: 3.00 C in fast_ghost)."
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1, padding_mode='circular')
    def forward(self, x): return self.a(x).mean((2, 3))


class Circular3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.h = nn.Conv3d(1, 3, 3, padding=1, padding_mode='circular'), nn.Linear(3, 2)
    def forward(self, x): return self.h(torch.tanh(self.a(x[:, :, None].expand(-1, -1, 4, -1, -1))).mean((2, 3, 4)))


class FrozenThenUnfrozen(nn.Module):
    "Layer `b` is frozen when the model is made private and unfrozen right after (never hooked)."
    def __init__(self):
        super().__init__()
        self.a, self.b, self.h = nn.Conv2d(1, 3, 3), nn.Conv2d(3, 3, 3), nn.Linear(3, 2)
    def forward(self, x): return self.h(torch.tanh(self.b(torch.tanh(self.a(x)))).mean((2, 3)))
    def before_wrap(self): self.b.requires_grad_(False)
    def after_wrap(self): self.b.requires_grad_(True)


class SharedHead(nn.Module):
    "The head weight is also read through F.linear, outside its layer."
    def __init__(self):
        super().__init__()
        self.a, self.h = nn.Conv2d(1, 3, 3), nn.Linear(3, 2)
    def forward(self, x):
        f = torch.tanh(self.a(x)).mean((2, 3))
        return self.h(f) + nn.functional.linear(f, self.h.weight)


class BatchNormNoAffine(nn.Module):
    "BatchNorm without parameters: Opacus' validator lets it through, yet it mixes the records of a batch."
    def __init__(self):
        super().__init__()
        self.a, self.bn, self.h = nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, affine=False), nn.Linear(3, 2)
    def forward(self, x): return self.h(self.bn(self.a(x)).mean((2, 3)))


class GroupNormFeatures(nn.Module):
    "GroupNorm on (B, C) features (no spatial axes)."
    def __init__(self):
        super().__init__()
        self.a, self.n, self.h = nn.Conv2d(1, 8, 3), nn.GroupNorm(2, 8), nn.Linear(8, 2)
        with torch.no_grad(): self.n.weight.uniform_(0.5, 2); self.n.bias.normal_()
    def forward(self, x): return self.h(torch.tanh(self.n(self.a(x).mean((2, 3)))))


# model -> None (must be exact in every mode) or {mode: what the refusal names}; ew differentiates the whole model
# per sample, so a parameter read outside its layer is exact there
ADVERSARIAL = {
    Padded: None, CircularOnly: None, Circular3d: None, GroupNormFeatures: None,
    FrozenThenUnfrozen: {m: r"'b'|'b\.weight'" for m in ALL_MODES},
    SharedHead: {m: r"'h\.weight'" for m in ALL_MODES if m != 'ew'},
    BatchNormNoAffine: {m: r"BatchNorm layer\(s\) \['bn'\]" for m in ALL_MODES},
}


def _adv_data(n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 7, 6, generator=g, dtype=torch.float64), (torch.rand(n, 2, generator=g) > 0.5).double()


def _adv_model(cls):
    torch.manual_seed(0)
    return cls().double()


def clipped_sum_of_one_step(cls, mode, x, y, C):
    "S(D): the clipped sum of one engine step (sigma 0, expected batch 1, lr 0) over every parameter of a fresh model."
    m = _adv_model(cls)
    params = list(m.parameters())
    opt = torch.optim.SGD(params, lr=0.0)
    getattr(m, 'before_wrap', lambda: None)()
    parts = make_private(m, opt, PerSampleBCE(), grad_sample_mode=mode, noise_multiplier=0.0, max_grad_norm=C,
                         sample_rate=0.5, expected_batch_size=1)
    getattr(m, 'after_wrap', lambda: None)()
    parts.criterion(parts.model(x), y).backward()
    parts.optimizer.step()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def neighbour_sensitivity(cls, mode, x, y, C) -> float:
    "max over records j of ||S(D) - S(D without j)|| / C: at most 1 for per-sample clipping to hold."
    full = clipped_sum_of_one_step(cls, mode, x, y, C)
    keeps = [[i for i in range(len(x)) if i != j] for j in range(len(x))]
    return max(float((full - clipped_sum_of_one_step(cls, mode, x[k], y[k], C)).norm()) / C for k in keeps)


@pytest.mark.parametrize('mode', ALL_MODES)
@pytest.mark.parametrize('cls', list(ADVERSARIAL), ids=lambda c: c.__name__)
def test_adversarial_models_are_exact_or_refused_naming_the_layer(cls, mode):
    x, y = _adv_data()
    refused = (ADVERSARIAL[cls] or {}).get(mode)
    if refused is not None:
        with pytest.raises(DpmedError, match=refused):
            clipped_sum_of_one_step(cls, mode, x, y, 1.0)
        return
    ref = naive_per_sample_grads(_adv_model(cls), PerSampleBCE(), x, y)
    C = float(ref.norm(dim=1).median())                 # clipping acts on some records, not on others
    assert rel(clipped_sum_of_one_step(cls, mode, x, y, C), clipped_sum_reference(ref, C)) < 1e-10
    assert neighbour_sensitivity(cls, mode, x, y, C) <= 1 + 1e-6


def test_the_sensitivity_check_sees_the_leak_when_the_audit_is_off(monkeypatch):
    "Without the forward audit, the head weight read outside its layer escapes clipping: the check must catch it."
    monkeypatch.setattr(fd.ClipAudit, '__call__', lambda *a: None)
    x, y = _adv_data()
    C = 0.1 * float(naive_per_sample_grads(_adv_model(SharedHead), PerSampleBCE(), x, y).norm(dim=1).min())
    assert neighbour_sensitivity(SharedHead, 'fast_ghost', x, y, C) > 1.03      # measured 1.067


@pytest.mark.parametrize('mode', ['hooks', 'fast_bk'])
def test_step_guard_refuses_a_gradient_that_was_not_clipped(mode):
    "A gradient written outside the per-sample machinery (here: by hand, after the backward) is refused at the step."
    m = _adv_model(GroupNormFeatures)
    parts = make_private(m, torch.optim.SGD(m.parameters(), lr=0.0), PerSampleBCE(), grad_sample_mode=mode,
                         noise_multiplier=0.0, max_grad_norm=1.0, sample_rate=0.5, expected_batch_size=1)
    x, y = _adv_data()
    parts.criterion(parts.model(x), y).backward()
    parts.optimizer.step()                              # a clipped step passes
    parts.optimizer.zero_grad(set_to_none=True)
    m.h.bias.grad = torch.ones_like(m.h.bias)           # stale norms are reset: nothing vouches for this one
    with pytest.raises(DpmedError, match=r"'h\.bias'.*not clipped per sample"):
        parts.optimizer.step()


def test_grouped_conv_with_reflect_padding_falls_back_exactly():
    "groups > 1 has no fast rule: Opacus' sampler (padded first) serves both fast modes."
    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=2, padding=1, padding_mode='reflect')
            self.h = nn.Linear(4, 2)
        def forward(self, x): return self.h(torch.tanh(self.b(torch.tanh(self.a(x)))).mean((2, 3)))
    x, y = _adv_data()
    for mode in ('hooks',) + FAST_MODES:
        ref = naive_per_sample_grads(_adv_model(G), PerSampleBCE(), x, y)
        C = float(ref.norm(dim=1).median())
        assert rel(clipped_sum_of_one_step(G, mode, x, y, C), clipped_sum_reference(ref, C)) < 1e-10, mode
