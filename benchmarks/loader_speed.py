"""Loader speed: images/s from the uint8 cache into batched tensors vs decoding the source files every epoch,
at 64, 128 and 224 px, side by side in one run; and what DP training of ResNet9 consumes at the same size.

Source files: the NIH ChestX-ray14 1,000-image set from ../shared/data, upsampled to 512 x 512 8-bit PNGs (the
size CXR studies commonly train from; NIH ships 1024 px). Without the shared data, random-texture PNGs of the
same size are used. Both loaders go through the same `torch.utils.data.DataLoader` (batch 64, shuffled,
num_workers as given) the training loop uses; the decoding loader runs the same `preprocess_2d` per item.

DP training throughput: `dpmed.models` ResNet9 (GroupNorm, Mish), Opacus DP-SGD (per-sample gradients, clip,
noise), physical batch 32, on this machine's CPU threads; steps timed after one warm-up step.
Every rate is the best of several epochs (loaders) or steps (training), since the machine may be shared: the
best is the least disturbed measurement of each side.

Run: .venv/bin/python benchmarks/loader_speed.py [--n 600] [--workers 0] [--dp-steps 3] [--widths 0.25 1.0]
Writes benchmarks/loader_speed.json.
"""
import argparse, json, os, platform, sys, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dpmed import data as D                                   # noqa: E402
from dpmed.imageset import ArrayDataset                       # noqa: E402
from dpmed.core import write_json                            # noqa: E402

NIH = ROOT.parent / 'shared' / 'data' / 'nih_cxr14_1000_64px' / 'nih_cxr14_1000_64.npz'


class DecodeDataset(torch.utils.data.Dataset):
    "Reads and preprocesses the source file on every access (what a loader without a cache does)."
    def __init__(self, files, labels, p):
        self.files, self.labels, self.p = files, labels.astype(np.float32), p
    def __len__(self): return len(self.files)
    def __getitem__(self, i):
        x = D.preprocess_2d(D.read_image(self.files[i]), self.p)
        return torch.from_numpy(x.astype(np.float32) / 255), torch.from_numpy(self.labels[i])


def epoch_rate(ds, workers, batch=64, repeats=3):
    "Images per second over one full epoch (shuffled batches), best of `repeats` epochs."
    g = torch.Generator().manual_seed(0)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, generator=g, num_workers=workers,
                                     persistent_workers=workers > 0)
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        for x, y in dl: n += len(x)
        rates.append(n / (time.perf_counter() - t0))
    return max(rates)


