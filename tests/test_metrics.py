"""dpmed.metrics against independent references: scikit-learn (AUROC, ROC curve, confusion metrics), per-resample
loops on the same resample indices, simulated data with a known AUROC (interval coverage) and statsmodels."""
import argparse, json, math, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import (roc_auc_score, roc_curve, confusion_matrix, accuracy_score, f1_score,
                             precision_score, recall_score)
from statsmodels.stats.proportion import proportion_confint

from dpmed.cli import build_parser
from dpmed.core import DpmedError
from dpmed import metrics as M


def _sk_auc(y, s):
    return roc_auc_score(y, s) if 0 < y.sum() < len(y) else np.nan


# ---------------------------------------------------------------- AUROC
@pytest.mark.parametrize('seed,n,L,decimals,prev', [(0, 50, 1, None, 0.5), (1, 500, 8, 2, 0.1), (2, 2000, 3, 1, 0.02),
                                                     (3, 300, 5, None, 0.7), (4, 20, 2, 0, 0.3)])
def test_auroc_equals_sklearn(seed, n, L, decimals, prev):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, L)) < prev).astype(int); y[0] = 1; y[1] = 0
    s = rng.random((n, L)) + 0.3 * y
    if decimals is not None: s = np.round(s, decimals)      # heavy ties
    got = M.auroc(y, s)
    ref = [roc_auc_score(y[:, j], s[:, j]) for j in range(L)]
    assert np.allclose(got, ref, rtol=0, atol=1e-12)
    assert math.isclose(M.auroc(y[:, 0], s[:, 0]), ref[0], abs_tol=1e-12)


def test_auroc_single_class_is_nan_and_never_raises():
    y = np.array([[1, 0], [1, 1], [1, 0]]); s = np.array([[.1, .2], [.3, .4], [.5, .6]])
    got = M.auroc(y, s)
    assert np.isnan(got[0]) and got[1] == 0.5
    assert np.isnan(M.auroc([0, 0, 0], [0.1, 0.2, 0.3]))


@pytest.mark.parametrize('y,s,msg', [
    (np.zeros((3, 2)), np.zeros((3, 3)), 'shape'),
    (np.array([0, 2, 1]), np.array([.1, .2, .3]), '0/1'),
    (np.array([0, 1, 1]), np.array([.1, np.nan, .3]), 'finite'),
    (np.zeros((0,)), np.zeros((0,)), 'empty'),
])
def test_auroc_bad_input(y, s, msg):
    with pytest.raises(DpmedError, match=msg): M.auroc(y, s)


# ---------------------------------------------------------------- bootstrap machinery
def test_counts_match_indices_and_are_seeded():
    c1 = M.bootstrap_counts(1000, 50, seed=7); c2 = M.bootstrap_counts(1000, 50, seed=7)
    assert np.array_equal(c1, c2) and not np.array_equal(c1, M.bootstrap_counts(1000, 50, seed=8))
    idx = M.bootstrap_indices(1000, 50, seed=7)
    naive = np.zeros((1000, 50), int)
    for b in range(50):
        for i in idx[b]: naive[i, b] += 1
    assert np.array_equal(c1, naive)
    assert (c1.sum(0) == 1000).all()


def test_cluster_counts_keep_patients_together():
    pid = np.repeat(np.arange(100), np.arange(100) % 4 + 1)   # 1-4 images per patient
    c = M.bootstrap_counts(len(pid), 300, seed=1, clusters=pid)
    for p in (0, 3, 57):
        rows = c[pid == p]
        assert (rows == rows[0]).all()
    per_patient = np.stack([c[pid == p][0] for p in range(100)])
    assert (per_patient.sum(0) == 100).all()           # 100 patients drawn per resample
    # patient draw frequencies are Binomial(100, 1/100) -> mean 1
    assert abs(per_patient.mean() - 1) < 0.02
    with pytest.raises(DpmedError, match='cluster'): M.bootstrap_counts(10, 5, clusters=np.arange(9))


@pytest.mark.parametrize('seed,n,prev,decimals', [(0, 300, 0.3, None), (1, 200, 0.05, 2), (2, 60, 0.5, 1),
                                                  (3, 25, 0.1, None)])
