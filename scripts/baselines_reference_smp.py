#!/usr/bin/env python3
"""Reference outputs of segmentation_models_pytorch's DeepLabV3Plus and Segformer, and of a
PyTorch SegNet written here from the paper, for salt-baselines' parity tests
(`crates/salt-baselines/tests/parity_smp.rs`).

Every model is built with a fixed seed and random, non-trivial weights (BatchNorm / LayerNorm
affine terms and running statistics, and every bias, re-randomised; Linear weights scaled to
1/sqrt(fan_in) so that attention is not uniform) and run in eval mode.

Versions used for the committed fixtures: torch 2.15.0 (CPU), torchvision 0.29.2,
segmentation-models-pytorch 0.6.0, timm 1.0.31, safetensors, numpy. No pretrained weights
(`encoder_weights=None` everywhere).

Regenerate the committed fixtures (reduced widths, same code paths; ~2.2 MB in all):
    python scripts/baselines_reference_smp.py
    cargo test -p salt-baselines --test parity_smp

Paper-size models (Table 1: DeepLabV3Plus resnet101, Segformer mit_b3, SegNet VGG16-BN; 135 to
410 MB per model at 512x512, ~40 s on 2 cores for all three; never committed):
    SALT_BASELINE_FULL_FIXTURES=target/baseline-fixtures \
        python scripts/baselines_reference_smp.py --full [--size 512] [--models deeplabv3plus]
    SALT_BASELINE_FULL_FIXTURES=target/baseline-fixtures \
        cargo test -p salt-baselines --release --test parity_smp -- --ignored full

Save -> reference round trip: the parity test writes each model back with `save_state_dict` to
$SALT_BASELINE_ROUNDTRIP_DIR/<model>.safetensors when that variable is set; this script then
loads them into the reference with `load_state_dict(strict=True)` and compares the logits:
    SALT_BASELINE_ROUNDTRIP_DIR=target/baseline-roundtrip \
        cargo test -p salt-baselines --test parity_smp
    python scripts/baselines_reference_smp.py --check-roundtrip target/baseline-roundtrip

Files written to <out>/<model>/ (out: crates/salt-baselines/tests/fixtures by default):
    model.safetensors       the reference's full state_dict (incl. num_batches_tracked)
    encoder_weights.pth     (deeplabv3plus, segformer) the encoder alone as torchvision /
                            NVlabs name it, with a random ImageNet head (`fc.*` / `head.*`),
                            `torch.save`d like a downloaded checkpoint
    reference.safetensors   f32 tensors:
        input       [n, 3, h, w]
        logits      [n, 1, h, w]
        deeplabv3plus: features.{0,1,4} (stem, layer1, layer4), decoder
        segnet:        encoder.4 (after the last pool), decoder.0, decoder.3 (stride 2)
        segformer:     features.{0,1,2,3} (the four MiT stages), decoder
    meta.json               configuration (the Rust config's fields), seed, versions
"""

import argparse
import json
import os
import sys
from functools import partial

import numpy as np
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.numpy import save_file as save_np
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch
from segmentation_models_pytorch.base.heads import SegmentationHead
from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder
from segmentation_models_pytorch.decoders.segformer.decoder import SegformerDecoder
from segmentation_models_pytorch.encoders.mix_transformer import (
    LayerNorm as MitLayerNorm,
    MixVisionTransformerEncoder,
)
from segmentation_models_pytorch.encoders.resnet import ResNetEncoder
from torchvision.models.resnet import Bottleneck

SEED = 20240611
FIXTURES = os.path.join(os.path.dirname(__file__), "..", "crates", "salt-baselines", "tests", "fixtures")

# Reduced configurations of the committed fixtures. salt_baselines' configs in parity_smp.rs must
# equal them (same field names as the Rust configs).
SMALL = {
    "deeplabv3plus": dict(
        layers=[2, 1, 1, 2], stem_width=8, planes=[4, 8, 16, 32], output_stride=16,
        decoder_channels=16, decoder_atrous_rates=[1, 2, 3], input=[2, 3, 64, 96],
    ),
    "segnet": dict(channels=[4, 8, 12, 16, 16], convs=[2, 2, 3, 3, 3], input=[1, 3, 64, 96]),
    "segformer": dict(
        embed_dims=[8, 16, 24, 32], num_heads=[1, 2, 3, 4], mlp_ratios=[4, 4, 4, 4],
        depths=[2, 1, 1, 2], sr_ratios=[8, 4, 2, 1], decoder_segmentation_channels=16,
        input=[2, 3, 64, 96],
    ),
}

