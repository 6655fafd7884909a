"""dpmed sweep: grids, bad input, failures, kill-and-resume, shards and merge (papermill runs end to end)."""
import contextlib, io, json, os, signal, subprocess, sys, time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from dpmed.cli import main, EXIT_INVALID
from dpmed.core import DpmedError, read_json
from dpmed.sweep import expand_grid, load_grid, merge_sweeps, run_sweep

# a real (tiny) training run: ~10 s per run on 2 cores, mostly kernel start-up
TINY = {'data': {'n_patients': 60, 'image_size': 32}, 'model.width': 0.125, 'eval.n_boot': 50,
        'train': {'epochs': 1, 'batch_size': 16, 'physical_batch_size': 16, 'num_threads': 1}}

# a notebook that writes a synthetic run directory instead of training (fast), and raises for lr 0.5
FAKE_NB = '''
from dpmed.config import load_config, config_to_yaml
from dpmed.metrics import synthetic_run
cfg = load_config(config_path, overrides)
if cfg.train.lr == 0.5: raise RuntimeError("boom: lr 0.5 is not allowed here")
if os.environ.get('FAKE_SLEEP'): import time; time.sleep(120)   # a slow run, to be interrupted
eps = cfg.privacy.epsilon
synthetic_run(run_dir, {'F': 0.7, 'M': 0.9}, n_patients=40, epsilon=eps, model_seed=cfg.train.seed, overwrite=False,
              extra_metrics=dict(model='fake', target_epsilon=eps, noise_multiplier=1.0, steps=1, best_epoch=1,
                                 n_train=100, n_test=80, train_seconds=0.1))
(Path(run_dir) / 'config.yaml').write_text(config_to_yaml(cfg))
'''


def write_yaml(path, d):
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


@pytest.fixture
def fake_nb(tmp_path):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell("config_path = None\noverrides = []\nrun_dir = None\noverwrite = False\n"
                                  "resume = False\nprogress = False")
    p.metadata['tags'] = ['parameters']
    nb.cells = [p, nbformat.v4.new_code_cell('import os\nfrom pathlib import Path\n' + FAKE_NB)]
    path = tmp_path / 'fake.ipynb'
    nbformat.write(nb, path)
    return path


def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def snapshot(folder):
    "mtime and content of every finished run's metrics.json and notebook."
    return {p.parent.name: (p.stat().st_mtime_ns, p.read_text(), (p.parent / 'notebook.ipynb').stat().st_mtime_ns)
            for p in Path(folder).glob('*/metrics.json')}


# ---------------------------------------------------------------- bad input: clear messages, nothing written

@pytest.mark.parametrize('grid, words', [
    ({'epsilon': [8], 'train.epoch': 3}, ["unknown key 'train.epoch'", 'epochs']),
    ({'epsilon': [8], 'trian': {'epochs': 3}}, ["unknown key 'trian'"]),
    ({'epsilon': [8], 'data': {'phantom': {'signal_by_gender': {'F': 1}}}}, ["'data.phantom.signal_by_gender'", 'signal_by_sex']),
    ({'epsilon': [8], 'experiments': {'a': {'model.depth': 3}}}, ["experiments.a", "'model.depth'"]),
    ({'epsilon': [], 'seed': [0]}, ['empty', 'privacy.epsilon']),
    ({'epsilon': ['eight']}, ['privacy.epsilon']),
])
def test_bad_grid_is_refused_with_a_message_naming_the_key(tmp_path, grid, words):
    g = write_yaml(tmp_path / 'g.yaml', grid)
    rc, out, err = cli('sweep', g, '--out', tmp_path / 'out')
    assert rc == EXIT_INVALID and err.startswith('dpmed: error: ') and len(err.strip().splitlines()) == 1, err
    assert str(g) in err and all(w in err for w in words), err
    assert not (tmp_path / 'out').exists()                      # checked before anything is written


