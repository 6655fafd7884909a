"""Seconds per logical step and peak memory of DP-SGD vs non-private training, side by side in one run.

    python benchmarks/train_speed.py [--quick] [--device auto|cpu|cuda] [--batch 32] [--reps 3]

For each model/size: one logical step (batch `--batch`, one physical batch) non-privately, then with each
grad_sample_mode; the figure is the ratio DP / non-DP. Peak memory: CUDA max allocated on a GPU; on CPU the
growth of the process' peak resident set (ru_maxrss) during the measurement, a coarse figure. Writes
benchmarks/train_speed.json and prints a table."""
import argparse, datetime, json, platform, resource, time, warnings
from pathlib import Path

import torch
from torch import nn

from dpmed.config import ModelConfig
from dpmed.core import resolve_device
from dpmed.dpsgd import GRAD_SAMPLE_MODES, PerSampleBCE, make_private, check_grad_sample_mode
from dpmed.models import build_model
from dpmed.core import DpmedError

warnings.filterwarnings('ignore')
CASES = [('resnet9', 2, 64, 8), ('resnet9', 2, 128, 8), ('resnet9', 2, 224, 8),
         ('resnet9_3d', 3, 28, 1), ('resnet9_3d', 3, 64, 1), ('monai_resnet18', 3, 28, 1), ('monai_resnet18', 3, 64, 1)]
QUICK = [('resnet9', 2, 64, 8), ('resnet9', 2, 128, 8), ('resnet9_3d', 3, 28, 1), ('monai_resnet18', 3, 28, 1)]


def _peak(device):
    if device.type == 'cuda': return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name, size, labels, mode, batch, reps, device, width):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, width=width), labels).to(device)
    opt = torch.optim.NAdam(model.parameters(), lr=1e-4)
    crit = PerSampleBCE()
    dims = 2 if name == 'resnet9' else 3
    x = torch.randn(batch, 1, *([size] * dims), device=device)
    y = (torch.rand(batch, labels, device=device) > 0.5).float()
    if mode != 'nonprivate':
        parts = make_private(model, opt, crit, grad_sample_mode=mode, noise_multiplier=1.0, max_grad_norm=1.0,
                             sample_rate=batch / 1000, expected_batch_size=batch)
        model, opt, crit = parts.model, parts.optimizer, parts.criterion
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device); torch.cuda.synchronize()
    base = _peak(device)
    times = []
    for r in range(reps + 1):                   # first repetition warms up
        t0 = time.perf_counter()
        loss = crit(model(x), y); loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        if device.type == 'cuda': torch.cuda.synchronize()
        if r: times.append(time.perf_counter() - t0)
    return min(times), _peak(device) - (0 if device.type == 'cuda' else base)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true'); ap.add_argument('--device', default='auto')
    ap.add_argument('--batch', type=int, default=32); ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--width', type=float, default=1.0, help='model width (1.0 = the paper)')
    ap.add_argument('--out', default=str(Path(__file__).with_suffix('.json')))
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    rows = []
    for name, dims, size, labels in (QUICK if a.quick else CASES):
        base_t, base_m = measure(name, size, labels, 'nonprivate', a.batch, a.reps, device, a.width)
        row = {'model': name, 'size': size, 'nonprivate_s': base_t, 'nonprivate_mem_mb': base_m}
        for mode in GRAD_SAMPLE_MODES:
            try:
                check_grad_sample_mode(mode, model_name=name)
                t, m = measure(name, size, labels, mode, a.batch, a.reps, device, a.width)
                row.update({f'{mode}_s': t, f'{mode}_time_ratio': t / base_t, f'{mode}_mem_mb': m,
                            f'{mode}_mem_ratio': m / base_m if base_m > 0 else None})
            except (DpmedError, RuntimeError) as e:
                row[f'{mode}_error'] = str(e)[:200]
        rows.append(row)
        print(f"{name:16s} {size:4d}  non-DP {base_t:7.3f}s  " + '  '.join(
            f"{m} {row[f'{m}_time_ratio']:.2f}x" if f'{m}_time_ratio' in row else f"{m} n/a" for m in GRAD_SAMPLE_MODES),
            flush=True)
    out = {'date': datetime.date.today().isoformat(), 'machine': platform.platform(), 'processor': platform.processor(),
           'cpu_threads': torch.get_num_threads(), 'device': str(device),
           'gpu': torch.cuda.get_device_name(device) if device.type == 'cuda' else None, 'torch': torch.__version__,
           'batch': a.batch, 'reps': a.reps, 'width': a.width, 'rows': rows}
    Path(a.out).write_text(json.dumps(out, indent=2) + '\n')
    return out


if __name__ == '__main__':
    main()
