//! Checkpoint loading: every kind of mismatch is a typed error naming the key, and the
//! `salt_paper` transformations (rel_pos skipped, pos_embed pooled) are reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use salt_sam::{load_checkpoint, Error, Sam, SamConfig};

type TestBackend = burn::backend::NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(name)
}

fn tiny() -> Sam<TestBackend> {
    SamConfig::tiny().init(&Default::default()).unwrap()
}

/// The tiny checkpoint's tensors as `(shape, f32 values)`.
fn tiny_tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixture("checkpoint.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.shape().to_vec(), f32_values(&v))))
        .collect()
}

/// The little-endian f32 values of a tensor view.
fn f32_values(view: &TensorView) -> Vec<f32> {
    view.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Writes `tensors` as a safetensors file in `dir`.
fn write(dir: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> PathBuf {
    let bytes: BTreeMap<&String, Vec<u8>> = tensors
        .iter()
        .map(|(k, (_, v))| (k, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, (shape, _))| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, shape.clone(), &bytes[k]).unwrap(),
            )
        })
        .collect();
    let path = dir.join("edited.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

#[test]
fn missing_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = tiny_tensors();
    t.remove("mask_decoder.iou_token.weight");
    let err = load_checkpoint(&mut tiny(), &write(dir.path(), &t)).unwrap_err();
    match err {
        Error::MissingKeys { keys, .. } => assert_eq!(keys, vec!["mask_decoder.iou_token.weight"]),
        other => panic!("expected MissingKeys, got {other}"),
    }
}

#[test]
fn unexpected_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = tiny_tensors();
    t.insert(
        "mask_decoder.extra_head.weight".into(),
        (vec![2], vec![1.0, 2.0]),
    );
    let err = load_checkpoint(&mut tiny(), &write(dir.path(), &t)).unwrap_err();
    match err {
        Error::UnexpectedKeys { keys, .. } => {
            assert_eq!(keys, vec!["mask_decoder.extra_head.weight"])
        }
        other => panic!("expected UnexpectedKeys, got {other}"),
    }
}

#[test]
fn misshapen_key_names_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = tiny_tensors();
    t.insert(
        "mask_decoder.iou_token.weight".into(),
        (vec![2, 32], vec![0.5; 64]),
    );
    let err = load_checkpoint(&mut tiny(), &write(dir.path(), &t)).unwrap_err();
    let message = err.to_string();
    match err {
        Error::ShapeMismatch {
            key,
            expected,
            found,
            ..
        } => {
            assert_eq!(key, "mask_decoder.iou_token.weight");
            assert_eq!(expected, vec![1, 32]);
            assert_eq!(found, vec![2, 32]);
            assert!(
                message.contains("[2, 32]") && message.contains("[1, 32]"),
                "{message}"
            );
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
}

#[test]
fn wrong_size_checkpoint_suggests_the_preset() {
    // A model built one block deeper than the checkpoint: the checkpoint is `tiny`.
    let mut config = SamConfig::tiny();
    config.image_encoder.depth = 5;
    config.name = "tiny5".into();
    let mut sam: Sam<TestBackend> = config.init(&Default::default()).unwrap();
    let err = load_checkpoint(&mut sam, &fixture("checkpoint.pth")).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::WrongPreset { .. }), "{message}");
    assert!(
        message.contains("--model tiny") && message.contains("4 blocks"),
        "{message}"
    );
}

#[test]
fn unreadable_and_unknown_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pth");
    assert!(matches!(
        load_checkpoint(&mut tiny(), &missing),
        Err(Error::CheckpointRead { .. })
    ));
    let garbage = dir.path().join("garbage.pth");
    std::fs::write(&garbage, b"not a zip pickle").unwrap();
    assert!(matches!(
        load_checkpoint(&mut tiny(), &garbage),
        Err(Error::CheckpointRead { .. })
    ));
    let other = dir.path().join("weights.onnx");
    std::fs::write(&other, b"x").unwrap();
    assert!(matches!(
        load_checkpoint(&mut tiny(), &other),
        Err(Error::UnknownFormat { .. })
    ));
}