# The paper's rows (Table 1).
FULL = {
    "deeplabv3plus": dict(encoder_name="resnet101"),
    "segnet": dict(channels=[64, 128, 256, 512, 512], convs=[2, 2, 3, 3, 3]),
    "segformer": dict(encoder_name="mit_b3"),
}


# ------------------------------------------------------------------------------------------------
# DeepLabV3+


def slim_resnet_encoder(layers, stem_width, planes, output_stride):
    """smp's ResNetEncoder at other widths: torchvision fixes 64/128/256/512, so the stem and the
    stages are rebuilt with torchvision's own `_make_layer` (same Bottleneck code path)."""
    enc = ResNetEncoder(
        out_channels=[3, stem_width] + [4 * p for p in planes], depth=5, output_stride=output_stride,
        block=Bottleneck, layers=layers,
    )
    enc.inplanes, enc.dilation = stem_width, 1
    enc.conv1 = nn.Conv2d(3, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
    enc.bn1 = nn.BatchNorm2d(stem_width)
    enc.layer1 = enc._make_layer(Bottleneck, planes[0], layers[0])
    enc.layer2 = enc._make_layer(Bottleneck, planes[1], layers[1], stride=2)
    enc.layer3 = enc._make_layer(Bottleneck, planes[2], layers[2], stride=2)
    enc.layer4 = enc._make_layer(Bottleneck, planes[3], layers[3], stride=2)
    if output_stride != 32:
        enc.make_dilated(output_stride)  # as smp's get_encoder
    return enc


def build_deeplabv3plus(cfg, full):
    if full:
        return smp.DeepLabV3Plus(encoder_weights=None, in_channels=3, classes=1, **cfg)
    model = smp.DeepLabV3Plus(encoder_name="resnet18", encoder_weights=None, classes=1)
    model.encoder = slim_resnet_encoder(cfg["layers"], cfg["stem_width"], cfg["planes"], cfg["output_stride"])
    model.decoder = DeepLabV3PlusDecoder(
        encoder_channels=model.encoder.out_channels, encoder_depth=5,
        out_channels=cfg["decoder_channels"], atrous_rates=cfg["decoder_atrous_rates"],
        output_stride=cfg["output_stride"], aspp_separable=True, aspp_dropout=0.5,
    )
    model.segmentation_head = SegmentationHead(cfg["decoder_channels"], 1, kernel_size=1, upsampling=4)
    model.initialize()
    return model


def run_deeplabv3plus(model, x):
    features = model.encoder(x)  # [x, stem, layer1, layer2, layer3, layer4]
    decoder = model.decoder(features)
    logits = model.segmentation_head(decoder)
    assert torch.equal(logits, model(x))
    return logits, {"features.0": features[1], "features.1": features[2], "features.4": features[5], "decoder": decoder}


# ------------------------------------------------------------------------------------------------
# SegNet (Badrinarayanan, Kendall, Cipolla 2017), written from the paper: there is no library
# implementation to compare against.
#
# Encoder: VGG16-BN's 13 conv3x3 (bias) + BatchNorm + ReLU in 5 stages (2, 2, 3, 3, 3 convs of
# 64, 128, 256, 512, 512 channels), each stage followed by a 2x2/2 max-pool that keeps its indices
# (VGG's classifier is dropped). Decoder: the mirror image. Each stage, deepest first, max-unpools
# with the indices of the matching encoder stage, then applies as many conv3x3 + BatchNorm + ReLU as
# that encoder stage has; the last one of each stage narrows to the next shallower stage's width,
# except in the shallowest stage, where a plain conv3x3 (bias, no BatchNorm) to the classes takes
# its place (the paper's "trainable soft-max classifier" input; logits are returned).
#
# Layer list and parameter count (VGG16-BN channels, 3 in, 1 class):
#   encoder  3-64, 64-64 | 64-128, 128-128 | 128-256, 256-256 x2 | 256-512, 512-512 x2 | 512-512 x3
#   decoder  512-512 x3 | 512-512 x2, 512-256 | 256-256 x2, 256-128 | 128-128, 128-64 | 64-64
#   classifier 64-1 (3x3)
#   25 conv3x3 with bias + BatchNorm (9k+3 parameters per output channel for k input channels),
#   one conv3x3 64 -> 1 with bias (577): 29,443,585 parameters.


class ConvBnRelu(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class SegNet(nn.Module):
    def __init__(self, channels, convs, in_channels=3, classes=1):
        super().__init__()
        self.encoder = nn.ModuleList()
        cin = in_channels
        for c, n in zip(channels, convs):
            self.encoder.append(nn.ModuleList([ConvBnRelu(cin if j == 0 else c, c) for j in range(n)]))
            cin = c
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(channels))):
            c, n = channels[i], convs[i]
            layers = [ConvBnRelu(c, c) for _ in range(n - 1)]
            if i > 0:
                layers.append(ConvBnRelu(c, channels[i - 1]))
            self.decoder.append(nn.ModuleList(layers))
        self.classifier = nn.Conv2d(channels[0], classes, kernel_size=3, padding=1)
        for m in self.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x, intermediates=None):
        indices, sizes = [], []
        for stage in self.encoder:
            for layer in stage:
                x = layer(x)
            sizes.append(x.shape[-2:])
            x, idx = F.max_pool2d(x, kernel_size=2, stride=2, return_indices=True)
            indices.append(idx)
        if intermediates is not None:
            intermediates["encoder.4"] = x
        for k, stage in enumerate(self.decoder):
            i = len(self.encoder) - 1 - k
            x = F.max_unpool2d(x, indices[i], kernel_size=2, stride=2, output_size=sizes[i])
            for layer in stage:
                x = layer(x)
            if intermediates is not None and k in (0, len(self.decoder) - 2):
                intermediates[f"decoder.{k}"] = x
        return self.classifier(x)


