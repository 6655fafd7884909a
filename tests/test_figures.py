"""dpmed figures: every figure from a sweep folder, tables checked against sklearn/scipy on runs with known gaps."""
import contextlib, io, json, math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from dpmed.cli import main
from dpmed.core import write_json
from dpmed.metrics import synthetic_run
from dpmed.runner import collect_results, write_results
from dpmed.figures import load_results, study_figures

EPS = [math.inf, 8, 4, 2, 1]
# the female AUROC falls with epsilon, the male one stays: SPD (F - M) grows more negative as epsilon shrinks
AUROC_F = {math.inf: 0.9, 8: 0.85, 4: 0.8, 2: 0.75, 1: 0.7}
AUROC_M = 0.9


@pytest.fixture(scope='module')
def sweep_dir(tmp_path_factory):
    "A sweep folder of synthetic runs (known subgroup AUROCs), 2 seeds, with results.csv, one audited run."
    root = tmp_path_factory.mktemp('sweep')
    for e in EPS:
        for seed in (0, 1):
            name = f"{'nonprivate' if math.isinf(e) else f'eps{e}'}_seed{seed}"
            synthetic_run(root / name, {'F': AUROC_F[e], 'M': AUROC_M}, labels=('a', 'b', 'c', 'd'), n_patients=300,
                          epsilon=e, model_seed=seed, data_seed=0,
                          extra_metrics=dict(model='fake', target_epsilon=None if math.isinf(e) else e,
                                             noise_multiplier=1.0, steps=10, best_epoch=1, n_train=500, n_test=600,
                                             train_seconds=1.0, train_positives={'a': 10, 'b': 40, 'c': 160, 'd': 640}))
    write_results(collect_results(root), root / 'results.csv')
    # one audit with its ROC points (as dpmed audit would write them)
    write_json(root / 'eps8_seed0' / 'audit.json',
               {'weights': 'last', 'membership_inference': {'auc': 0.52, 'auc_ci': [0.5, 0.54], 'advantage': 0.04,
                                                            'roc': {'fpr': [0, 0.5, 1], 'tpr': [0, 0.55, 1]}}})
    return root


@pytest.fixture(scope='module')
def drawn(sweep_dir):
    return study_figures(sweep_dir, sweep_dir / 'figs', n_boot=200)


def test_every_supported_figure_is_written_as_png_and_svg(drawn, sweep_dir):
    notes = drawn['_notes']
    names = {k for k in drawn if k != '_notes'}
    assert names == {'auroc_vs_epsilon', 'auroc_vs_epsilon_per_label_synthetic', 'subgroup_auroc_vs_epsilon',
                     'spd_vs_epsilon', 'auroc_drop_vs_positives', 'roc_curves_synthetic', 'mia_roc_vs_epsilon'}
    for png, svg in (drawn[n] for n in names):
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and svg.read_text().lstrip().startswith('<?xml')
    # the synthetic dataset cannot be rebuilt from its config: the data figure is skipped, with a note
    assert any(n.startswith('data figure for synthetic skipped') for n in notes), notes
    summ = (sweep_dir / 'figs' / 'summary.md').read_text()
    assert summ.startswith('| dataset | target ε |') and summ.count('\n') == 2 + len(EPS)


def test_subgroup_auroc_matches_sklearn_per_group(drawn, sweep_dir):
    sub = pd.read_csv(sweep_dir / 'figs' / 'tables' / 'subgroup_auroc.csv')
    for run in ('eps1_seed0', 'nonprivate_seed1'):
        p = pd.read_csv(sweep_dir / run / 'predictions.csv')
        for sex in ('F', 'M'):
            q = p[p.sex == sex]
            ref = np.mean([roc_auc_score(q[f'y_true_{l}'], q[f'y_score_{l}']) for l in 'abcd'])
            got = sub[(sub.run == run) & (sub.attribute == 'sex') & (sub.group == sex)].auroc.item()
            assert got == pytest.approx(ref, abs=1e-12)


