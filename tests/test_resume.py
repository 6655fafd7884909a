"Kill-and-resume: a run killed at any point and resumed ends like an uninterrupted one, and counts every step."
import math, os, signal, subprocess, sys, textwrap

import pandas as pd
import pytest
import torch
from opacus.accountants import create_accountant

from dpmed.config import load_config
from dpmed.core import DpmedError, read_json
from dpmed.rundir import load_run, train_and_save
from dpmed.runs import RunDir
from dpmed.train import LEDGER, ledger_steps

BASE = ['data.n_patients=100', 'data.image_size=32', 'train.epochs=3', 'model.width=0.125', 'eval.n_boot=20',
        'train.batch_size=32', 'train.physical_batch_size=16', 'train.num_threads=1', 'privacy.reproducible_noise=true']
# 69 training patients (114 images): patient-level sampling, ceil(69 / 32) = 3 steps per epoch

CHILD = textwrap.dedent('''
    import os, signal, sys
    import dpmed.train as T
    from dpmed.config import load_config
    from dpmed.rundir import train_and_save
    out, when, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    if os.environ.get('DPMED_TEST_ENTROPY'):           # a known "OS entropy" seed, to compare with a reference
        T.os_entropy_seed = lambda: int(os.environ['DPMED_TEST_ENTROPY'])
    die = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    if when == 'after_checkpoint':
        save = T._torch_save_atomic
        def save_then_die(obj, path):
            save(obj, path); die()
        T._torch_save_atomic = save_then_die
        kill_step = None
    else:
        kill_step = int(when)
    train_and_save(load_config(overrides=overrides), out, progress=False,
                   step_callback=lambda s, m: die() if s == kill_step else None)
''')


