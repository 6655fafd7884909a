"""The default study end to end (quick version): reproduce = the built-in grid through the sweep + the figures
notebook; the study and report notebooks run through papermill; the paper-scale grid expands and validates."""
import json, math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dpmed.core import DpmedError
from dpmed.runner import execute_notebook
from dpmed.study import default_grid, paper_grid, reproduce
from dpmed.sweep import expand_grid, run_sweep

FIGURES = ['auroc_vs_epsilon', 'auroc_vs_epsilon_per_label_phantom_cxr', 'subgroup_auroc_vs_epsilon', 'spd_vs_epsilon',
           'auroc_drop_vs_positives', 'roc_curves_phantom_cxr', 'roc_curves_phantom_ct', 'data_phantom_cxr',
           'data_phantom_ct', 'mia_roc_vs_epsilon', 'auroc_vs_epsilon_per_label_phantom_cxr_pretrained_cxr_public',
           'roc_curves_phantom_ct_pretrained_ct_public', 'roc_curves_pneumoniamnist', 'roc_curves_adrenalmnist3d',
           'auroc_vs_epsilon_per_label_nih_cxr14_1000', 'auroc_vs_epsilon_per_label_nih_cxr14_1000_pretrained_pneumonia_public',
           'data_nih_cxr14_1000']
ARMS = {'cxr': ['', 'cxr_public'], 'ct': ['', 'ct_public'], 'pneumonia': [''], 'adrenal': [''], 'nih': ['', 'pneumonia_public']}


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp('reproduce')
    df = reproduce(root / 'out', root / 'figs', quick=True, progress=False, jobs=2)
    return root, df


def test_quick_study_results_table(quick):
    root, df = quick
    res = pd.read_csv(root / 'out' / 'results.csv')
    grid_runs = expand_grid(default_grid(quick=True)).runs
    assert res.run.tolist() == df.run.tolist() == [r.name for r in grid_runs]
    assert res.experiment.tolist() == [e for e, a in ARMS.items() for _ in range(3 * len(a))]
    # every budget, trained from scratch and (where there is a pretraining) fine-tuned from it
    for e, arms in ARMS.items():
        x = res[res.experiment == e]
        assert sorted(x.pretrained.fillna('')) == sorted(arms * 3), e
        assert sorted(x['privacy.epsilon'].astype(float)) == sorted([math.inf, 8, 1] * len(arms)), e
    assert set(res.dataset) == {'phantom_cxr', 'phantom_ct', 'pneumoniamnist', 'adrenalmnist3d', 'nih_cxr14_1000'}
    priv = res[res.private]
    # the accountant spends at most the target, and close to it
    assert ((priv.epsilon <= priv.target_epsilon * 1.0001) & (priv.epsilon >= 0.95 * priv.target_epsilon)).all()
    assert res.auroc_mean.between(0, 1).all() and (res.auroc_mean_ci_low <= res.auroc_mean).all()
    for r in res.run:                                                 # executed notebook and audit in every run
        assert (root / 'out' / r / 'notebook.ipynb').exists() and (root / 'out' / r / 'audit.json').exists()
    grid = yaml.safe_load((root / 'out' / 'grid.yaml').read_text())
    assert grid['experiments'] == default_grid(quick=True)['experiments'] and grid['train.num_threads'] == 1


def test_quick_study_draws_every_figure(quick):
    root, _ = quick
    for f in FIGURES:
        assert (root / 'figs' / f'{f}.png').stat().st_size > 5000 and (root / 'figs' / f'{f}.svg').exists(), f
    nb = json.loads((root / 'out' / 'figures.ipynb').read_text())        # the executed figures notebook is kept
    assert nb['metadata']['papermill']['parameters']['out'] == str((root / 'figs').resolve())
    assert (root / 'figs' / 'summary.md').read_text().count('| phantom_cxr |') == 3 + 1 + 3   # scratch, zero-shot, fine-tuned
    for md in ('pretraining', 'headline', 'fairness', 'reproduce'): assert (root / 'figs' / f'{md}.md').exists(), md


