#!/usr/bin/env python3
"""Reference outputs of Meta's `segment-anything` for salt-sam's parity tests.

The model is built with random but non-trivial weights (parameters that start at 0 or 1 are
re-randomised; the hypernetwork output layers are rescaled so that mask logits are O(1)), so every
path of the network (relative positions, LayerNorm affine terms, biases) is exercised.

Install (once):
    pip install -r scripts/requirements-sam.txt

Regenerate the committed tiny fixtures (a few hundred kB; deterministic for a given torch build):
    python scripts/sam_reference.py --preset tiny --out crates/salt-sam/tests/fixtures/tiny
    cargo test -p salt-sam --test parity

ViT-B fixtures (about 750 MB, never committed; PyTorch needs ~30 s on 2 cores):
    python scripts/sam_reference.py --preset vit_b --out target/sam-fixtures/vit_b
    SALT_SAM_VITB_FIXTURES=target/sam-fixtures/vit_b \
        cargo test -p salt-sam --release --test parity -- --ignored vit_b

Files written to --out:
    checkpoint.pth          the state_dict, `torch.save`d like sam_vit_b_01ec64.pth
    checkpoint.safetensors  the same tensors as safetensors (tiny only, unless --safetensors)
    image.png               the RGB input image
    reference.safetensors   inputs and outputs (names below), all f32 unless stated
        input_resized               u8  [h, w, 3]  ResizeLongestSide.apply_image (PIL bilinear)
        preprocessed                    [1, 3, S, S] Sam.preprocess (normalised, zero-padded)
        image_embedding                 [1, C, g, g]
        original_size / input_size  i64 [2]        (h, w)
        {case}.point_coords             [N, 2]     original pixels (x, y), only if the case has points
        {case}.point_labels             [N]        1 foreground, 0 background
        {case}.box                      [4]        original pixels x0, y0, x1, y1
        {case}.mask_input               [1, 4g, 4g] low-res logits given as the mask prompt
        {case}.{multi|single}.low_res_logits  [1, M, 4g, 4g]
        {case}.{multi|single}.iou_predictions [1, M]
        {case}.{multi|single}.masks_logits    [1, M, H, W]  at the original size
    salt_paper.safetensors  (tiny only) the same checkpoint through every salt_paper change:
        prompt_token [1, C], input_resized, preprocessed, image_embedding, low_res_logits,
        iou_predictions, masks_logits (single mask), original_size
    meta.json               preset, seed, versions, cases
"""

import argparse
import json
import os
import sys
from functools import partial

import numpy as np
import torch
from PIL import Image

from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

# The tiny configuration: salt_sam::SamConfig::tiny() must equal it. Its 16×16 token grid is not a
# multiple of the window (5), so windowed blocks pad to 20×20 and crop; blocks 1 and 3 are global.
TINY = dict(
    img_size=128,
    patch_size=8,
    embed_dim=32,
    depth=4,
    num_heads=2,
    window_size=5,
    global_attn_indexes=[1, 3],
    prompt_embed_dim=32,
    mask_in_chans=16,
    decoder_depth=2,
    decoder_heads=2,
    decoder_mlp_dim=64,
    iou_head_hidden_dim=32,
)

# Original image sizes (w, h): non-square so that padding and the final crop matter, larger than
# the input size so that PIL's antialiasing filter widens.
IMAGE_SIZE = {"tiny": (160, 120), "vit_b": (640, 480)}


def build_tiny():
    c = TINY
    grid = c["img_size"] // c["patch_size"]
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=c["depth"],
            embed_dim=c["embed_dim"],
            img_size=c["img_size"],
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=c["num_heads"],
            patch_size=c["patch_size"],
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=c["global_attn_indexes"],
            window_size=c["window_size"],
            out_chans=c["prompt_embed_dim"],
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=c["prompt_embed_dim"],
            image_embedding_size=(grid, grid),
            input_image_size=(c["img_size"], c["img_size"]),
            mask_in_chans=c["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=c["decoder_depth"],
                embedding_dim=c["prompt_embed_dim"],
                mlp_dim=c["decoder_mlp_dim"],
                num_heads=c["decoder_heads"],
            ),
            transformer_dim=c["prompt_embed_dim"],
            iou_head_depth=3,
            iou_head_hidden_dim=c["iou_head_hidden_dim"],
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def randomise(sam: Sam, gen: torch.Generator) -> None:
    """Replaces the parameters that start constant (0 or 1) by random values near them."""
    with torch.no_grad():
        for name, p in list(sam.named_parameters()) + list(sam.named_buffers()):
            if name in ("pixel_mean", "pixel_std"):
                continue
            flat = p.flatten()
            constant = bool((flat == flat[0]).all()) if flat.numel() > 1 else True
            if not constant:
                continue
            noise = torch.randn(p.shape, generator=gen)
            if "rel_pos" in name:
                p.copy_(0.5 * noise)
            elif "pos_embed" in name:
                p.copy_(0.5 * noise)
            elif name.endswith("weight") and float(flat[0]) == 1.0:
                p.copy_(1.0 + 0.2 * noise)  # LayerNorm / LayerNorm2d scales
            else:
                p.copy_(0.1 * noise)  # biases that start at 0