def test_auroc_from_counts_equals_sklearn_loop_on_same_resamples(seed, n, prev, decimals):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < prev).astype(int)
    s = rng.random((n, 3)) + 0.5 * y
    if decimals is not None: s = np.round(s, decimals)
    idx = M.bootstrap_indices(n, 60, seed=seed)
    got = M.auroc_from_counts(y, s, M.bootstrap_counts(n, 60, seed=seed))
    ref = np.array([[_sk_auc(y[i, j], s[i, j]) for j in range(3)] for i in idx])
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.allclose(got, ref, rtol=0, atol=1e-12, equal_nan=True)


def test_auroc_from_counts_with_large_counts_and_int32_counts():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 40); s = np.round(rng.random(40), 1)
    w = rng.integers(0, 400, (40, 7)).astype(np.int32)        # counts above 255
    got = M.auroc_from_counts(y, s, w)
    ref = [roc_auc_score(np.repeat(y, w[:, b]), np.repeat(s, w[:, b])) for b in range(7)]
    assert np.allclose(got, ref, atol=1e-12)


def test_percentile_ci_and_pvalue():
    x = np.random.default_rng(0).normal(size=(999, 3))
    assert np.allclose(M.percentile_ci(x), np.quantile(x, [0.025, 0.975], axis=0).T)
    d = np.r_[np.full(90, -1.0), np.full(10, 1.0)]
    assert math.isclose(M.bootstrap_pvalue(d, 'less'), 11 / 101)
    assert math.isclose(M.bootstrap_pvalue(d, 'greater'), 91 / 101)
    assert math.isclose(M.bootstrap_pvalue(d), 22 / 101)
    with pytest.raises(DpmedError, match='alternative'): M.bootstrap_pvalue(d, 'sideways')


# ---------------------------------------------------------------- coverage on simulated data
def _binormal(rng, n, auc, prev=0.3):
    d = math.sqrt(2) * stats.norm.ppf(auc)
    y = (rng.random(n) < prev).astype(int)
    return y, y * d + rng.normal(size=n)


def test_bootstrap_ci_covers_true_auroc_at_nominal_rate():
    rng = np.random.default_rng(123)
    true = np.array([0.7, 0.8, 0.9]); hits = np.zeros(3); hit_mean = 0; R = 200
    for r in range(R):
        ys, ss = zip(*[_binormal(rng, 600, a) for a in true])
        sm = M.auroc_summary(np.stack(ys, 1), np.stack(ss, 1), ['a', 'b', 'c'], n_boot=1000, seed=r)
        for j, k in enumerate('abc'):
            lo, hi = sm['auroc_ci'][k]; hits[j] += lo <= true[j] <= hi
        lo, hi = sm['auroc_mean_ci']; hit_mean += lo <= true.mean() <= hi
    cov = hits / R
    lo_w, hi_w = proportion_confint(hits.sum(), 3 * R, method='wilson')
    print('coverage per label', cov, 'mean', hit_mean / R, 'pooled Wilson CI', lo_w, hi_w)
    assert all(0.92 <= c <= 0.98 for c in cov), cov
    assert 0.92 <= hit_mean / R <= 0.98
    assert lo_w <= 0.95 <= hi_w + 0.01


def test_cluster_bootstrap_covers_when_patients_contribute_several_images():
    rng = np.random.default_rng(7); R = 150; k = 4; n_pat = 150
    d = 1.0; su, se = 1.0, 0.5
    true = stats.norm.cdf(d / math.sqrt(2 * (su ** 2 + se ** 2)))       # items from different patients
    cov = {'items': 0, 'patients': 0}
    for r in range(R):
        yp = (rng.random(n_pat) < 0.4).astype(int); up = rng.normal(0, su, n_pat)
        pid = np.repeat(np.arange(n_pat), k); y = yp[pid]
        s = y * d + up[pid] + rng.normal(0, se, len(pid))
        for name, cl in (('items', None), ('patients', pid)):
            lo, hi = M.auroc_summary(y, s, ['x'], n_boot=500, seed=r, clusters=cl)['auroc_ci']['x']
            cov[name] += lo <= true <= hi
    cov = {k_: v / R for k_, v in cov.items()}
    print(cov)
    assert 0.90 <= cov['patients'] <= 0.99          # nominal within Monte-Carlo error (150 repetitions)
    assert cov['items'] < cov['patients'] - 0.1     # ignoring the clustering under-covers


