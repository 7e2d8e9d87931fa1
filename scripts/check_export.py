#!/usr/bin/env python3
"""Checks a `salt export-merged` checkpoint with Meta's `segment-anything`.

Loads the exported safetensors into Meta's `Sam` with `load_state_dict(strict=True)` (every key
and shape must be SAM's), predicts one image with one foreground point, and compares the mask
logits with the ones `salt predict --save-logits` wrote for the same file, image and point.

    salt export-merged --adapter runs/x/best --out merged.safetensors
    salt predict --checkpoint merged.safetensors --image img.png --point 64,60 \
        --out m.png --save-logits salt.safetensors
    python scripts/check_export.py --checkpoint merged.safetensors --image img.png \
        --point 64,60 --salt-logits salt.safetensors

`--preset tiny` builds the tiny model of scripts/sam_reference.py; vit_b/vit_l/vit_h use
`sam_model_registry`. The paper's model (`salt_paper`) is not stock SAM and cannot be checked
here. Exit status 0 when the relative L2 error of the logits is at most --tol.
"""

import argparse
import sys

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from segment_anything import SamPredictor, sam_model_registry

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from sam_reference import build_tiny  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--point", required=True, help="X,Y in image pixels (foreground)")
    ap.add_argument("--salt-logits", required=True, help="salt predict --save-logits output")
    ap.add_argument("--preset", default=None, help="default: the file's salt.model")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    with safe_open(args.checkpoint, "pt") as f:
        preset = args.preset or (f.metadata() or {}).get("salt.model", "vit_b")
    sam = build_tiny() if preset == "tiny" else sam_model_registry[preset]()
    sam.load_state_dict(load_file(args.checkpoint), strict=True)
    sam.eval()

    image = np.array(Image.open(args.image).convert("RGB"))
    x, y = (float(v) for v in args.point.split(","))
    predictor = SamPredictor(sam)
    with torch.no_grad():
        predictor.set_image(image)
        masks, _, _ = predictor.predict(
            point_coords=np.array([[x, y]], dtype=np.float32),
            point_labels=np.array([1], dtype=np.float32),
            multimask_output=False,
            return_logits=True,
        )
    ours = load_file(args.salt_logits)["masks_logits"].numpy()[0]
    theirs = masks.astype(np.float32)
    if ours.shape != theirs.shape:
        print(f"shape: salt {ours.shape}, segment_anything {theirs.shape}", file=sys.stderr)
        return 1
    err = float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))
    agree = float(np.mean((ours > 0) == (theirs > 0)))
    print(f"{args.checkpoint} ({preset}): loaded strictly; mask logits relative L2 {err:.2e}, "
          f"thresholded pixels agreeing {agree:.6f}")
    return 0 if err <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