def dp_rate(size, width, min_steps, budget_s=4.0, max_steps=30, batch=32, n_labels=8):
    "DP-SGD images/s: best step among at least `min_steps` timed steps (more while under `budget_s`)."
    from opacus import PrivacyEngine
    from dpmed.config import ModelConfig
    from dpmed.models import build_model
    torch.manual_seed(0)
    model = build_model(ModelConfig(name='resnet9', width=width), n_labels)
    opt = torch.optim.NAdam(model.parameters(), lr=2e-4)
    x = torch.rand(batch, 1, size, size); y = (torch.rand(batch, n_labels) < 0.3).float()
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
    model, opt, dl = PrivacyEngine().make_private(module=model, optimizer=opt, data_loader=dl, noise_multiplier=1.0,
                                                  max_grad_norm=1.5, poisson_sampling=False)
    lossf = torch.nn.BCEWithLogitsLoss()
    rates, spent, k = [], 0.0, 0
    while k <= min_steps or (spent < budget_s and k <= max_steps):
        t0 = time.perf_counter()
        opt.zero_grad(); lossf(model(x), y).backward(); opt.step()
        dt = time.perf_counter() - t0
        if k > 0: rates.append(batch / dt); spent += dt     # step 0 is the warm-up
        k += 1
    return max(rates)                                           # best step (the machine may be shared)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=600, help='number of source images')
    ap.add_argument('--source-size', type=int, default=512)
    ap.add_argument('--sizes', type=int, nargs='+', default=[64, 128, 224])
    ap.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    ap.add_argument('--dp-steps', type=int, default=3)
    ap.add_argument('--repeats', type=int, default=5, help='epochs per loader measurement (the best counts)')
    ap.add_argument('--loader-threads', type=int, default=1,
                    help='torch threads while measuring loaders (collation of large batches otherwise spins OpenMP '
                         'threads that a shared machine does not have); DP training uses all threads')
    ap.add_argument('--widths', type=float, nargs='+', default=[0.25, 1.0])
    ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'loader_speed.json'))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='dpmed_loader_'))
    if NIH.exists():
        src = np.load(NIH)['images'][:a.n]; source = f'NIH ChestX-ray14 1,000 set, upsampled to {a.source_size} px PNG'
    else:
        src = (np.random.default_rng(0).random((a.n, 64, 64)) * 255).astype(np.uint8); source = 'random texture PNGs'
    files = []
    for i, img in enumerate(src):
        f = tmp / f'{i:05d}.png'
        Image.fromarray(img).resize((a.source_size, a.source_size), Image.BICUBIC).save(f)
        files.append(str(f))
    labels = (np.random.default_rng(1).random((len(files), 8)) < 0.3).astype(np.float32)
    mb = sum(os.path.getsize(f) for f in files) / 2**20
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(a.loader_threads)
    for size in a.sizes:
        p = D.Preprocess(size=size)
        t0 = time.perf_counter()
        mm = D.cached_images(files, p, cache_dir=tmp / 'cache')
        build_s = time.perf_counter() - t0
        for w in a.workers:
            cached = epoch_rate(ArrayDataset(mm, labels), w, repeats=a.repeats)
            decoded = epoch_rate(DecodeDataset(files, labels, p), w, repeats=a.repeats)
            rows.append({'size': size, 'workers': w, 'cached_img_s': cached, 'decode_img_s': decoded,
                         'cache_vs_decode': cached / decoded, 'cache_build_s': build_s})
            print(f"{size:4d}px workers={w}: cached {cached:9.0f} img/s   decode {decoded:7.0f} img/s   "
                  f"x{cached / decoded:6.1f}   (cache built once in {build_s:.1f} s)", flush=True)
    torch.set_num_threads(threads)
    dp = []
    for size in a.sizes:
        for width in a.widths:
            r = dp_rate(size, width, a.dp_steps)
            best_cached = max(x['cached_img_s'] for x in rows if x['size'] == size)
            cached0 = next(x['cached_img_s'] for x in rows if x['size'] == size and x['workers'] == 0)
            dp.append({'size': size, 'width': width, 'dp_train_img_s': r, 'cached0_over_dp': cached0 / r,
                       'best_cached_over_dp': best_cached / r})
            print(f"{size:4d}px ResNet9 width {width}: DP training {r:7.1f} img/s; cache (workers=0) delivers "
                  f"x{cached0 / r:8.1f} that", flush=True)
    res = {'source': source, 'n_images': len(files), 'source_px': a.source_size, 'source_MiB': round(mb, 1),
           'batch': 64, 'dp_physical_batch': 32, 'torch_threads_dp': threads, 'torch_threads_loader': a.loader_threads,
           'load_average_at_end': os.getloadavg(),
           'cpu_count': os.cpu_count(), 'machine': platform.processor() or platform.machine(),
           'timing': 'best of --repeats epochs (loaders) and of --dp-steps steps (DP training)',
           'loader': rows, 'dp_training': dp,
           'goal': 'cached loader >= 5x DP training throughput at the same size',
           'goal_met': all(d['cached0_over_dp'] >= 5 for d in dp)}
    write_json(a.out, res)
    print(pd.DataFrame(rows).round(1).to_string(index=False))
    print(pd.DataFrame(dp).round(1).to_string(index=False))
    print(f"goal met (workers=0): {res['goal_met']}; written {a.out}")
    import shutil; shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