def test_paired_pvalues_null_and_alternative():
    rng = np.random.default_rng(3); rej = 0; R = 80
    for r in range(R):          # two equally good models with independent noise: two-sided test at 5%
        y = (rng.random(300) < 0.3).astype(int); base = y * 1.0
        sa = base + rng.normal(size=300); sb = base + rng.normal(size=300)
        c = M.bootstrap_counts(300, 400, seed=r)
        d = M.auroc_from_counts(y, sa, c) - M.auroc_from_counts(y, sb, c)
        rej += M.bootstrap_pvalue(d) < 0.05
    assert rej / R <= 0.12
    y = (rng.random(500) < 0.3).astype(int)
    good = y * 1.5 + rng.normal(size=500); bad = y * 0.5 + rng.normal(size=500)
    c = M.bootstrap_counts(500, 500, seed=0)
    d = M.auroc_from_counts(y, bad, c) - M.auroc_from_counts(y, good, c)
    assert M.bootstrap_pvalue(d, 'less') < 0.01 and M.bootstrap_pvalue(d, 'greater') > 0.99


# ---------------------------------------------------------------- thresholds
def test_youden_and_target_thresholds_against_roc_curve():
    rng = np.random.default_rng(0)
    for trial in range(20):
        y = (rng.random(300) < 0.3).astype(int); s = np.round(rng.random(300) + 0.4 * y, 2)
        fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
        assert M.choose_thresholds(y, s, 'youden') == thr[np.argmax(tpr - fpr)]
        t = M.choose_thresholds(y, s, 'sensitivity:0.9')
        assert t == thr[np.flatnonzero(tpr >= 0.9)[0]]            # highest threshold reaching the target
        t = M.choose_thresholds(y, s, 'specificity:0.8')
        assert t == thr[np.flatnonzero(1 - fpr >= 0.8)[-1]]       # lowest threshold keeping the target
    assert M.choose_thresholds(y, s, 'fixed:0.3') == 0.3
    assert np.isnan(M.choose_thresholds(np.ones(5), np.arange(5.)))
    for bad in ('youdn', 'sensitivity:2', 'fixed:', 'specificity:0'):
        with pytest.raises(DpmedError, match='threshold policy'): M.parse_threshold_policy(bad)


def test_threshold_metrics_against_sklearn():
    rng = np.random.default_rng(1)
    y = (rng.random((400, 3)) < [0.1, 0.3, 0.5]).astype(int); s = rng.random((400, 3)) * 0.7 + 0.3 * y
    t = np.array([0.4, 0.5, 0.6])
    m = M.threshold_metrics(y, s, t)
    for j in range(3):
        p = s[:, j] >= t[j]
        tn, fp, fn, tp = confusion_matrix(y[:, j], p).ravel()
        assert math.isclose(m['accuracy'][j], accuracy_score(y[:, j], p))
        assert math.isclose(m['sensitivity'][j], recall_score(y[:, j], p))
        assert math.isclose(m['specificity'][j], tn / (tn + fp))
        assert math.isclose(m['precision'][j], precision_score(y[:, j], p))
        assert math.isclose(m['f1'][j], f1_score(y[:, j], p))
        assert math.isclose(m['ppr'][j], p.mean())
        assert math.isclose(m['fnr'][j], fn / (fn + tp))
        assert math.isclose(m['prevalence'][j], y[:, j].mean())


# ---------------------------------------------------------------- subgroups in one pass
def _toy(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < 0.3).astype(int); s = rng.random((n, 2)) * 0.6 + 0.4 * y
    sex = np.where(rng.random(n) < 0.5, 'F', 'M').astype(object)
    age = np.array(['[0,30)', '[30,60)', '[60,70)'], dtype=object)[rng.integers(0, 3, n)]
    return y, s, sex, age


