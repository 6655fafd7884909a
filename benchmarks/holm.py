"""Holm's step-down adjustment: dpmed.metrics.holm (NumPy) against statsmodels' multipletests(method='holm'),
per call and for one `dpmed evaluate --baseline` (one call per subgroup x metric), same inputs, same results.

    python benchmarks/holm.py [--labels 8] [--calls 200] [--out benchmarks/holm.json]

statsmodels 0.15 runs gc.collect() inside every Holm call, so its cost grows with everything the process holds
(here: dpmed.metrics with NumPy, pandas and SciPy loaded, as in the evaluate command)."""
import argparse, json, platform, statistics, time
from pathlib import Path

import numpy as np


def per_call(f, p, calls: int) -> float:
    f(p)
    t = time.perf_counter()
    for _ in range(calls): f(p)
    return (time.perf_counter() - t) / calls


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--labels', type=int, default=8)
    ap.add_argument('--calls', type=int, default=200)
    ap.add_argument('--groups', type=int, default=12, help='subgroups (with all) in one evaluate --baseline')
    ap.add_argument('--metrics', type=int, default=6, help='metrics per subgroup in one evaluate --baseline')
    ap.add_argument('--out', default=str(Path(__file__).with_name('holm.json')))
    a = ap.parse_args(argv)
    import statsmodels
    from statsmodels.stats.multitest import multipletests
    from dpmed.metrics import holm
    p = np.random.default_rng(0).random(a.labels)
    assert np.allclose(holm(p), multipletests(p, method='holm')[1])
    sm = lambda q: multipletests(q, method='holm')[1]
    reps = [(per_call(holm, p, a.calls), per_call(sm, p, max(1, a.calls // 20))) for _ in range(3)]
    ours, theirs = statistics.median(r[0] for r in reps), statistics.median(r[1] for r in reps)
    n = a.groups * a.metrics
    res = {'labels': a.labels, 'dpmed_holm_us_per_call': ours * 1e6, 'statsmodels_holm_us_per_call': theirs * 1e6,
           'ratio': theirs / ours, 'calls_per_evaluate': n, 'dpmed_s_per_evaluate': ours * n,
           'statsmodels_s_per_evaluate': theirs * n, 'statsmodels': statsmodels.__version__,
           'python': platform.python_version()}
    print(f"Holm on {a.labels} p-values: dpmed {ours * 1e6:.1f} us/call, statsmodels {theirs * 1e6:.0f} us/call "
          f"({theirs / ours:.0f}x); one evaluate --baseline ({n} calls): {ours * n:.4f} s vs {theirs * n:.2f} s")
    Path(a.out).write_text(json.dumps(res, indent=2) + '\n')
    print(f"wrote {a.out}")


if __name__ == '__main__':
    main()
