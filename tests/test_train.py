"Training loop: private and non-private paths, privacy spent, run directories."
import math

import numpy as np
import pandas as pd
import pytest
import torch
from opacus.accountants import create_accountant

import dpmed.train as T
from dpmed.config import load_config
from dpmed.core import DpmedError
from dpmed.imageset import ArrayDataset
from dpmed.rundir import RUN_FILES, load_run, train_and_save


def _record(monkeypatch):
    "Record the dataset indices fetched and the model's initial weights."
    seen, inits = [], []
    orig_get, orig_build = ArrayDataset.__getitem__, T.build_model

    def getitem(self, i):
        seen.append(int(i))
        return orig_get(self, i)

    def build(*a, **k):
        m = orig_build(*a, **k)
        inits.append({n: p.detach().clone() for n, p in m.state_dict().items()})
        return m
    monkeypatch.setattr(ArrayDataset, '__getitem__', getitem)
    monkeypatch.setattr(T, 'build_model', build)
    return seen, inits


def test_private_and_nonprivate_differ_only_in_the_engine(monkeypatch, tiny):
    seen, inits = _record(monkeypatch)
    data = T.load_imageset(load_config(overrides=tiny))
    runs = {}
    for eps in ('inf', '8'):
        seen.clear()
        res = T.train(load_config(overrides=tiny + [f'privacy.epsilon={eps}']), data=data, progress=False)
        runs[eps] = (list(seen), res)
    assert len(runs['inf'][0]) > 0
    assert runs['inf'][0] == runs['8'][0], 'the two paths drew different Poisson batches'
    assert all(torch.equal(inits[0][k], inits[1][k]) for k in inits[0]), 'different initial weights'
    # ... but the privacy engine did act: the trained weights differ, and only one run spent privacy
    a, b = runs['inf'][1].model.state_dict(), runs['8'][1].model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert math.isinf(runs['inf'][1].privacy['epsilon']) and 0 < runs['8'][1].privacy['epsilon'] <= 8.05
    assert runs['inf'][1].privacy['steps'] == runs['8'][1].privacy['steps']


def test_physical_batches_accumulate_to_the_logical_batch(tiny):
    "Non-private: one optimizer step per logical batch, weights of the physical pieces summing to 1."
    cfg = load_config(overrides=tiny + ['privacy.epsilon=inf'])
    ds = torch.utils.data.TensorDataset(torch.zeros(100, 1), torch.zeros(100, 1))
    loader = T._nonprivate_view(T.make_train_loader(ds, cfg, torch.Generator().manual_seed(0)), cfg)
    pieces = list(T._split_batches(loader, cfg.train.physical_batch_size))
    assert all(len(x) <= cfg.train.physical_batch_size for x, *_ in pieces)
    sums, acc = [], 0.0
    for _, _, w, last in pieces:
        acc += w
        if last: sums.append(acc); acc = 0.0
    assert np.allclose(sums, 1.0) and len(sums) >= 1