def test_subgroup_bootstrap_matches_direct_computation():
    y, s, sex, age = _toy()
    counts = M.bootstrap_counts(len(y), 100, seed=4)
    sb = M.subgroup_bootstrap(y, s, ['a', 'b'], {'sex': sex, 'age': age}, [0.5, 0.5], counts)
    assert sb.groups[0] == ('all', 'all') and ('age', '[60,70)') in sb.groups
    for attr, vals in (('sex', sex), ('age', age)):
        for g in np.unique(vals):
            m = vals == g
            pt, bt = sb.value('auroc', attr, g, 'b')
            assert math.isclose(pt, roc_auc_score(y[m, 1], s[m, 1]))
            assert np.allclose(bt, M.auroc_from_counts(y[m, 1], s[m, 1], counts[m]), equal_nan=True)
            pt, bt = sb.value('sensitivity', attr, g, 'a')
            assert math.isclose(pt, recall_score(y[m, 0], s[m, 0] >= 0.5))
            b = 17; w = counts[m, b]      # one resample by hand: repeat items
            yr, pr = np.repeat(y[m, 0], w), np.repeat(s[m, 0] >= 0.5, w)
            assert math.isclose(bt[b], recall_score(yr, pr))
            assert math.isclose(sb.value('ppr', attr, g, 'a')[1][b], pr.mean())
    # mean over labels
    pt, bt = sb.value('auroc', 'sex', 'F', 'mean')
    assert math.isclose(pt, np.mean([sb.value('auroc', 'sex', 'F', l)[0] for l in 'ab']))
    tab = sb.table()
    assert len(tab) == len(sb.groups) * 3 and {'auroc_lo', 'fnr_hi', 'n_patients', 'prevalence'} <= set(tab.columns)


def test_subgroup_edge_cases_are_reported_not_raised():
    y, s, sex, age = _toy(60)
    y[sex == 'F', 1] = 0                                    # label b: a single class among women
    sex[:3] = None                                          # missing group labels
    age_cat = pd.Categorical(age, categories=['[0,30)', '[30,60)', '[60,70)', '[80,100)'])   # one empty bin
    sb = M.subgroup_bootstrap(y, s, ['a', 'b'], {'sex': sex, 'age': age_cat}, [0.5, 0.5], n_boot=50)
    assert np.isnan(sb.value('auroc', 'sex', 'F', 'b')[0])
    assert not np.isnan(sb.value('auroc', 'sex', 'F', 'mean')[0])        # mean over the defined label
    assert ('age', '[80,100)') in sb.groups and sb.n_items[sb.index('age', '[80,100)')] == 0
    notes = ' | '.join(sb.notes)
    assert 'missing group label' in notes and 'empty group' in notes and 'AUROC undefined' in notes
    tab = sb.table()
    assert tab.query("group == 'F' and label == 'b'")['auroc_nan_resamples'].item() == 50
    with pytest.raises(DpmedError, match='group labels'):
        M.subgroup_bootstrap(y, s, ['a', 'b'], {'sex': sex[:-1]}, n_boot=5)


def test_compare_is_paired():
    y, s, sex, _ = _toy(300, seed=2)
    rng = np.random.default_rng(9)
    worse = s + rng.normal(0, 0.4, s.shape)
    c = M.bootstrap_counts(300, 300, seed=1)
    a = M.subgroup_bootstrap(y, worse, ['a', 'b'], {'sex': sex}, [0.5, 0.5], c)
    b = M.subgroup_bootstrap(y, s, ['a', 'b'], {'sex': sex}, [0.5, 0.5], c)
    cmp = M.compare(a, b, 'less', metrics=['auroc'])
    row = cmp.query("group == 'all' and label == 'a'").iloc[0]
    d = a.boot[:, 0, 0, 0] - b.boot[:, 0, 0, 0]
    assert math.isclose(row.diff_lo, np.quantile(d, 0.025)) and math.isclose(row.p_value, M.bootstrap_pvalue(d, 'less'))
    assert row['diff'] < 0 and row.p_value < 0.05
    # unpaired resamples are refused
    b2 = M.subgroup_bootstrap(y, s, ['a', 'b'], {'sex': sex}, [0.5, 0.5], n_boot=100)
    with pytest.raises(DpmedError, match='same'): M.compare(a, b2)


# ---------------------------------------------------------------- run directories and the CLI
@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp('runs')
    dp = M.synthetic_run(d / 'dp', {'F': 0.70, 'M': 0.85}, epsilon=2.0, model_seed=1, n_patients=500)
    base = M.synthetic_run(d / 'base', {'F': 0.85, 'M': 0.85}, model_seed=2, n_patients=500)
    return d, dp, base


def _parser():
    return build_parser()


