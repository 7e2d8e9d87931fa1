#!/usr/bin/env python3
"""Reference fixtures for salt_data::resize, produced with Pillow.

Regenerate (from the repository root):
    pip install pillow numpy
    python3 scripts/pil_resize_reference.py crates/salt-data/tests/fixtures/resize

Writes, for each case NAME:
    NAME_in.png        the input (8-bit L or RGB, seeded random content with smooth + sharp parts)
    NAME_out.png       Image.resize((w, h), Image.BILINEAR)        (8-bit, as SAM's ResizeLongestSide)
    NAME_nearest.png   Image.resize((w, h), Image.NEAREST)
    NAME_f32.bin       the first channel as mode "F" (values / 255) resized with BILINEAR,
                       little-endian float32, row-major
and manifest.json listing cases with their sizes and the Pillow version used.
The Rust test crates/salt-data/tests/pil_resize.rs reads them.
"""
import json
import os
import sys

import numpy as np
from PIL import Image, __version__ as PIL_VERSION

CASES = [
    # name, mode, (w, h) in, (w, h) out
    ("rgb_down_odd", "RGB", (37, 23), (13, 8)),
    ("rgb_up_odd", "RGB", (11, 7), (29, 19)),
    ("rgb_mixed", "RGB", (40, 17), (23, 31)),
    ("grey_down", "L", (50, 31), (17, 11)),
    ("grey_up", "L", (9, 13), (31, 44)),
    ("grey_longest_side", "L", (45, 61), (38, 52)),
    ("rgb_strong_down", "RGB", (97, 64), (12, 8)),
]


def make_image(mode, size, seed):
    rng = np.random.default_rng(seed)
    w, h = size
    c = 3 if mode == "RGB" else 1
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = 127.5 + 127.5 * np.sin(xx / 3.0 + yy / 5.0)
    noise = rng.integers(0, 256, size=(h, w, c))
    img = np.where(rng.random((h, w, c)) < 0.3, noise, smooth[..., None])
    img[h // 2, :, :] = 255  # a sharp line, like a vessel edge
    img = np.clip(img, 0, 255).astype(np.uint8)
    return Image.fromarray(img[..., 0] if c == 1 else img, mode)


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    manifest = {"pillow": PIL_VERSION, "cases": []}
    for i, (name, mode, size_in, size_out) in enumerate(CASES):
        im = make_image(mode, size_in, seed=1000 + i)
        im.save(os.path.join(out_dir, f"{name}_in.png"))
        im.resize(size_out, Image.BILINEAR).save(os.path.join(out_dir, f"{name}_out.png"))
        im.resize(size_out, Image.NEAREST).save(os.path.join(out_dir, f"{name}_nearest.png"))
        first = np.asarray(im.getchannel(0), dtype=np.float32) / 255.0
        f = Image.fromarray(first, "F").resize(size_out, Image.BILINEAR)
        np.asarray(f, dtype="<f4").tofile(os.path.join(out_dir, f"{name}_f32.bin"))
        manifest["cases"].append(
            {"name": name, "channels": 3 if mode == "RGB" else 1,
             "w": size_in[0], "h": size_in[1], "new_w": size_out[0], "new_h": size_out[1]}
        )
    with open(os.path.join(out_dir, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/salt-data/tests/fixtures/resize")
