#!/usr/bin/env python3
"""Reference outputs of MONAI's UNet, RegUNet and UNETR for salt-baselines' parity tests.

Each model is built with a fixed seed, then every parameter and buffer is made non-trivial:
weights get their PyTorch / MONAI initialisation plus noise, and what starts constant (PReLU
slopes at 0.25, norm scales at 1, biases at 0, BatchNorm running statistics at 0 / 1,
UNETR's position embeddings) is re-randomised near that value. The model runs in eval mode.

Tested with: Python 3.11, torch 2.15 (CPU), monai 1.6.1, einops 0.8 (UNETR), safetensors 0.6,
numpy. Install: `pip install torch monai einops safetensors numpy`.

Regenerate the committed small fixtures (about 1.6 MB for all four; byte-identical on
regeneration with a given torch build):
    python scripts/baselines_reference_monai.py
    cargo test -p salt-baselines --test parity_monai

Paper-size fixtures (the Table-1 configurations on one 512×512 input, ~530 MB, never
committed; ~30 s here, then ~5 min for the three tests in the dev profile on 2 cores):
    SALT_BASELINE_FULL_FIXTURES=target/baseline-fixtures \
        python scripts/baselines_reference_monai.py --full
    SALT_BASELINE_FULL_FIXTURES=target/baseline-fixtures \
        cargo test -p salt-baselines --test parity_monai -- --ignored --test-threads 1

Checking that checkpoints written by salt-baselines' `save_state_dict` load into MONAI with
`load_state_dict(strict=True)` and give the reference logits (UNETR: strict but for the unused
`norm_cross_attn` LayerNorms MONAI >= 1.4 creates, which salt's UNETR does not have):
    SALT_BASELINE_SAVED=target/baseline-saved cargo test -p salt-baselines --test parity_monai
    python scripts/baselines_reference_monai.py --check-saved target/baseline-saved

Files written per model, to `<out>/<name>/` (default `<out>`:
crates/salt-baselines/tests/fixtures; `--full`: $SALT_BASELINE_FULL_FIXTURES):
    checkpoint.safetensors  the model's state_dict (`model.state_dict()`, buffers included)
    reference.safetensors   f32 tensors: `input` [n, 3, h, w], `logits` [n, 1, h, w] and the
                            intermediate activations named in `meta.json` (`features`)
    meta.json               model, MONAI constructor arguments, input shape, seed, versions,
                            feature names and shapes, parameter counts
"""

import argparse
import json
import os
import sys

import monai
import numpy as np
import safetensors
import safetensors.torch
import torch
from monai.networks.nets import UNETR, RegUNet, UNet

SEED = 20240917

# The committed fixtures: reduced widths, small non-square inputs, batch 2.
SMALL = {
    "unet": dict(
        cls="UNet",
        kwargs=dict(
            spatial_dims=2,
            in_channels=3,
            out_channels=1,
            channels=(4, 8, 16, 32),
            strides=(2, 2, 2),
            num_res_units=2,
        ),
        input=(2, 3, 32, 48),
    ),
    "regunet": dict(
        cls="RegUNet",
        kwargs=dict(
            spatial_dims=2, in_channels=3, num_channel_initial=4, depth=3, out_channels=1
        ),
        input=(2, 3, 32, 48),
    ),
    # Every other RegUNet path: the decoder (extract_levels below depth), concatenated skips,
    # strided-convolution down-sampling, per-layer kernel sizes.
    "regunet_decoder": dict(
        cls="RegUNet",
        kwargs=dict(
            spatial_dims=2,
            in_channels=3,
            num_channel_initial=4,
            depth=3,
            out_channels=1,
            extract_levels=(0, 2, 3),
            pooling=False,
            concat_skip=True,
            encode_kernel_sizes=[5, 3, 3, 3],
        ),
        input=(2, 3, 32, 48),
    ),
    "unetr": dict(
        cls="UNETR",
        kwargs=dict(
            in_channels=3,
            out_channels=1,
            img_size=(64, 48),
            feature_size=4,
            hidden_size=16,
            mlp_dim=32,
            num_heads=2,
            spatial_dims=2,
        ),
        input=(2, 3, 64, 48),
    ),
}