def test_spd_recovers_the_known_gap_and_pearson_matches_scipy(drawn, sweep_dir):
    spd = pd.read_csv(sweep_dir / 'figs' / 'tables' / 'spd.csv')
    f = spd[(spd.attribute == 'sex') & (spd.group == 'F')]
    for e in EPS:
        got = f[f.target_epsilon == e].spd.mean()                       # mean over the two seeds
        assert got == pytest.approx(AUROC_F[e] - AUROC_M, abs=0.06), (e, got)
    # female - male exactly: the paper's SPD for two groups
    sub = pd.read_csv(sweep_dir / 'figs' / 'tables' / 'subgroup_auroc.csv').set_index(['run', 'attribute', 'group'])
    r = f.iloc[3]
    assert r.spd == pytest.approx(sub.auroc[(r.run, 'sex', 'F')] - sub.auroc[(r.run, 'sex', 'M')], abs=1e-12)
    corr = pd.read_csv(sweep_dir / 'figs' / 'tables' / 'spd_correlation.csv')
    c = corr[(corr.attribute == 'sex') & (corr.group == 'F')].iloc[0]
    priv = f[np.isfinite(f.epsilon)]
    ref = stats.pearsonr(priv.epsilon, priv.spd)
    assert c.n == 8 and c.r == pytest.approx(ref.statistic, abs=1e-12) and c.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert c.r > 0.5                                                    # the gap shrinks as epsilon grows


def test_dp_drop_points_match_sklearn(drawn, sweep_dir):
    pts = pd.read_csv(sweep_dir / 'figs' / 'tables' / 'dp_drop_points.csv')
    def auc(run, l):
        p = pd.read_csv(sweep_dir / run / 'predictions.csv'); return roc_auc_score(p[f'y_true_{l}'], p[f'y_score_{l}'])
    for l in 'abcd':
        base = np.mean([auc(f'nonprivate_seed{s}', l) for s in (0, 1)])
        priv = np.mean([auc(f'eps2_seed{s}', l) for s in (0, 1)])
        row = pts[(pts.epsilon == 2) & (pts.label == l)].iloc[0]
        assert row.auroc_drop == pytest.approx(base - priv, abs=1e-12)
        assert row.n_train_positives == {'a': 10, 'b': 40, 'c': 160, 'd': 640}[l]


def test_figures_cli(tmp_path, sweep_dir):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(['figures', str(sweep_dir), '--out', str(tmp_path / 'f'), '--n-boot', '50', '--quiet'])
    assert rc == 0, err.getvalue()
    assert 'auroc_vs_epsilon.png' in out.getvalue() and 'note: data figure' in out.getvalue()
    assert (tmp_path / 'f' / 'spd_vs_epsilon.svg').exists()
    with contextlib.redirect_stderr(err): rc = main(['figures', str(tmp_path / 'nothing')])
    assert rc == 3 and 'no results.csv' in err.getvalue()


def _named_run(path, dataset, labels, e, seed, auroc_f, pretrained=None):
    "A synthetic run of `dataset` (its own name in metrics.json), optionally fine-tuned from `pretrained`."
    import yaml
    synthetic_run(path, {'F': auroc_f, 'M': 0.85}, labels=labels, n_patients=150, epsilon=e, model_seed=seed, data_seed=0,
                  extra_metrics=dict(model='fake', target_epsilon=None if math.isinf(e) else e,
                                     noise_multiplier=1.0, steps=10, best_epoch=1, n_train=300, n_test=300,
                                     train_seconds=1.0, train_positives={l: 50 for l in labels}))
    m = json.loads((path / 'metrics.json').read_text()); m['dataset'] = dataset
    write_json(path / 'metrics.json', m)
    if pretrained:
        cfg = yaml.safe_load((path / 'config.yaml').read_text())
        cfg['model'] = {'pretrained': str(path.parent / 'pretrain' / pretrained)}
        (path / 'config.yaml').write_text(yaml.safe_dump(cfg))