def test_quick_study_pretrains_once_and_reports_zero_shot(quick):
    "Each pretraining ran once (non-private, OUT/pretrain/NAME); fine-tunes name it in privacy.json; zero-shot rows."
    root, _ = quick
    out = root / 'out'
    for name in ('cxr_public', 'ct_public', 'pneumonia_public'):
        m = json.loads((out / 'pretrain' / name / 'metrics.json').read_text())
        assert m['private'] is False
    res = pd.read_csv(out / 'results.csv')
    ft = res[res.pretrained.fillna('') == 'cxr_public'].iloc[0]
    pv = json.loads((out / ft.run_dir / 'privacy.json').read_text())
    assert Path(pv['pretraining']['source']).resolve() == (out / 'pretrain' / 'cxr_public').resolve()
    assert pv['pretraining']['dataset'] == 'phantom_cxr' and 'not' in pv['notes'][-1]
    zs = pd.read_csv(root / 'figs' / 'tables' / 'zero_shot.csv')
    # phantom public sites share the hospitals' labels; PneumoniaMNIST -> NIH re-initialises the head: no zero-shot
    assert sorted(zs.pretrained) == ['ct_public', 'cxr_public'] and zs.auroc_mean.between(0, 1).all()


def test_rerun_does_not_redo_finished_runs(quick):
    root, _ = quick
    out = root / 'out'
    before = {p: p.stat().st_mtime_ns for p in out.glob('*/metrics.json')}
    r = run_sweep(out / 'grid.yaml', out, progress=False)
    assert r.ran == [] and len(r.finished) >= len(expand_grid(default_grid(quick=True)).runs)
    assert {p: p.stat().st_mtime_ns for p in out.glob('*/metrics.json')} == before


def test_fairness_report_notebook(quick):
    root, _ = quick
    nb = execute_notebook('fairness_report', root / 'fairness_report.ipynb',
                          {'results_dir': str(root / 'out'), 'out': str(root / 'fair'), 'n_boot': 50})
    assert nb.exists()
    corr = pd.read_csv(root / 'fair' / 'spd_correlation.csv')
    # one row set per dataset and arm (a pretrained arm is not mixed into its dataset), two private runs each
    assert set(corr.dataset) == {'phantom_cxr', 'phantom_cxr + pretrained on cxr_public', 'phantom_ct',
                                 'phantom_ct + pretrained on ct_public', 'nih_cxr14_1000',
                                 'nih_cxr14_1000 + pretrained on pneumonia_public'}
    assert (corr[corr.attribute == 'sex'].n == 2).all()      # (NIH-1000's youngest age group is too small for an SPD)
    assert (root / 'fair' / 'sweep_spd.csv').exists() and (root / 'fair' / 'dp_drop_correlation.csv').exists()


def test_cxr_study_notebook_runs_its_sweep(tmp_path):
    out = tmp_path / 'cxr'
    execute_notebook('cxr_study', tmp_path / 'cxr_study.ipynb', {'out': str(out), 'n_boot': 50,
                     'settings': {'data.n_patients': 60, 'data.image_size': 32, 'train.epochs': 1, 'model.width': 0.125,
                                  'train.batch_size': 16, 'train.physical_batch_size': 16, 'eval.n_boot': 50}})
    res = pd.read_csv(out / 'results.csv')
    assert res.run.tolist() == ['nonprivate_seed0', 'eps8_seed0'] and (out / 'figures' / 'auroc_vs_epsilon.png').exists()


def test_paper_grid_expands_to_the_paper_settings(tmp_path):
    with pytest.raises(DpmedError, match='needs real data'): reproduce(tmp_path / 'p', paper=True)
    with pytest.raises(DpmedError, match='manifest not found'): paper_grid({'cxr': tmp_path / 'missing.csv'})
    m = tmp_path / 'manifest.csv'; m.write_text('path,patient_id\n')
    g = expand_grid(paper_grid({'cxr': m, 'ct': m}))
    assert len(g.runs) == 6 * 3 + 10 * 3
    cxr, ct = g.run('cxr_eps8_seed0').config, g.run('ct_eps0.29_seed2').config
    assert (cxr.data.image_size, cxr.model.width, cxr.train.batch_size, cxr.train.physical_batch_size,
            cxr.privacy.max_grad_norm, cxr.privacy.accountant, cxr.privacy.delta) == (512, 1.0, 128, 32, 1.5, 'prv', 6e-6)
    assert cxr.train.epochs >= 100 and cxr.data.manifest == str(m.resolve())
    assert (ct.model.name, ct.train.batch_size, ct.train.lr, ct.privacy.max_grad_norm, ct.privacy.accountant,
            ct.privacy.delta, ct.train.epochs) == ('resnet9_3d', 512, 2e-4, 1.0, 'gdp', 1e-3, 50)
    assert math.isinf(g.run('ct_nonprivate_seed0').config.privacy.epsilon)
