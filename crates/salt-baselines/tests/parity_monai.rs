//! Parity with MONAI's UNet, RegUNet and UNETR on random non-trivial weights, checkpoint
//! round trips, and the loader's errors.
//!
//! The fixtures come from `scripts/baselines_reference_monai.py` (see its header to regenerate
//! them): small configurations are committed under `tests/fixtures/<model>`; the paper-size
//! ones are made on demand and checked by the `#[ignore]`d `paper_*` tests:
//!
//! ```text
//! SALT_BASELINE_FULL_FIXTURES=target/baseline-fixtures \
//!     python scripts/baselines_reference_monai.py --full
//! SALT_BASELINE_FULL_FIXTURES=target/baseline-fixtures \
//!     cargo test -p salt-baselines --test parity_monai -- --ignored --test-threads 1
//! ```
//!
//! (about 5 minutes on 2 cores, mostly UNETR; the fixtures take ~530 MB).
//!
//! With `SALT_BASELINE_SAVED=<dir>`, the round-trip tests also leave each model's
//! `save_state_dict` output in `<dir>/<model>.safetensors`, for
//! `python scripts/baselines_reference_monai.py --check-saved <dir>` to load into MONAI with
//! `strict=True`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use burn_store::{ModuleSnapshot, ModuleStore};
use salt_baselines::{
    load_state_dict, save_state_dict, Error, KeyMap, RegUNet, RegUNetConfig, UNETRConfig, UNet,
    UNetConfig, UNETR,
};

type TestBackend = burn::backend::NdArray<f32>;

/// Relative L2 error allowed on logits and intermediate activations.
const TOL: f64 = 1e-4;
/// A model saved and loaded again has bit-identical tensors, so identical logits.
const TOL_ROUND_TRIP: f64 = 0.0;

struct Reference {
    tensors: BTreeMap<String, TensorData>,
}

impl Reference {
    fn read(path: &Path) -> Self {
        let mut store = burn_store::SafetensorsStore::from_file(path);
        let snaps = store
            .get_all_snapshots()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self {
            tensors: snaps
                .iter()
                .map(|(k, s)| (k.clone(), s.to_data().expect("tensor data")))
                .collect(),
        }
    }

    fn get(&self, key: &str) -> &TensorData {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("reference has no `{key}`"))
    }

    fn tensor(&self, key: &str) -> Tensor<TestBackend, 4> {
        Tensor::from_data(self.get(key).clone().convert::<f32>(), &Default::default())
    }
}

