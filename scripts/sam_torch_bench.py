#!/usr/bin/env python3
"""Times PyTorch's SAM image encoder on the CPU, on the same inputs as `benches/sam.rs`.

    pip install -r scripts/requirements-sam.txt
    python3 scripts/sam_torch_bench.py [--repeats 3] [--threads N]

Stock ViT-B at 1024 (windowed attention, relative positions) and the SALT paper's ViT-B at 512
(global attention in all 12 blocks, no relative positions, LayerNorm eps 1e-5); random weights,
one N(0, 1) input image, fp32, eager mode, `torch.no_grad()`. Prints the mean and the minimum
seconds per forward after one warm-up forward. Results: docs/benchmarks.md.
"""

import argparse
import time
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT


def vit_b(img_size: int, salt_paper: bool) -> ImageEncoderViT:
    return ImageEncoderViT(
        depth=12,
        embed_dim=768,
        img_size=img_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-5 if salt_paper else 1e-6),
        num_heads=12,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=not salt_paper,
        global_attn_indexes=list(range(12)) if salt_paper else [2, 5, 8, 11],
        window_size=0 if salt_paper else 14,
        out_chans=256,
    ).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, size, paper in [("salt_paper_512", 512, True), ("vit_b_1024", 1024, False)]:
        model = vit_b(size, paper)
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            model(x)  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        print(f"{name}: mean {sum(times) / len(times):.2f} s, min {min(times):.2f} s over {len(times)}")


if __name__ == "__main__":
    main()
