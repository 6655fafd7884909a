"Empirical privacy audit: attack statistics, the one-run epsilon bound, canaries, and audits of real runs."
import argparse
import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve
from statsmodels.stats.proportion import proportion_confint

import dpmed.audit as A
from dpmed.config import load_config
from dpmed.cli import build_parser
from dpmed.core import DpmedError, read_json, write_json
from dpmed.metrics import bootstrap_counts
from dpmed.rundir import train_and_save
from dpmed.train import load_imageset

# A run that trains in seconds on one thread and, without DP, memorises its ~70 training images.
OVERFIT = ['data.n_patients=60', 'data.image_size=32', 'model.width=0.25', 'train.epochs=20', 'train.batch_size=8',
           'train.physical_batch_size=8', 'train.lr=0.001', 'train.num_threads=1', 'eval.n_boot=50']
K = 64                      # canaries per audit


@pytest.fixture(scope='module', autouse=True)
def _restore_torch_threads():
    "train.num_threads sets torch's process-wide thread count; give the other test files theirs back."
    import torch
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _logit(p):
    return math.log(p / (1 - p))


# ---------------------------------------------------------------- the lower bound on epsilon

@pytest.mark.parametrize('conf', [0.9, 0.95, 0.99])
def test_bound_is_the_clopper_pearson_logit_without_delta(conf):
    "delta = 0: the bound is logit of the one-sided Clopper-Pearson lower limit (statsmodels), 0 below 1/2."
    for r, v in [(1, 1), (10, 10), (20, 17), (64, 50), (100, 60), (300, 200), (50, 25), (40, 12)]:
        low = proportion_confint(v, r, alpha=2 * (1 - conf), method='beta')[0]
        expect = max(0.0, _logit(low)) if low > 0 else 0.0
        assert A.epsilon_lower_bound(r, r, v, conf) == pytest.approx(expect, abs=1e-6), (r, v)


def _p_value_naive(m, r, v, eps, delta):
    "The one-run p-value written out with math.comb sums (no scipy)."
    q = 1 / (1 + math.exp(-eps))
    pmf = [math.comb(r, k) * q ** k * (1 - q) ** (r - k) for k in range(r + 1)]
    tail = sum(pmf[v:])
    alpha = max([sum(pmf[v - i:v]) / i for i in range(1, v + 1)], default=0.0)
    return min(1.0, tail + 2 * m * delta * alpha)


def _bound_naive(m, r, v, conf, delta):
    "First epsilon on a fine grid whose naive p-value exceeds 1 - conf, refined by bisection."
    beta = 1 - conf
    if _p_value_naive(m, r, v, 0.0, delta) > beta:
        return 0.0
    grid = np.arange(0, 20, 0.01)
    j = next(i for i, e in enumerate(grid) if _p_value_naive(m, r, v, e, delta) > beta)
    lo, hi = grid[j - 1], grid[j]
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _p_value_naive(m, r, v, mid, delta) <= beta else (lo, mid)
    return lo


@pytest.mark.parametrize('m,r,v,delta', [(100, 40, 38, 1e-5), (1000, 200, 150, 1e-4), (64, 64, 64, 1e-3),
                                         (500, 100, 70, 0.0), (200, 50, 49, 1e-2), (30, 10, 6, 1e-5)])
def test_bound_with_delta_matches_a_naive_computation(m, r, v, delta):
    for eps in (0.0, 0.5, 1.0, 3.0):
        assert A.one_run_p_value(m, r, v, eps, delta) == pytest.approx(_p_value_naive(m, r, v, eps, delta), rel=1e-9, abs=1e-12)
    got = A.epsilon_lower_bound(m, r, v, 0.95, delta)
    assert got == pytest.approx(_bound_naive(m, r, v, 0.95, delta), abs=1e-6)
    assert got <= A.epsilon_lower_bound(m, r, v, 0.95, 0.0) + 1e-9        # delta can only weaken the bound