def build_segnet(cfg, full):
    return SegNet(cfg["channels"], cfg["convs"])


def run_segnet(model, x):
    inter = {}
    logits = model(x, inter)
    return logits, inter


# ------------------------------------------------------------------------------------------------
# Segformer


def build_segformer(cfg, full):
    if full:
        return smp.Segformer(encoder_weights=None, in_channels=3, classes=1, **cfg)
    model = smp.Segformer(encoder_name="mit_b0", encoder_weights=None, classes=1)
    # mit_b*'s params with other widths / depths (smp's `mix_transformer_encoders`).
    model.encoder = MixVisionTransformerEncoder(
        out_channels=[3, 0] + cfg["embed_dims"], depth=5, patch_size=4, embed_dims=cfg["embed_dims"],
        num_heads=cfg["num_heads"], mlp_ratios=cfg["mlp_ratios"], qkv_bias=True,
        norm_layer=partial(MitLayerNorm, eps=1e-6), depths=cfg["depths"], sr_ratios=cfg["sr_ratios"],
        drop_rate=0.0, drop_path_rate=0.1,
    )
    c = cfg["decoder_segmentation_channels"]
    model.decoder = SegformerDecoder(model.encoder.out_channels, encoder_depth=5, segmentation_channels=c)
    model.segmentation_head = SegmentationHead(c, 1, kernel_size=1, upsampling=4)
    model.initialize()
    return model


def run_segformer(model, x):
    features = model.encoder(x)  # [x, dummy, s1, s2, s3, s4]
    decoder = model.decoder(features)
    logits = model.segmentation_head(decoder)
    assert torch.equal(logits, model(x))
    inter = {f"features.{i}": features[i + 2] for i in range(4)}
    inter["decoder"] = decoder
    return logits, inter


MODELS = {
    "deeplabv3plus": (build_deeplabv3plus, run_deeplabv3plus),
    "segnet": (build_segnet, run_segnet),
    "segformer": (build_segformer, run_segformer),
}


# ------------------------------------------------------------------------------------------------