def test_empty_grid_file(tmp_path):
    g = tmp_path / 'g.yaml'; g.write_text('# nothing here\n')
    rc, _, err = cli('sweep', g, '--out', tmp_path / 'out')
    assert rc == EXIT_INVALID and 'the grid is empty' in err and not (tmp_path / 'out').exists()
    rc, _, err = cli('sweep', tmp_path / 'missing.yaml')
    assert rc == EXIT_INVALID and 'grid file not found' in err


def test_grid_expansion_shortcuts_nesting_and_list_valued_keys():
    g = expand_grid({'dataset': 'phantom_ct', 'model': 'resnet9_3d', 'epsilons': ['inf', 2], 'seeds': [0, 1],
                     'data': {'n_patients': 50, 'subgroups': [{'name': 'sex', 'column': 'sex'}]},
                     'train.lr': [1e-3, 2e-3]})
    assert len(g.runs) == 8 and g.axes == ['privacy.epsilon', 'train.lr', 'train.seed']   # the seed last
    r = g.run('eps2_lr0.002_seed1')
    assert (r.config.data.dataset, r.config.model.name, r.config.privacy.epsilon, r.config.train.seed, r.config.train.lr) == \
        ('phantom_ct', 'resnet9_3d', 2.0, 1, 0.002)
    assert r.config.data.subgroups == [{'name': 'sex', 'column': 'sex'}]        # a list-valued key is not an axis
    g2 = expand_grid({'data.labels': [['cardiomegaly'], ['congestion']]})         # ... a list of lists is
    assert [r.config.data.labels for r in g2.runs] == [['cardiomegaly'], ['congestion']]


def test_shard_argument_errors(tmp_path):
    g = write_yaml(tmp_path / 'g.yaml', {'epsilon': [8]})
    for bad in ('0/2', '3/2', 'half'):
        rc, _, err = cli('sweep', g, '--shard', bad, '--out', tmp_path / 'out')
        assert rc == EXIT_INVALID and '--shard' in err


# ---------------------------------------------------------------- failures are recorded, the sweep goes on

def test_failing_notebook_is_recorded_and_the_sweep_continues(tmp_path, fake_nb):
    g = write_yaml(tmp_path / 'g.yaml', {'name': 'fails', 'notebook': str(fake_nb), 'train.lr': [0.5, 0.001],
                                         'seed': [0, 1]})
    out = tmp_path / 'out'
    rc, stdout, err = cli('sweep', g, '--out', out)
    assert rc == 1
    assert 'dpmed sweep: 2 run(s) failed' in err and 'boom: lr 0.5' in err
    assert 'done 2, failed 2, remaining 0' in err                       # progress: done / failed / remaining
    for name in ('lr0.5_seed0', 'lr0.5_seed1'):
        e = read_json(out / '_failed' / name / 'error.json')
        assert 'RuntimeError' in e['error'] and 'boom' in e['error'] and e['attempts'] == 1
        assert (out / '_failed' / name / 'notebook.ipynb').exists()   # the partly executed notebook, to read
        assert not (out / name).exists()
    res = pd.read_csv(out / 'results.csv')
    assert res.run.tolist() == ['lr0.001_seed0', 'lr0.001_seed1'] and res['train.lr'].tolist() == [0.001, 0.001]
    st = pd.read_csv(out / 'status.csv').set_index('run')
    assert st.status.to_dict() == {'lr0.5_seed0': 'failed', 'lr0.5_seed1': 'failed', 'lr0.001_seed0': 'finished',
                                   'lr0.001_seed1': 'finished'}
    assert 'boom' in st.error['lr0.5_seed0']
    before = snapshot(out)
    # --no-retry: nothing runs; a plain rerun retries only the failed runs (and counts the attempt)
    r = run_sweep(g, out, retry_failed=False, progress=False)
    assert r.ran == [] and sorted(r.failed) == ['lr0.5_seed0', 'lr0.5_seed1']
    r = run_sweep(g, out, progress=False)
    assert sorted(r.ran) == ['lr0.5_seed0', 'lr0.5_seed1'] and read_json(out / '_failed' / 'lr0.5_seed0' / 'error.json')['attempts'] == 2
    assert snapshot(out) == before                                     # finished runs untouched
    assert not list(out.glob('.lr*')) and not list((out / '.locks').iterdir())


