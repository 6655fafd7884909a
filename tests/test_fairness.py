"""dpmed.fairness against hand computations, fairlearn, scikit-learn and scipy, and on synthetic run directories
with a known injected subgroup gap."""
import argparse, json, math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score, accuracy_score
from fairlearn.metrics import (MetricFrame, selection_rate, false_negative_rate, true_positive_rate,
                               false_positive_rate, demographic_parity_difference, equalized_odds_difference)

from dpmed.cli import build_parser
from dpmed.core import DpmedError
from dpmed import fairness as F
from dpmed.metrics import subgroup_bootstrap, bootstrap_counts, synthetic_run


# ---------------------------------------------------------------- the paper's SPD by hand
def test_paper_spd_hand_computation():
    # five age groups: accuracy and size
    acc = [0.92, 0.85, 0.80, 0.78, 0.70]; n = [100, 400, 200, 200, 100]
    # group 0: others' weighted mean = (400*.85 + 200*.80 + 200*.78 + 100*.70) / 900 = 726/900
    # group 4: (100*.92 + 400*.85 + 200*.80 + 200*.78) / 900 = 748/900
    want0 = 0.92 - 726 / 900; want4 = 0.70 - 748 / 900
    # group 2: (100*.92 + 400*.85 + 200*.78 + 100*.70) / 800 = 658/800
    want2 = 0.80 - 658 / 800
    got = F.paper_spd(acc, n)
    assert math.isclose(got[0], want0) and math.isclose(got[4], want4) and math.isclose(got[2], want2)
    # sex: female minus male regardless of sizes
    assert np.allclose(F.paper_spd([0.81, 0.86], [300, 700]), [-0.05, 0.05])
    # a group with an undefined value is left out of the others' means; an empty group too
    assert np.allclose(F.paper_spd([0.9, np.nan, 0.6], [10, 50, 30]), [0.3, np.nan, -0.3], equal_nan=True)
    assert np.allclose(F.paper_spd([0.9, 0.1, 0.6], [10, 0, 30]), [0.3, np.nan, -0.3], equal_nan=True)
    # vectorized over leading axes (resamples x labels x groups)
    v = np.random.default_rng(0).random((7, 3, 4))
    assert np.allclose(F.paper_spd(v, [1, 2, 3, 4])[2, 1], F.paper_spd(v[2, 1], [1, 2, 3, 4]))


# ---------------------------------------------------------------- fairlearn conventions
def _toy(seed=0, n=600):
    rng = np.random.default_rng(seed)
    grp = rng.choice(['A', 'B', 'C'], n, p=[0.5, 0.3, 0.2]).astype(object)
    y = (rng.random((n, 2)) < 0.35).astype(int)
    shift = pd.Series(grp).map({'A': 0.0, 'B': 0.1, 'C': -0.15}).to_numpy()
    s = np.clip(rng.random((n, 2)) * 0.6 + 0.35 * y + shift[:, None], 0, 1)
    return y, s, grp


def test_fairness_report_matches_fairlearn_and_sklearn():
    y, s, grp = _toy()
    thr = [0.5, 0.55]
    sb = subgroup_bootstrap(y, s, ['a', 'b'], {'g': grp}, thr, n_boot=100)
    gt, at = F.fairness_report(sb, {'g': 'A'})
    for j, lab in enumerate('ab'):
        pred = s[:, j] >= thr[j]
        r = at.query("attribute == 'g' and label == @lab").iloc[0]
        assert math.isclose(r.demographic_parity_difference, demographic_parity_difference(y[:, j], pred, sensitive_features=grp))
        assert math.isclose(r.equalized_odds_difference, equalized_odds_difference(y[:, j], pred, sensitive_features=grp))
        mf = MetricFrame(metrics={'sr': selection_rate, 'fnr': false_negative_rate}, y_true=y[:, j], y_pred=pred,
                         sensitive_features=grp)
        assert math.isclose(r.fnr_gap, mf.difference()['fnr'])
        aucs = {g: roc_auc_score(y[grp == g, j], s[grp == g, j]) for g in 'ABC'}
        assert math.isclose(r.worst_group_auroc, min(aucs.values())) and r.worst_group == min(aucs, key=aucs.get)
        assert math.isclose(r.auroc_gap, max(aucs.values()) - min(aucs.values()))
        for g in 'BC':
            row = gt.query("group == @g and label == @lab").iloc[0]
            assert math.isclose(row.spd_ppr, mf.by_group['sr'][g] - mf.by_group['sr']['A'])   # unprivileged - privileged
            assert math.isclose(row.fnr_diff, mf.by_group['fnr'][g] - mf.by_group['fnr']['A'])
        # paper SPD on accuracy by hand from sklearn accuracies
        accs = {g: accuracy_score(y[grp == g, j], pred[grp == g]) for g in 'ABC'}
        ns = {g: (grp == g).sum() for g in 'ABC'}
        want = accs['C'] - (ns['A'] * accs['A'] + ns['B'] * accs['B']) / (ns['A'] + ns['B'])
        assert math.isclose(gt.query("group == 'C' and label == @lab").paper_spd_accuracy.item(), want)
    assert at.privileged_rule.iloc[0] == 'given'