def randomise(model, gen):
    """Non-trivial weights: norms and biases away from their 1 / 0 init, BatchNorm statistics
    away from 0 / 1, Linear weights O(1/sqrt(fan_in))."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.2, generator=gen)
                m.running_mean.normal_(0.0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
            elif isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.2, generator=gen)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, m.in_features ** -0.5, generator=gen)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.normal_(0.0, 0.1, generator=gen)


def encoder_checkpoint(name, model, gen):
    """The encoder's state_dict as a downloaded checkpoint names it: torchvision's resnet101
    (with `fc`) or NVlabs' / smp-hub's mit_b3 (with the ImageNet `head`)."""
    state = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    if name == "deeplabv3plus":
        c = model.encoder.layer4[-1].conv3.out_channels
        state["fc.weight"] = torch.randn(1000 if c == 2048 else 10, c, generator=gen)
        state["fc.bias"] = torch.randn(state["fc.weight"].shape[0], generator=gen)
    else:
        c = model.encoder.norm4.normalized_shape[0]
        state["head.weight"] = torch.randn(1000 if c == 512 else 10, c, generator=gen)
        state["head.bias"] = torch.randn(state["head.weight"].shape[0], generator=gen)
    return state


def versions():
    return {
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "segmentation_models_pytorch": smp.__version__, "timm": timm.__version__,
        "numpy": np.__version__, "python": sys.version.split()[0],
    }


def write(name, full, size, out_root):
    build, run = MODELS[name]
    cfg = dict(FULL[name] if full else SMALL[name])
    shape = [1, 3, size, size] if full else cfg.pop("input")
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = build(cfg, full)
    randomise(model, gen)
    model.eval()
    x = torch.randn(*shape, generator=gen)
    with torch.no_grad():
        logits, inter = run(model, x)
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_torch(state, os.path.join(out, "model.safetensors"))
    if name != "segnet":
        torch.save(encoder_checkpoint(name, model, gen), os.path.join(out, "encoder_weights.pth"))
    tensors = {"input": x, "logits": logits, **inter}
    save_np({k: np.ascontiguousarray(v.numpy().astype(np.float32)) for k, v in tensors.items()},
            os.path.join(out, "reference.safetensors"))
    params = sum(p.numel() for p in model.parameters())
    meta = {"model": name, "full": full, "config": cfg, "input": shape, "seed": SEED,
            "parameters": params, "versions": versions()}
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{name}: {params} parameters, logits {list(logits.shape)} -> {out}")


def check_roundtrip(directory, full):
    """Loads burn-saved state_dicts into the reference with strict=True and compares logits."""
    ok = True
    for name, (build, run) in MODELS.items():
        path = os.path.join(directory, f"{name}.safetensors")
        if not os.path.exists(path):
            print(f"{name}: {path} absent, skipped")
            continue
        cfg = dict(FULL[name] if full else SMALL[name])
        cfg.pop("input", None)
        torch.manual_seed(SEED)
        model = build(cfg, full)
        missing, unexpected = model.load_state_dict(load_torch(path), strict=True)
        model.eval()
        ref = load_torch(os.path.join(FIXTURES, name, "reference.safetensors"))
        with torch.no_grad():
            logits, _ = run(model, ref["input"])
        err = ((logits - ref["logits"]).norm() / ref["logits"].norm()).item()
        print(f"{name}: strict load ok ({len(missing)} missing, {len(unexpected)} unexpected), "
              f"logits relative L2 {err:.2e}")
        ok &= err <= 1e-6
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output root (default: the committed fixtures, or "
                    "$SALT_BASELINE_FULL_FIXTURES with --full)")
    ap.add_argument("--full", action="store_true", help="the paper-size models")
    ap.add_argument("--size", type=int, default=512, help="input side with --full")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    ap.add_argument("--check-roundtrip", metavar="DIR", help="load burn-saved files from DIR")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.check_roundtrip:
        return check_roundtrip(args.check_roundtrip, args.full)
    out = args.out or (os.environ.get("SALT_BASELINE_FULL_FIXTURES") if args.full else FIXTURES)
    if not out:
        ap.error("--full needs --out or SALT_BASELINE_FULL_FIXTURES")
    for name in args.models.split(","):
        write(name, args.full, args.size, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
