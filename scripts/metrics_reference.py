#!/usr/bin/env python3
"""Reference values for salt-metrics (crates/salt-metrics/tests/fixtures/).

Regenerate (from the repository root):

    pip install numpy scipy scikit-image medpy pillow
    python3 scripts/metrics_reference.py

It writes masks as 1-bit PNGs to crates/salt-metrics/tests/fixtures/masks/ and the expected values
to crates/salt-metrics/tests/fixtures/metrics_reference.json; the Rust tests in
crates/salt-metrics/tests/reference.rs compare against them. Everything is seeded: rerunning gives
identical files (numpy 2.x, scipy 1.17, medpy 0.5.2, scikit-image 0.26 were used).

Sources of each expected value:
- Dice, IoU, precision, recall, specificity: numpy counts of the confusion matrix. Conventions where
  a ratio is 0/0 (salt-metrics' documented choices): Dice = IoU = 1 when both masks are empty,
  precision / recall / specificity null.
- `medpy`: medpy.metric.binary.hd95 / hd / assd (result = prediction, reference = target).
- `monai`: MONAI's definition, re-implemented here with scipy because MONAI needs PyTorch (a
  multi-GB install from PyPI): the masks are cropped to the bounding box of their union with a
  margin of 1 (zero-padded, as CropForegroundD(margin=1, allow_smaller=False)), edges =
  binary_erosion(m) ^ m, directed distances = distance_transform_edt(~edges_other, sampling)[edges],
  HD95 = max of the two directed quantiles (torch.quantile interpolates linearly like numpy),
  HD = max of the maxima, ASSD = mean of both directions concatenated. MONAI computes in float32;
  this script (like salt-metrics) in float64.
- `salt-paper`: the SALT paper's evaluation as described in docs/salt-reference.md section 6:
  surfaces = m ^ binary_erosion(m) (4-connected), distances from each surface pixel to the nearest
  foreground pixel of the other mask, HD95 = max of the two directed np.percentile(.., 95);
  HD = max of maxima, ASSD = mean of both directions pooled.
- clDice: `cldice` uses a numpy implementation of Zhang & Suen (1984) written from the paper's
  conditions (the thinning salt-metrics implements); `cldice_skimage` uses
  skimage.morphology.skeletonize, whose lookup table differs from the paper in 25 of 256
  neighbourhoods (recorded for comparison, see docs/decisions.md).
- `edt`: scipy.ndimage.distance_transform_edt(~mask, sampling) for the small masks.
- `percentiles`: numpy.percentile (method "linear").
"""

import json
from pathlib import Path

import numpy as np
from medpy.metric import binary as medpy_binary
from PIL import Image
from scipy import ndimage
from skimage.morphology import skeletonize

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates" / "salt-metrics" / "tests" / "fixtures"
MASKS = FIXTURES / "masks"