# The paper's Table-1 rows on 512×512.
FULL = {
    "unet": dict(
        cls="UNet",
        kwargs=dict(
            spatial_dims=2,
            in_channels=3,
            out_channels=1,
            channels=(32, 64, 128, 256, 512),
            strides=(2, 2, 2, 2),
            num_res_units=2,
        ),
        input=(1, 3, 512, 512),
    ),
    "regunet": dict(
        cls="RegUNet",
        kwargs=dict(
            spatial_dims=2, in_channels=3, num_channel_initial=32, depth=4, out_channels=1
        ),
        input=(1, 3, 512, 512),
    ),
    "unetr": dict(
        cls="UNETR",
        kwargs=dict(in_channels=3, out_channels=1, img_size=(512, 512), spatial_dims=2),
        input=(1, 3, 512, 512),
    ),
}

CLASSES = {"UNet": UNet, "RegUNet": RegUNet, "UNETR": UNETR}


def build(spec):
    kwargs = dict(spec["kwargs"])
    return CLASSES[spec["cls"]](**kwargs)


def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Adds noise to every floating tensor; re-randomises those that start constant."""
    with torch.no_grad():
        tensors = list(model.named_parameters()) + list(model.named_buffers())
        for name, t in tensors:
            if not t.is_floating_point():
                continue  # BatchNorm's num_batches_tracked
            noise = torch.randn(t.shape, generator=gen)
            flat = t.flatten()
            constant = bool((flat == flat[0]).all()) if flat.numel() > 1 else True
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif name.endswith("running_mean"):
                t.copy_(0.1 * noise)
            elif "position_embeddings" in name:
                t.copy_(0.5 * noise)
            elif constant and float(flat[0]) == 0.25:
                t.copy_(0.25 + 0.1 * noise)  # PReLU slopes
            elif constant and float(flat[0]) == 1.0:
                t.copy_(1.0 + 0.2 * noise)  # norm scales
            elif constant:
                t.copy_(0.1 * noise)  # biases that start at 0
            else:
                t.add_(0.1 * t.std().clamp(min=1e-3) * noise)


def feature_modules(name: str, model: torch.nn.Module):
    """The modules whose outputs are written as intermediates, by feature name."""
    if name.startswith("unet") and not name.startswith("unetr"):
        mods = {}
        level, i = model.model, 0
        while True:
            mods[f"down.{i}"] = level[0]
            sub = level[1].submodule
            if isinstance(sub, torch.nn.Sequential):
                level, i = sub, i + 1
            else:
                mods["bottleneck"] = sub
                break
        return mods
    if name.startswith("regunet"):
        mods = {f"encode.{i}": m for i, m in enumerate(model.encode_convs)}
        mods["bottom"] = model.bottom_block
        mods.update({f"decode.{i}": m for i, m in enumerate(model.decode_convs)})
        return mods
    if name.startswith("unetr"):
        mods = {"patch_embedding": model.vit.patch_embedding}
        mods.update({f"hidden.{i}": model.vit.blocks[i] for i in (3, 6, 9)})
        mods.update(
            {
                "vit": model.vit.norm,
                "enc1": model.encoder1,
                "enc2": model.encoder2,
                "dec3": model.decoder5,
            }
        )
        return mods
    raise ValueError(name)


def run(name: str, spec: dict, out_dir: str) -> None:
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = build(spec)
    randomise(model, gen)
    model.eval()
    x = torch.randn(spec["input"], generator=gen)
    feats = {}
    hooks = [
        m.register_forward_hook(
            lambda _m, _i, o, key=key: feats.__setitem__(key, o.detach().clone())
        )
        for key, m in feature_modules(name, model).items()
    ]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    os.makedirs(out_dir, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, os.path.join(out_dir, "checkpoint.safetensors"))
    tensors = {"input": x, "logits": logits}
    tensors.update({f"features.{k}": v for k, v in feats.items()})
    tensors = {k: v.float().contiguous() for k, v in tensors.items()}
    safetensors.torch.save_file(tensors, os.path.join(out_dir, "reference.safetensors"))
    params = sum(p.numel() for p in model.parameters())
    cross = sum(p.numel() for n, p in model.named_parameters() if "cross_attn" in n)
    buffers = sum(b.numel() for n, b in model.named_buffers() if b.is_floating_point())
    meta = dict(
        model=name,
        cls=spec["cls"],
        kwargs=spec["kwargs"],
        input=list(spec["input"]),
        seed=SEED,
        features={k: list(v.shape) for k, v in feats.items()},
        parameters=params,
        parameters_without_cross_attn=params - cross,
        float_buffers=buffers,
        versions=dict(
            python=sys.version.split()[0],
            torch=torch.__version__,
            monai=monai.__version__,
            numpy=np.__version__,
            safetensors=safetensors.__version__,
        ),
    )
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"{name}: {params} parameters, logits {tuple(logits.shape)} -> {out_dir}")


def check_saved(saved_dir: str, fixtures: str) -> int:
    """Loads each `<saved_dir>/<name>.safetensors` into MONAI strictly; compares the logits."""
    failures = 0
    suffix = ".safetensors"
    names = sorted(f[: -len(suffix)] for f in os.listdir(saved_dir) if f.endswith(suffix))
    if not names:
        print(f"no .safetensors files in {saved_dir}")
        return 1
    for name in names:
        ref_dir = os.path.join(fixtures, name)
        with open(os.path.join(ref_dir, "meta.json")) as f:
            meta = json.load(f)
        model = build(dict(cls=meta["cls"], kwargs=meta["kwargs"]))
        state = safetensors.torch.load_file(os.path.join(saved_dir, f"{name}.safetensors"))
        if meta["cls"] == "UNETR":
            # salt's UNETR has no `norm_cross_attn` LayerNorms (unused by UNETR; MONAI >= 1.4
            # creates them): they are the only keys allowed to be missing.
            result = model.load_state_dict(state, strict=False)
            others = [k for k in result.missing_keys if ".norm_cross_attn." not in k]
            if others or result.unexpected_keys:
                raise RuntimeError(f"{name}: {others} missing, {result.unexpected_keys} unexpected")
            how = f"loaded (strict but for {len(result.missing_keys)} norm_cross_attn keys)"
        else:
            model.load_state_dict(state, strict=True)
            how = "strict load ok"
        model.eval()
        ref = safetensors.torch.load_file(os.path.join(ref_dir, "reference.safetensors"))
        with torch.no_grad():
            logits = model(ref["input"])
        err = float((logits - ref["logits"]).norm() / ref["logits"].norm())
        ok = err <= 1e-6
        failures += not ok
        verdict = "ok" if ok else "FAIL"
        print(f"{name}: {how}, logits relative L2 error {err:.2e} {verdict}")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", help="output folder (default: the committed fixtures folder)")
    ap.add_argument("--full", action="store_true", help="paper-size models on 512×512")
    ap.add_argument("--models", default=None, help="comma-separated subset of the model names")
    ap.add_argument("--check-saved", metavar="DIR", help="check checkpoints written by salt")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    committed = os.path.join(root, "crates", "salt-baselines", "tests", "fixtures")
    if args.check_saved:
        return check_saved(args.check_saved, args.out or committed)
    specs = FULL if args.full else SMALL
    out = args.out
    if out is None:
        out = os.environ.get("SALT_BASELINE_FULL_FIXTURES") if args.full else committed
        if out is None:
            ap.error("--full writes to --out or $SALT_BASELINE_FULL_FIXTURES")
    names = args.models.split(",") if args.models else list(specs)
    for name in names:
        run(name, specs[name], os.path.join(out, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