@pytest.mark.parametrize('eps', ['inf', '4'])
def test_run_directory_is_complete_and_epsilon_matches_the_accountant(tmp_path, tiny, eps):
    cfg = load_config(overrides=tiny + [f'privacy.epsilon={eps}', 'privacy.delta=1e-4'])
    m = train_and_save(cfg, tmp_path / 'run', progress=False)
    run = load_run(tmp_path / 'run')
    assert sorted(p.name for p in (tmp_path / 'run').iterdir()) == sorted(RUN_FILES + ('tensorboard',))
    pred = run['predictions']
    n_test = (T.load_imageset(cfg).meta.split == 'test').sum()
    assert len(pred) == n_test == m['n_test']
    assert {'id', 'patient_id', 'age', 'sex', 'age_group'} <= set(pred.columns)
    assert all(f'y_score_{l}' in pred and f'y_true_{l}' in pred for l in cfg.data.labels or run['metrics']['auroc'])
    assert len(run['log']) == cfg.train.epochs
    pv = run['privacy']
    if eps == 'inf':
        assert m['epsilon'] == 'inf' and not m['private'] and pv['history'] == []
        return
    # what an Opacus accountant reports for the steps actually taken, at the configured delta
    acc = create_accountant(pv['accountant'])
    acc.history = [tuple(h) for h in pv['history']]
    assert sum(h[2] for h in acc.history) == m['steps'] == cfg.train.epochs * round(1 / pv['sample_rate'])
    assert m['epsilon'] == pytest.approx(acc.get_epsilon(cfg.privacy.delta), rel=1e-6)
    assert m['delta'] == cfg.privacy.delta and m['epsilon'] <= float(eps) + 0.05
    # independent of Opacus: an RDP bound from Google's dp-accounting must not be below what we report (PRV is tighter)
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant
    q, sigma, steps = pv['sample_rate'], pv['noise_multiplier'], m['steps']
    rdp = RdpAccountant()
    rdp.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    assert m['epsilon'] <= rdp.get_epsilon(cfg.privacy.delta) + 1e-6


def test_no_half_written_run_on_failure(tmp_path, tiny, monkeypatch):
    import dpmed.rundir as R
    monkeypatch.setattr(R, 'predictions_table', lambda *a, **k: (_ for _ in ()).throw(RuntimeError('disk full')))
    with pytest.raises(RuntimeError):
        train_and_save(load_config(overrides=tiny + ['train.epochs=1']), tmp_path / 'run', progress=False)
    # no run directory; only the hidden working folder remains, from which the run can be resumed
    assert [p.name for p in tmp_path.iterdir()] == ['.run.work']


def test_existing_run_directory_is_not_overwritten(tmp_path, tiny):
    (tmp_path / 'run').mkdir()
    with pytest.raises(DpmedError, match='already exists'):
        train_and_save(load_config(overrides=tiny), tmp_path / 'run', progress=False)


def test_nonprivate_phantom_model_learns(tiny):
    "The phantom findings are learnable: a short non-private run is clearly better than chance."
    cfg = load_config(overrides=['data.n_patients=300', 'data.image_size=32', 'train.epochs=5', 'model.width=0.25',
                                 'train.batch_size=32', 'privacy.epsilon=inf', 'eval.n_boot=0'])
    res = T.train(cfg, progress=False)
    te = res.data.split('test')
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(te.labels, res.test_scores, average='macro') > 0.75


def test_a_physical_batch_of_one_image_trains(tiny):
    "Poisson batches often leave a last physical batch of one image; narrow GroupNorm layers on 1x1 maps must cope."
    from dpmed.models import build_model
    from dpmed.config import ModelConfig
    model = build_model(ModelConfig(width=0.125), 8)
    out = model(torch.rand(1, 1, 16, 16))                 # layer3/4 see 1x1 maps here
    assert out.shape == (1, 8) and torch.isfinite(out).all()
    assert all(m.num_channels // m.num_groups >= 2 for m in model.modules() if isinstance(m, torch.nn.GroupNorm))


@pytest.mark.parametrize('source', ['val', 'train', 'none'])
def test_class_weights_source_and_privacy_note(tiny, source):
    cfg = load_config(overrides=tiny + [f'train.pos_weight={source}', 'train.epochs=1'])
    data = T.load_imageset(cfg)
    tr, va = data.split('train'), data.split('val')
    w = T.class_weights(cfg, tr, va)
    if source == 'none':
        assert w is None
    else:
        ref = (va if source == 'val' else tr).labels
        expect = (len(ref) - ref.sum(0)) / np.maximum(ref.sum(0), 1)
        assert np.allclose(w.numpy(), np.where(ref.sum(0) > 0, expect, 1.0))
    res = T.train(cfg, data=data, progress=False)
    leak_noted = any('pos_weight' in n for n in res.privacy['notes'])
    assert leak_noted == (source == 'train'), res.privacy['notes']
