"""`--json` on every command that prints results: one JSON object on stdout that agrees with the files the command
writes; progress and messages stay on stderr."""
import contextlib, io, json

import pytest
import yaml

from dpmed.cli import main
from dpmed.core import read_json
from dpmed.metrics import synthetic_run


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([str(a) for a in argv])
    assert rc == 0, err.getvalue()
    return json.loads(out.getvalue())         # exactly one JSON document, nothing else on stdout


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp('json')
    return (synthetic_run(d / 'dp', {'F': 0.7, 'M': 0.8}, n_patients=300, epsilon=4.0, model_seed=1),
            synthetic_run(d / 'base', {'F': 0.85, 'M': 0.85}, n_patients=300, model_seed=2))


def test_evaluate_json_matches_the_file_it_writes(runs, tmp_path):
    dp, base = runs
    res = run('evaluate', dp, '--baseline', base, '--n-boot', 50, '--out', tmp_path, '--json')
    on_disk = read_json(tmp_path / 'evaluation.json')
    assert res['metrics']['mean']['auroc']['value'] == pytest.approx(on_disk['metrics']['mean']['auroc']['value'])
    assert set(res['comparison']['per_label']) == {'a', 'b', 'c', 'mean'}


def test_fairness_json_per_run(runs, tmp_path):
    dp, base = runs
    res = run('fairness', dp, base, '--n-boot', 50, '--out', tmp_path, '--json')
    assert set(res) == {str(dp), str(base)}
    assert res[str(dp)]['sex_spd']['auroc'][0] < 0 < 0.2          # F worse than M, as injected
    assert (tmp_path / 'dp' / 'fairness.json').exists()


def test_sweep_list_json(tmp_path):
    (tmp_path / 'g.yaml').write_text(yaml.safe_dump({'name': 'g', 'privacy.epsilon': ['inf', 8], 'seed': [0, 1]}))
    res = run('sweep', tmp_path / 'g.yaml', '--list', '--out', tmp_path / 'o', '--json')
    assert len(res['runs']) == 4 and {r['status'] for r in res['runs']} == {'pending'}
    half = run('sweep', tmp_path / 'g.yaml', '--list', '--shard', '2/2', '--out', tmp_path / 'o', '--json')
    assert [r['run'] for r in half['runs']] == [r['run'] for r in res['runs']][1::2]


def test_accountant_and_calibrate_json():
    acc = ['--sample-rate', '0.01', '--steps', '1000', '--delta', '1e-5']
    e = run('accountant', *acc, '--noise-multiplier', '1.1', '--accountant', 'gdp', '--json')
    s = run('calibrate', '--target-epsilon', e['epsilon'], '--delta', '1e-5', '--sample-rate', '0.01', '--steps', '1000',
            '--accountant', 'gdp', '--json')
    assert s['noise_multiplier'] == pytest.approx(1.1, rel=0.02) and s['epsilon'] <= e['epsilon']