def test_default_privileged_is_largest_group_and_bad_names_raise():
    y, s, grp = _toy(1)
    sb = subgroup_bootstrap(y, s, ['a', 'b'], {'g': grp}, [0.5, 0.5], n_boot=20)
    _, at = F.fairness_report(sb)
    assert (at.privileged == 'A').all() and at.privileged_rule.iloc[0].startswith('largest')
    with pytest.raises(DpmedError, match='unknown subgroup'): F.fairness_report(sb, {'race': 'x'})
    with pytest.raises(DpmedError, match='no group'): F.fairness_report(sb, {'g': 'Z'})


def test_fairness_cis_come_from_the_same_resamples():
    y, s, grp = _toy(2, 300)
    counts = bootstrap_counts(300, 200, seed=3)
    sb = subgroup_bootstrap(y, s, ['a', 'b'], {'g': grp}, [0.5, 0.5], counts)
    gt, at = F.fairness_report(sb, {'g': 'A'})
    # recompute the paper SPD of group B on AUROC (label a) per resample by hand
    gi = {g: sb.index('g', g) for g in 'ABC'}; n = {g: sb.n_items[gi[g]] for g in 'ABC'}
    b = sb.boot[:, :, 0, 0]
    spd_b = b[:, gi['B']] - (n['A'] * b[:, gi['A']] + n['C'] * b[:, gi['C']]) / (n['A'] + n['C'])
    row = gt.query("group == 'B' and label == 'a'").iloc[0]
    assert math.isclose(row.paper_spd_auroc_lo, np.quantile(spd_b, 0.025))
    assert math.isclose(row.paper_spd_auroc_hi, np.quantile(spd_b, 0.975))
    gap = b[:, [gi[g] for g in 'ABC']].max(1) - b[:, [gi[g] for g in 'ABC']].min(1)
    r = at.query("label == 'a'").iloc[0]
    assert math.isclose(r.auroc_gap_hi, np.quantile(gap, 0.975))


def test_single_class_and_empty_groups_do_not_crash():
    y, s, grp = _toy(3, 200)
    y[grp == 'C', 1] = 0                       # label b has a single class in group C
    cat = pd.Categorical(grp, categories=['A', 'B', 'C', 'D'])     # D is empty
    sb = subgroup_bootstrap(y, s, ['a', 'b'], {'g': cat}, [0.5, 0.5], n_boot=30)
    gt, at = F.fairness_report(sb)
    assert np.isnan(gt.query("group == 'C' and label == 'b'").paper_spd_auroc.item())
    assert np.isnan(gt.query("group == 'D' and label == 'a'").paper_spd_auroc.item())
    r = at.query("label == 'b'").iloc[0]
    assert r.n_groups_auroc_defined == 2 and np.isfinite(r.auroc_gap)
    sb2 = subgroup_bootstrap(y, s, ['a', 'b'], {'g': np.where(grp == 'C', 'C', 'A')}, [0.5, 0.5], n_boot=10)
    _, at2 = F.fairness_report(sb2)
    r2 = at2.query("label == 'b'").iloc[0]
    assert np.isnan(r2.auroc_gap) and 'fewer than two' in r2.note


# ---------------------------------------------------------------- Pearson
def test_pearson_matches_scipy():
    rng = np.random.default_rng(0)
    for n in (4, 10, 50):
        x = rng.normal(size=n); y = 0.5 * x + rng.normal(size=n)
        got = F.pearson(x, y); ref = stats.pearsonr(x, y); ci = ref.confidence_interval(0.95)
        assert math.isclose(got['r'], ref.statistic) and math.isclose(got['p_value'], ref.pvalue)
        assert math.isclose(got['ci_lo'], ci.low) and math.isclose(got['ci_hi'], ci.high)
        # Fisher z by hand
        z, h = np.arctanh(ref.statistic), stats.norm.ppf(0.975) / math.sqrt(n - 3)
        assert math.isclose(got['ci_lo'], math.tanh(z - h), rel_tol=1e-9)
    got = F.pearson([1, 2, np.nan, 4, 5], [2, 1, 3, 5, 4])
    assert got['n'] == 4 and 'missing' in got['note']
    assert math.isclose(got['r'], stats.pearsonr([1, 2, 4, 5], [2, 1, 5, 4]).statistic)
    assert np.isnan(F.pearson([1, 2, 3], [1, 2, 3])['ci_lo'])
    with pytest.raises(DpmedError): F.pearson([1, 2], [1, 2, 3])


