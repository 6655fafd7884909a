"""Privacy accounting (dpmed.accounting) checked against independent references.

References, and the conversion each one uses:
* Google's dp-accounting library (test-only dependency):
  - `dp_accounting.rdp.RdpAccountant`: Renyi DP of the Poisson-subsampled Gaussian, converted to
    (eps, delta) with the improved conversion (Canonne, Kamath, Steinke 2020 / Balle et al. 2020), its own
    grid of orders. Opacus' RDP uses the Balle et al. 2020 (Thm. 21) conversion on a similar grid, so the two
    agree to a relative 2e-3.
  - `dp_accounting.pld.PLDAccountant`: privacy loss distributions ("connect the dots", pessimistic), over
    both add and remove neighbours. Opacus' PRV accountant (Gopi et al. 2021) is an upper bound within
    eps_error = 0.01 of the exact value; we allow |prv - pld| <= 0.01 + 0.5% of eps.
  - The original moments accountant (Abadi et al. 2016) = RDP at integer orders with the classic conversion
    eps = min_a T*rdp(a) + log(1/delta)/(a-1); computed here from dp-accounting's RDP of one step.
* The GDP formula (Dong, Roth, Su 2019) written out here with scipy (mu, Phi, brentq), independently of
  Opacus' code: mu = q sqrt(T (exp(1/sigma^2) - 1)), delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2).
* Stock Opacus accountants (our PRV lengthens Opacus' grid for FFT speed; must agree to 1e-6).
* Published values (delta 1e-5 unless stated): q=0.04, sigma=1.5, 2,250 steps: Opacus RDP 7.3291, Opacus
  PRV 6.7774; Abadi et al. 2016, q=0.01, sigma=4, 10,000 steps: 1.26 (moments accountant), ~1.04 (RDP),
  ~0.95 (PLD/PRV); the paper's chest-radiograph model (q = 1/1,173, sigma calibrated for eps 11 at delta
  1e-6 over 150 epochs, about 0.55) has eps about 7.89 after 93 epochs at delta 6e-6.
"""
import argparse, contextlib, io, json, math, warnings

import numpy as np
import pytest
from scipy import optimize, stats

import dp_accounting as dpa
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from dp_accounting.rdp import rdp_privacy_accountant as dpa_rdp_mod

from dpmed.accounting import (ACCOUNTANTS, DeltaWarning, PRV_EPS_ERROR, _calibrate, calibrate_sigma, epsilon,
                              epsilon_per_epoch, privacy_paragraph, privacy_report)
from dpmed.cli import build_parser
from dpmed.core import DpmedError, read_json, write_json

pytestmark = pytest.mark.filterwarnings('ignore:Optimal order is the')


# ---------------------------------------------------------------- independent references
def _event(sigma, q, steps):
    return dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), steps)

def _history_event(history):
    return dpa.ComposedDpEvent([_event(s, q, t) for s, q, t in history])

def dpa_rdp(history, delta):
    acc = RdpAccountant(); acc.compose(_history_event(history)); return acc.get_epsilon(delta)

def dpa_pld(history, delta, interval=1e-4):
    acc = PLDAccountant(value_discretization_interval=interval); acc.compose(_history_event(history))
    return acc.get_epsilon(delta)

def moments_accountant(sigma, q, steps, delta, max_order=256):
    "Abadi et al.'s moments accountant: integer orders, classic RDP -> DP conversion."
    orders = np.arange(2, max_order + 1)
    rdp = dpa_rdp_mod._compute_rdp_poisson_subsampled_gaussian(q, sigma, orders) * steps
    return float(np.min(rdp + math.log(1 / delta) / (orders - 1)))

def gdp_formula(history, delta):
    mu = math.sqrt(sum(q * q * t * math.expm1(s ** -2) for s, q, t in history))
    f = lambda e: stats.norm.cdf(-e / mu + mu / 2) - math.exp(e) * stats.norm.cdf(-e / mu - mu / 2) - delta
    return 0.0 if f(0.0) <= 0 else optimize.brentq(f, 0.0, 500.0, xtol=1e-12)

