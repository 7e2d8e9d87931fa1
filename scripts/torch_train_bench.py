#!/usr/bin/env python3
"""Times one training step of the SALT paper's SAM in PyTorch: the peer of `cargo xtask bench-train`.

    pip install -r scripts/requirements-sam.txt
    python3 scripts/torch_train_bench.py --method salt --batch 2 --steps 3 [--device cuda]
        [--tf32] [--bf16] [--compile] [--threads N] [--json FILE]

The model is `salt_sam::SamConfig::salt_paper()` built from Meta's `segment_anything` modules:
ViT-B at 512 (32×32 tokens, global attention in all 12 blocks, no relative positions, LayerNorm
eps 1e-5, a 32×32 `pos_embed`), SAM's mask decoder without positional encodings inside the
two-way blocks, one learned 256-d prompt token as the only sparse prompt, no dense prompt,
single-mask output, logits upsampled bilinearly from 128² to 512². Random weights (as
`cargo xtask bench-train`: only the shapes matter for the time), fixed N(0, 1) images and
random 0/1 masks, batch-global Dice (smooth 1) + focal loss (α 0.75, γ 3) on logits, AdamW
(lr 1e-4, weight decay 1e-2).

Methods (the same trainable sets as `salt train`):
  frozen  only the block and decoder LayerNorms, pos_embed and the prompt token train
  salt    + SALT r=48 q=256 on attn.qkv / attn.proj (W' rebuilt once per forward)
  lora    + LoRA rank 256 (dropout 0.1, scale 1) on qkv, proj, lin1, lin2
  ssam    + S-SAM scale/shift of every singular value on qkv, proj, lin1, lin2
  full    every parameter

`--model unet|unetr|regunet|segnet|deeplabv3plus|segformer` times Table 1's traditional networks
instead (`--method full`, 512×512, the same loss and optimizer): MONAI 1.6.1's UNet / UNETR /
RegUNet and segmentation_models_pytorch 0.6.0's DeepLabV3Plus (ResNet-101) / Segformer (MiT-b3)
with the paper's arguments, and the SegNet of scripts/baselines_reference_smp.py
(`pip install monai==1.6.1 segmentation-models-pytorch==0.6.0 einops`).

Prints one JSON object per configuration (also written to --json): median and min seconds per
step over --steps timed steps after --warmup steps, images/s, and peak memory (CPU: the
process's peak RSS, reset before the run; CUDA: torch.cuda.max_memory_allocated).
"""

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, TwoWayTransformer

# The paper's decoder without positional encodings inside the two-way blocks: the same functions
# the parity fixtures are made with.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sam_reference import no_pe_block_forward, no_pe_transformer_forward  # noqa: E402


# --- adapters, written out -------------------------------------------------------------------

def freeze(base: nn.Linear) -> nn.Linear:
    base.weight.requires_grad_(False)
    if base.bias is not None:
        base.bias.requires_grad_(False)
    return base


class SaltLinear(nn.Module):
    """W' = W + U (ReLU(Σ') − Σ) Vᵀ, Σ' = diag(α⊙S[:r] + β) ⊕ (diag(S[r:]) + X·Y)."""

    def __init__(self, base: nn.Linear, r: int, q: int):
        super().__init__()
        self.base = freeze(base)
        u, s, vt = torch.linalg.svd(base.weight.detach().double(), full_matrices=False)
        u, s, vt = u.float(), s.float(), vt.float()
        k = s.numel()
        self.register_buffer("u_top", u[:, :r].contiguous())
        self.register_buffer("s_top", s[:r].contiguous())
        self.register_buffer("vt_top", vt[:r].contiguous())
        self.register_buffer("u_rest", u[:, r:].contiguous())
        self.register_buffer("s_rest", torch.diag(s[r:]).contiguous())
        self.register_buffer("vt_rest", vt[r:].contiguous())
        self.scale = nn.Parameter(torch.ones(r))
        self.shift = nn.Parameter(torch.zeros(r))
        self.x = nn.Parameter(0.01 * torch.randn(k - r, q))
        self.y = nn.Parameter(0.01 * torch.randn(q, k - r))

    def forward(self, x):
        top = F.relu(self.scale * self.s_top + self.shift) - self.s_top
        rest = F.relu(self.s_rest + self.x @ self.y) - self.s_rest
        delta = (self.u_top * top) @ self.vt_top + self.u_rest @ (rest @ self.vt_rest)
        return F.linear(x, self.base.weight + delta, self.base.bias)


