"""Which settings change the bits of a training run: the same tiny DP-SGD run (phantom CT, seeded noise) in fresh
processes under each variant, compared with a reference run by a hash of the final weights and the test AUROC.

    python benchmarks/determinism.py [--epochs 3] [--out benchmarks/determinism.json]

What it shows (see the JSON's `rows`): a rerun with the same settings on the same machine is bit-identical; the torch
thread count, the CPU instruction set that PyTorch's own kernels dispatch to (ATEN_CPU_CAPABILITY), the one oneDNN's
convolutions use (ONEDNN_MAX_CPU_ISA) and MKL's code path (MKL_CBWR) each change the bits, and DP-SGD's clipping
turns those last-bit differences into different models. Another machine differs in exactly these (its CPU, its core
count, its library versions), so only the seed spread says whether a difference matters.
Prints one line per variant and writes JSON."""
import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path

RUN = r'''
import hashlib, json, sys, warnings
warnings.simplefilter('ignore')
import torch
from dpmed.config import config_from_dict
from dpmed.train import train
from dpmed.metrics import auroc
threads, epochs = int(sys.argv[1]), int(sys.argv[2])
cfg = config_from_dict({'data': {'dataset': 'phantom_ct', 'n_patients': 160, 'image_size': 16,
                                 'subgroups': [{'name': 'sex', 'column': 'sex'}]},
                        'model': {'name': 'resnet9_3d', 'width': 0.25},
                        'privacy': {'epsilon': 8, 'reproducible_noise': True},
                        'train': {'epochs': epochs, 'batch_size': 32, 'physical_batch_size': 32, 'num_threads': threads,
                                  'tensorboard': False, 'checkpoint_every': 0},
                        'eval': {'n_boot': 0}})
res = train(cfg, progress=False)
te = res.data.split('test')
h = hashlib.sha1(b''.join(p.detach().numpy().tobytes() for p in res.model.parameters())).hexdigest()[:16]
print(json.dumps({'weights_sha1': h, 'auroc_mean': float(auroc(te.labels, res.test_scores).mean()),
                  'cpu_capability': torch.backends.cpu.get_cpu_capability(), 'torch': torch.__version__}))
'''

VARIANTS = [('reference (1 thread)', 1, {}), ('rerun, same settings', 1, {}), ('2 torch threads', 2, {}),
            ('ATEN_CPU_CAPABILITY=avx2', 1, {'ATEN_CPU_CAPABILITY': 'avx2'}),
            ('ONEDNN_MAX_CPU_ISA=AVX2', 1, {'ONEDNN_MAX_CPU_ISA': 'AVX2'}),
            ('MKL_CBWR=COMPATIBLE', 1, {'MKL_CBWR': 'COMPATIBLE'})]


def one(threads: int, env: dict, epochs: int) -> dict:
    "The run in a fresh interpreter (the variables must be set before torch loads)."
    t0 = time.time()
    r = subprocess.run([sys.executable, '-c', RUN, str(threads), str(epochs)], capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=1800)
    if r.returncode: raise SystemExit(f"run failed ({env}): {r.stderr[-2000:]}")
    return {**json.loads(r.stdout.strip().splitlines()[-1]), 'seconds': round(time.time() - t0, 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--out', default=str(Path(__file__).with_name('determinism.json')))
    a = ap.parse_args(argv)
    rows, ref = [], None
    for name, threads, env in VARIANTS:
        r = {'variant': name, 'threads': threads, 'env': env, **one(threads, env, a.epochs)}
        ref = ref or r
        r['bit_identical_to_reference'] = r['weights_sha1'] == ref['weights_sha1']
        rows.append(r)
        print(f"{name:<28} weights {r['weights_sha1']}  identical {str(r['bit_identical_to_reference']):<5}  "
              f"AUROC {r['auroc_mean']:.4f}  ({r['cpu_capability']}, {r['seconds']} s)", flush=True)
    res = {'machine': {'cpu': platform.processor() or platform.machine(), 'cores': os.cpu_count(),
                       'python': platform.python_version()}, 'epochs': a.epochs, 'rows': rows}
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')
    return res


if __name__ == '__main__':
    main()