def stock_opacus(history, delta, acc):
    from opacus.accountants import create_accountant
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        a = create_accountant(acc); a.history = list(history); return a.get_epsilon(delta=delta)

def pld_tol(e): return PRV_EPS_ERROR + 0.005 * e


# ---------------------------------------------------------------- published values
def test_q004_sigma15_2250_steps():
    h = (1.5, 0.04, 2250)
    assert epsilon(h, 1e-5, 'rdp') == pytest.approx(7.3291, abs=5e-4)           # Opacus RDP, published
    assert epsilon(h, 1e-5, 'prv') == pytest.approx(6.7774, abs=PRV_EPS_ERROR)   # Opacus PRV, within eps_error
    assert abs(epsilon(h, 1e-5, 'prv') - dpa_pld([h], 1e-5)) <= pld_tol(6.78)
    assert epsilon(h, 1e-5, 'rdp') == pytest.approx(dpa_rdp([h], 1e-5), rel=2e-3)

def test_abadi_2016_example():
    h, d = (4.0, 0.01, 10_000), 1e-5
    assert moments_accountant(*h, d) == pytest.approx(1.26, abs=0.005)   # the paper's moments-accountant value
    rdp, prv, gdp = (epsilon(h, d, a) for a in ('rdp', 'prv', 'gdp'))
    assert rdp == pytest.approx(1.04, abs=0.01) and rdp < moments_accountant(*h, d)   # better conversion
    assert prv == pytest.approx(0.95, abs=0.015)
    assert abs(prv - dpa_pld([h], d)) <= pld_tol(prv)
    assert gdp == pytest.approx(gdp_formula([h], d), abs=1e-6)
    assert prv < rdp

def test_paper_main_cxr_model():
    q, spe = 1 / 1173, 1173
    s, e150, T = _calibrate(11, 1e-6, q, epochs=150, accountant='prv')
    assert T == 150 * spe
    assert 0.545 <= s <= 0.555                                       # "sigma about 0.55"
    assert 11 - 0.01 <= e150 <= 11
    e93 = epsilon((s, q, 93 * spe), 6e-6, 'prv')
    assert e93 == pytest.approx(7.89, abs=0.02)                      # the paper's eps 7.89 at delta 6e-6
    assert abs(e93 - dpa_pld([(s, q, 93 * spe)], 6e-6)) <= pld_tol(e93)


# ---------------------------------------------------------------- cross-checks over a grid
GRID = [(1.0, 0.02, 300), (0.8, 0.005, 4000), (2.0, 0.1, 200), (0.7, 1.0, 3), (1.1, 0.001, 20_000)]

@pytest.mark.parametrize('h', GRID)
def test_rdp_matches_dp_accounting(h):
    for d in (1e-5, 1e-3):
        assert epsilon(h, d, 'rdp') == pytest.approx(dpa_rdp([h], d), rel=2e-3)

@pytest.mark.parametrize('h', GRID)
def test_prv_matches_pld_and_stock_opacus(h):
    e = epsilon(h, 1e-5, 'prv')
    assert abs(e - dpa_pld([h], 1e-5)) <= pld_tol(e)
    if h[2] <= 5000: assert e == pytest.approx(stock_opacus([h], 1e-5, 'prv'), abs=1e-6)

@pytest.mark.parametrize('h', GRID)
def test_gdp_matches_formula_and_opacus(h):
    assert epsilon(h, 1e-5, 'gdp') == pytest.approx(gdp_formula([h], 1e-5), abs=1e-6)
    assert epsilon(h, 1e-5, 'gdp') == pytest.approx(stock_opacus([h], 1e-5, 'gdp'), abs=1e-9)