# ------------------------------------------------------------------ synthetic vessel trees
def vessel_tree(height, width, seed, roots=3, depth=6):
    """A binary tree of tapering line segments, like a retinal vessel map."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), bool)
    yy, xx = np.mgrid[0:height, 0:width]

    def draw(y0, x0, y1, x1, r):
        n = int(np.hypot(y1 - y0, x1 - x0) * 2) + 2
        for t in np.linspace(0.0, 1.0, n):
            cy, cx = y0 + t * (y1 - y0), x0 + t * (x1 - x0)
            ya, yb = max(int(cy - r - 1), 0), min(int(cy + r + 2), height)
            xa, xb = max(int(cx - r - 1), 0), min(int(cx + r + 2), width)
            if ya >= yb or xa >= xb:
                continue
            win = (yy[ya:yb, xa:xb] - cy) ** 2 + (xx[ya:yb, xa:xb] - cx) ** 2 <= r * r
            mask[ya:yb, xa:xb] |= win

    def grow(y, x, angle, length, r, level):
        if level == 0 or length < 4:
            return
        y1 = y + length * np.sin(angle)
        x1 = x + length * np.cos(angle)
        draw(y, x, y1, x1, r)
        for turn in (-1, 1):
            grow(y1, x1, angle + turn * rng.uniform(0.3, 0.8), length * rng.uniform(0.6, 0.85),
                 max(r * 0.75, 0.5), level - 1)

    cy, cx = height / 2, width / 2
    for k in range(roots):
        a = 2 * np.pi * k / roots + rng.uniform(-0.3, 0.3)
        grow(cy, cx, a, min(height, width) * 0.22, 3.5, depth)
    return mask


def shift(m, dy, dx):
    out = np.zeros_like(m)
    h, w = m.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        m[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def broken(m, seed, holes=12, radius=6):
    rng = np.random.default_rng(seed)
    out = m.copy()
    ys, xs = np.nonzero(m)
    yy, xx = np.mgrid[0:m.shape[0], 0:m.shape[1]]
    for i in rng.choice(len(ys), holes, replace=False):
        out[(yy - ys[i]) ** 2 + (xx - xs[i]) ** 2 <= radius ** 2] = False
    return out


def specks(m, seed, n=8):
    rng = np.random.default_rng(seed)
    out = m.copy()
    out[rng.integers(0, m.shape[0], n), rng.integers(0, m.shape[1], n)] = True
    return out


# ------------------------------------------------------------------ reference metrics
def overlap(p, t):
    tp = int(np.sum(p & t)); fp = int(np.sum(p & ~t)); fn = int(np.sum(~p & t)); tn = int(np.sum(~p & ~t))
    ratio = lambda a, b: (a / b) if b > 0 else None
    return {
        "counts": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "dice": ratio(2 * tp, 2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0,
        "iou": ratio(tp, tp + fp + fn) if (tp + fp + fn) else 1.0,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
    }


def edges(m):
    return ndimage.binary_erosion(m) ^ m


def monai(p, t, spacing):
    union = p | t
    ys, xs = np.nonzero(union)
    y0, y1, x0, x1 = ys.min() - 1, ys.max() + 2, xs.min() - 1, xs.max() + 2

    def crop(m):
        padded = np.pad(m, 1)
        return padded[y0 + 1:y1 + 1, x0 + 1:x1 + 1]

    ep, et = edges(crop(p)), edges(crop(t))
    a = ndimage.distance_transform_edt(~et, sampling=spacing)[ep]
    b = ndimage.distance_transform_edt(~ep, sampling=spacing)[et]
    return {
        "hd": float(max(a.max(), b.max())),
        "hd95": float(max(np.quantile(a, 0.95), np.quantile(b, 0.95))),
        "assd": float(np.concatenate([a, b]).mean()),
    }


def medpy(p, t, spacing):
    return {
        "hd": float(medpy_binary.hd(p, t, voxelspacing=spacing)),
        "hd95": float(medpy_binary.hd95(p, t, voxelspacing=spacing)),
        "assd": float(medpy_binary.assd(p, t, voxelspacing=spacing)),
    }


def salt_paper(p, t, spacing):
    cross = ndimage.generate_binary_structure(2, 1)
    sp = p ^ ndimage.binary_erosion(p, structure=cross)
    st = t ^ ndimage.binary_erosion(t, structure=cross)
    a = ndimage.distance_transform_edt(~t, sampling=spacing)[sp]
    b = ndimage.distance_transform_edt(~p, sampling=spacing)[st]
    return {
        "hd": float(max(a.max(), b.max())),
        "hd95": float(max(np.percentile(a, 95), np.percentile(b, 95))),
        "assd": float(np.concatenate([a, b]).mean()),
    }


def zhang_suen(m):
    """Zhang & Suen 1984, from the paper: parallel deletion in two sub-iterations."""
    h, w = m.shape
    s = np.zeros((h + 2, w + 2), bool)
    s[1:-1, 1:-1] = m
    # P2..P9: N, NE, E, SE, S, SW, W, NW
    offs = [(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)]
    while True:
        removed = False
        for first in (True, False):
            P = [s[1 + dy:h + 1 + dy, 1 + dx:w + 1 + dx].astype(np.int32) for dy, dx in offs]
            B = sum(P)
            A = sum(((P[i] == 0) & (P[(i + 1) % 8] == 1)).astype(np.int32) for i in range(8))
            P2, P3, P4, P5, P6, P7, P8, P9 = P
            if first:
                cond = (P2 * P4 * P6 == 0) & (P4 * P6 * P8 == 0)
            else:
                cond = (P2 * P4 * P8 == 0) & (P2 * P6 * P8 == 0)
            rm = s[1:-1, 1:-1] & (B >= 2) & (B <= 6) & (A == 1) & cond
            if rm.any():
                removed = True
                s[1:-1, 1:-1] &= ~rm
        if not removed:
            return s[1:-1, 1:-1].copy()


def cldice(p, t, skel):
    if not p.any() and not t.any():
        return 1.0
    if not p.any() or not t.any():
        return 0.0
    sp, st = skel(p), skel(t)
    if not sp.any() or not st.any():
        return None
    tprec = np.sum(sp & t) / np.sum(sp)
    tsens = np.sum(st & p) / np.sum(st)
    if tprec + tsens == 0:
        return 0.0
    return float(2 * tprec * tsens / (tprec + tsens))


def empty_field(p, t):
    if not p.any() and not t.any():
        return "both"
    if not p.any():
        return "pred"
    if not t.any():
        return "target"
    return None


def expected(p, t, spacing):
    out = overlap(p, t)
    out["empty"] = empty_field(p, t)
    for name, f in (("monai", monai), ("medpy", medpy), ("salt-paper", salt_paper)):
        out[name] = f(p, t, spacing) if out["empty"] is None else {"hd": None, "hd95": None, "assd": None}
    out["cldice"] = cldice(p, t, zhang_suen)
    out["cldice_skimage"] = cldice(p, t, lambda m: skeletonize(m))
    return out


# ------------------------------------------------------------------ cases
def save(name, m):
    Image.fromarray(m).convert("1").save(MASKS / f"{name}.png", optimize=True)
    return f"masks/{name}.png"


def main():
    MASKS.mkdir(parents=True, exist_ok=True)
    for old in MASKS.glob("*.png"):
        old.unlink()
    rng = np.random.default_rng(20260126)
    cases = []
    saved = {}

    def mask_file(name, m):
        key = m.tobytes() + bytes(str(m.shape), "ascii")
        if key not in saved:
            saved[key] = save(name, m)
        return saved[key]

    def add(name, p, t, spacing=(1.0, 1.0), edt=False):
        case = {
            "name": name,
            "width": int(p.shape[1]),
            "height": int(p.shape[0]),
            "spacing": [float(spacing[0]), float(spacing[1])],
            "pred": mask_file(f"{name}-pred", p),
            "target": mask_file(f"{name}-target", t),
            "expected": expected(p, t, spacing),
        }
        if edt:
            case["edt_target"] = [round(float(v), 12) for v in
                                  ndimage.distance_transform_edt(~t, sampling=spacing).ravel()]
        cases.append(case)

    # DRIVE-sized vessel trees (width 565, height 584).
    tree = vessel_tree(584, 565, seed=1)
    add("tree-identical", tree, tree)
    add("tree-shift", shift(tree, 1, 2), tree)
    add("tree-eroded", ndimage.binary_erosion(tree), tree)
    add("tree-dilated", ndimage.binary_dilation(tree), tree)
    add("tree-broken", broken(tree, seed=2), tree)
    add("tree-specks", specks(broken(tree, seed=3, holes=5), seed=4), tree)
    add("tree-other", vessel_tree(584, 565, seed=5), tree)
    add("tree-shift-spacing", shift(tree, 1, 2), tree, spacing=(0.5, 0.8))
    add("tree-empty-pred", np.zeros_like(tree), tree)

    # Small odd sizes.
    for i, (h, w) in enumerate([(5, 7), (11, 13), (3, 17), (17, 3), (9, 9)]):
        t = ndimage.binary_dilation(rng.random((h, w)) < 0.08)
        p = ndimage.binary_dilation(rng.random((h, w)) < 0.08) | (t & (rng.random((h, w)) < 0.7))
        if not t.any():
            t[h // 2, w // 2] = True
        if not p.any():
            p[0, 0] = True
        add(f"small-{h}x{w}", p, t, edt=True)
        add(f"small-{h}x{w}-spacing", p, t, spacing=(1.7, 0.6), edt=True)
    small_tree = vessel_tree(61, 47, seed=6, roots=2, depth=4)
    add("small-tree-broken", broken(small_tree, seed=7, holes=2, radius=2), small_tree, edt=True)

    one = np.zeros((6, 8), bool)
    a, b = one.copy(), one.copy()
    a[1, 1] = True
    b[4, 6] = True
    add("single-pixels", a, b, edt=True)
    add("single-pixel-same", a, a)
    add("one-by-one", np.ones((1, 1), bool), np.ones((1, 1), bool))
    row = np.zeros((1, 12), bool)
    row[0, 2:9] = True
    row2 = np.zeros((1, 12), bool)
    row2[0, 0:5] = True
    add("one-row", row, row2, edt=True)
    border = np.zeros((10, 12), bool)
    border[0, :] = True
    border[:, 0] = True
    border2 = np.zeros((10, 12), bool)
    border2[:, -3:] = True
    border2[-1, :] = True
    add("border", border, border2, edt=True)
    full = np.ones((7, 9), bool)
    part = np.zeros((7, 9), bool)
    part[2:5, 3:7] = True
    add("full-vs-part", part, full)
    add("full-vs-full", full, full)
    add("empty-pred", np.zeros((7, 9), bool), part)
    add("empty-target", part, np.zeros((7, 9), bool))
    add("both-empty", np.zeros((7, 9), bool), np.zeros((7, 9), bool))
    blob = np.zeros((15, 15), bool)
    blob[3:12, 4:11] = True
    add("nested-blobs", ndimage.binary_erosion(blob, iterations=2), blob, edt=True)

    percentiles = []
    for n in (1, 2, 5, 20, 101):
        v = rng.exponential(3.0, n).round(6)
        for q in (0.0, 50.0, 95.0, 99.0, 100.0):
            percentiles.append({"values": v.tolist(), "q": q, "expected": float(np.percentile(v, q))})

    out = {"generator": "scripts/metrics_reference.py", "cases": cases, "percentiles": percentiles}
    (FIXTURES / "metrics_reference.json").write_text(json.dumps(out, indent=1) + "\n")
    sk = [(c["name"], c["expected"]["cldice"], c["expected"]["cldice_skimage"]) for c in cases
          if c["expected"]["cldice"] != c["expected"]["cldice_skimage"]]
    print(f"{len(cases)} cases, {len(percentiles)} percentile checks; clDice differs from skimage in:")
    for name, ours, theirs in sk:
        print(f"  {name}: zhang-suen {ours} skimage {theirs}")


if __name__ == "__main__":
    main()