#[test]
fn salt_paper_skips_rel_pos_and_pools_pos_embed() {
    let mut sam: Sam<TestBackend> = SamConfig::tiny_salt_paper()
        .init(&Default::default())
        .unwrap();
    let report = load_checkpoint(&mut sam, &fixture("checkpoint.pth")).unwrap();
    // 4 blocks × (rel_pos_h, rel_pos_w) skipped by design; the prompt token keeps its zeros.
    assert_eq!(report.skipped_by_design.len(), 8);
    assert!(report
        .skipped_by_design
        .iter()
        .all(|k| k.contains(".attn.rel_pos_")));
    assert_eq!(report.kept_init, vec!["prompt_encoder.prompt_token"]);
    assert_eq!(report.transformed, vec!["image_encoder.pos_embed"]);
    let token = sam.prompt_encoder.prompt_token.as_ref().unwrap().val();
    assert_eq!(token.abs().sum().into_scalar(), 0.0);

    // pos_embed[0, y, x, c] = mean of the checkpoint's 2×2 block, computed here independently.
    let (shape, src) = &tiny_tensors()["image_encoder.pos_embed"];
    assert_eq!(shape, &vec![1, 16, 16, 32]);
    let pooled = sam.image_encoder.pos_embed.as_ref().unwrap().val();
    assert_eq!(pooled.dims(), [1, 8, 8, 32]);
    let got = pooled.into_data().into_vec::<f32>().unwrap();
    for (y, x, c) in [(0, 0, 0), (3, 5, 7), (7, 7, 31)] {
        let at = |yy: usize, xx: usize| src[(yy * 16 + xx) * 32 + c];
        let expected = (at(2 * y, 2 * x)
            + at(2 * y, 2 * x + 1)
            + at(2 * y + 1, 2 * x)
            + at(2 * y + 1, 2 * x + 1))
            / 4.0;
        assert!(
            (got[(y * 8 + x) * 32 + c] - expected).abs() < 1e-6,
            "({y}, {x}, {c})"
        );
    }

    // Single-mask output only; the learned token alone is a valid prompt.
    let device = Default::default();
    let emb = sam.image_embeddings(
        sam.preprocess(&[128u8; 48 * 64 * 3], 48, 64, &device)
            .unwrap(),
    );
    assert_eq!(emb.dims(), [1, 32, 8, 8]);
    let out = sam
        .decode(emb.clone(), &salt_sam::Prompts::none(), false)
        .unwrap();
    assert_eq!(out.low_res_logits.dims(), [1, 1, 32, 32]);
    assert!(matches!(
        sam.decode(emb, &salt_sam::Prompts::none(), true),
        Err(Error::InvalidPrompt(_))
    ));
}

/// Every parameter of `sam` as `(path, shape, values)`.
fn params(sam: &Sam<TestBackend>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    use burn_store::ModuleSnapshot;
    sam.collect(None, None, false)
        .into_iter()
        .map(|s| {
            let v = s
                .to_data()
                .unwrap()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap();
            (s.full_path(), s.shape.to_vec(), v)
        })
        .collect()
}

#[test]
fn saved_checkpoint_is_the_official_file_back() {
    // Meta's tiny checkpoint → salt-sam → save: the same keys, shapes and bits as the file
    // `segment_anything` wrote, so `Sam.load_state_dict(strict=True)` takes it.
    let mut sam = tiny();
    load_checkpoint(&mut sam, &fixture("checkpoint.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export.safetensors");
    let meta = BTreeMap::from([("salt.model".to_string(), "tiny".to_string())]);
    let report = salt_sam::save_checkpoint(&sam, &out, &meta).unwrap();
    let original = tiny_tensors();
    let bytes = std::fs::read(&out).unwrap();
    let saved = SafeTensors::deserialize(&bytes).unwrap();
    let mut saved_keys: Vec<String> = saved.names().into_iter().map(String::from).collect();
    saved_keys.sort();
    let original_keys: Vec<String> = original.keys().cloned().collect();
    assert_eq!(saved_keys, original_keys);
    assert_eq!(report.tensors, original.len());
    for (key, (shape, values)) in &original {
        let view = saved.tensor(key).unwrap();
        assert_eq!(view.dtype(), Dtype::F32, "{key}");
        assert_eq!(view.shape(), shape.as_slice(), "{key}");
        let got = f32_values(&view);
        assert!(
            got.iter()
                .zip(values)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{key} differs"
        );
    }
    assert_eq!(
        salt_sam::checkpoint_metadata(&out)
            .unwrap()
            .get("salt.model"),
        Some(&"tiny".to_string())
    );
}

#[test]
fn salt_paper_model_round_trips_with_its_own_parameters() {
    // The paper's model has parameters no SAM file has (the prompt token) and a pooled
    // pos_embed: saved and loaded back, every parameter is bit-identical.
    let config = SamConfig::tiny_salt_paper();
    let a: Sam<TestBackend> = config.init(&Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("paper.safetensors");
    salt_sam::save_checkpoint(&a, &out, &BTreeMap::new()).unwrap();
    let mut b: Sam<TestBackend> = config.init(&Default::default()).unwrap();
    assert_ne!(params(&a), params(&b), "two inits should differ");
    let report = load_checkpoint(&mut b, &out).unwrap();
    assert!(report.kept_init.is_empty(), "{:?}", report.kept_init);
    assert!(report.transformed.is_empty(), "{:?}", report.transformed);
    assert_eq!(params(&a), params(&b));
}

#[test]
fn saving_refuses_pth_and_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let err = salt_sam::save_checkpoint(&tiny(), &dir.path().join("x.pth"), &BTreeMap::new())
        .unwrap_err();
    assert!(
        matches!(err, Error::CheckpointWrite { .. }) && err.to_string().contains(".safetensors"),
        "{err}"
    );
    let mut adapted = tiny();
    salt_core::inject(&mut adapted, &salt_core::AdapterConfig::lora(4)).unwrap();
    let path = dir.path().join("x.safetensors");
    let err = salt_sam::save_checkpoint(&adapted, &path, &BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("adapter"), "{err}");
    assert!(!path.exists(), "nothing written on error");
}