def test_gdp_edge_cases():
    assert epsilon((1000.0, 0.001, 1000), 1e-5, 'gdp') == pytest.approx(gdp_formula([(1000.0, 0.001, 1000)], 1e-5), abs=1e-6)
    assert epsilon((1e6, 0.001, 10), 1e-5, 'gdp') == 0.0            # eps = 0 already meets delta (Opacus raises)
    assert epsilon((0.01, 1.0, 10), 1e-5, 'gdp') == math.inf         # mu overflows


# ---------------------------------------------------------------- heterogeneous histories
HET = [(0.8, 0.01, 1000), (1.2, 0.02, 500), (0.8, 0.01, 700)]

def test_heterogeneous_history():
    d = 1e-5
    assert epsilon(HET, d, 'rdp') == pytest.approx(dpa_rdp(HET, d), rel=2e-3)
    assert abs(epsilon(HET, d, 'prv') - dpa_pld(HET, d)) <= pld_tol(epsilon(HET, d, 'prv'))
    assert epsilon(HET, d, 'prv') == pytest.approx(stock_opacus(HET, d, 'prv'), abs=1e-4)
    assert epsilon(HET, d, 'gdp') == pytest.approx(gdp_formula(HET, d), abs=1e-6)
    # more steps never cost less
    for a in ACCOUNTANTS: assert epsilon(HET, d, a) > epsilon(HET[:2], d, a)

def test_epsilon_per_epoch():
    h, d = [(1.0, 0.02, 100), (1.3, 0.04, 130)], 1e-5        # 230 steps: 4 full epochs of 50 + 30
    for a in ACCOUNTANTS:
        per = epsilon_per_epoch(h, d, 50, a)
        assert len(per) == 5 and all(x <= y + 1e-9 for x, y in zip(per, per[1:]))
        assert per[-1] == pytest.approx(epsilon(h, d, a), abs=1e-9)
        cuts = [50, 100, 150, 200, 230]
        prefixes = [[(1.0, 0.02, min(c, 100))] + ([(1.3, 0.04, c - 100)] if c > 100 else []) for c in cuts]
        # each epoch on the shared grid = a standalone computation (PRV: within its eps_error)
        tol = 1e-4 if a == 'prv' else 1e-12
        assert per == pytest.approx([epsilon(p, d, a) for p in prefixes], abs=tol)
        if a == 'rdp': assert per == pytest.approx([stock_opacus(p, d, 'rdp') for p in prefixes], abs=1e-12)


# ---------------------------------------------------------------- calibration
@pytest.mark.parametrize('acc', ACCOUNTANTS)
@pytest.mark.parametrize('target,q,steps,delta', [(1.0, 0.01, 2000, 1e-5), (8.0, 0.05, 400, 1e-5), (3.0, 1e-3, 30_000, 1e-6)])
def test_calibrate_meets_target(acc, target, q, steps, delta):
    s, e, T = _calibrate(target, delta, q, steps=steps, accountant=acc)
    assert T == steps and target - 0.01 <= e <= target
    # the achieved epsilon checked by an independent accountant
    if acc == 'rdp': assert dpa_rdp([(s, q, steps)], delta) == pytest.approx(e, rel=2e-3)
    if acc == 'gdp': assert gdp_formula([(s, q, steps)], delta) == pytest.approx(e, abs=1e-6)
    if acc == 'prv': assert abs(dpa_pld([(s, q, steps)], delta) - e) <= pld_tol(e)
    # a little less noise overshoots the target
    assert epsilon((s * 0.99, q, steps), delta, acc) > target

def test_calibrate_agrees_with_opacus_rdp():
    from opacus.accountants.utils import get_noise_multiplier
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        s_op = get_noise_multiplier(target_epsilon=8, target_delta=1e-5, sample_rate=1e-3, epochs=20, accountant='rdp')
    s = calibrate_sigma(8, 1e-5, 1e-3, epochs=20, accountant='rdp')
    assert s == pytest.approx(s_op, rel=2e-3)