def test_evaluate_run_outputs_and_values(runs, capsys):
    d, dp, base = runs
    out = d / 'eval_out'
    args = _parser().parse_args(['evaluate', str(dp), '--baseline', str(base), '--n-boot', '200',
                                 '--alternative', 'less', '--out', str(out)])
    assert args.func(args) == 0
    assert 'AUROC' in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ['comparison.csv', 'evaluation.json', 'subgroups.csv']
    ev = json.loads((out / 'evaluation.json').read_text())
    te = pd.read_csv(dp / 'predictions.csv')
    for l in 'abc':
        assert math.isclose(ev['metrics'][l]['auroc']['value'], roc_auc_score(te[f'y_true_{l}'], te[f'y_score_{l}']))
    val = pd.read_csv(dp / 'val_predictions.csv')       # thresholds come from validation (Youden)
    fpr, tpr, thr = roc_curve(val['y_true_a'], val['y_score_a'], drop_intermediate=False)
    assert ev['thresholds']['a'] == thr[np.argmax(tpr - fpr)] and ev['threshold_source'] == 'validation set'
    sub = pd.read_csv(out / 'subgroups.csv')
    f = te.sex == 'F'
    row = sub.query("attribute == 'sex' and group == 'F' and label == 'a'").iloc[0]
    assert math.isclose(row.auroc, roc_auc_score(te.loc[f, 'y_true_a'], te.loc[f, 'y_score_a']))
    assert math.isclose(row.accuracy, accuracy_score(te.loc[f, 'y_true_a'], te.loc[f, 'y_score_a'] >= ev['thresholds']['a']))
    assert set(sub.group[sub.attribute == 'age_group']) == {'[0,30)', '[30,60)', '[60,70)', '[70,80)', '[80,100)'}
    c = ev['comparison']['per_label']['mean']
    assert c['diff'] < 0 and c['p_value'] < 0.05            # the DP run is worse for women
    cmp = pd.read_csv(out / 'comparison.csv')
    assert {'diff_lo', 'p_holm'} <= set(cmp.columns)
    assert not list(out.glob('.*'))                          # no temporary files left


def test_evaluate_aligns_baseline_by_id(runs, tmp_path):
    d, dp, base = runs
    shuffled = tmp_path / 'shuffled'; shuffled.mkdir()
    for f in ('config.yaml', 'metrics.json', 'val_predictions.csv'): (shuffled / f).write_bytes((base / f).read_bytes())
    pd.read_csv(base / 'predictions.csv').sample(frac=1, random_state=0).to_csv(shuffled / 'predictions.csv', index=False)
    a = M.evaluate_run(dp, baseline=base, n_boot=50, out=tmp_path / 'a')['_tables']['comparison']
    b = M.evaluate_run(dp, baseline=shuffled, n_boot=50, out=tmp_path / 'b')['_tables']['comparison']
    pd.testing.assert_frame_equal(a, b)


def _copy_run(src, dst, edit=None, drop=()):
    dst.mkdir()
    for f in ('config.yaml', 'metrics.json', 'predictions.csv', 'val_predictions.csv'):
        if f not in drop: (dst / f).write_bytes((src / f).read_bytes())
    if edit is not None:
        df = pd.read_csv(dst / 'predictions.csv', dtype={'id': str}); edit(df); df.to_csv(dst / 'predictions.csv', index=False)
    return dst


