"""Seconds per logical step and peak memory of DP-SGD vs non-private training, side by side in one run.

    python benchmarks/train_speed.py [--quick] [--device auto|cpu|cuda] [--batch 32] [--reps 5] [--threads N]
                                     [--modes hooks,ghost,fast_ghost,fast_bk] [--cases resnet9:64,resnet9_3d:28]
                                     [--cpu-memory]

For each model/size, one model per mode is built (non-private and each grad_sample_mode, including dpmed's
fast modes `fast_ghost` and `fast_bk`), each is warmed up by one logical step (batch `--batch`, one physical
batch), then the modes take turns, one step each, for `reps` rounds (interleaved, so a machine-wide slowdown hits
all modes alike); the figure is the median step time of a mode / the median non-private step time. Large cases
(224 px, 64^3) use fewer rounds (`--big-reps`) and only `--big-modes`. Peak memory: on CUDA, the largest memory allocated during a
step above what was allocated before it (activations, per-sample gradients or norms, gradients, noise), per mode;
on a CPU (`--cpu-memory`), each mode is run alone in a fresh process and the figure is the resident-memory
high-water mark during two steps above the resident memory once model and data are built (in the timing run all
modes share one process, whose resident set cannot be split by mode).
On a CPU each step's process CPU time is recorded too (`*_cpu_ratio`, `*_all_cpu_s`): with one torch thread it is the
step's own work, which other jobs on a shared machine slow much less than the wall clock (they still share caches and
memory bandwidth).
On a CPU the script first applies `dpmed.core.keep_freed_memory`, as dpmed's training does (freed blocks of up to
32 MB stay in the heap and are reused, not faulted in afresh every step); `--glibc-default-memory` measures without.
Writes benchmarks/train_speed.json and prints a table."""
import argparse, datetime, platform, statistics, sys, time, warnings
from pathlib import Path

import torch

from dpmed.config import ModelConfig
from dpmed.core import DpmedError, keep_freed_memory, resolve_device, write_json
from dpmed.dpsgd import FAST_MODES, GRAD_SAMPLE_MODES, PerSampleBCE, check_grad_sample_mode, make_private
from dpmed.models import build_model

warnings.filterwarnings('ignore')
ALL_MODES = GRAD_SAMPLE_MODES + FAST_MODES
CASES = [('resnet9', 64, 8), ('resnet9', 128, 8), ('resnet9', 224, 8), ('resnet9_3d', 28, 1), ('resnet9_3d', 64, 1),
         ('monai_resnet18', 28, 1), ('monai_resnet18', 64, 1)]
QUICK = [('resnet9', 64, 8), ('resnet9', 128, 8), ('resnet9_3d', 28, 1), ('monai_resnet18', 28, 1)]
BIG = {('resnet9', 224), ('resnet9_3d', 64), ('monai_resnet18', 64)}


def build(name, labels, mode, batch, width, device):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, width=width), labels).to(device)
    opt = torch.optim.NAdam(model.parameters(), lr=1e-4)
    crit = PerSampleBCE()
    if mode != 'nonprivate':
        parts = make_private(model, opt, crit, grad_sample_mode=mode, noise_multiplier=1.0, max_grad_norm=1.0,
                             sample_rate=batch / 1000, expected_batch_size=batch)
        model, opt, crit = parts.model, parts.optimizer, parts.criterion
    return model, opt, crit


