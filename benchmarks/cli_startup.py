"""Start-up time of the command line: `dpmed --help`, `dpmed --version` and `dpmed CMD --help` for every
command, each as a whole new process (the console script), a few repeats, median.

    python benchmarks/cli_startup.py [--repeats 5] [--out benchmarks/cli_startup.json]

Prints one line per command and writes JSON: {command: {"median_s", "min_s", "max_s", "runs"}, ...}.
Also records what a bare `python -c pass` costs on the same machine, the floor of any command."""
import argparse, json, os, platform, shutil, statistics, subprocess, sys, time
from pathlib import Path

COMMANDS = [['--help'], ['--version']] + [[c, '--help'] for c in
            ('train', 'reproduce', 'sweep', 'evaluate', 'fairness', 'audit', 'figures', 'accountant', 'calibrate')] + \
           [['data', '--help'], ['data', 'validate', '--help'], ['data', 'convert', '--help'],
            ['data', 'convert', 'ct-folder', '--help']]


def dpmed_exe() -> list:
    "The console script next to this interpreter, else `python -m dpmed`."
    exe = Path(sys.executable).with_name('dpmed')
    return [str(exe)] if exe.exists() else [sys.executable, '-m', 'dpmed']


def time_once(cmd: list) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0: raise SystemExit(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-300:]}")
    return dt


def measure(cmd: list, repeats: int) -> dict:
    time_once(cmd)                                     # warm the file cache once, not counted
    runs = [time_once(cmd) for _ in range(repeats)]
    return {'median_s': statistics.median(runs), 'min_s': min(runs), 'max_s': max(runs), 'runs': runs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--out', default=str(Path(__file__).with_name('cli_startup.json')))
    a = ap.parse_args(argv)
    base = dpmed_exe()
    res = {'python -c pass': measure([sys.executable, '-c', 'pass'], a.repeats)}
    for c in COMMANDS: res['dpmed ' + ' '.join(c)] = measure(base + c, a.repeats)
    for k, v in res.items(): print(f"{k:<40} median {v['median_s']:.3f} s  (min {v['min_s']:.3f}, max {v['max_s']:.3f})")
    worst = max(v['median_s'] for k, v in res.items() if k.startswith('dpmed'))
    print(f"slowest dpmed median: {worst:.3f} s (goal: under 1 s)")
    meta = {'python': platform.python_version(), 'machine': platform.machine(), 'cpus': os.cpu_count(),
            'load_avg_1min': os.getloadavg()[0], 'repeats': a.repeats, 'launcher': ' '.join(base)}
    Path(a.out).write_text(json.dumps({'meta': meta, 'results': res, 'slowest_median_s': worst}, indent=2) + '\n')
    print(f"wrote {a.out}")


if __name__ == '__main__':
    main()
