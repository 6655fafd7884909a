"""Malformed input a user can type: every case ends with its documented exit code and a one-line message,
never a traceback. In-process (`main(argv)`) where possible; a closed output pipe in a real process."""
import contextlib, io, os, subprocess, sys

import numpy as np
import pandas as pd
import pytest
import yaml

from dpmed.cli import EXIT_INVALID, EXIT_USAGE, main

ACC = ['--sample-rate', '0.01', '--noise-multiplier', '1', '--steps', '100', '--delta', '1e-5']
CAL = ['--delta', '1e-5', '--sample-rate', '0.5', '--epochs', '100']


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('malformed')
    (d / 'bad.yaml').write_text('train: [1, 2\n  epochs: 3\n')
    (d / 'list.yaml').write_text('- 1\n- 2\n')
    (d / 'unknown.yaml').write_text('train:\n  epochz: 3\n')
    (d / 'binary.yaml').write_bytes(b'\x00\xff\xfe' * 50)
    (d / 'adir').mkdir()
    (d / 'empty.csv').write_text('')
    (d / 'junk.csv').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 4)
    pd.DataFrame({'path': ['a.png'], 'patient_id': ['p']}).to_csv(d / 'nolabels.csv', index=False)
    (d / 'grid_axis.yaml').write_text(yaml.safe_dump({'name': 'g', 'train.epochz': [1, 2]}))
    (d / 'grid_empty.yaml').write_text(yaml.safe_dump({'name': 'g', 'seed': []}))
    (d / 'grid_ok.yaml').write_text(yaml.safe_dump({'name': 'g', 'seed': [0, 1]}))
    (d / 'results.csv').write_text('run,epsilon\n')
    return d


def cases(d):
    "(argv, expected exit code, a fragment the message must contain)."
    u, x = EXIT_USAGE, EXIT_INVALID
    return [
        ([], u, 'required: COMMAND'),
        (['nonsense'], u, 'invalid choice'),
        (['train', '--bogus'], u, 'unrecognized arguments'),
        (['accountant', '--sample-rate', 'abc', *ACC[2:]], u, "invalid float value: 'abc'"),
        (['accountant', *ACC[:4], '--steps', '1.5', '--delta', '1e-5'], u, "invalid int value: '1.5'"),
        (['calibrate', '--target-epsilon', '1', '--delta', '1e-5', '--sample-rate', '0.1'], u, 'one of the arguments --epochs --steps'),
        (['calibrate', '--target-epsilon', '1', *CAL, '--steps', '10'], u, 'not allowed with argument'),
        (['sweep'], u, 'required: grid'),
        (['data'], u, 'required: COMMAND'),
        (['data', 'convert', 'nosuch'], u, 'invalid choice'),
        (['evaluate', 'r', '--alternative', 'sideways'], u, 'invalid choice'),
        (['audit', 'r', '--n-boot', 'many'], u, "invalid int value"),
        (['train', str(d / 'missing.yaml')], x, 'missing.yaml'),
        (['train', str(d / 'adir')], x, 'adir'),
        (['train', str(d / 'bad.yaml')], x, 'bad.yaml'),
        (['train', str(d / 'list.yaml')], x, 'list.yaml'),
        (['train', str(d / 'unknown.yaml')], x, 'epochz'),
        (['train', str(d / 'binary.yaml')], x, 'binary.yaml'),
        (['train', '--set', 'model.widht=1'], x, 'model.widht'),
        (['train', '--set', 'train.lr=nan'], x, 'train.lr'),
        (['train', '--set', 'train.lr=-1'], x, 'train.lr'),
        (['train', '--set', 'train.epochs=inf'], x, 'train.epochs'),
        (['train', '--set', 'train.epochs=abc'], x, 'train.epochs'),
        (['train', '--set', 'privacy.epsilon=-1'], x, 'privacy.epsilon'),
        (['train', '--set', 'privacy.delta=2'], x, 'privacy.delta'),
        (['train', '--set', 'noequals'], x, 'expected key=value'),
        (['train', '--set', 'privacy.max_grad_norm=0'], x, 'privacy.max_grad_norm'),
        (['accountant', '--sample-rate', '2', *ACC[2:]], x, '--sample-rate'),
        (['accountant', *ACC[:2], '--noise-multiplier', 'nan', *ACC[4:]], x, '--noise-multiplier'),
        (['accountant', *ACC[:6], '--delta', 'inf'], x, '--delta'),
        (['accountant', *ACC, '--accountant', 'moments'], x, 'moments'),
        (['accountant', *ACC[:4], '--steps', '-3', '--delta', '1e-5'], x, '--steps'),
        (['calibrate', '--target-epsilon', '0.01', *CAL, '--accountant', 'rdp'], x, 'least the rdp accountant'),
        (['calibrate', '--target-epsilon', '0.01', *CAL], x, 'eps_error'),
        (['calibrate', '--target-epsilon', '1000', *CAL], x, 'above 100'),
        (['calibrate', '--target-epsilon', 'nan', *CAL], x, 'target_epsilon'),
        (['calibrate', '--target-epsilon', '1', '--delta', '1e-5', '--sample-rate', '0.5', '--epochs', '-1'], x, '--epochs'),
        (['sweep', str(d / 'grid_ok.yaml'), '--list', '--shard', '3/2'], x, '--shard 3/2'),
        (['sweep', str(d / 'grid_ok.yaml'), '--list', '--shard', 'abc'], x, "--shard 'abc'"),
        (['sweep', str(d / 'grid_ok.yaml'), '--list', '--shard', '0/2'], x, '--shard 0/2'),
        (['sweep', str(d / 'grid_axis.yaml'), '--list'], x, 'epochz'),
        (['sweep', str(d / 'grid_empty.yaml'), '--list'], x, 'seed'),
        (['sweep', str(d / 'missing_grid.yaml'), '--list'], x, 'missing_grid'),
        (['sweep', str(d / 'adir'), '--list'], x, 'adir'),
        (['data', 'validate', str(d / 'missing.csv'), '--labels', 'a'], x, 'missing.csv'),
        (['data', 'validate', str(d / 'adir'), '--labels', 'a'], x, 'adir'),
        (['data', 'validate', str(d / 'empty.csv'), '--labels', 'a'], x, 'empty.csv'),
        (['data', 'validate', str(d / 'junk.csv'), '--labels', 'a'], x, 'junk.csv'),
        (['data', 'validate', str(d / 'nolabels.csv'), '--labels', 'a'], x, "'a'"),
        (['data', 'validate', str(d / 'nolabels.csv')], x, 'label'),
        (['evaluate', str(d / 'no_run')], x, 'no_run'),
        (['evaluate', str(d / 'adir')], x, 'adir'),
        (['fairness', str(d / 'adir'), '--sweep', str(d / 'results.csv')], x, 'either'),
        (['fairness', '--sweep', str(d / 'missing.csv')], x, 'missing.csv'),
        (['figures', str(d / 'adir')], x, 'results.csv'),
        (['audit', str(d / 'no_run')], x, 'no_run'),
        (['data', 'convert', 'medmnist', str(d / 'missing.npz'), '--out', str(d / 'o')], x, 'missing.npz'),
        (['reproduce', '--cxr-manifest', 'x.csv'], x, '--paper'),
    ]