def step(setup, x, y, device, cpu_times: list | None = None):
    """One logical step; returns (seconds, peak MiB above the memory allocated before it, CUDA only). Appends the
    process' CPU seconds of the step to `cpu_times` (with one torch thread: the step's own work, not the time other
    jobs on a shared machine held the core)."""
    model, opt, crit = setup
    if device.type == 'cuda':
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(device); before = torch.cuda.memory_allocated(device)
    t0, c0 = time.perf_counter(), time.process_time()
    loss = crit(model(x), y); loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    if device.type == 'cuda':
        torch.cuda.synchronize()
        return time.perf_counter() - t0, (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if cpu_times is not None: cpu_times.append(time.process_time() - c0)
    return time.perf_counter() - t0, None


def _proc_status_bytes(field: str) -> int:
    "VmRSS (resident now) or VmHWM (resident high-water mark of this address space) from /proc/self/status."
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'): return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _cpu_peak_child(name, size, labels, mode, batch, width, threads, keep_freed, queue):
    "In a fresh process: peak resident memory during two steps above the resident memory after building (bytes)."
    warnings.filterwarnings('ignore')
    if keep_freed: keep_freed_memory()
    if threads: torch.set_num_threads(threads)
    try:
        dims = 2 if name == 'resnet9' else 3
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 1, *([size] * dims), generator=g)
        y = (torch.rand(batch, labels, generator=g) > 0.5).float()
        setup = build(name, labels, mode, batch, width, torch.device('cpu'))
        base = _proc_status_bytes('VmRSS')
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')       # reset the high-water mark to now
        for _ in range(2): step(setup, x, y, torch.device('cpu'))
        queue.put(_proc_status_bytes('VmHWM') - base)
    except Exception as e:                                   # reported, not fatal: the timing table still stands
        queue.put(f"{type(e).__name__}: {str(e)[:200]}")


def cpu_peak_mb(name, size, labels, mode, batch, width, threads, keep_freed):
    """CPU memory of one mode, measured alone in a fresh process (all modes share one process in the timing run,
    so no per-mode peak exists there): the high-water mark of resident memory during two steps, above the resident
    memory once model and data are built (activations, per-sample gradients or norms, gradients, noise)."""
    import multiprocessing as mp
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_cpu_peak_child, args=(name, size, labels, mode, batch, width, threads, keep_freed, queue))
    proc.start(); result = queue.get(); proc.join()
    return result / 2**20 if isinstance(result, int) else result