def test_folder_of_a_different_grid_is_refused_and_left_alone(tmp_path, fake_nb):
    out = tmp_path / 'out'
    g = write_yaml(tmp_path / 'g.yaml', {'name': 'one', 'notebook': str(fake_nb), 'seed': [0, 1]})
    run_sweep(g, out, progress=False)
    before, files = snapshot(out), sorted(p.name for p in out.iterdir())
    other = write_yaml(tmp_path / 'other.yaml', {'name': 'two', 'notebook': str(fake_nb), 'seed': [0, 1]})
    rc, _, err = cli('sweep', other, '--out', out)
    assert rc == EXIT_INVALID and "holds the results of grid 'one'" in err and '2 finished runs' in err
    changed = write_yaml(tmp_path / 'g2.yaml', {'name': 'one', 'notebook': str(fake_nb), 'seed': [0, 1], 'train.epochs': 7})
    rc, _, err = cli('sweep', changed, '--out', out)
    assert rc == EXIT_INVALID and 'seed0' in err and 'train.epochs: 5 in the folder, 7 in the grid' in err
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == files
    # the same grid extended by a run is fine: only the new run executes
    more = write_yaml(tmp_path / 'g3.yaml', {'name': 'one', 'notebook': str(fake_nb), 'seed': [0, 1, 2]})
    r = run_sweep(more, out, progress=False)
    assert r.ran == ['seed2'] and len(r.results) == 3 and {k: v for k, v in snapshot(out).items() if k != 'seed2'} == before


def test_list_shows_runs_and_state(tmp_path, fake_nb):
    g = write_yaml(tmp_path / 'g.yaml', {'name': 'l', 'notebook': str(fake_nb), 'epsilon': ['inf', 4], 'seed': [0, 1]})
    rc, out, _ = cli('sweep', g, '--list', '--shard', '2/2', '--out', tmp_path / 'o')
    lines = out.strip().splitlines()
    assert rc == 0 and [l.split()[0] for l in lines] == ['nonprivate_seed1', 'eps4_seed1']
    assert 'pending' in lines[0] and 'privacy.epsilon=inf' in lines[0] and not (tmp_path / 'o').exists()


# ---------------------------------------------------------------- kill mid-way, restart: finished runs kept