class SvdLinear(nn.Module):
    """S-SAM: W' = U diag(ReLU(α⊙S + β)) Vᵀ over every singular value."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = freeze(base)
        u, s, vt = torch.linalg.svd(base.weight.detach().double(), full_matrices=False)
        self.register_buffer("u", u.float().contiguous())
        self.register_buffer("s", s.float().contiguous())
        self.register_buffer("vt", vt.float().contiguous())
        self.scale = nn.Parameter(torch.ones_like(self.s))
        self.shift = nn.Parameter(torch.zeros_like(self.s))

    def forward(self, x):
        d = F.relu(self.scale * self.s + self.shift) - self.s
        return F.linear(x, self.base.weight + (self.u * d) @ self.vt, self.base.bias)


class LoraLinear(nn.Module):
    """y = W x + b + up(down(dropout(x))), down ~ N(0, 1/r²)·, up = 0."""

    def __init__(self, base: nn.Linear, r: int, dropout: float = 0.1):
        super().__init__()
        self.base = freeze(base)
        self.down = nn.Linear(base.in_features, r, bias=False)
        self.up = nn.Linear(r, base.out_features, bias=False)
        nn.init.normal_(self.down.weight, std=1.0 / r)
        nn.init.zeros_(self.up.weight)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + self.up(self.down(self.dropout(x)))


# --- the paper's model -----------------------------------------------------------------------

class PaperSam(nn.Module):
    def __init__(self):
        super().__init__()
        import types

        self.image_encoder = ImageEncoderViT(
            depth=12, embed_dim=768, img_size=512, mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-5), num_heads=12, patch_size=16,
            qkv_bias=True, use_rel_pos=False, global_attn_indexes=list(range(12)),
            window_size=0, out_chans=256,
        )
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        )
        t = self.mask_decoder.transformer
        t.forward = types.MethodType(no_pe_transformer_forward, t)
        for layer in t.layers:
            layer.forward = types.MethodType(no_pe_block_forward, layer)
        # SAM's random-Fourier positional encoding of the 32×32 grid (a frozen buffer).
        self.register_buffer("pe_gaussian", torch.randn(2, 128))
        self.prompt_token = nn.Parameter(torch.zeros(1, 1, 256))

    def dense_pe(self, g: int):
        coords = (torch.arange(g, device=self.pe_gaussian.device, dtype=torch.float32) + 0.5) / g
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        c = 2 * torch.stack([xx, yy], dim=-1) - 1
        c = 2 * torch.pi * (c @ self.pe_gaussian)
        return torch.cat([c.sin(), c.cos()], dim=-1).permute(2, 0, 1)[None]  # [1, 256, g, g]

    def forward(self, images):
        emb = self.image_encoder(images)  # [n, 256, 32, 32]
        n, _, g, _ = emb.shape
        md = self.mask_decoder
        tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], 0)[None].expand(n, -1, -1)
        tokens = torch.cat([tokens, self.prompt_token.expand(n, -1, -1)], 1)
        pos = self.dense_pe(g).expand(n, -1, -1, -1)
        hs, src = md.transformer(emb, pos, tokens)
        mask_tok = hs[:, 1, :]  # mask token 0 (single-mask output)
        src = src.transpose(1, 2).reshape(n, 256, g, g)
        up = md.output_upscaling(src)  # [n, 32, 4g, 4g]
        hyper = md.output_hypernetworks_mlps[0](mask_tok)  # [n, 32]
        low = (hyper[:, None, :] @ up.flatten(2)).reshape(n, 1, 4 * g, 4 * g)
        return F.interpolate(low, size=(16 * g, 16 * g), mode="bilinear", align_corners=False)


def attach(model: PaperSam, method: str):
    for p in model.parameters():
        p.requires_grad_(method == "full")
    if method == "full":
        return
    for blk in model.image_encoder.blocks:
        if method == "salt":
            blk.attn.qkv = SaltLinear(blk.attn.qkv, 48, 256)
            blk.attn.proj = SaltLinear(blk.attn.proj, 48, 256)
        elif method == "ssam":
            blk.attn.qkv, blk.attn.proj = SvdLinear(blk.attn.qkv), SvdLinear(blk.attn.proj)
            blk.mlp.lin1, blk.mlp.lin2 = SvdLinear(blk.mlp.lin1), SvdLinear(blk.mlp.lin2)
        elif method == "lora":
            blk.attn.qkv, blk.attn.proj = LoraLinear(blk.attn.qkv, 256), LoraLinear(blk.attn.proj, 256)
            blk.mlp.lin1, blk.mlp.lin2 = LoraLinear(blk.mlp.lin1, 256), LoraLinear(blk.mlp.lin2, 256)
        elif method != "frozen":
            sys.exit(f"unknown method {method}")
    # The paper's extra trainable tensors (salt-cli's paper_trainable).
    for blk in model.image_encoder.blocks:
        for p in list(blk.norm1.parameters()) + list(blk.norm2.parameters()):
            p.requires_grad_(True)
    t = model.mask_decoder.transformer
    for name, p in t.named_parameters():
        if name.startswith("norm") or (name.startswith("layers.") and ".norm" in name):
            p.requires_grad_(True)
    model.image_encoder.pos_embed.requires_grad_(True)
    model.prompt_token.requires_grad_(True)


BASELINES = ["unet", "unetr", "regunet", "segnet", "deeplabv3plus", "segformer"]


def baseline(name: str) -> nn.Module:
    """Table 1's traditional network `name` with the paper's arguments (salt-baselines' paper())."""
    if name in ("unet", "unetr", "regunet"):
        from monai.networks.nets import UNETR, RegUNet, UNet

        if name == "unet":
            return UNet(spatial_dims=2, in_channels=3, out_channels=1,
                        channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2), num_res_units=2)
        if name == "unetr":
            return UNETR(in_channels=3, out_channels=1, img_size=(512, 512), spatial_dims=2)
        return RegUNet(spatial_dims=2, in_channels=3, num_channel_initial=32, depth=4, out_channels=1)
    if name == "segnet":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from baselines_reference_smp import SegNet

        return SegNet([64, 128, 256, 512, 512], [2, 2, 3, 3, 3])
    import segmentation_models_pytorch as smp

    if name == "deeplabv3plus":
        return smp.DeepLabV3Plus(encoder_name="resnet101", encoder_weights=None, in_channels=3, classes=1)
    return smp.Segformer(encoder_name="mit_b3", encoder_weights=None, in_channels=3, classes=1)