def run_case(name, size, labels, modes, batch, reps, device, width):
    dims = 2 if name == 'resnet9' else 3
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, *([size] * dims), generator=g).to(device)
    y = (torch.rand(batch, labels, generator=g) > 0.5).float().to(device)
    setups, errors = {}, {}
    for mode in ('nonprivate',) + tuple(modes):
        try:
            if mode != 'nonprivate': check_grad_sample_mode(mode, model_name=name)
            setups[mode] = build(name, labels, mode, batch, width, device)
            step(setups[mode], x, y, device)                                   # warm-up
        except (DpmedError, RuntimeError, NotImplementedError) as e:
            errors[mode] = f"{type(e).__name__}: {str(e)[:200]}"; setups.pop(mode, None)
    times, mems, cpu = {m: [] for m in setups}, {m: [] for m in setups}, {m: [] for m in setups}
    for _ in range(reps):
        for mode, s in setups.items():
            t, mem = step(s, x, y, device, cpu[mode]); times[mode].append(t); mems[mode].append(mem)
    row = {'model': name, 'size': size, 'reps': reps}
    base_t = statistics.median(times['nonprivate'])
    base_m = max(mems['nonprivate']) if device.type == 'cuda' else None
    row.update(nonprivate_s=base_t, nonprivate_mem_mb=base_m, nonprivate_all_s=times['nonprivate'])
    base_c = statistics.median(cpu['nonprivate']) if cpu['nonprivate'] else None
    if base_c: row.update(nonprivate_cpu_s=base_c, nonprivate_all_cpu_s=cpu['nonprivate'])
    for mode in modes:
        if mode in errors: row[f'{mode}_error'] = errors[mode]; continue
        t = statistics.median(times[mode]); m = max(mems[mode]) if device.type == 'cuda' else None
        row.update({f'{mode}_s': t, f'{mode}_time_ratio': t / base_t, f'{mode}_all_s': times[mode],
                    f'{mode}_mem_mb': m, f'{mode}_mem_ratio': m / base_m if m is not None and base_m else None})
        if base_c: row.update({f'{mode}_cpu_ratio': statistics.median(cpu[mode]) / base_c, f'{mode}_all_cpu_s': cpu[mode]})
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='only 64/128 px and 28^3')
    ap.add_argument('--device', default='auto')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--reps', type=int, default=5, help='interleaved rounds per case (median)')
    ap.add_argument('--big-reps', type=int, default=2, help='rounds for 224 px and 64^3')
    ap.add_argument('--big-modes', default='hooks,ghost,fast_ghost,fast_bk',
                    help='modes for 224 px and 64^3 (functorch/ew are slow there)')
    ap.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    ap.add_argument('--modes', default=','.join(ALL_MODES), help='comma-separated grad_sample_modes')
    ap.add_argument('--cases', default='', help='e.g. resnet9:64,resnet9_3d:64 (default: all or --quick)')
    ap.add_argument('--width', type=float, default=1.0, help='model width (1.0 = the paper)')
    ap.add_argument('--cpu-memory', action='store_true',
                    help='on a CPU, also measure each mode\'s peak memory alone in a fresh process (slower)')
    ap.add_argument('--glibc-default-memory', action='store_true',
                    help="keep glibc's malloc defaults instead of dpmed.core.keep_freed_memory, which dpmed's training "
                         "applies on the CPU (freed blocks reused, not faulted in again each step)")
    ap.add_argument('--out', default=str(Path(__file__).with_suffix('.json')))
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    keep_freed = device.type == 'cpu' and not a.glibc_default_memory and keep_freed_memory()   # as train() does
    modes = [m for m in a.modes.split(',') if m]
    for m in modes:
        if m not in ALL_MODES: raise SystemExit(f"--modes: unknown mode {m!r}")
    cases = QUICK if a.quick else CASES
    if a.cases:
        want = [(c.split(':')[0], int(c.split(':')[1])) for c in a.cases.split(',')]
        labels = {n: (8 if n == 'resnet9' else 1) for n, _ in want}
        cases = [(n, s, labels[n]) for n, s in want]
    rows, t_start = [], time.time()
    header = {'machine': platform.platform(), 'processor': platform.processor(), 'cpu_threads': torch.get_num_threads(),
              'device': str(device), 'gpu': torch.cuda.get_device_name(device) if device.type == 'cuda' else None,
              'torch': torch.__version__, 'batch': a.batch, 'reps': a.reps, 'big_reps': a.big_reps, 'width': a.width,
              'modes': modes, 'big_modes': a.big_modes.split(','), 'keep_freed_memory': keep_freed,
              'command': 'python benchmarks/train_speed.py ' + ' '.join(argv if argv is not None else sys.argv[1:])}
    for name, size, labels in cases:
        big = (name, size) in BIG
        case_modes = [m for m in modes if not big or m in a.big_modes.split(',')]
        row = run_case(name, size, labels, case_modes, a.batch, a.big_reps if big else a.reps, device, a.width)
        if a.cpu_memory and device.type == 'cpu':
            base = cpu_peak_mb(name, size, labels, 'nonprivate', a.batch, a.width, a.threads, keep_freed)
            row['nonprivate_mem_mb'] = base
            for m in case_modes:
                if f'{m}_s' not in row: continue
                mem = cpu_peak_mb(name, size, labels, m, a.batch, a.width, a.threads, keep_freed)
                row[f'{m}_mem_mb'] = mem
                if isinstance(mem, float) and isinstance(base, float): row[f'{m}_mem_ratio'] = mem / base
        rows.append(row)
        write_json(a.out, {**header, 'complete': False, 'rows': rows})       # partial results survive a stop
        print(f"{name:15s} {size:4d}  non-DP {row['nonprivate_s']:7.3f}s  " + '  '.join(
            f"{m} {row[f'{m}_time_ratio']:.2f}x" if f'{m}_time_ratio' in row else f"{m} n/a" for m in case_modes),
            flush=True)
        if 'nonprivate_cpu_s' in row:
            print(f"{'':20s} CPU time: non-DP {row['nonprivate_cpu_s']:7.3f}s  " + '  '.join(
                f"{m} {row[f'{m}_cpu_ratio']:.2f}x" for m in case_modes if f'{m}_cpu_ratio' in row), flush=True)
        base_mem = row.get('nonprivate_mem_mb')
        if base_mem is not None:
            base_txt = f"{base_mem:.0f} MB" if isinstance(base_mem, float) else base_mem
            print(f"{'':20s} memory {base_txt}  " + '  '.join(
                f"{m} {row[f'{m}_mem_ratio']:.2f}x" if row.get(f'{m}_mem_ratio') else f"{m} n/a" for m in case_modes),
                flush=True)
    out = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes'), **header,
           'complete': True, 'seconds_total': round(time.time() - t_start, 1), 'rows': rows}
    write_json(a.out, out)
    return out


if __name__ == '__main__':
    main()