def test_calibrate_prv_long_run_checked_by_stock_opacus():
    s = calibrate_sigma(8, 1e-5, 1e-3, epochs=100, accountant='prv')
    assert 8 - 0.01 <= stock_opacus([(s, 1e-3, 100_000)], 1e-5, 'prv') <= 8 + 1e-6

# ---------------------------------------------------------------- the report (validation of histories, delta and calibration
# ---------------------------------------------------------------- arguments, and resumed histories: nbs/06_accounting.ipynb)
def test_privacy_report_roundtrip(tmp_path):
    h = [(1.1, 0.01, 300), (1.1, 0.01, 200)]
    with pytest.warns(DeltaWarning):
        rep = privacy_report(h, delta=1e-3, max_grad_norm=1.0, steps_per_epoch=100, epochs=5, n_train=2000,
                             accountant='gdp', target_epsilon=2.0)
    for k in ('accountant', 'sample_rate', 'noise_multiplier', 'max_grad_norm', 'steps', 'epochs', 'delta',
              'epsilon', 'epsilon_per_epoch', 'epsilon_per_epoch_by_accountant', 'history', 'notes', 'summary'):
        assert k in rep
    assert rep['accountant'] == 'gdp' and rep['steps'] == 500 and rep['epochs'] == 5 and rep['sample_rate'] == 0.01
    assert rep['history'] == [[1.1, 0.01, 300], [1.1, 0.01, 200]]          # as recorded, in order
    for a in ACCOUNTANTS:
        per = rep['epsilon_per_epoch_by_accountant'][a]
        assert len(per) == 5 and per[-1] == pytest.approx(epsilon((1.1, 0.01, 500), 1e-3, a), abs=1e-9)
        assert per[0] == pytest.approx(epsilon((1.1, 0.01, 100), 1e-3, a), abs=1e-4)
    assert rep['epsilon_per_epoch'] == rep['epsilon_per_epoch_by_accountant']['gdp']
    assert rep['delta_note'] and any('1/N' in n for n in rep['notes']) and any('underestimate' in n for n in rep['notes'])
    write_json(tmp_path / 'privacy.json', rep)
    back = read_json(tmp_path / 'privacy.json')
    assert privacy_paragraph(back) == rep['summary']
    assert f"({rep['epsilon']:.2f}, 0.001)-differential privacy" in rep['summary'] and 'Gaussian-DP' in rep['summary']
    assert f"rdp {rep['epsilon_by_accountant']['rdp']:.2f}" in rep['summary'] and '2000 training samples' in rep['summary']
    assert epsilon(back, 1e-3, 'rdp') == pytest.approx(rep['epsilon_by_accountant']['rdp'])   # re-accountable

def test_privacy_report_variants():
    rep = privacy_report([(1.0, 0.02, 60), (1.5, 0.04, 40)], delta=1e-5, max_grad_norm=1.5, steps_per_epoch=50,
                         accountants=('rdp',), poisson=False)
    assert rep['accountant'] == 'prv' and set(rep['epsilon_per_epoch_by_accountant']) == {'prv', 'rdp'}
    assert rep['noise_multiplier'] == [1.0, 1.5] and rep['sample_rate'] == [0.02, 0.04]
    assert any('Poisson' in n for n in rep['notes']) and any('changed' in n for n in rep['notes'])
    assert '1, 1.5' in rep['summary']
    non = privacy_report(None, delta=1e-5, max_grad_norm=None, steps_per_epoch=10)
    assert non['private'] is False and non['epsilon'] == math.inf and 'without differential privacy' in non['summary']