def rescale_logits(sam: Sam, predictor_image: np.ndarray, target_std: float = 2.0) -> None:
    """Scales the hypernetwork output layers so that the low-res mask logits have std ≈ target."""
    predictor = SamPredictor(sam)
    predictor.set_image(predictor_image)
    h, w = predictor_image.shape[:2]
    _, _, low = predictor.predict(
        point_coords=np.array([[w * 0.4, h * 0.5]]),
        point_labels=np.array([1]),
        multimask_output=True,
        return_logits=True,
    )
    std = float(np.std(low))
    factor = target_std / max(std, 1e-6)
    with torch.no_grad():
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(factor)
            mlp.layers[-1].bias.mul_(factor)


def make_image(w: int, h: int, gen: np.random.Generator) -> np.ndarray:
    """A smooth RGB scene with a few shapes and some noise: resizing and prompts both matter."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 80 + 100 * (xx / w) + 30 * np.sin(yy / 9.0)
    g = 60 + 120 * (yy / h) + 25 * np.cos(xx / 13.0)
    b = 140 - 60 * (xx / w) * (yy / h)
    disc = (xx - 0.4 * w) ** 2 + (yy - 0.5 * h) ** 2 < (0.18 * h) ** 2
    rect = (xx > 0.62 * w) & (xx < 0.85 * w) & (yy > 0.2 * h) & (yy < 0.7 * h)
    r[disc] += 90
    g[disc] -= 40
    b[rect] += 80
    img = np.stack([r, g, b], axis=-1) + gen.normal(0, 12, (h, w, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def cases(w: int, h: int):
    """Prompt cases in original-image pixels."""
    return {
        "point": dict(points=[[0.4 * w, 0.5 * h]], labels=[1]),
        "pos_neg": dict(points=[[0.4 * w, 0.5 * h], [0.75 * w, 0.45 * h]], labels=[1, 0]),
        "box": dict(box=[0.25 * w, 0.3 * h, 0.6 * w, 0.72 * h]),
        "box_point": dict(
            box=[0.55 * w, 0.15 * h, 0.9 * w, 0.75 * h], points=[[0.7 * w, 0.4 * h]], labels=[1]
        ),
        "none": dict(),
        # The point again, with the "point" case's single-mask low-res logits as mask input.
        "point_mask": dict(points=[[0.4 * w, 0.5 * h]], labels=[1], mask_from="point"),
    }


def no_pe_block_forward(self, queries, keys, query_pe, key_pe):
    """TwoWayAttentionBlock.forward without positional encodings (S-SAM's prompt-adapted SAM)."""
    if self.skip_first_layer_pe:
        queries = self.self_attn(q=queries, k=queries, v=queries)
    else:
        queries = queries + self.self_attn(q=queries, k=queries, v=queries)
    queries = self.norm1(queries)
    queries = self.norm2(queries + self.cross_attn_token_to_image(q=queries, k=keys, v=keys))
    queries = self.norm3(queries + self.mlp(queries))
    keys = self.norm4(keys + self.cross_attn_image_to_token(q=keys, k=queries, v=queries))
    return queries, keys


def no_pe_transformer_forward(self, image_embedding, image_pe, point_embedding):
    """TwoWayTransformer.forward where only the final attention's queries get the token PE."""
    keys = image_embedding.flatten(2).permute(0, 2, 1)
    image_pe = image_pe.flatten(2).permute(0, 2, 1)
    queries = point_embedding
    for layer in self.layers:
        queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=image_pe)
    q = queries + point_embedding
    queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=keys, v=keys))
    return queries, keys