def _ids():
    return [' '.join(a[:3]) + f' [{i}]' for i, (a, _, _) in enumerate(cases(__import__('pathlib').Path('D')))]


@pytest.mark.parametrize('k', range(len(cases(__import__('pathlib').Path('D')))), ids=_ids())
def test_malformed_input_exit_code_and_one_line(files, k, monkeypatch):
    monkeypatch.chdir(files)
    argv, code, fragment = cases(files)[k]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    msg = err.getvalue()
    assert rc == code, (argv, rc, msg)
    assert 'Traceback' not in msg + out.getvalue()
    last = msg.strip().splitlines()[-1]
    assert fragment in last, (fragment, msg)
    if code == EXIT_INVALID:       # one line, nothing else on stderr
        assert msg.count('\n') == 1 and last.startswith('dpmed: error:'), msg
    assert not list(files.glob('*_summary.png')) and not [f for f in files.glob('runs/**/*') if f.is_file()]  # nothing written


def test_there_are_at_least_30_cases(files):
    assert len(cases(files)) >= 30


def test_closed_output_pipe_is_quiet(tmp_path):
    "`dpmed sweep GRID --list | head -1` on a long listing: no BrokenPipeError traceback."
    (tmp_path / 'g.yaml').write_text(yaml.safe_dump({'name': 'g', 'seed': list(range(4000))}))
    r = subprocess.run(f"{sys.executable} -m dpmed sweep g.yaml --list | head -1", shell=True, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**os.environ, 'PYTHONUNBUFFERED': '0'})
    assert r.stdout.startswith('seed0') and r.stdout.count('\n') == 1
    assert r.stderr == '', r.stderr
    for cmd in ('--version', 'accountant --sample-rate 0.01 --noise-multiplier 1 --steps 10 --delta 1e-5 --accountant gdp'):
        r = subprocess.run(f"{sys.executable} -m dpmed {cmd} | true", shell=True, capture_output=True, text=True,
                           timeout=300)
        assert r.stderr == '', r.stderr          # a reader that reads nothing: quiet whichever side is first


def test_internal_error_is_one_line_and_debug_shows_the_traceback(monkeypatch):
    import dpmed.accounting as A
    def boom(args): raise RuntimeError('simulated bug')
    monkeypatch.setattr(A, '_cmd_accountant', boom)
    for debug, env in ((False, '0'), (True, '1')):
        monkeypatch.setenv('DPMED_DEBUG', env)
        err = io.StringIO()
        with contextlib.redirect_stderr(err): rc = main(['accountant', *ACC])
        assert rc == 4 and err.getvalue().strip().splitlines()[-1] == \
            'dpmed: internal error: RuntimeError: simulated bug (rerun with --debug or DPMED_DEBUG=1 for the traceback)'
        assert ('Traceback' in err.getvalue()) == debug
    monkeypatch.delenv('DPMED_DEBUG')
    err = io.StringIO()
    with contextlib.redirect_stderr(err): rc = main(['accountant', *ACC, '--debug'])
    assert rc == 4 and 'Traceback' in err.getvalue()
