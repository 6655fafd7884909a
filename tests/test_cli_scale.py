"""The README's command lines are what the parser accepts, and its multi-node command form trains: torchrun's
c10d rendezvous flags with `-m dpmed train`, here two processes on one node (CPU, gloo)."""
import os, re, shlex, socket, subprocess, sys
from pathlib import Path

import pytest

from dpmed.cli import build_parser
from dpmed.core import read_json

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list:
    "Every `dpmed ...` command in README's sh blocks (continuations joined, comments dropped), as argv lists."
    text = (ROOT / 'README.md').read_text()
    cmds = []
    for block in re.findall(r'```sh\n(.*?)```', text, re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            line = line.split('#')[0].strip()
            if ' -m dpmed ' in line: line = 'dpmed ' + line.split(' -m dpmed ', 1)[1]
            if line.startswith('dpmed '): cmds.append(shlex.split(line.replace('$SLURM_ARRAY_TASK_ID', '3'))[1:])
    return cmds


def test_readme_commands_parse():
    cmds = readme_commands()
    assert any(c[:1] == ['sweep'] and '--merge' in c for c in cmds) and any('--shard' in c for c in cmds)
    assert any(c[:1] == ['train'] and '--set' in c for c in cmds)
    for argv in cmds:
        if '--help' in argv: continue
        args = build_parser().parse_args(argv)
        assert callable(args.func), argv
    shard = next(build_parser().parse_args(c) for c in cmds if '--shard' in c)
    assert shard.shard == '3/8' and shard.out.endswith('shard3')


def test_torchrun_rendezvous_command_trains(tmp_path, tiny):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')}
    env['OMP_NUM_THREADS'] = '1'
    sets = tiny + ['privacy.epsilon=8', 'train.batch_size=16', 'train.physical_batch_size=8', 'eval.n_boot=0']
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc-per-node', '2',
           '--rdzv-backend', 'c10d', '--rdzv-endpoint', f'127.0.0.1:{port}', '--rdzv-id', 'dpmed-test',
           '-m', 'dpmed', 'train', '--set', *sets, '--out', str(tmp_path / 'run'), '--quiet']
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    pv = read_json(tmp_path / 'run' / 'privacy.json')
    assert pv['world_size'] == 2 and pv['private'] and 0 < pv['epsilon'] <= 8
    assert r.stdout.count('test AUROC') == 1          # one summary line: rank 0 reports