def write_salt_paper(stock: Sam, image: np.ndarray, out_dir: str, gen: torch.Generator) -> None:
    """The tiny model with every salt_paper change (salt_sam::SamConfig::tiny_salt_paper()).

    Built from the stock tiny checkpoint as the Rust loader does: input 64 (8×8 grid), pos_embed
    2×2 average-pooled, global attention without rel_pos in every block, LayerNorm eps 1e-5, one
    learned token as the only sparse prompt (random here so that it matters), no dense
    embedding, no positional encodings inside the decoder blocks, single-mask output.
    """
    import types

    import torch.nn.functional as F

    c = TINY
    size, grid = 64, 64 // c["patch_size"]
    sd = stock.state_dict()
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=c["depth"],
            embed_dim=c["embed_dim"],
            img_size=size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-5),
            num_heads=c["num_heads"],
            patch_size=c["patch_size"],
            qkv_bias=True,
            use_rel_pos=False,
            global_attn_indexes=list(range(c["depth"])),
            window_size=0,
            out_chans=c["prompt_embed_dim"],
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=c["prompt_embed_dim"],
            image_embedding_size=(grid, grid),
            input_image_size=(size, size),
            mask_in_chans=c["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=c["decoder_depth"],
                embedding_dim=c["prompt_embed_dim"],
                mlp_dim=c["decoder_mlp_dim"],
                num_heads=c["decoder_heads"],
            ),
            transformer_dim=c["prompt_embed_dim"],
            iou_head_depth=3,
            iou_head_hidden_dim=c["iou_head_hidden_dim"],
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()
    sd = {k: v for k, v in sd.items() if "rel_pos" not in k}
    pos = sd["image_encoder.pos_embed"].permute(0, 3, 1, 2)
    sd["image_encoder.pos_embed"] = F.avg_pool2d(pos, 2).permute(0, 2, 3, 1).contiguous()
    sam.load_state_dict(sd, strict=True)
    transformer = sam.mask_decoder.transformer
    transformer.forward = types.MethodType(no_pe_transformer_forward, transformer)
    for layer in transformer.layers:
        layer.forward = types.MethodType(no_pe_block_forward, layer)

    token = 0.5 * torch.randn((1, c["prompt_embed_dim"]), generator=gen)
    predictor = SamPredictor(sam)
    out = {}
    with torch.no_grad():
        predictor.set_image(image)
        resized = predictor.transform.apply_image(image)
        tensor = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None].float()
        out["input_resized"] = np.ascontiguousarray(resized)
        out["preprocessed"] = sam.preprocess(tensor).numpy()
        emb = predictor.features
        dense = torch.zeros_like(emb)  # no dense prompt: nothing is added
        low, iou = sam.mask_decoder(
            image_embeddings=emb,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=token[None],
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        masks = sam.postprocess_masks(low, predictor.input_size, predictor.original_size)
        out["prompt_token"] = token.numpy()
        out["image_embedding"] = emb.numpy()
        out["low_res_logits"] = low.numpy()
        out["iou_predictions"] = iou.numpy()
        out["masks_logits"] = masks.numpy()
        out["original_size"] = np.array(predictor.original_size, dtype=np.int64)
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, os.path.join(out_dir, "salt_paper.safetensors"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=["tiny", "vit_b"], required=True)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--safetensors", action="store_true", help="also write checkpoint.safetensors")
    args = ap.parse_args()

    from safetensors.numpy import save_file as save_np
    from safetensors.torch import save_file as save_torch

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    sam = build_tiny() if args.preset == "tiny" else sam_model_registry["vit_b"]()
    sam.eval()
    randomise(sam, gen)

    w, h = IMAGE_SIZE[args.preset]
    image = make_image(w, h, np.random.default_rng(args.seed))
    rescale_logits(sam, image)

    os.makedirs(args.out, exist_ok=True)
    state = {k: v.contiguous() for k, v in sam.state_dict().items()}
    torch.save(state, os.path.join(args.out, "checkpoint.pth"))
    if args.preset == "tiny" or args.safetensors:
        save_torch(state, os.path.join(args.out, "checkpoint.safetensors"))
    Image.fromarray(image).save(os.path.join(args.out, "image.png"))

    predictor = SamPredictor(sam)
    out = {}
    with torch.no_grad():
        resized = predictor.transform.apply_image(image)
        out["input_resized"] = np.ascontiguousarray(resized)
        tensor = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None, :, :, :]
        out["preprocessed"] = sam.preprocess(tensor.float()).numpy()
        predictor.set_image(image)
        out["image_embedding"] = predictor.features.numpy()
        out["original_size"] = np.array(predictor.original_size, dtype=np.int64)
        out["input_size"] = np.array(predictor.input_size, dtype=np.int64)
        for name, case in cases(w, h).items():
            coords = np.array(case["points"], dtype=np.float32) if "points" in case else None
            labels = np.array(case["labels"], dtype=np.float32) if "labels" in case else None
            box = np.array(case["box"], dtype=np.float32) if "box" in case else None
            if coords is not None:
                out[f"{name}.point_coords"] = coords
                out[f"{name}.point_labels"] = labels
            if box is not None:
                out[f"{name}.box"] = box
            mask_input = None
            if "mask_from" in case:
                mask_input = out[f"{case['mask_from']}.single.low_res_logits"][0]  # [1, 4g, 4g]
                out[f"{name}.mask_input"] = mask_input
            for multimask in (True, False):
                masks, iou, low = predictor.predict(
                    point_coords=coords,
                    point_labels=labels,
                    box=box,
                    mask_input=mask_input,
                    multimask_output=multimask,
                    return_logits=True,
                )
                tag = f"{name}.{'multi' if multimask else 'single'}"
                out[f"{tag}.low_res_logits"] = low[None].astype(np.float32)
                out[f"{tag}.iou_predictions"] = iou[None].astype(np.float32)
                out[f"{tag}.masks_logits"] = masks[None].astype(np.float32)
    out = {k: np.ascontiguousarray(v) for k, v in out.items()}
    save_np(out, os.path.join(args.out, "reference.safetensors"))
    if args.preset == "tiny":
        write_salt_paper(sam, image, args.out, gen)
    meta = dict(
        preset=args.preset,
        seed=args.seed,
        image_size_wh=[w, h],
        torch=torch.__version__,
        config=TINY if args.preset == "tiny" else "sam_model_registry['vit_b']",
        cases=cases(w, h),
        low_res_logits_std=float(np.std(out["point.multi.low_res_logits"])),
    )
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(f"wrote {args.out}: {len(out)} reference tensors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