def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path):
    grid = {'name': 'kill', **TINY,
            'experiments': {'a': {'epsilon': 8, 'train.epochs': 20}, 'b': {'epsilon': 'inf', 'train.epochs': 40}}}  # a starts first (longer)
    g = write_yaml(tmp_path / 'g.yaml', grid)
    out = tmp_path / 'out'
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    proc = subprocess.Popen([sys.executable, '-m', 'dpmed', 'sweep', str(g), '--out', str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    ckpt = out / '.b.work' / 'checkpoint.pt'     # b checkpoints after each of its 40 epochs
    t0 = time.time()
    try:
        while not ((out / 'a' / 'metrics.json').exists() and ckpt.exists()):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.time() - t0 < 240, 'sweep too slow'
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)                      # the sweep and its process group
        proc.wait()
    time.sleep(3)           # the kernel (own session) notices its parent is gone within a second and exits
    assert not (out / 'b' / 'metrics.json').exists(), 'b finished before the kill; test needs a slower run'
    before = snapshot(out)
    assert list(before) == ['a']
    r = run_sweep(g, out, progress=False)
    assert r.ran == ['b'] and not r.failed
    assert snapshot(out)['a'] == before['a']                         # not redone: same file, same mtime
    m = read_json(out / 'b' / 'metrics.json')
    assert m['resumed'] >= 1 and m['epochs'] == 40                    # continued from its checkpoint
    assert pd.read_csv(out / 'results.csv').run.tolist() == ['a', 'b']
    assert not [p.name for p in out.iterdir() if p.name.startswith('.') and p.name != '.locks']
    assert not list((out / '.locks').iterdir())


# ---------------------------------------------------------------- two shards merge into the unsharded results

def test_two_shards_merge_into_the_same_results_as_one_sweep(tmp_path):
    g = write_yaml(tmp_path / 'g.yaml', {'name': 'sh', **TINY, 'privacy.reproducible_noise': True,   # comparable noise
                                         'epsilon': ['inf', 8, 2], 'seed': [3]})
    # two Slurm array tasks, the README's command line verbatim but for the grid and the shard count
    shards = [subprocess.Popen(f'{sys.executable} -m dpmed sweep {g} --shard $SLURM_ARRAY_TASK_ID/2 '
                               f'--out {tmp_path}/s$SLURM_ARRAY_TASK_ID --quiet', shell=True,
                               env={**os.environ, 'PYTHONUNBUFFERED': '1', 'SLURM_ARRAY_TASK_ID': str(i)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in (1, 2)]
    whole = run_sweep(g, tmp_path / 'all', jobs=2, progress=False)   # meanwhile: one sweep, two parallel jobs
    for p in shards: assert p.wait() == 0, p.stdout.read().decode()[-3000:]
    assert sorted(pd.read_csv(tmp_path / 's1' / 'results.csv').run) == ['eps2_seed3', 'nonprivate_seed3']
    assert pd.read_csv(tmp_path / 's2' / 'results.csv').run.tolist() == ['eps8_seed3']
    rc, _, err = cli('sweep', g, '--merge', *sorted(tmp_path.glob('s[0-9]')), '--out', tmp_path / 'merged')   # shard*
    assert rc == 0, err
    a = pd.read_csv(tmp_path / 'all' / 'results.csv'); b = pd.read_csv(tmp_path / 'merged' / 'results.csv')
    assert a.run.tolist() == ['nonprivate_seed3', 'eps8_seed3', 'eps2_seed3'] and len(whole.ran) == 3
    volatile = ['train_seconds']
    pd.testing.assert_frame_equal(a.drop(columns=volatile), b.drop(columns=volatile))
    # merging again is a no-op; a folder missing runs is reported
    assert merge_sweeps(g, tmp_path / 'merged', [tmp_path / 's1'], progress=False).ran == []
    rc, _, err = cli('sweep', g, '--merge', tmp_path / 's2', '--out', tmp_path / 'part')
    assert rc == 1 and 'missing: nonprivate_seed3, eps2_seed3' in err


def test_notebooks_run_on_this_interpreter_whatever_kernels_are_installed(tmp_path, fake_nb, monkeypatch):
    "A user's own 'python3' kernelspec (here one that cannot start) does not take over the sweep's runs."
    spec = tmp_path / 'jp' / 'kernels' / 'python3'; spec.mkdir(parents=True)
    (spec / 'kernel.json').write_text(json.dumps({'argv': ['/bin/false', '{connection_file}'], 'display_name': 'bogus',
                                                  'language': 'python'}))
    monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jp'))
    g = write_yaml(tmp_path / 'g.yaml', {'name': 'k', 'notebook': str(fake_nb), 'seed': [0]})
    r = run_sweep(g, tmp_path / 'out', progress=False)
    assert r.ran == ['seed0'] and not r.failed


def descendants(pid: int) -> set:
    "Live descendants of `pid` (from /proc)."
    kids = {}
    for st in Path('/proc').glob('[0-9]*/stat'):
        with contextlib.suppress(OSError, ValueError, IndexError):
            f = st.read_text().rsplit(')', 1)[1].split()
            kids.setdefault(int(f[1]), []).append(int(st.parent.name))
    out, todo = set(), [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in out: out.add(c); todo.append(c)
    return out


def alive(pid: int) -> bool:
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False


def test_sigterm_stops_workers_and_kernels_and_a_rerun_takes_over(tmp_path, fake_nb):
    from dpmed.sweep import lock_holder
    g = write_yaml(tmp_path / 'g.yaml', {'name': 't', 'notebook': str(fake_nb), 'seed': [0, 1]})
    out = tmp_path / 'out'
    proc = subprocess.Popen([sys.executable, '-m', 'dpmed', 'sweep', str(g), '--out', str(out), '--jobs', '2'],
                            env={**os.environ, 'FAKE_SLEEP': '1'}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    while len(list(out.glob('.seed*.running.ipynb'))) < 2:              # both runs are executing
        assert proc.poll() is None and time.time() - t0 < 120
        time.sleep(0.1)
    time.sleep(2)
    below = descendants(proc.pid)                                       # 2 workers and their 2 kernels
    assert len(below) >= 4
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130 and b'dpmed: interrupted' in proc.stderr.read()
    time.sleep(3)                                                       # kernels notice their parent is gone
    assert not [p for p in below if alive(p)]
    locks = list((out / '.locks').glob('*.lock'))
    assert len(locks) == 2 and all(lock_holder(l) is None for l in locks)   # holders gone: the locks are stale
    assert not (out / 'seed0').exists()
    r = run_sweep(g, out, jobs=2, progress=False)                        # no sleeping now
    assert sorted(r.ran) == ['seed0', 'seed1'] and not r.failed
    assert sorted(p.name for p in out.iterdir() if p.name.startswith('.')) == ['.locks']
    assert not list((out / '.locks').iterdir())


# ---------------------------------------------------------------- pretraining: once per sweep, shared, resumable

def test_pretraining_runs_once_for_its_finetunes_and_resumes(tmp_path, fake_nb):
    g = write_yaml(tmp_path / 'g.yaml', {'name': 'pt', 'notebook': str(fake_nb),
                                         'pretrain': {'pub': {'data.phantom': {'seed': 9}}, 'unused': {}},
                                         'model.pretrained': [None, 'pretrain:pub'], 'epsilon': ['inf', 8]})
    out = tmp_path / 'out'
    r = run_sweep(g, out, progress=False)
    assert r.ran == ['pretrain/pub'] + [x for x in r.ran if x != 'pretrain/pub'] and len(r.ran) == 5 and not r.failed
    assert sorted(p.name for p in (out / 'pretrain').iterdir() if not p.name.startswith('.')) == ['pub']   # once; unused: never
    pub = (out / 'pretrain' / 'pub').resolve()
    for name in ('pre-pub_nonprivate', 'pre-pub_eps8'):
        assert yaml.safe_load((out / name / 'config.yaml').read_text())['model']['pretrained'] == str(pub)
    assert yaml.safe_load((out / 'pre-none_eps8' / 'config.yaml').read_text())['model']['pretrained'] is None
    pc = yaml.safe_load((pub / 'config.yaml').read_text())
    assert pc['privacy']['epsilon'] == 'inf' and pc['data']['phantom'] == {'seed': 9}
    res = pd.read_csv(out / 'results.csv').set_index('run')
    assert res.stage.to_dict() == {'pre-none_nonprivate': 'single', 'pre-none_eps8': 'single',
                                   'pre-pub_nonprivate': 'finetune', 'pre-pub_eps8': 'finetune'}
    assert res.pretrained.fillna('').to_dict() == {'pre-none_nonprivate': '', 'pre-none_eps8': '', 'pre-pub_nonprivate': 'pub',
                                                   'pre-pub_eps8': 'pub'}
    pre = pd.read_csv(out / 'pretrain.csv')
    assert pre.run.tolist() == ['pub'] and pre.stage.tolist() == ['pretrain'] and pre.run_dir.tolist() == ['pretrain/pub']
    st = pd.read_csv(out / 'status.csv').set_index('run')
    assert st.status['pretrain/pub'] == 'finished' and 'pretrain/unused' not in st.index   # only what runs refer to
    # resumable: a rerun executes nothing; a fine-tune removed is redone without redoing the pretraining
    before = (pub / 'metrics.json').stat().st_mtime_ns
    assert run_sweep(g, out, progress=False).ran == []
    import shutil; shutil.rmtree(out / 'pre-pub_eps8')
    assert run_sweep(g, out, progress=False).ran == ['pre-pub_eps8'] and (pub / 'metrics.json').stat().st_mtime_ns == before
    # --list shows the pretraining first
    rc, listing, _ = cli('sweep', g, '--list', '--out', out)
    assert rc == 0 and listing.split()[0] == 'pretrain/pub'


def test_pretraining_in_shards_and_its_failure(tmp_path, fake_nb):
    g = write_yaml(tmp_path / 'g.yaml', {'name': 'ps', 'notebook': str(fake_nb), 'pretrain': {'pub': {}},
                                         'model.pretrained': 'pretrain:pub', 'epsilon': ['inf', 8, 4, 2]})
    out = tmp_path / 'out'
    r1 = run_sweep(g, out, shard='1/2', progress=False)          # the shard that needs it trains it (under its lock)
    r2 = run_sweep(g, out, shard='2/2', progress=False)          # the other finds it finished
    assert r1.ran[0] == 'pretrain/pub' and 'pretrain/pub' not in r2.ran and len(r1.ran) + len(r2.ran) == 5
    assert len(pd.read_csv(out / 'results.csv')) == 4
    # a pretraining that fails: its fine-tunes are not started, and the report says why
    bad = write_yaml(tmp_path / 'bad.yaml', {'name': 'pf', 'notebook': str(fake_nb), 'pretrain': {'pub': {'train.lr': 0.5}},
                                             'model.pretrained': 'pretrain:pub', 'epsilon': [8]})
    r = run_sweep(bad, tmp_path / 'bad', progress=False)
    assert r.ran == ['pretrain/pub'] and 'boom' in r.failed['pretrain/pub']
    assert 'pretraining pretrain/pub did not finish' in r.failed['eps8'] and not (tmp_path / 'bad' / 'eps8').exists()
    assert (tmp_path / 'bad' / 'pretrain' / '_failed' / 'pub' / 'error.json').exists()


def test_pretraining_must_be_non_private(tmp_path):
    g = write_yaml(tmp_path / 'g.yaml', {'pretrain': {'pub': {'epsilon': 8}}, 'model.pretrained': 'pretrain:pub'})
    rc, _, err = cli('sweep', g, '--out', tmp_path / 'out')
    assert rc == EXIT_INVALID and 'pretrain.pub' in err and 'a pretraining is non-private' in err and not (tmp_path / 'out').exists()


def test_empty_list_is_a_fixed_value_and_list_axes_get_readable_names(tmp_path, fake_nb):
    g = write_yaml(tmp_path / 'g.yaml', {'name': 'e', 'notebook': str(fake_nb), 'data.subgroups': [], 'seed': [0]})
    r = run_sweep(g, tmp_path / 'out', progress=False)
    assert r.ran == ['seed0'] and yaml.safe_load((tmp_path / 'out' / 'seed0' / 'config.yaml').read_text())['data']['subgroups'] == []
    names = [x.name for x in expand_grid({'data.subgroups': [[], [{'name': 'sex', 'column': 'sex'}]],
                                          'data.labels': ['cardiomegaly', 'congestion']}).runs]
    assert names == ['subgroups-none', 'subgroups-sex']                 # no hash in the names
    assert [x.name for x in expand_grid({'data.labels': [['cardiomegaly', 'congestion'], ['congestion']]}).runs] == \
        ['labels-cardiomegaly+congestion', 'labels-congestion']


# ---------------------------------------------------------------- several datasets: one correctly named row each

def _png_manifest(folder: Path, name: str, n: int = 48, seed: int = 0) -> Path:
    "A tiny PNG dataset with sex, age and one label (two images per patient)."
    import numpy as np
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed); rows = []
    for i in range(n):
        y = int(i % 2)
        img = (rng.random((24, 24)) * 120 + 60 * y).astype('uint8')
        Image.fromarray(img).save(folder / f"im{i}.png")
        rows.append({'path': f"im{i}.png", 'patient_id': f"p{i // 2}", 'age': 30 + i, 'sex': 'FM'[(i // 2) % 2], 'effusion': y})
    pd.DataFrame(rows).to_csv(folder / name, index=False)
    return folder / name


def test_sweep_over_several_datasets_names_each_row(tmp_path):
    site_b = _png_manifest(tmp_path / 'b', 'manifest.csv')
    (tmp_path / 'b' / 'dataset.yaml').write_text(yaml.safe_dump({'name': 'site_b', 'data': {
        'dataset': 'manifest', 'manifest': str(site_b), 'labels': ['effusion']}}))      # as the adapters write it
    hosp_c = _png_manifest(tmp_path / 'c', 'hospital_c.csv', seed=1)
    fast = {'model.width': 0.125, 'eval.n_boot': 20, 'data.cache_dir': str(tmp_path / 'cache'),
            'train': {'epochs': 1, 'batch_size': 256, 'physical_batch_size': 256, 'num_threads': 1, 'tensorboard': False}}
    g = write_yaml(tmp_path / 'g.yaml', {'name': 'multi', **fast, 'epsilon': 'inf', 'experiments': {
        'pneu': {'dataset': 'pneumoniamnist'},
        'adrenal': {'dataset': 'adrenalmnist3d', 'model': 'resnet9_3d'},
        'manifests': {'dataset': 'manifest', 'data.image_size': 16, 'data.labels': ['effusion'],
                      'data.manifest': str(site_b)}}})
    r = run_sweep(g, tmp_path / 'out', progress=False)
    assert not r.failed, r.failed
    res = pd.read_csv(tmp_path / 'out' / 'results.csv')
    assert res.run.tolist() == ['pneu', 'adrenal', 'manifests']
    assert res.dataset.tolist() == ['pneumoniamnist', 'adrenalmnist3d', 'site_b']        # no 'manifest'
    assert res.stage.tolist() == ['single'] * 3
    names = [x.name for x in expand_grid({'dataset': 'manifest', 'data.labels': ['effusion'],
                                          'data.manifest': [str(site_b), str(hosp_c)]}).runs]
    assert names == ['site-b', 'hospital-c']                 # a manifest axis is labelled by the datasets' names
    m = read_json(tmp_path / 'out' / 'pneu' / 'metrics.json')
    assert [s['name'] for s in m['subgroups_skipped']] == ['sex', 'age_group']    # the defaults, skipped, not failed
    assert read_json(tmp_path / 'out' / 'manifests' / 'metrics.json')['subgroups_skipped'] == []
    # `dpmed train` on a manifest's dataset config is named after the dataset (runs/site_b), not phantom_cxr
    from dpmed.config import load_config
    assert load_config(tmp_path / 'b' / 'dataset.yaml').name == 'site_b'
    assert load_config(None, [f'data.dataset=manifest', f'data.manifest={hosp_c}', 'data.labels=[effusion]']).name == 'hospital_c'


def test_public_pretraining_then_private_finetune_for_real(tmp_path):
    "The real notebook: a non-private pretraining on another phantom cohort, loaded by the private fine-tune."
    g = write_yaml(tmp_path / 'g.yaml', {'name': 'real-pt', **TINY, 'pretrain': {'pub': {'data.phantom': {'seed': 5}}},
                                         'model.pretrained': 'pretrain:pub', 'epsilon': [8]})
    out = tmp_path / 'out'
    r = run_sweep(g, out, progress=False)
    assert r.ran == ['pretrain/pub', 'eps8'] and not r.failed, r.failed
    pm = read_json(out / 'pretrain' / 'pub' / 'metrics.json')
    assert pm['private'] is False and pd.read_csv(out / 'pretrain.csv').stage.tolist() == ['pretrain']
    fm = read_json(out / 'eps8' / 'metrics.json')
    assert fm['private'] and fm['epsilon'] <= 8 + 1e-6
    assert yaml.safe_load((out / 'eps8' / 'config.yaml').read_text())['model']['pretrained'] == str((out / 'pretrain' / 'pub').resolve())
    res = pd.read_csv(out / 'results.csv')
    assert res.stage.tolist() == ['finetune'] and res.pretrained.tolist() == ['pub']
    assert run_sweep(g, out, progress=False).ran == []                   # resumable: nothing left to do