# ---------------------------------------------------------------- run directories
@pytest.fixture(scope='module')
def gap_run(tmp_path_factory):
    d = tmp_path_factory.mktemp('fair')
    return synthetic_run(d / 'gap', {'F': 0.70, 'M': 0.85}, n_patients=2000, epsilon=3.0, model_seed=4)


def _parser():
    return build_parser()


def test_fairness_run_reports_injected_gap(gap_run, tmp_path, capsys):
    args = _parser().parse_args(['fairness', str(gap_run), '--n-boot', '300', '--out', str(tmp_path / 'o'),
                                 '--privileged', 'sex=M'])
    assert args.func(args) == 0
    assert 'paper SPD sex' in capsys.readouterr().out
    fj = json.loads((tmp_path / 'o' / 'fairness.json').read_text())
    v, lo, hi = fj['sex_spd']['auroc']
    assert lo <= -0.15 <= hi and abs(v + 0.15) < 0.03          # the generator's gap: 0.70 - 0.85
    assert fj['attributes']['sex']['privileged'] == 'M' and fj['attributes']['sex']['worst_group'] == 'F'
    # the same number by hand from predictions.csv
    te = pd.read_csv(gap_run / 'predictions.csv')
    by = {g: np.mean([roc_auc_score(te.loc[te.sex == g, f'y_true_{l}'], te.loc[te.sex == g, f'y_score_{l}'])
                      for l in 'abc']) for g in 'FM'}
    assert math.isclose(v, by['F'] - by['M'])
    gt = pd.read_csv(tmp_path / 'o' / 'fairness_groups.csv')
    assert set(gt.attribute) == {'sex', 'age_group'} and (tmp_path / 'o' / 'fairness.csv').exists()
    # age groups have no injected effect: their paper SPD intervals cover 0 (mean label)
    ag = gt[(gt.attribute == 'age_group') & (gt.label == 'mean')]
    assert ((ag.paper_spd_auroc_lo <= 0.02) & (ag.paper_spd_auroc_hi >= -0.02)).all()


def test_paper_spd_sensitivity_specificity_at_validation_threshold(gap_run, tmp_path):
    "Paper SPD (F - M) on sensitivity and specificity at the Youden threshold of the validation set, against sklearn."
    from sklearn.metrics import recall_score, roc_curve
    f = F.fairness_run(gap_run, out=tmp_path, n_boot=50)
    te = pd.read_csv(gap_run / 'predictions.csv'); va = pd.read_csv(gap_run / 'val_predictions.csv')
    want = {'sensitivity': {}, 'specificity': {}}
    for l in 'abc':
        fpr, tpr, thr = roc_curve(va[f'y_true_{l}'], va[f'y_score_{l}'])
        t = thr[np.argmax(tpr - fpr)]                             # Youden's J on validation (sklearn's thresholds)
        for g in 'FM':
            x = te[te.sex == g]; yt, yp = x[f'y_true_{l}'], (x[f'y_score_{l}'] >= t).astype(int)
            want['sensitivity'].setdefault(g, []).append(recall_score(yt, yp))
            want['specificity'].setdefault(g, []).append(recall_score(1 - yt, 1 - yp))
    gt = f['_tables']['groups']
    for m in ('sensitivity', 'specificity'):
        per_label = {g: np.array(v) for g, v in want[m].items()}
        row = gt[(gt.attribute == 'sex') & (gt.group == 'F')].set_index('label')
        for j, l in enumerate('abc'):
            assert math.isclose(row.loc[l, f'paper_spd_{m}'], per_label['F'][j] - per_label['M'][j], abs_tol=1e-12)
        assert math.isclose(f['sex_spd'][m][0], per_label['F'].mean() - per_label['M'].mean(), abs_tol=1e-12)
        assert f['sex_spd'][m][1] <= f['sex_spd'][m][0] <= f['sex_spd'][m][2]


def test_fairness_run_bad_input(gap_run, tmp_path):
    with pytest.raises(DpmedError, match='unknown subgroup'): F.fairness_run(gap_run, subgroups=['race'], n_boot=5, out=tmp_path)
    with pytest.raises(DpmedError, match='ATTRIBUTE=GROUP'):
        a = _parser().parse_args(['fairness', str(gap_run), '--privileged', 'sexM']); a.func(a)
    with pytest.raises(DpmedError, match='either'):
        a = _parser().parse_args(['fairness']); a.func(a)
    with pytest.raises(DpmedError, match='no such run'): F.fairness_run(tmp_path / 'none')


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
    d = tmp_path_factory.mktemp('sweep')
    rows = []
    for i, (e, gap) in enumerate([(0.5, 0.25), (1.0, 0.2), (2.0, 0.12), (4.0, 0.1), (8.0, 0.02), (math.inf, 0.0)]):
        for seed in (0, 1):
            name = f'eps{e}_s{seed}'
            extra = {'train_positives': {'a': 120, 'b': 400, 'c': 60}}
            synthetic_run(d / name, {'F': 0.85 - gap, 'M': 0.85 - gap / 3}, epsilon=e, model_seed=10 * i + seed,
                          n_patients=250, labels=('a', 'b', 'c', 'd'), extra_metrics=extra)
            rows.append({'run_dir': name, 'epsilon': 'inf' if math.isinf(e) else e, 'dataset': 'synthetic', 'seed': seed})
    res = pd.DataFrame(rows); res.to_csv(d / 'results.csv', index=False)
    return d, res


