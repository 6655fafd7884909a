"Per-sample gradients, clipping and noise of the DP engine against naive references, for every model and mode."
import math, warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn

from dpmed.config import ModelConfig, load_config
from dpmed.core import DpmedError
from dpmed.dpsgd import (GRAD_SAMPLE_MODES, FAST_MODES, UNSUPPORTED, PerSampleBCE, check_grad_sample_mode, clipped_sum_reference,
                         make_private, naive_per_sample_grads, PoissonSampler, PatientIndex)
from dpmed.models import build_model, check_dp_compatible, make_dp_compatible

warnings.filterwarnings('ignore', message='.*Secure RNG.*')
MODELS = {  # name -> (config, input shape, labels); tiny widths/sizes, same topology as the real ones
    'resnet9': (ModelConfig(name='resnet9', width=0.125), (1, 32, 32), 3),
    'resnet9_3d': (ModelConfig(name='resnet9_3d', width=0.125), (1, 28, 28, 28), 1),
    'monai_resnet18': (ModelConfig(name='monai_resnet18', width=0.0625), (1, 16, 16, 16), 1),
    'monai_densenet121': (ModelConfig(name='monai_densenet121', width=0.125), (1, 32, 32, 32), 1),
}


def _model(name, dtype=torch.float64):
    torch.manual_seed(0)
    cfg, shape, L = MODELS[name]
    return build_model(cfg, L).to(dtype), shape, L


def _engine_grads(name, mode, x, y, C, sigma=0.0):
    "Run one engine step (lr 0) and return (per-sample grads or None, per-sample norms, p.grad flattened, parts)."
    m, _, _ = _model(name, x.dtype)
    parts = make_private(m, torch.optim.SGD(m.parameters(), lr=0.0), PerSampleBCE(), grad_sample_mode=mode,
                         noise_multiplier=sigma, max_grad_norm=C, sample_rate=0.5, expected_batch_size=len(x),
                         noise_generator=torch.Generator().manual_seed(1))
    loss = parts.criterion(parts.model(x), y)
    loss.backward()
    params = [p for p in m.parameters() if p.requires_grad]
    gs = None
    if mode == 'ghost':
        norms = parts.model.per_sample_gradient_norms.detach().clone()
    else:
        gs = torch.cat([p.grad_sample.reshape(len(x), -1) for p in params], 1).detach().clone()
        norms = gs.norm(dim=1)
    parts.optimizer.step()
    grad = torch.cat([p.grad.reshape(-1) for p in params]).detach().clone()
    return gs, norms, grad, parts


@pytest.mark.parametrize('name', list(MODELS))
@pytest.mark.parametrize('mode', GRAD_SAMPLE_MODES)
def test_per_sample_gradients_and_clipping_equal_the_naive_loop(name, mode):
    if (mode, name) in UNSUPPORTED:
        with pytest.raises(DpmedError, match='does not work with model'):
            check_grad_sample_mode(mode, model_name=name)
        return
    m, shape, L = _model(name)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, *shape, generator=g, dtype=torch.float64)
    y = (torch.rand(3, L, generator=g) > 0.5).double()
    ref = naive_per_sample_grads(m, PerSampleBCE(), x, y)
    C = float(ref.norm(dim=1).median())            # clipping acts on some records, not on others
    gs, norms, grad, parts = _engine_grads(name, mode, x, y, C)
    rel = lambda a, b: float((a - b).norm() / b.norm())
    if gs is not None:
        assert max(rel(gs[i], ref[i]) for i in range(3)) < 1e-5, 'per-sample gradients differ from the naive loop'
    assert rel(norms, ref.norm(dim=1)) < 1e-5, 'per-sample norms differ'
    want = clipped_sum_reference(ref, C) / 3
    assert rel(grad, want) < 1e-5, 'the clipped, averaged gradient differs from the naive one'
    # after clipping every per-sample contribution has norm <= C
    factors = (C / (norms + 1e-6)).clamp(max=1.0)
    assert ((norms * factors) <= C * (1 + 1e-9)).all()


@pytest.mark.parametrize('mode', GRAD_SAMPLE_MODES)
def test_float32_within_1e3(mode):
    m, shape, L = _model('resnet9', torch.float32)
    x, y = torch.randn(4, *shape), (torch.rand(4, L) > 0.5).float()
    ref = naive_per_sample_grads(_model('resnet9')[0], PerSampleBCE(), x.double(), y.double())
    C = float(ref.norm(dim=1).median())
    _, _, grad, _ = _engine_grads('resnet9', mode, x, y, C)
    want = (clipped_sum_reference(ref, C) / 4).float()
    assert float((grad - want).norm() / want.norm()) < 1e-3


