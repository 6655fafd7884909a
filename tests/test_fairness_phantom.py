"""End to end: the phantom generator injects a known subgroup gap (findings fainter for women), a real run is
trained on it, and `dpmed fairness` must report that gap: the paper's SPD of AUROC (female minus male) negative
with a CI below zero, equal to the per-sex AUROCs that scikit-learn computes from the run's predictions, and
clearly larger than in the same run without the injected gap."""
import contextlib
import io

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dpmed.cli import main
from dpmed.config import load_config
from dpmed.core import read_json
from dpmed.rundir import load_run, train_and_save

BASE = ['data.n_patients=400', 'data.image_size=32', 'model.width=0.25', 'train.batch_size=32', 'train.epochs=4',
        'privacy.epsilon=inf', 'train.num_threads=1', 'eval.n_boot=0']


def _fairness(tmp_path, female_signal):
    run = tmp_path / f'run_f{female_signal}'
    cfg = load_config(overrides=BASE + [f'data.phantom={{signal_by_sex: {{F: {female_signal}, M: 1.0}}}}'])
    train_and_save(cfg, run, progress=False)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(['fairness', str(run), '--n-boot', '300']) == 0
    return run, read_json(run / 'fairness.json')


def _sklearn_sex_gap(run):
    pred, labels = load_run(run)['predictions'], read_json(run / 'metrics.json')['auroc'].keys()
    per_sex = {}
    for sex, g in pred.groupby('sex'):
        per_sex[sex] = np.mean([roc_auc_score(g[f'y_true_{l}'], g[f'y_score_{l}']) for l in labels
                                if g[f'y_true_{l}'].nunique() == 2])
    return per_sex['F'] - per_sex['M']


def test_injected_sex_gap_is_reported(tmp_path):
    run, fair = _fairness(tmp_path, 0.3)
    spd, lo, hi = fair['sex_spd']['auroc']
    assert fair['sex_spd']['definition'].startswith('female minus male')
    assert spd == pytest.approx(_sklearn_sex_gap(run), abs=1e-9)
    assert hi < 0, f'women are diagnosed worse by construction, but SPD CI is [{lo:.3f}, {hi:.3f}]'
    _, control = _fairness(tmp_path, 1.0)
    assert spd < control['sex_spd']['auroc'][0] - 0.05