fn rel_l2(ours: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (a, b) in ours.iter().zip(reference) {
        num += (*a as f64 - *b as f64).powi(2);
        den += (*b as f64).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Compares `ours` with the reference tensor `key` (shape and relative L2 error); returns the
/// error.
fn check<const D: usize>(
    what: &str,
    ours: Tensor<TestBackend, D>,
    reference: &Reference,
    key: &str,
) -> f64 {
    let want = reference.get(key);
    let got = ours.into_data();
    assert_eq!(
        got.shape.to_vec(),
        want.shape.to_vec(),
        "{what}: shape of `{key}`"
    );
    let err = rel_l2(
        &got.into_vec::<f32>().unwrap(),
        &want.clone().convert::<f32>().into_vec::<f32>().unwrap(),
    );
    assert!(
        err.is_finite() && err <= TOL,
        "{what} `{key}`: relative L2 error {err:.3e}"
    );
    err
}

/// Prints the measured errors (shown with `--nocapture`).
fn print_report(model: &str, dir: &Path, report: &[(String, f64)]) {
    let errors: Vec<String> = report.iter().map(|(k, e)| format!("{k} {e:.2e}")).collect();
    eprintln!("{model} ({}): {}", dir.display(), errors.join(", "));
}

fn fixtures(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn full_fixtures(name: &str) -> PathBuf {
    let dir = std::env::var("SALT_BASELINE_FULL_FIXTURES").expect(
        "set SALT_BASELINE_FULL_FIXTURES to the folder written by \
         baselines_reference_monai.py --full",
    );
    Path::new(&dir).join(name)
}

fn loaded<M: ModuleSnapshot<TestBackend>>(mut model: M, dir: &Path, map: &KeyMap) -> M {
    load_state_dict(&mut model, &dir.join("checkpoint.safetensors"), map)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    model
}

fn unet_parity(dir: &Path, config: UNetConfig) {
    let model = loaded(
        config.init::<TestBackend>(&Default::default()).unwrap(),
        dir,
        &salt_baselines::unet::KEY_MAP,
    );
    let reference = Reference::read(&dir.join("reference.safetensors"));
    let f = model.forward_features(reference.tensor("input"));
    let mut report = Vec::new();
    for (i, down) in f.down.into_iter().enumerate() {
        let key = format!("features.down.{i}");
        report.push((key.clone(), check("unet", down, &reference, &key)));
    }
    report.push((
        "bottleneck".into(),
        check("unet", f.bottleneck, &reference, "features.bottleneck"),
    ));
    report.push((
        "logits".into(),
        check("unet", f.logits, &reference, "logits"),
    ));
    print_report("unet", dir, &report);
}

fn unet_small() -> UNetConfig {
    UNetConfig::new(vec![4, 8, 16, 32], vec![2, 2, 2], 2)
}

#[test]
fn unet_matches_monai() {
    unet_parity(&fixtures("unet"), unet_small());
}

#[test]
#[ignore = "needs SALT_BASELINE_FULL_FIXTURES from baselines_reference_monai.py --full"]
fn paper_unet_matches_monai() {
    unet_parity(&full_fixtures("unet"), UNetConfig::paper());
}

fn regunet_parity(dir: &Path, config: RegUNetConfig) {
    let map = &salt_baselines::regunet::KEY_MAP;
    let model = loaded(
        config.init::<TestBackend>(&Default::default()).unwrap(),
        dir,
        map,
    );
    let reference = Reference::read(&dir.join("reference.safetensors"));
    let f = model.forward_features(reference.tensor("input"));
    let mut report = Vec::new();
    for (i, t) in f.encode.into_iter().enumerate() {
        let key = format!("features.encode.{i}");
        report.push((key.clone(), check("regunet", t, &reference, &key)));
    }
    report.push((
        "bottom".into(),
        check("regunet", f.bottom, &reference, "features.bottom"),
    ));
    for (i, t) in f.decode.into_iter().enumerate() {
        let key = format!("features.decode.{i}");
        report.push((key.clone(), check("regunet", t, &reference, &key)));
    }
    report.push((
        "logits".into(),
        check("regunet", f.logits, &reference, "logits"),
    ));
    print_report("regunet", dir, &report);
}

fn regunet_small() -> RegUNetConfig {
    RegUNetConfig::new(4, 3)
}

/// Every optional path: decoder, concatenated skips, strided down-sampling, kernel sizes.
fn regunet_decoder_small() -> RegUNetConfig {
    RegUNetConfig::new(4, 3)
        .with_extract_levels(Some(vec![0, 2, 3]))
        .with_pooling(false)
        .with_concat_skip(true)
        .with_encode_kernel_sizes(vec![5, 3, 3, 3])
}

#[test]
fn regunet_matches_monai() {
    regunet_parity(&fixtures("regunet"), regunet_small());
}

#[test]
fn regunet_decoder_matches_monai() {
    regunet_parity(&fixtures("regunet_decoder"), regunet_decoder_small());
}

#[test]
#[ignore = "needs SALT_BASELINE_FULL_FIXTURES from baselines_reference_monai.py --full"]
fn paper_regunet_matches_monai() {
    regunet_parity(&full_fixtures("regunet"), RegUNetConfig::paper());
}

fn unetr_parity(dir: &Path, config: UNETRConfig) {
    let map = &salt_baselines::unetr::KEY_MAP;
    let model = loaded(
        config.init::<TestBackend>(&Default::default()).unwrap(),
        dir,
        map,
    );
    let reference = Reference::read(&dir.join("reference.safetensors"));
    let f = model.forward_features(reference.tensor("input"));
    let mut report = vec![(
        "patch_embedding".to_string(),
        check(
            "unetr",
            f.patch_embedding,
            &reference,
            "features.patch_embedding",
        ),
    )];
    for i in salt_baselines::unetr::SKIP_BLOCKS {
        let key = format!("features.hidden.{i}");
        report.push((
            key.clone(),
            check("unetr", f.hidden[i].clone(), &reference, &key),
        ));
    }
    report.push((
        "vit".into(),
        check("unetr", f.vit, &reference, "features.vit"),
    ));
    report.push((
        "enc1".into(),
        check("unetr", f.enc1, &reference, "features.enc1"),
    ));
    report.push((
        "enc2".into(),
        check("unetr", f.enc2, &reference, "features.enc2"),
    ));
    report.push((
        "dec3".into(),
        check("unetr", f.dec3, &reference, "features.dec3"),
    ));
    report.push((
        "logits".into(),
        check("unetr", f.logits, &reference, "logits"),
    ));
    print_report("unetr", dir, &report);
}

fn unetr_small() -> UNETRConfig {
    UNETRConfig::new()
        .with_img_size([64, 48])
        .with_feature_size(4)
        .with_hidden_size(16)
        .with_mlp_dim(32)
        .with_num_heads(2)
}

#[test]
fn unetr_matches_monai() {
    unetr_parity(&fixtures("unetr"), unetr_small());
}

#[test]
#[ignore = "needs SALT_BASELINE_FULL_FIXTURES from baselines_reference_monai.py --full"]
fn paper_unetr_matches_monai() {
    unetr_parity(&full_fixtures("unetr"), UNETRConfig::paper());
}

/// The fixture (MONAI 1.6) has the unused `norm_cross_attn` LayerNorms: they are skipped; a
/// checkpoint without them (older MONAI) loads too.
#[test]
fn unetr_loads_with_and_without_cross_attention_norms() {
    let map = &salt_baselines::unetr::KEY_MAP;
    let fresh = || {
        unetr_small()
            .init::<TestBackend>(&Default::default())
            .unwrap()
    };
    let with = load_state_dict(
        &mut fresh(),
        &fixtures("unetr").join("checkpoint.safetensors"),
        map,
    )
    .unwrap();
    assert_eq!(with.ignored, 2 * salt_baselines::unetr::NUM_LAYERS);
    let (_d, without) = edited_checkpoint("unetr", |t| t.retain(|k, _| !k.contains("cross_attn")));
    let report = load_state_dict(&mut fresh(), &without, map).unwrap();
    assert_eq!(report.ignored, 0);
    assert_eq!(report.applied, with.applied);
}

/// Loads the fixture, saves it under MONAI's names, checks that the file holds exactly the
/// fixture's tensors (bar the ignored ones) and that a model loaded from it computes the same.
fn round_trip<M, F>(name: &str, fresh: impl Fn() -> M, map: &KeyMap, forward: F)
where
    M: ModuleSnapshot<TestBackend> + Module<TestBackend>,
    F: Fn(&M, Tensor<TestBackend, 4>) -> Tensor<TestBackend, 4>,
{
    let dir = fixtures(name);
    let model = loaded(fresh(), &dir, map);
    let tmp = tempfile::tempdir().unwrap();
    let out = match std::env::var_os("SALT_BASELINE_SAVED") {
        Some(saved) => {
            std::fs::create_dir_all(&saved).unwrap();
            Path::new(&saved).join(format!("{name}.safetensors"))
        }
        None => tmp.path().join(format!("{name}.safetensors")),
    };
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let written = save_state_dict(&model, &out, map, &meta).unwrap();
    assert_eq!(written, model.num_params(), "{name}: parameters written");

    let ignored: Vec<regex::Regex> = map
        .ignored
        .iter()
        .map(|p| regex::Regex::new(p).unwrap())
        .collect();
    let original = raw_tensors(&dir.join("checkpoint.safetensors"));
    let saved = raw_tensors(&out);
    let expected: BTreeMap<_, _> = original
        .into_iter()
        .filter(|(k, _)| !ignored.iter().any(|re| re.is_match(k)))
        .collect();
    let expected_keys: Vec<_> = expected.keys().collect();
    let saved_keys: Vec<_> = saved.keys().collect();
    assert_eq!(saved_keys, expected_keys, "{name}: saved keys");
    for (key, (shape, bytes)) in &expected {
        assert_eq!(&saved[key].0, shape, "{name}: shape of `{key}`");
        assert_eq!(&saved[key].1, bytes, "{name}: values of `{key}`");
    }

    let again = loaded_from(fresh(), &out, map);
    let x = Reference::read(&dir.join("reference.safetensors")).tensor("input");
    let a = forward(&model, x.clone())
        .into_data()
        .into_vec::<f32>()
        .unwrap();
    let b = forward(&again, x).into_data().into_vec::<f32>().unwrap();
    assert!(
        rel_l2(&b, &a) <= TOL_ROUND_TRIP,
        "{name}: reloaded model differs"
    );
}

fn loaded_from<M: ModuleSnapshot<TestBackend>>(mut model: M, path: &Path, map: &KeyMap) -> M {
    load_state_dict(&mut model, path, map).unwrap();
    model
}

/// Every tensor of a safetensors file: key → (shape, raw little-endian bytes).
fn raw_tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

#[test]
fn unet_round_trips_under_monai_names() {
    round_trip(
        "unet",
        || {
            unet_small()
                .init::<TestBackend>(&Default::default())
                .unwrap()
        },
        &salt_baselines::unet::KEY_MAP,
        |m: &UNet<TestBackend>, x| m.forward(x),
    );
}

#[test]
fn regunet_round_trips_under_monai_names() {
    for (name, config) in [
        ("regunet", regunet_small()),
        ("regunet_decoder", regunet_decoder_small()),
    ] {
        round_trip(
            name,
            || config.init::<TestBackend>(&Default::default()).unwrap(),
            &salt_baselines::regunet::KEY_MAP,
            |m: &RegUNet<TestBackend>, x| m.forward(x),
        );
    }
}

#[test]
fn unetr_round_trips_under_monai_names() {
    round_trip(
        "unetr",
        || {
            unetr_small()
                .init::<TestBackend>(&Default::default())
                .unwrap()
        },
        &salt_baselines::unetr::KEY_MAP,
        |m: &UNETR<TestBackend>, x| m.forward(x),
    );
}

/// Writes the fixture checkpoint of `name` to a temporary file, changed by `edit`.
fn edited_checkpoint(
    name: &str,
    edit: impl FnOnce(&mut BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) -> (tempfile::TempDir, PathBuf) {
    let bytes = std::fs::read(fixtures(name).join("checkpoint.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: BTreeMap<_, _> = file
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.safetensors");
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (dtype, shape, data))| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
            (k.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None::<HashMap<String, String>>, &path).unwrap();
    (dir, path)
}

fn f32_tensor(shape: Vec<usize>) -> (safetensors::Dtype, Vec<usize>, Vec<u8>) {
    let n: usize = shape.iter().product();
    let data = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
    (safetensors::Dtype::F32, shape, data)
}

/// The loader's three key errors, each naming the key, on one model's fixture.
fn loader_errors<M: ModuleSnapshot<TestBackend>>(
    name: &str,
    fresh: impl Fn() -> M,
    map: &KeyMap,
    monai_key: &str,
    burn_path: &str,
) {
    let (_d, missing) = edited_checkpoint(name, |t| {
        t.remove(monai_key).expect("the key is in the fixture");
    });
    match load_state_dict(&mut fresh(), &missing, map) {
        Err(Error::MissingKeys { keys, model, .. }) => {
            assert_eq!(model, map.model);
            assert_eq!(keys, vec![burn_path.to_string()], "{name}: missing keys");
        }
        other => panic!("{name}: expected MissingKeys, got {:?}", other.map(|_| ())),
    }

    let (_d, unexpected) = edited_checkpoint(name, |t| {
        t.insert("extra_head.weight".into(), f32_tensor(vec![2, 3]));
    });
    match load_state_dict(&mut fresh(), &unexpected, map) {
        Err(Error::UnexpectedKeys { keys, .. }) => {
            assert_eq!(
                keys,
                vec!["extra_head.weight".to_string()],
                "{name}: unexpected keys"
            );
        }
        other => panic!(
            "{name}: expected UnexpectedKeys, got {:?}",
            other.map(|_| ())
        ),
    }

    let (_d, misshapen) = edited_checkpoint(name, |t| {
        let (_, shape, _) = t.get(monai_key).unwrap().clone();
        let mut wrong = shape.clone();
        wrong[0] += 1;
        t.insert(monai_key.into(), f32_tensor(wrong));
    });
    match load_state_dict(&mut fresh(), &misshapen, map) {
        Err(Error::ShapeMismatch {
            key,
            expected,
            found,
            others,
            ..
        }) => {
            assert_eq!(key, burn_path, "{name}: misshapen key");
            assert_eq!(found[0], expected[0] + 1);
            assert_eq!(others, 0);
        }
        other => panic!(
            "{name}: expected ShapeMismatch, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[test]
fn unet_loader_errors_name_the_key() {
    loader_errors(
        "unet",
        || {
            unet_small()
                .init::<TestBackend>(&Default::default())
                .unwrap()
        },
        &salt_baselines::unet::KEY_MAP,
        "model.1.submodule.1.submodule.1.submodule.conv.unit1.conv.weight",
        "levels.2.bottom.conv.1.conv.weight",
    );
}

#[test]
fn regunet_loader_errors_name_the_key() {
    loader_errors(
        "regunet_decoder",
        || {
            regunet_decoder_small()
                .init::<TestBackend>(&Default::default())
                .unwrap()
        },
        &salt_baselines::regunet::KEY_MAP,
        "decode_convs.1.0.adn.N.running_var",
        "decode_convs.1.conv.adn.norm.running_var",
    );
}

#[test]
fn unetr_loader_errors_name_the_key() {
    loader_errors(
        "unetr",
        || {
            unetr_small()
                .init::<TestBackend>(&Default::default())
                .unwrap()
        },
        &salt_baselines::unetr::KEY_MAP,
        "encoder2.blocks.1.1.conv2.conv.weight",
        "encoder2.blocks.1.res_block.conv2.conv.weight",
    );
}