@pytest.mark.parametrize('mode', GRAD_SAMPLE_MODES)
def test_noise_std_on_a_zero_gradient(mode):
    "With a zero loss, p.grad is pure noise: std = sigma * C / expected batch size, within sampling error."
    m, shape, L = _model('resnet9', torch.float32)
    sigma, C, b = 1.3, 0.7, 5
    parts = make_private(m, torch.optim.SGD(m.parameters(), lr=0.0), PerSampleBCE(), grad_sample_mode=mode,
                         noise_multiplier=sigma, max_grad_norm=C, sample_rate=0.5, expected_batch_size=b,
                         noise_generator=torch.Generator().manual_seed(3))
    x = torch.randn(b, *shape)
    loss = parts.criterion(parts.model(x) * 0.0, torch.zeros(b, L))   # constant loss: zero per-sample gradients
    loss.backward()
    parts.optimizer.step()
    noise = torch.cat([p.grad.reshape(-1) for p in m.parameters()]).double()
    n = noise.numel()
    want = sigma * C / b
    # the sample std of n Gaussians has relative standard error ~ 1/sqrt(2n); allow 5 of them
    assert abs(float(noise.std()) / want - 1) < 5 / math.sqrt(2 * n), (float(noise.std()), want, n)
    assert abs(float(noise.mean())) < 5 * want / math.sqrt(n)


def test_batchnorm_is_rejected_or_fixed_with_a_message():
    bn = nn.Sequential(nn.Conv3d(1, 8, 3), nn.BatchNorm3d(8), nn.ReLU(inplace=True), nn.AdaptiveAvgPool3d(1),
                       nn.Flatten(), nn.Linear(8, 1))
    with pytest.raises(DpmedError, match='BatchNorm'):
        check_dp_compatible(bn)
    for no_params in (nn.BatchNorm2d(8, affine=False), nn.BatchNorm2d(8, affine=False, track_running_stats=False)):
        with pytest.raises(DpmedError, match=r"BatchNorm layer\(s\) \['norm'\]"):   # mixes records all the same
            check_dp_compatible(nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 8, 3), norm=no_params)))
    with pytest.warns(UserWarning, match=r'1 BatchNorm layer\(s\) replaced by GroupNorm \(1\)'):
        fixed = make_dp_compatible(bn)
    assert isinstance(fixed[1], nn.GroupNorm) and not fixed[2].inplace
    check_dp_compatible(fixed)


def test_stock_monai_resnet_fails_and_ours_works():
    "The trap from the issue: MONAI's own ResNet keeps BatchNorm/in-place ops in its blocks; ours has none."
    from monai.networks.nets import resnet18
    stock = resnet18(spatial_dims=3, n_input_channels=1, num_classes=1, widen_factor=0.0625, norm=('group', {'num_groups': 4}))
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in stock.modules())
    with pytest.raises(DpmedError): check_dp_compatible(stock)
    ours, _, _ = _model('monai_resnet18')
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) or getattr(m, 'inplace', False) for m in ours.modules())


def test_unsupported_combinations_are_refused_with_a_reason():
    with pytest.raises(DpmedError, match='torchcsprng'):
        try:
            import torchcsprng  # noqa: F401
            pytest.skip('torchcsprng is installed here')
        except ImportError:
            check_grad_sample_mode('hooks', secure_mode=True)
    with pytest.raises(DpmedError, match='amp'):
        check_grad_sample_mode('ew', amp=True)
    with pytest.raises(DpmedError, match='grad_sample_mode'):
        load_config(overrides=['privacy.grad_sample_mode=fast'])


def test_poisson_sampler_shards_one_global_sample():
    "Two ranks with equal generators take disjoint shares whose union is the single-process Poisson sample."
    one = list(PoissonSampler(50, 0.2, 30, torch.Generator().manual_seed(4)))
    r0 = list(PoissonSampler(50, 0.2, 30, torch.Generator().manual_seed(4), 0, 2))
    r1 = list(PoissonSampler(50, 0.2, 30, torch.Generator().manual_seed(4), 1, 2))
    assert len(r0) == len(r1) == len(one) == 30                 # every rank takes every step, empty or not
    for a, b, c in zip(r0, r1, one):
        assert not set(a) & set(b) and sorted(a + b) == sorted(c)
    sizes = torch.tensor([len(c) for c in one], dtype=torch.float)
    assert abs(sizes.mean().item() - 10) < 3 * math.sqrt(50 * 0.2 * 0.8 / 30)


def test_patient_sampler_shards_one_global_sample_of_one_image_per_patient():
    "Patient-level Poisson sampling: every rank draws the same patients and picks; shares are disjoint, union = one sample."
    pids = [f'p{i}' for i, c in enumerate([1, 3, 2, 5, 1, 4, 2, 2, 1, 3]) for _ in range(c)]
    pix = PatientIndex(pids)
    make = lambda r, w: list(PoissonSampler(10, 0.4, 300, torch.Generator().manual_seed(4), r, w, pix,
                                            torch.Generator().manual_seed(5)))
    one, r0, r1 = make(0, 1), make(0, 2), make(1, 2)
    for a, b, c in zip(r0, r1, one):
        assert not set(a) & set(b) and sorted(a + b) == sorted(c)
        assert len({pids[i] for i in c}) == len(c), 'two images of one patient in a logical batch'
    # patients join at rate q (the accountant's rate), whatever their number of images
    sizes = torch.tensor([len(c) for c in one], dtype=torch.float)
    assert abs(sizes.mean().item() - 4) < 4 * math.sqrt(10 * 0.4 * 0.6 / 300)
    # each image of a patient is drawn about equally often (uniform pick)
    p3 = [i for i, p in enumerate(pids) if p == 'p3']
    drawn = torch.tensor([i for c in one for i in c if i in p3])
    counts = torch.bincount(drawn - p3[0], minlength=5).float()
    n = counts.sum()
    from scipy import stats
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3 and n > 60