def _killed_run(out, when, overrides, entropy=None):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    if entropy is not None: env['DPMED_TEST_ENTROPY'] = str(entropy)
    r = subprocess.run([sys.executable, '-c', CHILD, str(out), str(when), *overrides], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == -signal.SIGKILL, f"child was not killed: rc={r.returncode}\n{r.stderr[-2000:]}"
    assert not out.exists() and RunDir(out).work_dir.exists()


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "Uninterrupted runs, private and not, in this process."
    out = {}
    for eps in ('8', 'inf'):
        d = tmp_path_factory.mktemp('ref') / 'run'
        train_and_save(load_config(overrides=BASE + [f'privacy.epsilon={eps}']), d, progress=False)
        out[eps] = d
    return out


def _same_outcome(a, b):
    ra, rb = load_run(a), load_run(b)
    pd.testing.assert_frame_equal(ra['predictions'], rb['predictions'], check_exact=True)
    ca = torch.load(a / 'checkpoint.pt', weights_only=False)
    cb = torch.load(b / 'checkpoint.pt', weights_only=False)
    for k in ca['model_last']:
        assert torch.equal(ca['model_last'][k], cb['model_last'][k]), f'last weights differ at {k}'
    for k in ('auroc_mean', 'best_epoch'):
        assert ra['metrics'][k] == rb['metrics'][k]
    cols = ['epoch', 'train_loss', 'val_auroc_mean']
    pd.testing.assert_frame_equal(ra['log'][cols], rb['log'][cols], check_exact=True)


def _independent_epsilon(history, delta):
    acc = create_accountant('prv'); acc.history = [tuple(h) for h in history]
    return acc.get_epsilon(delta)


# kill points: mid epoch 1 (no checkpoint yet), after the last step of epoch 1 (its checkpoint not yet written),
# mid epoch 2, and right after the first checkpoint was written (nothing lost)
@pytest.mark.parametrize('when', ['2', '3', '5', 'after_checkpoint'])
def test_kill_and_resume_private(tmp_path, reference, when):
    overrides = BASE + ['privacy.epsilon=8']
    cfg = load_config(overrides=overrides)
    out = tmp_path / 'run'
    _killed_run(out, when, overrides)
    begun = len(ledger_steps(RunDir(out).work_dir))
    ref = read_json(reference['8'] / 'privacy.json')
    spe = ref['steps_per_epoch']
    assert spe == 3 and ref['unit'] == 'patient', 'the kill points assume 3 patient-level steps per epoch'
    # the checkpoint of an epoch is written after its last step's callback, so a kill there loses the epoch
    checkpointed = spe if when == 'after_checkpoint' else (int(when) - 1) // spe * spe
    if when != 'after_checkpoint':
        assert begun == int(when)
    lost = begun - checkpointed
    # without --resume the interrupted attempt is not silently discarded
    with pytest.raises(DpmedError, match='interrupted attempt'):
        train_and_save(cfg, out, progress=False)
    m = train_and_save(cfg, out, progress=False, resume=True)
    assert not RunDir(out).work_dir.exists()
    _same_outcome(out, reference['8'])
    pv = read_json(out / 'privacy.json')
    assert pv['steps_lost_to_interruptions'] == lost == m['steps_lost_to_interruptions']
    assert pv['steps'] == ref['steps'] + lost == sum(h[2] for h in pv['history'])
    assert pv['noise_multiplier'] == ref['noise_multiplier'] and pv['sample_rate'] == ref['sample_rate']
    # epsilon of every step ever taken, by an independent accountant over (sigma, q, all steps)
    want = _independent_epsilon([(ref['noise_multiplier'], ref['sample_rate'], ref['steps'] + lost)], cfg.privacy.delta)
    assert m['epsilon'] == pytest.approx(want, rel=1e-6)
    if lost: assert m['epsilon'] > read_json(reference['8'] / 'metrics.json')['epsilon']
    else: assert m['epsilon'] == pytest.approx(read_json(reference['8'] / 'metrics.json')['epsilon'], rel=1e-9)


def test_resume_is_exact_with_os_entropy_noise(tmp_path, monkeypatch):
    """Default noise (OS entropy, not reproducible): the noise generator's state saved in the unfinished run's
    working folder makes resume exact, although the resumed process draws a fresh entropy seed; the finished
    run directory keeps no RNG state."""
    import dpmed.train as T
    overrides = [o for o in BASE if 'reproducible_noise' not in o] + ['privacy.epsilon=8']
    cfg = load_config(overrides=overrides)
    assert not cfg.privacy.reproducible_noise
    monkeypatch.setattr(T, 'os_entropy_seed', lambda: 1234)
    train_and_save(cfg, tmp_path / 'ref', progress=False)
    _killed_run(tmp_path / 'run', '5', overrides, entropy=1234)       # mid epoch 2: epoch 1 was checkpointed
    ck = torch.load(RunDir(tmp_path / 'run').work_dir / 'checkpoint.pt', weights_only=False)
    assert 'noise_gen' in ck['rng'], 'the working checkpoint must hold the noise state'
    monkeypatch.setattr(T, 'os_entropy_seed', lambda: 999)           # the resumed process gets other entropy
    train_and_save(cfg, tmp_path / 'run', progress=False, resume=True)
    _same_outcome(tmp_path / 'run', tmp_path / 'ref')
    for run in ('ref', 'run'):
        final = torch.load(tmp_path / run / 'checkpoint.pt', weights_only=False)
        assert 'rng' not in final and not RunDir(tmp_path / run).work_dir.exists()
        assert read_json(tmp_path / run / 'privacy.json')['noise_source'] == 'os_entropy'
    # ... and a different entropy seed gives a different run: the noise really came from it
    monkeypatch.setattr(T, 'os_entropy_seed', lambda: 999)
    train_and_save(cfg, tmp_path / 'other', progress=False)
    a = torch.load(tmp_path / 'ref' / 'checkpoint.pt', weights_only=False)['model_last']
    b = torch.load(tmp_path / 'other' / 'checkpoint.pt', weights_only=False)['model_last']
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_kill_and_resume_nonprivate(tmp_path, reference):
    overrides = BASE + ['privacy.epsilon=inf']
    out = tmp_path / 'run'
    _killed_run(out, '4', overrides)
    m = train_and_save(load_config(overrides=overrides), out, progress=False, resume=True)
    _same_outcome(out, reference['inf'])
    assert math.isinf(float(m['epsilon']))


def test_resume_refuses_a_different_config_and_returns_a_finished_run(tmp_path, reference):
    overrides = BASE + ['privacy.epsilon=8']
    out = tmp_path / 'run'
    _killed_run(out, '2', overrides)
    with pytest.raises(DpmedError, match='different config'):
        train_and_save(load_config(overrides=BASE + ['privacy.epsilon=4']), out, progress=False, resume=True)
    # overwrite discards the attempt and starts afresh
    train_and_save(load_config(overrides=overrides), out, progress=False, overwrite=True)
    assert read_json(out / 'privacy.json')['steps_lost_to_interruptions'] == 0
    _same_outcome(out, reference['8'])
    # resuming a finished run changes nothing
    before = (out / 'metrics.json').read_text()
    assert train_and_save(load_config(overrides=overrides), out, progress=False, resume=True) == read_json(out / 'metrics.json')
    assert (out / 'metrics.json').read_text() == before


def test_tensorboard_events_and_log(reference):
    run = reference['8']
    events = list((run / 'tensorboard').glob('events.out.tfevents.*'))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(run / 'tensorboard')); ea.Reload()
    eps = [e.value for e in ea.Scalars('epoch/epsilon')]
    log = pd.read_csv(run / 'train_log.csv')
    assert eps == pytest.approx(log['epsilon'].tolist(), rel=1e-6)
    assert len(ea.Scalars('train/loss')) == read_json(run / 'privacy.json')['steps']