def loss_fn(logits, masks):
    logits = logits.float()
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * masks).sum() + 1) / (masks.sum() + p.sum() + 1)
    ce = F.binary_cross_entropy_with_logits(logits, masks, reduction="none")
    p_t = p * masks + (1 - p) * (1 - masks)
    a_t = 0.75 * masks + 0.25 * (1 - masks)
    focal = (a_t * (1 - p_t).clamp_min(0) ** 3 * ce).mean()
    return dice + focal


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="salt_paper", choices=["salt_paper"] + BASELINES)
    ap.add_argument("--method", default="salt", choices=["frozen", "salt", "lora", "ssam", "full"])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (CUDA)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)

    if args.model == "salt_paper":
        model = PaperSam()
        attach(model, args.method)
    else:
        if args.method != "full":
            sys.exit(f"--model {args.model} trains with --method full")
        model = baseline(args.model)
    model = model.to(dev).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=1e-2)
    fwd = torch.compile(model) if args.compile else model
    images = torch.randn(args.batch, 3, 512, 512, device=dev)
    masks = (torch.rand(args.batch, 1, 512, 512, device=dev) < 0.1).float()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = fwd(images)
        loss = loss_fn(logits, masks)
        loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else peak_rss_bytes()
    med = statistics.median(times)
    out = {
        "impl": "pytorch",
        "torch": torch.__version__,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "method": args.method,
        "batch": args.batch,
        "precision": "bf16-autocast" if args.bf16 else ("tf32" if args.tf32 else "f32"),
        "compile": args.compile,
        "steps": args.steps,
        "step_s": times,
        "median_s": med,
        "min_s": min(times),
        "images_per_s": args.batch / med,
        "peak_bytes": peak,
        "trainable": sum(p.numel() for p in trainable),
        "total": sum(p.numel() for p in model.parameters()),
        "last_loss": float(loss.detach()),
    }
    line = json.dumps(out)
    print(line, flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
