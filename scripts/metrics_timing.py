#!/usr/bin/env python3
"""Timings of the Python references on the masks benches/metrics.rs uses, for docs/benchmarks.md.

Run (from the repository root, after `pip install numpy scipy scikit-image medpy pillow`):

    python3 scripts/metrics_timing.py

Masks: crates/salt-metrics/tests/fixtures/masks/ (made by scripts/metrics_reference.py); the
scaling series resamples them by nearest neighbour with the same rule as the Rust bench
(source index = floor(i * src / n)). Each number is the median of several runs (time.perf_counter).
"""

import time
from pathlib import Path

import numpy as np
from medpy.metric import binary as medpy_binary
from PIL import Image
from scipy import ndimage
from skimage.morphology import skeletonize

ROOT = Path(__file__).resolve().parent.parent
MASKS = ROOT / "crates" / "salt-metrics" / "tests" / "fixtures" / "masks"


def load(name):
    return np.array(Image.open(MASKS / name).convert("L")) > 0


def resample(m, n):
    ys = (np.arange(n) * m.shape[0]) // n
    xs = (np.arange(n) * m.shape[1]) // n
    return m[np.ix_(ys, xs)]


def monai_hd95(p, t):
    """MONAI's HD95 definition in scipy (see scripts/metrics_reference.py)."""
    ep = ndimage.binary_erosion(p) ^ p
    et = ndimage.binary_erosion(t) ^ t
    a = ndimage.distance_transform_edt(~et)[ep]
    b = ndimage.distance_transform_edt(~ep)[et]
    return max(np.quantile(a, 0.95), np.quantile(b, 0.95))


def timed(f, min_time=1.0, min_runs=5):
    runs = []
    start = time.perf_counter()
    while len(runs) < min_runs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        f()
        runs.append(time.perf_counter() - t0)
    return float(np.median(runs))


def main():
    target = load("tree-identical-pred.png")
    preds = {"broken": load("tree-broken-pred.png"), "eroded": load("tree-eroded-pred.png")}
    print("| masks | operation | median time (ms) |")
    print("|---|---|---|")
    for name, p in preds.items():
        print(f"| vessel 565x584 {name} | medpy hd95 | {timed(lambda: medpy_binary.hd95(p, target)) * 1e3:.2f} |")
        print(f"| vessel 565x584 {name} | MONAI-definition hd95 (scipy) | {timed(lambda: monai_hd95(p, target)) * 1e3:.2f} |")
    print(f"| vessel 565x584 | scipy distance_transform_edt | {timed(lambda: ndimage.distance_transform_edt(~target)) * 1e3:.2f} |")
    print(f"| vessel 565x584 | skimage skeletonize | {timed(lambda: skeletonize(target)) * 1e3:.2f} |")
    for n in (256, 512, 1024, 2048):
        t = resample(target, n)
        p = resample(preds["eroded"], n)
        print(f"| scaling {n}x{n} | medpy hd95 | {timed(lambda: medpy_binary.hd95(p, t), min_runs=3) * 1e3:.2f} |")


if __name__ == "__main__":
    main()
