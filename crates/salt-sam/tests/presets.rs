//! Presets and adapter attachment by path.

use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use salt_core::{adaptable_paths, inject, AdapterConfig, Method};
use salt_sam::{Sam, SamConfig};

type TestBackend = burn::backend::NdArray<f32>;

/// LoRA adds an exact zero at init, but the adapted forward runs other kernels (f32 rounding of
/// O(1) embeddings): 1e-6 was observed, so allow 1e-5.
const LORA_INIT_TOL: f32 = 1e-5;

/// `sum(p.numel() for p in sam_model_registry["vit_b"]().parameters())` with segment-anything 1.0,
/// plus the 2×128 `positional_encoding_gaussian_matrix`, a buffer in PyTorch and a (frozen)
/// parameter here.
const VIT_B_PARAMS: usize = 93_735_472 + 256;

#[test]
fn every_preset_is_valid() {
    for name in [
        "vit_b",
        "vit_l",
        "vit_h",
        "salt_paper",
        "tiny",
        "tiny_salt_paper",
    ] {
        let config = SamConfig::preset(name).unwrap();
        config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(config.name, name);
    }
    assert!(SamConfig::preset("vit_x").is_err());
}

#[test]
fn vit_b_has_the_reference_parameter_count() {
    let sam: Sam<TestBackend> = SamConfig::vit_b().init(&Default::default()).unwrap();
    assert_eq!(sam.num_params(), VIT_B_PARAMS);
    // salt_paper drops 12 × 2 relative-position tables and has a 32×32 pos_embed and a token:
    // global blocks would hold 2·(2·64 − 1)·64 each, windowed ones 2·(2·14 − 1)·64.
    let paper: Sam<TestBackend> = SamConfig::salt_paper().init(&Default::default()).unwrap();
    let rel = 4 * 2 * (2 * 64 - 1) * 64 + 8 * 2 * (2 * 14 - 1) * 64;
    let pos = 64 * 64 * 768 - 32 * 32 * 768;
    assert_eq!(paper.num_params(), VIT_B_PARAMS - rel - pos + 256);
}

#[test]
fn adapters_attach_by_module_path() {
    let device = Default::default();
    let mut sam: Sam<TestBackend> = SamConfig::tiny().init(&device).unwrap();
    let paths = adaptable_paths(&mut sam);
    assert_eq!(paths.len(), 4 * 4 + 2);
    assert_eq!(paths[0], "image_encoder.blocks.0.attn.qkv");
    assert_eq!(paths[3], "image_encoder.blocks.0.mlp.lin2");
    assert_eq!(
        paths[16..],
        ["image_encoder.neck.conv1", "image_encoder.neck.conv2"]
    );

    let input = Tensor::<TestBackend, 4>::random([1, 3, 128, 128], Distribution::Default, &device);
    let before = sam.image_embeddings(input.clone());
    // LoRA's up-projection starts at zero: every layer adapted, the output must not move.
    let config = AdapterConfig {
        method: Method::Lora {
            rank: 2,
            scale: 1.0,
            dropout: 0.0,
        },
        targets: vec!["**".into()],
        seed: 0,
    };
    let adapted = inject(&mut sam, &config).unwrap();
    assert_eq!(adapted.len(), 18);
    assert_eq!(adapted[1].path, "image_encoder.blocks.0.attn.proj");
    let after = sam.image_embeddings(input);
    let diff = (after - before).abs().max().into_scalar();
    assert!(
        diff < LORA_INIT_TOL,
        "LoRA at init changed the embedding by {diff}"
    );
}