def test_sweep_fairness_correlation(sweep):
    d, res = sweep
    sw = F.sweep_fairness(res, d, n_boot=0)
    runs = sw['runs']
    assert len(runs) == len(res) and (~runs.private).sum() == 2
    # SPD per run by hand: F minus M mean AUROC
    r0 = runs.iloc[0]; te = pd.read_csv(d / res.run_dir[0] / 'predictions.csv')
    by = {g: np.mean([roc_auc_score(te.loc[te.sex == g, f'y_true_{l}'], te.loc[te.sex == g, f'y_score_{l}'])
                      for l in 'abcd']) for g in 'FM'}
    assert math.isclose(r0.spd, by['F'] - by['M'])
    priv = runs[runs.private]
    ref = stats.pearsonr(priv.epsilon, priv.spd)
    c = sw['correlation'].iloc[0]
    assert c.n == 10 and math.isclose(c.r, ref.statistic) and math.isclose(c.p_value, ref.pvalue)
    assert c.r > 0.5                                   # the gap shrinks as epsilon grows
    # run directories as an explicit list
    sw2 = F.sweep_fairness(res.drop(columns='run_dir'), [d / p for p in res.run_dir], n_boot=0)
    assert math.isclose(sw2['correlation'].r.item(), c.r)


def test_dp_drop_correlations(sweep):
    d, res = sweep
    dd = F.dp_drop_correlations(res, d)
    pts = dd['points']
    def aucs(name):
        te = pd.read_csv(d / name / 'predictions.csv')
        return np.array([roc_auc_score(te[f'y_true_{l}'], te[f'y_score_{l}']) for l in 'abcd'])
    base = np.mean([aucs(f'eps{math.inf}_s{s}') for s in (0, 1)], axis=0)
    priv = np.mean([aucs(f'eps1.0_s{s}') for s in (0, 1)], axis=0)
    p1 = pts[pts.epsilon == 1.0].set_index('label')
    assert np.allclose(p1.loc[list('abcd'), 'auroc_drop'], base - priv)
    assert (p1.n_train_positives.to_numpy() == [120, 400, 60, np.nan]).sum() == 3     # 'd' has no count -> NaN
    c = dd['correlation'].query("epsilon == 1.0 and x == 'auroc_nonprivate'").iloc[0]
    assert math.isclose(c.r, stats.pearsonr(base, base - priv).statistic)
    c = dd['correlation'].query("epsilon == 1.0 and x == 'n_train_positives'").iloc[0]
    assert c.n == 3 and 'missing' in c.note
    dd2 = F.dp_drop_correlations(res, d, train_positives={'a': 1, 'b': 2, 'c': 3, 'd': 4})
    c2 = dd2['correlation'].query("epsilon == 1.0 and x == 'n_train_positives'").iloc[0]
    assert c2.n == 4 and math.isclose(c2.r, stats.pearsonr([1, 2, 3, 4], base - priv).statistic)


def test_sweep_cli_and_bad_tables(sweep, tmp_path, capsys):
    d, res = sweep
    args = _parser().parse_args(['fairness', '--sweep', str(d / 'results.csv'), '--n-boot', '20', '--out', str(tmp_path)])
    assert args.func(args) == 0
    assert 'epsilon vs SPD' in capsys.readouterr().out
    for f in ('sweep_spd', 'sweep_correlation', 'dp_drop_points', 'dp_drop_correlation'):
        assert (tmp_path / f'{f}.csv').exists()
    bad = res.copy(); bad.loc[0, 'epsilon'] = np.nan
    with pytest.raises(DpmedError, match='row 0: epsilon is missing'): F.sweep_fairness(bad, d, n_boot=0)
    bad = res.copy(); bad['epsilon'] = bad['epsilon'].astype(object); bad.loc[1, 'epsilon'] = 'lots'
    with pytest.raises(DpmedError, match='row 1'): F.sweep_fairness(bad, d, n_boot=0)
    with pytest.raises(DpmedError, match='no group'): F.sweep_fairness(res, d, group='X', n_boot=0)
    with pytest.raises(DpmedError, match='run_dirs'): F.sweep_fairness(res, [d], n_boot=0)