def test_evaluate_bad_inputs(runs, tmp_path):
    d, dp, base = runs
    def setv(col, row, v):
        def f(df): df[col] = df[col].astype(object); df.loc[row, col] = v
        return f
    cases = [
        (dict(edit=setv('y_true_a', 4, 2)), r'row 6, column y_true_a'),
        (dict(edit=setv('y_score_b', 0, 'x')), r'row 2, column y_score_b'),
        (dict(edit=lambda df: df.pop('y_score_c')), 'missing column'),
        (dict(edit=setv('id', 1, 't000000')), 'duplicate id'),
    ]
    for i, (kw, msg) in enumerate(cases):
        r = _copy_run(dp, tmp_path / f'bad{i}', **kw)
        with pytest.raises(DpmedError, match=msg): M.evaluate_run(r, n_boot=5)
    r = _copy_run(dp, tmp_path / 'noval', drop=('val_predictions.csv',))
    with pytest.raises(DpmedError, match='val_predictions.csv'): M.evaluate_run(r, n_boot=5)
    ev = M.evaluate_run(r, n_boot=5, threshold='paper')                  # explicit paper mode: tuned on test
    assert ev['threshold_source'].startswith('test set')
    with pytest.raises(DpmedError, match='unknown subgroup'): M.evaluate_run(dp, n_boot=5, subgroups=['race'])
    with pytest.raises(DpmedError, match='no such run'): M.evaluate_run(tmp_path / 'nope')
    other = M.synthetic_run(tmp_path / 'other', data_seed=9)
    with pytest.raises(DpmedError, match='test ids differ'): M.evaluate_run(dp, baseline=other, n_boot=5)
    flipped = _copy_run(base, tmp_path / 'flipped', edit=lambda df: df.__setitem__('y_true_a', 1 - df['y_true_a']))
    with pytest.raises(DpmedError, match='different y_true'): M.evaluate_run(dp, baseline=flipped, n_boot=5)
    # a subgroup column absent from predictions.csv is derived from its source column and bins
    r = _copy_run(dp, tmp_path / 'derive', edit=lambda df: df.pop('age_group'))
    sub = M.evaluate_run(r, n_boot=5)['_tables']['subgroups']
    assert '[80,100)' in set(sub.group)
    # the CLI turns bad input into DpmedError (the CLI prints it, exit 2)
    args = _parser().parse_args(['evaluate', str(tmp_path / 'noval')])
    with pytest.raises(DpmedError): args.func(args)


def test_bootstrap_level_is_decided_once_for_every_consumer(runs, tmp_path):
    "evaluate, fairness and metrics.json resample patients whenever ids are known (same draws); image level on request."
    from dpmed.fairness import run_subgroups
    d, dp, base = runs
    rp = M.load_predictions(dp)
    assert rp.test.patient_id.duplicated().any()                  # several images per patient in this run
    auto = M.evaluate_run(dp, n_boot=300, out=tmp_path / 'a')
    pat = M.evaluate_run(dp, n_boot=300, bootstrap='patient', out=tmp_path / 'p')
    img = M.evaluate_run(dp, n_boot=300, bootstrap='image', out=tmp_path / 'i')
    assert (auto['bootstrap_unit'], pat['bootstrap_unit'], img['bootstrap_unit']) == ('patient', 'patient', 'image')
    ci = auto['metrics']['mean']['auroc']['ci']
    assert ci == pat['metrics']['mean']['auroc']['ci'] and ci != img['metrics']['mean']['auroc']['ci']
    # metrics.json's summary (patient clusters, written by training) draws the very same resamples
    y, s = rp.arrays('test')
    ref = M.auroc_summary(y, s, rp.labels, n_boot=300, seed=0, clusters=rp.test.patient_id.to_numpy())
    assert np.allclose(ci, ref['auroc_mean_ci'])
    # and so does dpmed fairness (its subgroup 'all' row is the whole test set)
    _, sb = run_subgroups(dp, n_boot=300)
    assert 'patient-level' in sb.notes[0]
    assert np.allclose(M.percentile_ci(sb.value('auroc')[1]), ref['auroc_mean_ci'])
    _, sbi = run_subgroups(dp, n_boot=300, bootstrap='image')
    assert 'image-level' in sbi.notes[0] and np.allclose(M.percentile_ci(sbi.value('auroc')[1]),
                                                           img['metrics']['mean']['auroc']['ci'])
    # the CLI option (parent parser of evaluate and fairness)
    args = _parser().parse_args(['evaluate', str(dp), '--bootstrap', 'image', '--n-boot', '20', '--out', str(tmp_path / 'c')])
    assert args.bootstrap == 'image'
    with pytest.raises(DpmedError, match='bootstrap level'): M.evaluate_run(dp, n_boot=5, bootstrap='cluster')


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests
    rng = np.random.default_rng(0)
    for m in (1, 2, 8, 30):
        p = rng.random(m) ** 3
        assert np.allclose(M.holm(p), multipletests(p, method='holm')[1])
    p = np.array([0.01, np.nan, 0.2, 0.01])
    assert np.allclose(M.holm(p), np.r_[multipletests(p[[0, 2, 3]], method='holm')[1][:1], np.nan,
                                        multipletests(p[[0, 2, 3]], method='holm')[1][1:]], equal_nan=True)