def test_several_datasets_and_a_pretrained_arm_get_their_own_panels_and_rows(tmp_path):
    "Two named datasets with different labels, one with a pretrained arm: a panel, a row per seed-mean, no mixing."
    from dpmed.figures import plot_auroc_vs_epsilon, summary_table, gap_table, dataset_title
    root = tmp_path / 'sweep'
    for e in (math.inf, 8):
        for seed in (0, 1):
            tag = f"{'nonprivate' if math.isinf(e) else f'eps{e:g}'}_seed{seed}"
            _named_run(root / f'nih_{tag}', 'nih_cxr14_1000', ('effusion', 'atelectasis', 'mass'), e, seed, 0.75)
            _named_run(root / f'nih_pre_{tag}', 'nih_cxr14_1000', ('effusion', 'atelectasis', 'mass'), e, seed, 0.8,
                       pretrained='pneumonia_public')
            _named_run(root / f'pneu_{tag}', 'pneumoniamnist', ('pneumonia',), e, seed, 0.9)
    write_results(collect_results(root), root / 'results.csv')
    res = load_results(root)
    assert set(res.pretrained) == {'', 'pneumonia_public'}
    fig = plot_auroc_vs_epsilon(res)
    assert [ax.get_title() for ax in fig.axes] == [dataset_title('nih_cxr14_1000'), dataset_title('pneumoniamnist')]
    nih_legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any('from scratch' in t for t in nih_legend) and any('pretrained on pneumonia_public' in t for t in nih_legend)
    summ = summary_table(res)
    assert (summ.seeds == 2).all() and len(summ) == 6            # 3 arms x 2 budgets, 2 seeds each (not 4 or 6)
    gaps = gap_table(res).set_index(['dataset', 'pretraining'])
    for (ds, pre), row in gaps.iterrows():
        x = res[(res.dataset == ds) & (res.pretrained == ('' if pre == '-' else pre))]
        ref = x[~x.private].auroc_mean.mean() - x[x.target_epsilon == 8].auroc_mean.mean()
        assert row['gap ε=8'] == pytest.approx(ref, abs=1e-3)
    made = study_figures(root, tmp_path / 'figs', n_boot=50)      # no "labels differ" crash, one file per arm
    names = set(made) - {'_notes'}
    assert {'auroc_vs_epsilon_per_label_nih_cxr14_1000', 'auroc_vs_epsilon_per_label_nih_cxr14_1000_pretrained_pneumonia_public',
            'roc_curves_pneumoniamnist'} <= names, names
    spd = pd.read_csv(tmp_path / 'figs' / 'tables' / 'spd.csv')
    assert spd.groupby('dataset').run.nunique().to_dict() == {'nih_cxr14_1000': 4, 'nih_cxr14_1000 + pretrained on pneumonia_public': 4,
                                                              'pneumoniamnist': 4}
    assert any(n.startswith('zero-shot') for n in made['_notes'])  # synthetic data cannot be rebuilt: said, not crashed
    assert (tmp_path / 'figs' / 'pretraining.md').exists()
    head = (tmp_path / 'figs' / 'headline.md').read_text()
    assert head.count('\n') == 2 and 'fine-tuned from pneumonia_public' in head
    fair = (tmp_path / 'figs' / 'fairness.md').read_text()      # sex SPD (F - M) of AUROC, sensitivity, specificity
    assert fair.count('| nih_cxr14_1000 | auroc |') == 1 and '| nih_cxr14_1000 | sensitivity |' in fair
    f = spd[(spd.attribute == 'sex') & (spd.group == 'F') & (spd.dataset == 'nih_cxr14_1000') & (spd.target_epsilon == 8)]
    assert f'{f.spd.mean():+.3f} [{f.spd_lo.mean():+.3f}' in fair
