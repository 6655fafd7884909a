"Fast DP modes (dpmed.fast_dp) against the naive per-record loop: norms, clipped sums, noise, accumulation."
import warnings

import pytest
import torch
from torch import nn

import dpmed.fast_dp as fd
from dpmed.config import ModelConfig
from dpmed.dpsgd import FAST_MODES, PerSampleBCE, clipped_sum_reference, empty_step, make_private, naive_per_sample_grads
from dpmed.models import build_model

warnings.filterwarnings('ignore', message='.*Secure RNG.*')
MODELS = {  # tiny widths/sizes, same topology as the real ones
    'resnet9': (ModelConfig(name='resnet9', width=0.125), (1, 32, 32), 3),
    'resnet9_3d': (ModelConfig(name='resnet9_3d', width=0.125), (1, 20, 20, 20), 1),
    'monai_resnet18': (ModelConfig(name='monai_resnet18', width=0.0625), (1, 16, 16, 16), 1),
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


@pytest.mark.parametrize('name', list(MODELS))
@pytest.mark.parametrize('mode', FAST_MODES)
def test_norms_and_clipped_sum_equal_the_naive_loop(name, mode):
    m, x, y = _setup(name)
    ref = naive_per_sample_grads(m, PerSampleBCE(), x, y)
    C = float(ref.norm(dim=1).median())               # clipping acts on some records, not on others
    norms, grad, _ = _step(m, mode, x, y, C)
    assert rel(norms, ref.norm(dim=1)) < 1e-5
    assert rel(grad, clipped_sum_reference(ref, C) / len(x)) < 1e-5


@pytest.mark.parametrize('method', ['ghost', 'direct', 'grouped'])
@pytest.mark.parametrize('name', ['resnet9', 'resnet9_3d'])
def test_every_norm_method_through_the_engine(monkeypatch, name, method):
    "Force one norm method for every convolution (the cost rule would mix them)."
    monkeypatch.setattr(fd, 'conv_norm_method', lambda *a: method)
    m, x, y = _setup(name, seed=3)
    ref = naive_per_sample_grads(m, PerSampleBCE(), x, y)
    C = float(ref.norm(dim=1).median())
    norms, grad, _ = _step(m, 'fast_bk', x, y, C)
    assert rel(norms, ref.norm(dim=1)) < 1e-5
    assert rel(grad, clipped_sum_reference(ref, C) / len(x)) < 1e-5


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
    ref = naive_per_sample_grads(m, PerSampleBCE(), x, y)
    C = float(ref.norm(dim=1).median())
    norms, grad, _ = _step(m, mode, x, y, C)
    assert rel(norms, ref.norm(dim=1)) < 1e-5
    assert rel(grad, clipped_sum_reference(ref, C) / len(x)) < 1e-5


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


def test_training_run_with_fast_bk_matches_ghost(tiny):
    """End to end through dpmed.train (Poisson batches, physical batches, noise, accountant): same as stock ghost.
    SGD, because Adam-type updates g/sqrt(v) amplify float32 rounding (stock hooks and ghost differ by 1e-2 there)."""
    import dpmed.train as T
    from dpmed.config import load_config
    runs = {}
    for mode in ('ghost', 'fast_bk'):
        cfg = load_config(overrides=tiny + ['privacy.epsilon=8', f'privacy.grad_sample_mode={mode}', 'train.optimizer=sgd'])
        runs[mode] = T.train(cfg, progress=False)
    a, b = runs['ghost'].model.state_dict(), runs['fast_bk'].model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    assert runs['ghost'].privacy['epsilon'] == runs['fast_bk'].privacy['epsilon']
    assert runs['ghost'].privacy['steps'] == runs['fast_bk'].privacy['steps'] > 0