def _clipped_sum(mode, x, y, C):
    "Clipped per-sample gradient sum of one step of the engine (noise 0), for the tiny ResNet9 in float64."
    m, _, _ = _model('resnet9')
    params = [p for p in m.parameters() if p.requires_grad]
    if len(x) == 0: return torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    parts = make_private(m, torch.optim.SGD(m.parameters(), lr=0.0), PerSampleBCE(), grad_sample_mode=mode,
                         noise_multiplier=0.0, max_grad_norm=C, sample_rate=0.5, expected_batch_size=1,
                         noise_generator=torch.Generator().manual_seed(1))
    parts.criterion(parts.model(x), y).backward()
    parts.optimizer.step()
    return torch.cat([p.grad.reshape(-1) for p in params]).detach().clone()


@pytest.mark.parametrize('mode', GRAD_SAMPLE_MODES + FAST_MODES)
def test_neighbouring_sets_differing_by_one_patient_move_the_clipped_sum_by_at_most_C(mode):
    """D and D' = D without one patient (4 images), sampled with the same randomness for everybody else: the
    per-step clipped sums differ by at most C in every gradient mode (the patient gives at most one image)."""
    shape, L = (1, 16, 16), MODELS['resnet9'][2]
    counts = [2, 1, 3, 2, 1, 2, 4]                       # the last patient (4 images) is removed in D'
    pids = [f'p{i}' for i, c in enumerate(counts) for _ in range(c)]
    g = torch.Generator().manual_seed(0)
    X = torch.randn(len(pids), *shape, generator=g, dtype=torch.float64)
    Y = (torch.rand(len(pids), L, generator=g) > 0.5).double()
    keep = [i for i, p in enumerate(pids) if p != 'p6']
    full, without = PatientIndex(pids), PatientIndex([pids[i] for i in keep])
    ref = naive_per_sample_grads(_model('resnet9')[0], PerSampleBCE(), X, Y)
    C = float(ref.norm(dim=1).median())                  # clipping acts on about half the images
    diffs = []
    for t in range(8):                                   # one step each, the same generator seeds for D and D'
        step = lambda pix, n: next(iter(PoissonSampler(n, 0.5, 1, torch.Generator().manual_seed(t), patients=pix,
                                                       pick_generator=torch.Generator().manual_seed(100 + t))))
        bd, bn = step(full, 7), [keep[i] for i in step(without, 6)]
        extra = [i for i in bd if pids[i] == 'p6']
        assert len(extra) <= 1 and sorted(bn) == sorted(i for i in bd if pids[i] != 'p6'), 'coupling broken'
        d = (_clipped_sum(mode, X[bd], Y[bd], C) - _clipped_sum(mode, X[bn], Y[bn], C)).norm().item()
        assert d <= C * (1 + 1e-9), f'step {t}: the sums differ by {d / C:.3f} C'
        if extra:        # the difference is exactly the removed patient's one clipped gradient
            want = clipped_sum_reference(ref[extra], C).norm().item()
            assert d == pytest.approx(want, rel=1e-6)
        else: assert d < 1e-9
        diffs.append(bool(extra))
    assert 0 < sum(diffs) < len(diffs), 'the removed patient should be sampled in some steps, not all'


@pytest.mark.parametrize('mode,opt', [('hooks', 'nadam'), ('functorch', 'sgd'), ('ew', 'adam'), ('ghost', 'nadam')])
def test_training_runs_in_every_mode(tiny, mode, opt):
    "The whole loop runs in every mode (and optimizer), spending what the accountant says."
    from dpmed.train import train
    cfg = load_config(overrides=tiny + ['train.epochs=1', f'privacy.grad_sample_mode={mode}', f'train.optimizer={opt}',
                                        'train.lr_schedule=cosine', 'privacy.epsilon=inf', 'privacy.noise_multiplier=1.0',
                                        'privacy.accountant=rdp', 'eval.n_boot=0'])
    res = train(cfg, progress=False)
    assert res.privacy['steps'] == sum(h[2] for h in res.privacy['history']) > 0
    assert res.privacy['noise_multiplier'] == 1.0 and res.privacy['accountant'] == 'rdp'
    assert all(torch.isfinite(v).all() for v in res.model.state_dict().values())
