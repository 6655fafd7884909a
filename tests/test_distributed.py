"Two processes on CPU (gloo): the same epsilon as one process, replicas identical after every step."
import json, os, subprocess, sys, textwrap

import pytest
import torch

from dpmed.config import load_config
from dpmed.core import read_json
from dpmed.rundir import train_and_save

BASE = ['data.n_patients=100', 'data.image_size=32', 'train.epochs=2', 'model.width=0.125', 'eval.n_boot=0',
        'train.batch_size=32', 'train.physical_batch_size=8', 'train.num_threads=1', 'privacy.epsilon=8']

CHILD = textwrap.dedent('''
    import json, os, sys
    import torch, torch.distributed as td
    import dpmed.train as T
    from dpmed.config import load_config
    from dpmed.rundir import train_and_save
    out, overrides = sys.argv[1], sys.argv[2:]
    checks = []
    def check(step, model):
        checks.append(T._all_same(T._params_checksum(model), T.Dist(td.get_rank(), td.get_world_size())))
    m = train_and_save(load_config(overrides=overrides), out, progress=False, step_callback=check)
    with open(os.path.join(os.path.dirname(out), f"rank{td.get_rank()}.json"), "w") as f:
        json.dump({"checks": checks, "epsilon": m["epsilon"], "world": td.get_world_size()}, f)
    td.destroy_process_group()
''')


@pytest.mark.parametrize('mode', ['hooks', 'ghost'])
def test_two_process_gloo_matches_single_process(tmp_path, mode):
    overrides = BASE + [f'privacy.grad_sample_mode={mode}']
    out = tmp_path / 'ddp' / 'run'
    out.parent.mkdir()
    script = tmp_path / 'child.py'
    script.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k not in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')}
    env['OMP_NUM_THREADS'] = '1'
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0)); port = sock.getsockname()[1]
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_addr=127.0.0.1',
                        f'--master_port={port}',
                        str(script), str(out), *overrides], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((out.parent / f'rank{i}.json').read_text()) for i in range(2)]
    assert all(rk['world'] == 2 for rk in ranks)
    n_steps = read_json(out / 'privacy.json')['steps']
    assert all(len(rk['checks']) == n_steps and all(rk['checks']) for rk in ranks), 'replicas diverged'
    pv = read_json(out / 'privacy.json')
    assert pv['world_size'] == 2
    single = train_and_save(load_config(overrides=overrides), tmp_path / 'single', progress=False)
    ps = read_json(tmp_path / 'single' / 'privacy.json')
    # the accountant saw the global sample rate and the same number of steps: the same epsilon
    assert pv['sample_rate'] == ps['sample_rate'] and pv['steps'] == ps['steps']
    assert pv['noise_multiplier'] == ps['noise_multiplier']
    assert ranks[0]['epsilon'] == ranks[1]['epsilon'] == pytest.approx(single['epsilon'], rel=1e-9)