def test_chance_level_guesses_give_zero_and_the_bound_holds_for_randomized_response():
    for r in (1, 2, 10, 101, 1000):
        assert A.epsilon_lower_bound(r, r, r // 2) == 0.0
        assert A.epsilon_lower_bound(r, r, 0) == 0.0
    # randomized response is exactly eps-DP: its guesses may exceed eps in at most 5% of audits (+ sampling slack)
    rng = np.random.default_rng(3)
    for eps, r in [(0.5, 400), (2.0, 100)]:
        v = rng.binomial(r, 1 / (1 + math.exp(-eps)), size=200)
        over = np.mean([A.epsilon_lower_bound(r, r, int(x)) > eps for x in v])
        assert over <= stats.binom.ppf(0.999, 200, 0.05) / 200
        # ... but it does find a good part of eps: the median bound is above half of it
        assert np.median([A.epsilon_lower_bound(r, r, int(x)) for x in v]) > eps / 2


def test_bad_counts_are_errors():
    with pytest.raises(DpmedError):
        A.one_run_p_value(10, 5, 6, 1.0)
    with pytest.raises(DpmedError):
        A.epsilon_lower_bound(10, 5, 3, confidence=1.0)


def test_guess_counts_match_brute_force_and_grid_is_fixed_in_advance():
    rng = np.random.default_rng(0)
    s, inc = rng.normal(size=50), rng.random(50) < 0.5
    s[inc] += 1
    for kp, km in A.guess_grid(50):
        r, v = A.guess_counts(s, inc, kp, km)
        top, bottom = np.argsort(-s)[:kp], np.argsort(s)[:km]
        assert r == kp + km and v == inc[top].sum() + (~inc[bottom]).sum()
    assert A.guess_grid(50) == A.guess_grid(50) and all(a + b <= 50 for a, b in A.guess_grid(50))
    b = A.one_run_bound(s, inc)
    assert b['confidence_per_guess_set'] == pytest.approx(1 - 0.05 / len(A.guess_grid(50)))
    assert b['epsilon_lower_bound'] == max(g['epsilon_lower_bound'] for g in b['grid'])


# ---------------------------------------------------------------- attack statistics

@pytest.mark.parametrize('ties', [False, True])
def test_roc_tpr_at_fpr_and_auc_match_sklearn(ties):
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(0.7, 1, 400), rng.normal(0, 1, 1500)
    if ties:
        pos, neg = np.round(pos, 1), np.round(neg, 1)
    y, s = np.r_[np.ones(400), np.zeros(1500)], np.r_[pos, neg]
    f, t, _ = roc_curve(y, s, drop_intermediate=False)
    for a in (0.0, 0.001, 0.01, 0.1, 0.3, 1.0):
        assert A.tpr_at_fpr(pos, neg, a) == pytest.approx(t[f <= a + 1e-12].max(), abs=1e-12)
    st = A.attack_stats(pos, neg, n_boot=0)
    assert st['auc'] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert st['advantage'] == pytest.approx(np.max(t - f), abs=1e-12)
    assert st['tpr_at_fpr']['0.001']['resolved'] and st['tpr_at_fpr']['0.01']['tpr'] == pytest.approx(
        t[f <= 0.01].max())


def test_bootstrap_resamples_match_explicitly_expanded_samples():
    "TPR at FPR from count matrices equals sklearn on the resamples written out item by item (patient clusters)."
    rng = np.random.default_rng(2)
    pos, neg = np.round(rng.normal(0.5, 1, 120), 1), np.round(rng.normal(0, 1, 300), 1)
    gp, gn = rng.integers(0, 50, 120), rng.integers(0, 100, 300)
    cp, cn = bootstrap_counts(120, 20, 5, clusters=gp), bootstrap_counts(300, 20, 6, clusters=gn)
    got = A._tpr_at_fpr_counts(pos, neg, cp, cn, [0.01, 0.1, 0.5])
    for b in range(20):
        p, n = np.repeat(pos, cp[:, b]), np.repeat(neg, cn[:, b])
        f, t, _ = roc_curve(np.r_[np.ones(len(p)), np.zeros(len(n))], np.r_[p, n], drop_intermediate=False)
        for i, a in enumerate([0.01, 0.1, 0.5]):
            assert got[i, b] == pytest.approx(t[f <= a + 1e-12].max(), abs=1e-12)


def test_intervals_cover_the_truth_of_a_known_attack():
    "Scores N(d, 1) vs N(0, 1) have AUC Phi(d / sqrt 2); the 95% interval should cover it in most of 40 draws."
    rng = np.random.default_rng(4)
    d, truth, cover = 0.8, stats.norm.cdf(0.8 / math.sqrt(2)), 0
    for i in range(40):
        st = A.attack_stats(rng.normal(d, 1, 150), rng.normal(0, 1, 150), n_boot=300, seed=i)
        cover += st['auc_ci'][0] <= truth <= st['auc_ci'][1]
    assert cover >= stats.binom.ppf(0.001, 40, 0.95)


# ---------------------------------------------------------------- canaries

def test_canaries_are_reproducible_and_only_included_ones_join_training():
    data = load_imageset(load_config(overrides=OVERFIT))
    c1, inc1 = A.make_canaries(200, data, seed=3)
    c2, inc2 = A.make_canaries(200, data, seed=3)
    c3, inc3 = A.make_canaries(200, data, seed=4)
    assert np.array_equal(c1.images, c2.images) and np.array_equal(inc1, inc2) and np.array_equal(c1.labels, c2.labels)
    assert not np.array_equal(c1.images, c3.images) and not np.array_equal(inc1, inc3)
    assert c1.images.shape[1:] == data.images.shape[1:] and c1.images.dtype == data.images.dtype
    # fair coins: the number included is a plausible Binomial(200, 1/2) draw; labels are fair coins too
    assert stats.binomtest(int(inc1.sum()), 200).pvalue > 0.001
    assert stats.binomtest(int(c1.labels.sum()), c1.labels.size).pvalue > 0.001
    both = A.with_canaries(data, c1, inc1)
    for split in ('val', 'test'):
        assert np.array_equal(both.split(split).images, data.split(split).images)
    tr = both.split('train')
    assert len(tr) == len(data.split('train')) + inc1.sum()
    ids = set(tr.meta['id'][tr.meta['canary'].astype(bool)])
    assert ids == {f'canary{i:04d}' for i in np.flatnonzero(inc1)}
    with pytest.raises(DpmedError):
        A.make_canaries(1, data)


def test_patient_canaries_join_or_leave_training_as_whole_patients():
    data = load_imageset(load_config(overrides=OVERFIT))
    c, inc = A.make_canaries(10, data, seed=1, images_per_canary=3)
    assert len(c) == 30 and len(inc) == 10 and c.meta['patient_id'].nunique() == 10
    assert c.meta['id'].is_unique
    mask = A.canary_image_mask(c, inc)
    assert np.array_equal(mask, np.repeat(inc, 3))
    tr = A.with_canaries(data, c, inc).split('train')
    added = tr.meta[tr.meta['canary'].astype(bool)]
    assert len(added) == 3 * inc.sum() and set(added['patient_id']) == {f'canary{i:04d}' for i in np.flatnonzero(inc)}
    # a canary patient's score is minus the mean loss over its images
    losses = np.arange(30, dtype=float)
    assert np.allclose(A.canary_scores(c, losses), -losses.reshape(10, 3).mean(1))
    with pytest.raises(DpmedError, match='inclusion flags'):
        A.canary_image_mask(c, inc[:5])


def test_canary_run_fixes_the_noise_for_the_expected_size():
    cfg = load_config(overrides=OVERFIT + ['privacy.epsilon=2', 'privacy.delta=1e-3'])
    c = A.canary_config(cfg, n_train=100, k=40)
    assert c.privacy.private and math.isinf(c.privacy.epsilon) and c.privacy.noise_multiplier > 0
    assert cfg.privacy.epsilon == 2 and cfg.privacy.noise_multiplier is None        # the original is untouched
    from dpmed.accounting import epsilon
    steps = math.ceil(120 / 8) * cfg.train.epochs
    assert epsilon([(c.privacy.noise_multiplier, 1 / math.ceil(120 / 8), steps)], 1e-3, 'prv') == pytest.approx(2, abs=0.05)
    assert not A.canary_config(load_config(overrides=OVERFIT + ['privacy.epsilon=inf']), 100, 40).privacy.private


# ---------------------------------------------------------------- audits of real runs

@pytest.fixture(scope='module')
def nonprivate_run(tmp_path_factory):
    run = tmp_path_factory.mktemp('audit') / 'nonprivate'
    train_and_save(load_config(overrides=OVERFIT + ['privacy.epsilon=inf']), run, progress=False)
    return run


@pytest.fixture(scope='module')
def private_run(tmp_path_factory):
    run = tmp_path_factory.mktemp('audit') / 'private'
    train_and_save(load_config(overrides=OVERFIT + ['privacy.epsilon=1', 'privacy.delta=1e-3']), run, progress=False)
    return run


def test_audit_finds_clear_leakage_without_dp(nonprivate_run, tmp_path):
    rep = A.audit_run(nonprivate_run, canaries=K, seed=0, out=tmp_path, n_boot=500)
    mia, can = rep['membership_inference'], rep['canary_audit']
    assert mia['auc'] > 0.6 and mia['auc_ci'][0] > 0.5, mia
    assert mia['mean_loss_members'] < mia['mean_loss_nonmembers']
    # the canaries give away more than epsilon 1, so the private test below could fail if DP did nothing
    assert can['epsilon_lower_bound'] > 1.0, can
    assert math.isinf(can['accounted_epsilon']) and can['consistent'] and not can['private']
    assert can['n_canaries'] == K and can['n_included'] == sum(can['included'])
    # what the bound rests on: recompute it from the reported counts
    conf_each = 1 - 0.05 / len(A.guess_grid(K))
    assert can['epsilon_lower_bound'] == pytest.approx(
        A.epsilon_lower_bound(K, can['guesses'], can['correct'], conf_each, can['delta']))
    assert can['correct'] / can['guesses'] > 0.5
    saved = read_json(tmp_path / 'audit.json')
    assert saved['membership_inference']['auc'] == pytest.approx(mia['auc'])
    assert (tmp_path / 'audit_roc.png').stat().st_size > 1000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')], 'temporary files left behind'
    assert not (nonprivate_run / 'audit.json').exists()


def test_audit_bound_stays_below_the_accounted_epsilon_with_dp(private_run, tmp_path):
    rep = A.audit_run(private_run, canaries=K, seed=0, out=tmp_path, n_boot=200)
    can = rep['canary_audit']
    assert can['private'] and 0.8 < can['accounted_epsilon'] < 1.2
    assert can['epsilon_lower_bound'] <= can['accounted_epsilon'], can
    assert can['epsilon_lower_bound'] <= rep['run_privacy']['epsilon']
    assert can['consistent'] and can['delta'] == 1e-3
    assert rep['run_privacy']['private'] and rep['run_privacy']['epsilon'] <= 1.01


def test_audit_with_patient_level_canaries_on_a_patient_level_run(private_run, tmp_path):
    "Canary patients of two images each, in or out as a whole: the patient-level epsilon must still hold."
    assert read_json(private_run / 'privacy.json')['unit'] == 'patient'
    rep = A.audit_run(private_run, canaries=K, seed=1, out=tmp_path, n_boot=0, canary_images=2)
    can = rep['canary_audit']
    assert can['unit'] == 'patient' and can['images_per_canary'] == 2 and can['n_canaries'] == K
    assert can['epsilon_lower_bound'] <= can['accounted_epsilon'] and can['consistent'], can
    assert len(can['losses']) == 2 * K and len(can['included']) == K


def test_cli_writes_into_the_run_directory_and_reports(nonprivate_run, capsys):
    parser = build_parser()
    args = parser.parse_args(['audit', str(nonprivate_run), '--n-boot', '100', '--weights', 'best',
                              '--nonmembers', 'test', '--quiet'])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert 'AUC' in out and 'audit.json' in out
    rep = read_json(nonprivate_run / 'audit.json')
    assert rep['weights'] == 'best' and rep['canary_audit'] is None
    assert rep['membership_inference']['n_nonmembers'] == (load_imageset(load_run_cfg(nonprivate_run)).meta.split == 'test').sum()
    assert (nonprivate_run / 'audit_roc.png').exists()


def load_run_cfg(run_dir):
    from dpmed.rundir import load_run
    return load_run(run_dir)['config']


def test_cli_exit_status_flags_a_bound_above_epsilon(nonprivate_run, tmp_path, monkeypatch, capsys):
    "A (simulated) contradiction of the accounting is a non-zero exit, not a footnote."
    fake = A.one_run_bound(np.r_[np.ones(32), np.zeros(32)], np.r_[np.ones(32, bool), np.zeros(32, bool)])
    monkeypatch.setattr(A, 'canary_audit', lambda *a, **k: {**fake, 'accounted_epsilon': 0.5, 'consistent': False,
                                                          'included': [1] * 32 + [0] * 32, 'losses': [0.0] * 64})
    parser = build_parser()
    args = parser.parse_args(['audit', str(nonprivate_run), '--canaries', '64', '--out', str(tmp_path), '--n-boot', '0'])
    assert args.func(args) == 1
    assert 'exceeds' in capsys.readouterr().err
    assert 'CONTRADICTED' in read_json(tmp_path / 'audit.json')['summary'].upper()


def test_bad_input_is_named(nonprivate_run, tmp_path):
    with pytest.raises(DpmedError, match='no such run directory'):
        A.audit_run(tmp_path / 'nope')
    with pytest.raises(DpmedError, match='canaries'):
        A.audit_run(nonprivate_run, canaries=1)
    with pytest.raises(DpmedError, match='weights'):
        A.audit_run(nonprivate_run, weights='first')
    # a run whose data cannot be rebuilt as trained is refused, naming the file
    import shutil
    bad = tmp_path / 'changed'
    shutil.copytree(nonprivate_run, bad)
    m = read_json(bad / 'metrics.json'); m['n_train'] += 1; write_json(bad / 'metrics.json', m)
    with pytest.raises(DpmedError, match='n_train'):
        A.audit_run(bad, n_boot=0)
    # a checkpoint without the requested weights
    import torch
    ck = A.load_checkpoint(bad / 'checkpoint.pt'); ck.pop('model_last')
    m['n_train'] -= 1; write_json(bad / 'metrics.json', m)
    torch.save(ck, bad / 'checkpoint.pt')
    with pytest.raises(DpmedError, match="model_last"):
        A.audit_run(bad, n_boot=0)


# ---------------------------------------------------------------- LiRA

def test_lira_scores_match_a_loop_over_images():
    rng = np.random.default_rng(5)
    S, n, L = 6, 40, 3
    inn = rng.random((S, n)) < 0.5
    inn[:, 0] = True                       # image 0 never out, image 1 never in: imputed from the label's shift
    inn[:, 1] = False
    sh = rng.normal(size=(S, n, L)) + inn[..., None]
    tgt = rng.normal(size=(n, L))
    got = A.lira_scores(tgt, sh, inn)
    expect = np.zeros(n)
    for l in range(L):
        mu_in, mu_out = {}, {}
        for j in range(n):
            a, b = sh[inn[:, j], j, l], sh[~inn[:, j], j, l]
            if len(a): mu_in[j] = a.mean()
            if len(b): mu_out[j] = b.mean()
        shift = np.mean([mu_in[j] - mu_out[j] for j in range(n) if j in mu_in and j in mu_out])
        for j in range(n):
            mu_in.setdefault(j, mu_out.get(j, np.nan) + shift)
            mu_out.setdefault(j, mu_in[j] - shift)
        ss_in = sum(((sh[inn[:, j], j, l] - mu_in[j]) ** 2).sum() for j in range(n))
        df_in = sum(max(inn[:, j].sum() - 1, 0) for j in range(n))
        ss_out = sum(((sh[~inn[:, j], j, l] - mu_out[j]) ** 2).sum() for j in range(n))
        df_out = sum(max((~inn[:, j]).sum() - 1, 0) for j in range(n))
        for j in range(n):
            expect[j] += stats.norm.logpdf(tgt[j, l], mu_in[j], math.sqrt(ss_in / df_in)) \
                - stats.norm.logpdf(tgt[j, l], mu_out[j], math.sqrt(ss_out / df_out))
    assert np.allclose(got, expect, rtol=1e-9, atol=1e-9)
    with pytest.raises(DpmedError):
        A.lira_scores(tgt, sh[:, :10], inn)


def test_shadow_inclusion_is_per_patient_and_fair():
    groups = np.repeat(np.arange(300), 2)
    inc = A.shadow_inclusion(groups, 8, seed=1)
    assert inc.shape == (8, 600) and np.array_equal(inc[:, ::2], inc[:, 1::2])
    assert stats.binomtest(int(inc[:, ::2].sum()), 8 * 300).pvalue > 0.001
    assert np.array_equal(inc, A.shadow_inclusion(groups, 8, seed=1))


def test_lira_finds_leakage_without_dp(nonprivate_run, tmp_path):
    rep = A.audit_run(nonprivate_run, attack='lira', shadows=4, out=tmp_path, n_boot=300)
    la = rep['lira']
    assert la['n_shadows'] == 4 and la['nonmembers'] == 'test'
    assert la['auc'] > 0.6 and la['auc_ci'][0] > 0.5, la
    assert 'LiRA' in rep['summary'] and read_json(tmp_path / 'audit.json')['lira']['auc'] == pytest.approx(la['auc'])
