"""Paired bootstrap of 8-label AUROC at the paper's test-set scale: dpmed's vectorized bootstrap against a
per-resample scikit-learn loop like the original code's, side by side, on the same resample indices.

    python benchmarks/bootstrap.py [--n 40000] [--labels 8] [--n-boot 1000] [--loop-resamples 20]

The loop is timed on the first `--loop-resamples` resamples and extrapolated per resample to `--n-boot` (it would
take minutes otherwise); the table says so. Writes benchmarks/bootstrap.json.
"""
import argparse, json, os, platform, time
from pathlib import Path

import numpy as np
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from dpmed.metrics import bootstrap_counts, bootstrap_indices, auroc_from_counts, auroc


def data(n, L, seed=0):
    "Two models' float32 probabilities (a stronger non-private and a weaker DP one) on the same labels."
    rng = np.random.default_rng(seed)
    prev = np.linspace(0.05, 0.4, L)                                   # CXR-like prevalences
    y = (rng.random((n, L)) < prev).astype(np.int8)
    z = rng.normal(size=(n, L))
    s_np = expit(2.0 * y + z - 1.5).astype(np.float32).astype(float)  # float32 as a model writes them: ties occur
    s_dp = expit(1.2 * y + z + rng.normal(0, 0.7, (n, L)) - 1.5).astype(np.float32).astype(float)
    return y, s_np, s_dp


def ours(y, models, n_boot, seed):
    t0 = time.perf_counter()
    counts = bootstrap_counts(len(y), n_boot, seed)
    t1 = time.perf_counter()
    res = [auroc_from_counts(y, s, counts) for s in models]
    t2 = time.perf_counter()
    return res, t1 - t0, t2 - t1


def loop(y, models, idx):
    "Per resample, per model, per label: index the arrays and call roc_auc_score (the original code's pattern)."
    out = np.empty((len(models), len(idx), y.shape[1]))
    t0 = time.perf_counter()
    for b, i in enumerate(idx):
        for m, s in enumerate(models):
            yb, sb = y[i], s[i]
            for l in range(y.shape[1]): out[m, b, l] = roc_auc_score(yb[:, l], sb[:, l])
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=40000)
    ap.add_argument('--labels', type=int, default=8)
    ap.add_argument('--n-boot', type=int, default=1000)
    ap.add_argument('--loop-resamples', type=int, default=20)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default=str(Path(__file__).with_suffix('.json')))
    a = ap.parse_args()
    y, s_np, s_dp = data(a.n, a.labels, a.seed)
    models = [s_np, s_dp]
    runs = [ours(y, models, a.n_boot, a.seed) for _ in range(a.repeats)]
    res = runs[0][0]
    t_counts = min(r[1] for r in runs); t_auc = min(r[2] for r in runs)
    t_ours = min(r[1] + r[2] for r in runs); t_ours_med = float(np.median([r[1] + r[2] for r in runs]))
    idx = bootstrap_indices(a.n, a.loop_resamples, a.seed)            # the first resamples of the same stream
    ref, t_loop = loop(y, models, idx)
    per_resample = t_loop / a.loop_resamples
    t_loop_full = per_resample * a.n_boot
    diff = max(float(np.abs(res[m][:a.loop_resamples] - ref[m]).max()) for m in range(len(models)))
    point_diff = max(float(np.abs(auroc(y, s) - [roc_auc_score(y[:, l], s[:, l]) for l in range(a.labels)]).max())
                     for s in models)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    out = {'n_items': a.n, 'n_labels': a.labels, 'n_boot': a.n_boot, 'models_paired': len(models),
           'cores_available': cores, 'python': platform.python_version(), 'numpy': np.__version__,
           'ours_seconds_min': t_ours, 'ours_seconds_median': t_ours_med, 'ours_counts_seconds': t_counts,
           'ours_auroc_seconds': t_auc, 'repeats': a.repeats,
           'loop_resamples_timed': a.loop_resamples, 'loop_seconds_timed': t_loop,
           'loop_seconds_per_resample': per_resample, 'loop_seconds_extrapolated': t_loop_full,
           'speedup': t_loop_full / t_ours, 'max_abs_diff_same_resamples': diff, 'max_abs_diff_point': point_diff,
           'note': f'loop timed on {a.loop_resamples} resamples and extrapolated linearly to {a.n_boot}'}
    print(f"Paired bootstrap AUROC: {a.n} items x {a.labels} labels x {len(models)} models, {a.n_boot} resamples, "
          f"{cores} cores")
    print(f"{'method':<44}{'seconds':>10}")
    print(f"{'dpmed (counts + vectorized AUROC), best of ' + str(a.repeats):<44}{t_ours:>10.2f}")
    print(f"{'  of which drawing the resamples':<44}{t_counts:>10.2f}")
    print(f"{'sklearn loop, timed on ' + str(a.loop_resamples) + ' resamples':<44}{t_loop:>10.2f}")
    print(f"{'sklearn loop, extrapolated to ' + str(a.n_boot):<44}{t_loop_full:>10.1f}")
    print(f"speedup {t_loop_full / t_ours:.0f}x; max |AUROC difference| on the same resamples {diff:.2e}")
    Path(a.out).write_text(json.dumps(out, indent=2) + '\n')


if __name__ == '__main__':
    main()