# ---------------------------------------------------------------- command line
def _run(argv, err=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    buf, ebuf = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(ebuf): rc = args.func(args)
    if err is not None: err.append(ebuf.getvalue())
    return rc, buf.getvalue()

def test_cli_accountant():
    rc, out = _run('accountant --sample-rate 0.04 --noise-multiplier 1.5 --steps 2250 --delta 1e-5 --accountant rdp'.split())
    assert rc == 0 and 'epsilon = 7.329' in out
    rc, out = _run('accountant --sample-rate 0.04 --noise-multiplier 1.5 --steps 2250 --delta 1e-5 --accountant all --json'.split())
    res = json.loads(out)
    assert res['epsilon_by_accountant']['rdp'] == pytest.approx(7.3291, abs=5e-4)
    assert res['epsilon_by_accountant']['prv'] == pytest.approx(6.7774, abs=0.01)
    with pytest.raises(DpmedError, match='noise-multiplier'):
        _run('accountant --sample-rate 0.04 --noise-multiplier -1 --steps 10 --delta 1e-5'.split())
    err = []
    rc, out = _run('accountant --sample-rate 0.1 --noise-multiplier 1 --steps 10 --delta 0.01 --n-train 100 --json'.split(), err)
    assert '1/N' in json.loads(out)['note'] and err[0].startswith('dpmed: warning: delta = 0.01')

def test_cli_calibrate():
    rc, out = _run('calibrate --target-epsilon 2 --delta 1e-5 --sample-rate 0.01 --epochs 5 --accountant rdp'.split())
    assert rc == 0 and 'noise multiplier (sigma) =' in out and '500 steps' in out
    rc, out = _run('calibrate --target-epsilon 2 --delta 1e-5 --sample-rate 0.01 --steps 500 --json'.split())
    res = json.loads(out)
    assert 1.99 <= res['epsilon'] <= 2 and res['accountant'] == 'prv'
    assert epsilon((res['noise_multiplier'], 0.01, 500), 1e-5, 'prv') == pytest.approx(res['epsilon'])
    with pytest.raises(SystemExit): _run('calibrate --target-epsilon 2 --delta 1e-5 --sample-rate 0.01'.split())
    with pytest.raises(DpmedError, match='delta'):
        _run('calibrate --target-epsilon 2 --delta 2 --sample-rate 0.01 --epochs 1'.split())
    with pytest.raises(DpmedError, match='--sample-rate'):
        _run('calibrate --target-epsilon 2 --delta 1e-5 --sample-rate 2 --epochs 1'.split())
    with pytest.raises(DpmedError, match='--target-epsilon'):
        _run('calibrate --target-epsilon nan --delta 1e-5 --sample-rate 0.1 --epochs 1'.split())


# ---------------------------------------------------------------- the patient as the unit
def test_patient_level_run_is_accounted_at_the_patient_rate(tiny):
    "A patient-level run: q = 1 / ceil(patients / batch), and epsilon = dp-accounting's PLD at that rate and steps."
    from dpmed.config import load_config
    from dpmed.train import load_imageset, train
    cfg = load_config(overrides=tiny + ['privacy.epsilon=4', 'privacy.delta=1e-4', 'eval.n_boot=0'])
    data = load_imageset(cfg)
    pids = data.split('train').meta['patient_id']
    P, N = pids.nunique(), len(pids)
    assert P < N
    pv = train(cfg, data=data, progress=False).privacy
    spe = math.ceil(P / cfg.train.batch_size)              # an epoch samples each patient once in expectation
    q, steps = 1 / spe, cfg.train.epochs * spe
    assert pv['unit'] == 'patient' and pv['sample_rate'] == q and pv['steps'] == steps
    assert pv['history'] == [[pv['noise_multiplier'], q, steps]]
    e = pv['epsilon']
    assert abs(e - dpa_pld([(pv['noise_multiplier'], q, steps)], 1e-4)) <= pld_tol(e)
    assert e <= 4 + 0.05
    # the image rate would be another mechanism: its epsilon at the same sigma differs
    q_img = 1 / math.ceil(N / cfg.train.batch_size)
    assert abs(dpa_pld([(pv['noise_multiplier'], q_img, cfg.train.epochs * round(1 / q_img))], 1e-4) - e) > pld_tol(e)
