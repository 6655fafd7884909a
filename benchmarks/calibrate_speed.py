"""Time to calibrate the noise multiplier for a target epsilon, per accountant.

Setting: 100 epochs at sample rate q = 1/1,000 (100,000 steps), delta 1e-5, target epsilon 8 (and 1, 3 for
dpmed). For each accountant: dpmed.accounting.calibrate_sigma (median of --repeats runs, imports and a warm-up
excluded) next to Opacus' own opacus.accountants.utils.get_noise_multiplier (one run; skip with --no-baseline,
the PRV one takes about a minute). The returned sigma is checked with the stock Opacus accountant: its epsilon
must be <= the target. Goal: prv under 2 s on 2 cores.

    .venv/bin/python benchmarks/calibrate_speed.py [--repeats 3] [--no-baseline]
Prints a table and writes benchmarks/calibrate_speed.json.
"""
import argparse, os, platform, statistics, sys, time, warnings
from pathlib import Path

warnings.filterwarnings('ignore', message='.*Optimal order is the.*')
warnings.filterwarnings('ignore', message='.*GDP accounting is experimental.*')

from dpmed.accounting import _n_cpus, calibrate_sigma, steps_for_epochs
from dpmed.core import write_json

Q, EPOCHS, DELTA = 1e-3, 100, 1e-5
ACCS = ('prv', 'rdp', 'gdp')


def stock_eps(acc, sigma, steps):
    from opacus.accountants import create_accountant
    a = create_accountant(acc); a.history = [(sigma, Q, steps)]
    return float(a.get_epsilon(delta=DELTA))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--targets', type=float, nargs='+', default=[8.0, 3.0, 1.0])
    ap.add_argument('--no-baseline', action='store_true', help="skip Opacus' get_noise_multiplier")
    ap.add_argument('--out', default=str(Path(__file__).with_suffix('.json')))
    args = ap.parse_args(argv)
    from opacus.accountants.utils import get_noise_multiplier
    import opacus, scipy, numpy
    steps = steps_for_epochs(EPOCHS, Q)
    for acc in ACCS: calibrate_sigma(2.0, DELTA, 0.01, steps=200, accountant=acc)   # warm-up, not timed

    rows = []
    for target in args.targets:
        for acc in ACCS:
            times, sigma = [], None
            for _ in range(args.repeats):
                t = time.perf_counter(); sigma = calibrate_sigma(target, DELTA, Q, epochs=EPOCHS, accountant=acc)
                times.append(time.perf_counter() - t)
            eps = stock_eps(acc, sigma, steps)
            row = {'accountant': acc, 'target_epsilon': target, 'sigma': sigma, 'epsilon_stock_opacus': eps,
                   'meets_target': eps <= target + 1e-9, 'seconds_median': statistics.median(times),
                   'seconds_min': min(times), 'seconds_all': times}
            if not args.no_baseline and target == args.targets[0]:
                t = time.perf_counter()
                try:
                    s_op = get_noise_multiplier(target_epsilon=target, target_delta=DELTA, sample_rate=Q,
                                                epochs=EPOCHS, accountant=acc)
                    row.update(opacus_seconds=time.perf_counter() - t, opacus_sigma=s_op,
                               opacus_epsilon=stock_eps(acc, s_op, steps))
                    row['speedup_vs_opacus'] = row['opacus_seconds'] / row['seconds_median']
                except Exception as e:       # Opacus' gdp bracket [0, 500] fails when sigma_high gives eps ~ 0
                    row.update(opacus_seconds=time.perf_counter() - t, opacus_error=f"{type(e).__name__}: {e}")
            rows.append(row)
            print(f"{acc} target {target:g}: sigma {sigma:.5f}, eps(stock opacus) {eps:.4f}, "
                  f"{row['seconds_median']:.3f} s" + (f", opacus {row['opacus_seconds']:.2f} s" if 'opacus_seconds' in row else ''),
                  file=sys.stderr, flush=True)

    print(f"\ncalibrate sigma, {EPOCHS} epochs at q = {Q:g} ({steps:,} steps), delta {DELTA:g}; "
          f"{_n_cpus()} cores; median of {args.repeats}")
    hdr = f"{'acc':4} {'target':>6} {'sigma':>9} {'eps':>8} {'ok':>3} {'dpmed s':>8} {'opacus s':>9} {'opacus sigma':>12} {'speedup':>8}"
    print(hdr); print('-' * len(hdr))
    for r in rows:
        op = (f"{r['opacus_seconds']:9.2f}" if 'opacus_seconds' in r else f"{'':>9}")
        osig = (f"{r['opacus_sigma']:12.5f}" if 'opacus_sigma' in r else (f"{'error':>12}" if 'opacus_error' in r else f"{'':>12}"))
        sp = f"{r['speedup_vs_opacus']:7.1f}x" if 'speedup_vs_opacus' in r else f"{'':>8}"
        print(f"{r['accountant']:4} {r['target_epsilon']:6g} {r['sigma']:9.5f} {r['epsilon_stock_opacus']:8.4f} "
              f"{'yes' if r['meets_target'] else 'NO':>3} {r['seconds_median']:8.3f} {op} {osig} {sp}")
    prv = [r for r in rows if r['accountant'] == 'prv']
    goal = all(r['seconds_median'] < 2.0 for r in prv)
    print(f"\nprv goal (< 2 s): {'met' if goal else 'NOT met'}; all returned sigmas meet the target: "
          f"{all(r['meets_target'] for r in rows)}")
    write_json(args.out, {
        'setting': {'sample_rate': Q, 'epochs': EPOCHS, 'steps': steps, 'delta': DELTA, 'targets': args.targets,
                    'repeats': args.repeats},
        'machine': {'cores_available': _n_cpus(), 'cpu_count': os.cpu_count(), 'python': platform.python_version(),
                    'processor': platform.processor() or platform.machine()},
        'versions': {'opacus': opacus.__version__, 'scipy': scipy.__version__, 'numpy': numpy.__version__},
        'prv_goal_under_2s_met': goal, 'rows': rows})
    print(f"wrote {args.out}")


if __name__ == '__main__':
    main()
