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
from dpmed.rundir import load_run, train_and_save
from dpmed.runs import RUN_FILES


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
    for eps in ('inf', '8'):            # image-level unit: the baseline samples images, so the batches can match
        seen.clear()
        res = T.train(load_config(overrides=tiny + [f'privacy.epsilon={eps}', 'privacy.unit=image']), data=data,
                      progress=False)
        runs[eps] = (list(seen), res)
    assert len(runs['inf'][0]) > 0
    assert runs['inf'][0] == runs['8'][0], 'the two paths drew different Poisson batches'
    assert all(torch.equal(inits[0][k], inits[1][k]) for k in inits[0]), 'different initial weights'
    # ... but the privacy engine did act: the trained weights differ, and only one run spent privacy
    a, b = runs['inf'][1].model.state_dict(), runs['8'][1].model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert math.isinf(runs['inf'][1].privacy['epsilon']) and 0 < runs['8'][1].privacy['epsilon'] <= 8.05
    assert runs['inf'][1].privacy['steps'] == runs['8'][1].privacy['steps']


def test_physical_batches_cover_each_logical_batch(tiny):
    "Each logical batch is cut into physical chunks of at most physical_batch_size that together hold exactly its records."
    cfg = load_config(overrides=tiny + ['privacy.epsilon=inf'])
    ds = torch.utils.data.TensorDataset(torch.arange(100.).reshape(100, 1), torch.zeros(100, 1))
    sampler = T.make_train_loader(ds, cfg, torch.Generator().manual_seed(0)).batch_sampler
    drawn = list(sampler)
    sampler.generator.manual_seed(0)                       # the same draws again, through logical_batches
    size = cfg.train.physical_batch_size
    for (chunks, n_chunks, n), idx in zip(T.logical_batches(ds, sampler, size), drawn):
        chunks = list(chunks)
        assert n == len(idx) and n_chunks == len(chunks) == -(-n // size)
        assert all(len(x) <= size for x, _ in chunks)
        got = torch.cat([x for x, _ in chunks]).reshape(-1).long().tolist() if chunks else []
        assert got == list(map(int, idx))


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


# ---------------------------------------------------------------- the privacy unit

def test_unit_defaults_to_patient_where_patients_repeat_and_image_runs_say_they_are_not_patient_level(tiny):
    cfg = load_config(overrides=tiny + ['train.epochs=1', 'eval.n_boot=0'])
    data = T.load_imageset(cfg)
    pids = data.split('train').meta['patient_id']
    P, N, K = pids.nunique(), len(pids), int(pids.value_counts().max())
    assert P < N and K > 1, 'the phantom has several images per patient'
    pv = T.train(cfg, data=data, progress=False).privacy
    assert (pv['unit'], pv['unit_requested'], pv['n_train_patients'], pv['n_train']) == ('patient', 'auto', P, N)
    assert pv['sample_rate'] == 1 / math.ceil(P / cfg.train.batch_size) and pv['max_images_per_patient'] == K
    assert 'with respect to one patient' in pv['summary']
    img = T.train(load_config(overrides=tiny + ['train.epochs=1', 'eval.n_boot=0', 'privacy.unit=image']), data=data,
                  progress=False).privacy
    assert img['unit'] == 'image' and img['sample_rate'] == 1 / math.ceil(N / cfg.train.batch_size)
    assert img['max_images_per_patient'] == K and 'with respect to one training image' in img['summary']
    assert any('not a patient-level guarantee' in n and f'up to {K} per patient' in n for n in img['notes'])


def test_patient_sampling_takes_one_image_per_sampled_patient(monkeypatch, tiny):
    "Every logical batch of a patient-level run holds at most one image of any patient."
    cfg = load_config(overrides=tiny + ['train.epochs=3', 'eval.n_boot=0'])
    data = T.load_imageset(cfg)
    pids = data.split('train').meta['patient_id'].to_numpy()
    batches = []
    orig = T.logical_batches
    def spy(ds, sampler, physical):
        for idx in sampler:
            batches.append(list(idx))
            yield from orig(ds, [idx], physical)
    monkeypatch.setattr(T, 'logical_batches', spy)
    pv = T.train(cfg, data=data, progress=False).privacy
    assert len(batches) == pv['steps'] and sum(map(len, batches)) > 0
    assert all(len(set(pids[b])) == len(b) for b in batches), 'two images of one patient in a batch'
    # over the run, patients with several images give different ones (drawn afresh per step)
    multi = [p for p in set(pids) if (pids == p).sum() > 1]
    drawn = {p: {i for b in batches for i in b if pids[i] == p} for p in multi}
    assert sum(len(v) > 1 for v in drawn.values()) > 0


# ---------------------------------------------------------------- what a run directory lets others recompute

ONE_STEP = ['data.n_patients=100', 'data.image_size=32', 'train.epochs=1', 'model.width=0.125', 'eval.n_boot=0',
            'train.batch_size=96', 'train.physical_batch_size=32', 'train.optimizer=sgd', 'train.momentum=0',
            'train.lr=1.0', 'privacy.epsilon=inf', 'privacy.noise_multiplier=1.0', 'train.tensorboard=false',
            'train.num_threads=1']


def _recover_clipped_sum(run_dir):
    """The attack of the review, with only the run directory: w0 from the seed in config.yaml, w1 from
    checkpoint.pt, SGD inverted to the noised gradient, minus the noise regenerated from the seed."""
    from dpmed.core import read_json, seed_everything
    from dpmed.models import build_model
    cfg = load_run(run_dir)['config']
    pv = read_json(run_dir / 'privacy.json')
    w1 = torch.load(run_dir / 'checkpoint.pt', weights_only=False)['model_last']
    n_labels = len(list(w1.values())[-1])                         # the head's bias
    seed_everything(T.stream_seeds(cfg.train.seed)['init'])
    w0 = [p.detach().clone() for p in build_model(cfg.model, n_labels).parameters()]
    model = build_model(cfg.model, n_labels)
    model.load_state_dict(w1)
    b = pv['n_train_patients'] * pv['sample_rate']
    gen = torch.Generator().manual_seed(T.stream_seeds(cfg.train.seed)['noise'])
    std = pv['noise_multiplier'] * pv['max_grad_norm']
    out = []
    for p0, p1 in zip(w0, model.parameters()):
        noised = (p0 - p1.detach()) / cfg.train.lr * b
        out.append((noised - torch.normal(0, std, size=p0.shape, generator=gen)).reshape(-1))
    return torch.cat(out), w0, cfg


@pytest.fixture(scope='module')
def one_step_runs(tmp_path_factory):
    "One-step private runs: two with default noise, two with reproducible noise; and the true clipped sum."
    import dpmed.dpsgd as D
    root, batches = tmp_path_factory.mktemp('attack'), []
    orig = T.logical_batches
    def spy(ds, sampler, physical):
        for idx in sampler:
            batches.append(list(idx)); yield from orig(ds, [idx], physical)
    T.logical_batches = spy
    try:
        for name, extra in [('a', []), ('b', []), ('ra', ['privacy.reproducible_noise=true']),
                            ('rb', ['privacy.reproducible_noise=true'])]:
            train_and_save(load_config(overrides=ONE_STEP + extra), root / name, progress=False)
    finally:
        T.logical_batches = orig
    assert all(b == batches[0] for b in batches), 'the sampler is seeded from train.seed in every run'
    # the truth: per-sample gradients of the initial model on the batch, by a naive loop, clipped and summed
    _, w0, cfg = _recover_clipped_sum(root / 'a')
    from dpmed.models import build_model
    data = T.load_imageset(cfg)
    tr, va = data.split('train'), data.split('val')
    model = build_model(cfg.model, len(data.label_names))
    with torch.no_grad():
        for p, v in zip(model.parameters(), w0): p.copy_(v)
    ds = ArrayDataset.from_imageset(tr)
    x, y = torch.utils.data.default_collate([ds[i] for i in batches[0]])
    grads = D.naive_per_sample_grads(model, D.PerSampleBCE(T.class_weights(cfg, tr, va)), x, y)
    return root, D.clipped_sum_reference(grads, cfg.privacy.max_grad_norm)


def test_the_noise_cannot_be_recovered_from_a_default_run_directory(one_step_runs):
    root, truth = one_step_runs
    rel = lambda run: float((_recover_clipped_sum(root / run)[0] - truth).norm() / truth.norm())
    # with the seed-derived noise the attack recovers the clipped sum: noise gone, epsilon void
    assert rel('ra') < 1e-3
    # by default the noise came from OS entropy: the attacker is left with noise >> signal
    assert rel('a') > 1 and rel('b') > 1
    for run in ('a', 'ra'):
        assert 'rng' not in torch.load(root / run / 'checkpoint.pt', weights_only=False)
    from dpmed.core import read_json
    pa, pr = read_json(root / 'a' / 'privacy.json'), read_json(root / 'ra' / 'privacy.json')
    assert pa['noise_source'] == 'os_entropy' and not pa['reproducible_noise']
    assert pr['noise_source'] == 'seed' and any('only while the seed stays secret' in n for n in pr['notes'])


def test_default_runs_draw_different_noise_and_reproducible_ones_are_bit_identical(one_step_runs):
    root, _ = one_step_runs
    w = {r: torch.load(root / r / 'checkpoint.pt', weights_only=False)['model_last'] for r in ('a', 'b', 'ra', 'rb')}
    assert all(torch.equal(w['ra'][k], w['rb'][k]) for k in w['ra'])
    assert all(not torch.equal(w['a'][k], w['b'][k]) for k in w['a'] if k.endswith('weight'))
    pa, pb = load_run(root / 'ra')['predictions'], load_run(root / 'rb')['predictions']
    pd.testing.assert_frame_equal(pa, pb, check_exact=True)


def test_released_training_statistics_are_listed_as_not_covered(one_step_runs):
    from dpmed.core import read_json
    root, _ = one_step_runs
    pv, m = read_json(root / 'a' / 'privacy.json'), read_json(root / 'a' / 'metrics.json')
    listed = ' '.join(d['field'] for d in pv['not_covered_by_epsilon'])
    for f in ('n_train', 'train_positives', 'train_loss'):
        assert f in listed
    assert 'train_positives' in m and 'n_train' in m                   # released, and listed
    log = pd.read_csv(root / 'a' / 'train_log.csv')
    assert 'images_seen' not in log.columns and 'train_loss' in log.columns
    assert any('not covered by epsilon' in n for n in pv['notes'])
