"The `dpmed` console script end to end: a config file in, a run directory out, one-line errors."
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dpmed.core import read_json

DPMED = [sys.executable, '-m', 'dpmed']


def _run(args, cwd):
    return subprocess.run(DPMED + args, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture
def tiny_config(tmp_path, tiny):
    cfg = {}
    for item in tiny:
        k, v = item.split('=', 1)
        sec, name = k.split('.')
        cfg.setdefault(sec, {})[name] = yaml.safe_load(v)
    path = tmp_path / 'tiny.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize('eps', ['inf', '2'])
def test_train_writes_a_run_directory(tmp_path, tiny_config, eps):
    out = tmp_path / f'run_{eps}'
    r = _run(['train', str(tiny_config), '--set', f'privacy.epsilon={eps}', '--set', 'privacy.delta=1e-4',
              '--out', str(out), '--quiet'], tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'test AUROC' in r.stdout
    m = read_json(out / 'metrics.json')
    assert yaml.safe_load((out / 'config.yaml').read_text())['privacy']['epsilon'] == (eps if eps == 'inf' else float(eps))
    if eps == 'inf':
        assert m['epsilon'] == 'inf'
    else:
        assert 0 < m['epsilon'] <= float(eps) + 0.05 and m['delta'] == 1e-4
        assert read_json(out / 'privacy.json')['epsilon'] == m['epsilon']
    # a second run into the same folder is refused and leaves the first intact
    before = (out / 'metrics.json').read_text()
    r2 = _run(['train', str(tiny_config), '--out', str(out), '--quiet'], tmp_path)
    assert r2.returncode == 3 and 'already exists' in r2.stderr
    assert (out / 'metrics.json').read_text() == before


@pytest.mark.parametrize('args, field', [
    (['--set', 'privacy.epsilon=0'], 'privacy.epsilon'),
    (['--set', 'privacy.delta=2'], 'privacy.delta'),
    (['--set', 'train.batch_size=30', '--set', 'train.physical_batch_size=16'], 'train.batch_size'),
    (['--set', 'model.widht=1'], 'model.widht'),
])
def test_bad_config_is_one_line_naming_the_field(tmp_path, tiny_config, args, field):
    r = _run(['train', str(tiny_config), '--out', str(tmp_path / 'x'), '--quiet'] + args, tmp_path)
    assert r.returncode == 3
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('dpmed: error:') and field in lines[0]
    assert not (tmp_path / 'x').exists()


def test_missing_config_file(tmp_path):
    r = _run(['train', str(tmp_path / 'nope.yaml')], tmp_path)
    assert r.returncode == 3 and 'nope.yaml' in r.stderr and 'not found' in r.stderr
