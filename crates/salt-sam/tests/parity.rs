//! Parity with Meta's `segment-anything` on random non-trivial weights.
//!
//! The fixtures come from `scripts/sam_reference.py` (see its header to regenerate them): the
//! tiny model's are committed under `tests/fixtures/tiny`; ViT-B's are made on demand:
//!
//! ```text
//! python scripts/sam_reference.py --preset vit_b --out target/sam-fixtures/vit_b
//! SALT_SAM_VITB_FIXTURES=target/sam-fixtures/vit_b \
//!     cargo test -p salt-sam --release --test parity -- --ignored vit_b
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use burn_store::ModuleStore;
use salt_sam::{load_checkpoint, ImagePrompt, ResizeLongestSide, Sam, SamConfig};

type TestBackend = burn::backend::NdArray<f32>;

/// Relative L2 error allowed on the image embedding, low-res and final mask logits.
const TOL_LOGITS: f64 = 1e-4;
/// Relative L2 error allowed on the IoU predictions.
const TOL_IOU: f64 = 1e-3;
/// Thresholded masks must agree wherever the reference logit is farther than this from 0.
const MASK_MARGIN: f32 = 1e-2;
/// `preprocess` does the same f32 operations as PyTorch: equal up to rounding.
const TOL_PREPROCESS: f64 = 1e-6;

const CASES: &[&str] = &["point", "pos_neg", "box", "box_point", "none", "point_mask"];

struct Reference {
    tensors: BTreeMap<String, TensorData>,
}

impl Reference {
    fn read(dir: &Path) -> Self {
        Self {
            tensors: Self::read_file(&dir.join("reference.safetensors")),
        }
    }

    fn read_file(path: &Path) -> BTreeMap<String, TensorData> {
        let mut store = burn_store::SafetensorsStore::from_file(path);
        let snaps = store
            .get_all_snapshots()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        snaps
            .iter()
            .map(|(k, s)| (k.clone(), s.to_data().expect("tensor data")))
            .collect()
    }

    fn get(&self, key: &str) -> Option<&TensorData> {
        self.tensors.get(key)
    }

    fn f32(&self, key: &str) -> Vec<f32> {
        let d = self
            .get(key)
            .unwrap_or_else(|| panic!("reference has no `{key}`"));
        d.clone().convert::<f32>().into_vec::<f32>().unwrap()
    }

    fn shape(&self, key: &str) -> Vec<usize> {
        self.get(key).unwrap().shape.to_vec()
    }

    fn tensor<const D: usize>(&self, key: &str) -> Tensor<TestBackend, D> {
        let data = self.get(key).unwrap().clone().convert::<f32>();
        Tensor::from_data(data, &Default::default())
    }

    fn prompt(&self, case: &str) -> ImagePrompt {
        let mut prompt = ImagePrompt::default();
        let coords = format!("{case}.point_coords");
        if self.get(&coords).is_some() {
            let xy = self.f32(&coords);
            let labels = self.f32(&format!("{case}.point_labels"));
            prompt.points = labels
                .iter()
                .enumerate()
                .map(|(i, &l)| ([xy[2 * i], xy[2 * i + 1]], l as i64))
                .collect();
        }
        let bkey = format!("{case}.box");
        if self.get(&bkey).is_some() {
            let b = self.f32(&bkey);
            prompt.bbox = Some([b[0], b[1], b[2], b[3]]);
        }
        let mkey = format!("{case}.mask_input");
        if self.get(&mkey).is_some() {
            prompt.mask_input = Some(self.f32(&mkey));
        }
        prompt
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

fn values<const D: usize>(t: Tensor<TestBackend, D>) -> (Vec<usize>, Vec<f32>) {
    let data = t.into_data();
    (data.shape.to_vec(), data.into_vec::<f32>().unwrap())
}

fn check(
    what: &str,
    ours: Tensor<TestBackend, 4>,
    reference: &Reference,
    key: &str,
    tol: f64,
) -> f64 {
    let (shape, got) = values(ours);
    assert_eq!(shape, reference.shape(key), "{what}: shape");
    let err = rel_l2(&got, &reference.f32(key));
    assert!(
        err <= tol,
        "{what}: relative L2 error {err:.3e} > {tol:.0e}"
    );
    err
}

/// Runs every reference case through the model loaded from `checkpoint`.
fn run_parity(dir: &Path, config: SamConfig, checkpoint: &str) {
    let device = Default::default();
    let reference = Reference::read(dir);
    let mut sam: Sam<TestBackend> = config.init(&device).unwrap();
    let report = load_checkpoint(&mut sam, &dir.join(checkpoint)).unwrap();
    assert!(report.applied > 0 && report.skipped_by_design.is_empty());

    // Pre-processing: normalisation + zero padding of the reference's resized image.
    let size = reference.shape("input_resized");
    let (h, w) = (size[0], size[1]);
    let rgb: Vec<u8> = reference
        .get("input_resized")
        .unwrap()
        .clone()
        .into_vec::<u8>()
        .unwrap();
    let input = sam.preprocess(&rgb, h, w, &device).unwrap();
    let (_, got) = values(input);
    let err = rel_l2(&got, &reference.f32("preprocessed"));
    assert!(
        err <= TOL_PREPROCESS,
        "preprocess: relative L2 error {err:.3e}"
    );

    // The encoder on the reference input, so that this check does not depend on the one above.
    let embedding = sam.image_embeddings(reference.tensor::<4>("preprocessed"));
    let err = check(
        "image_embedding",
        embedding.clone(),
        &reference,
        "image_embedding",
        TOL_LOGITS,
    );
    eprintln!("image_embedding: rel L2 {err:.2e}");

    let original = reference.f32("original_size");
    let transform =
        ResizeLongestSide::new(sam.img_size(), (original[0] as usize, original[1] as usize));
    assert_eq!(transform.input_size(), (h, w), "ResizeLongestSide size");
    for case in CASES {
        let prompt = reference.prompt(case);
        for multimask in [true, false] {
            let tag = format!("{case}.{}", if multimask { "multi" } else { "single" });
            let pred = sam
                .predict(embedding.clone(), &transform, &prompt, multimask)
                .unwrap();
            let e1 = check(
                &tag,
                pred.low_res_logits,
                &reference,
                &format!("{tag}.low_res_logits"),
                TOL_LOGITS,
            );
            let (_, iou) = values(pred.iou_predictions.unsqueeze::<4>());
            let e2 = rel_l2(&iou, &reference.f32(&format!("{tag}.iou_predictions")));
            assert!(e2 <= TOL_IOU, "{tag}: IoU relative L2 error {e2:.3e}");
            let key = format!("{tag}.masks_logits");
            let e3 = check(
                &tag,
                pred.masks_logits.clone(),
                &reference,
                &key,
                TOL_LOGITS,
            );
            let (_, ours) = values(pred.masks_logits);
            let theirs = reference.f32(&key);
            let differing = ours
                .iter()
                .zip(&theirs)
                .filter(|(a, b)| b.abs() > MASK_MARGIN && ((**a > 0.0) != (**b > 0.0)))
                .count();
            assert_eq!(
                differing, 0,
                "{tag}: thresholded masks differ at {differing} pixels"
            );
            eprintln!("{tag}: low-res {e1:.2e}, iou {e2:.2e}, masks {e3:.2e}");
        }
    }
}

/// The tiny checkpoint through every `salt_paper` change, against the script's S-SAM-style model
/// (`salt_paper.safetensors`): pooled `pos_embed`, global attention without `rel_pos`, eps 1e-5,
/// the learned token as the only prompt, no dense embedding, no PE in the decoder blocks.
#[test]
fn tiny_salt_paper_matches_reference() {
    let device = Default::default();
    let dir = tiny_dir();
    let reference = Reference {
        tensors: Reference::read_file(&dir.join("salt_paper.safetensors")),
    };
    let mut sam: Sam<TestBackend> = SamConfig::tiny_salt_paper().init(&device).unwrap();
    load_checkpoint(&mut sam, &dir.join("checkpoint.pth")).unwrap();
    let token = reference.tensor::<2>("prompt_token");
    sam.prompt_encoder.prompt_token = Some(burn::module::Param::from_tensor(token));

    let size = reference.shape("input_resized");
    let rgb: Vec<u8> = reference
        .get("input_resized")
        .unwrap()
        .clone()
        .into_vec::<u8>()
        .unwrap();
    let (_, got) = values(sam.preprocess(&rgb, size[0], size[1], &device).unwrap());
    assert!(rel_l2(&got, &reference.f32("preprocessed")) <= TOL_PREPROCESS);

    let embedding = sam.image_embeddings(reference.tensor::<4>("preprocessed"));
    let e0 = check(
        "salt_paper embedding",
        embedding.clone(),
        &reference,
        "image_embedding",
        TOL_LOGITS,
    );
    let original = reference.f32("original_size");
    let transform = ResizeLongestSide::new(64, (original[0] as usize, original[1] as usize));
    let pred = sam
        .predict(embedding, &transform, &ImagePrompt::default(), false)
        .unwrap();
    let e1 = check(
        "salt_paper low-res",
        pred.low_res_logits,
        &reference,
        "low_res_logits",
        TOL_LOGITS,
    );
    let (_, iou) = values(pred.iou_predictions.unsqueeze::<4>());
    let e2 = rel_l2(&iou, &reference.f32("iou_predictions"));
    assert!(e2 <= TOL_IOU, "salt_paper IoU relative L2 error {e2:.3e}");
    let e3 = check(
        "salt_paper masks",
        pred.masks_logits,
        &reference,
        "masks_logits",
        TOL_LOGITS,
    );
    eprintln!("salt_paper: embedding {e0:.2e}, low-res {e1:.2e}, iou {e2:.2e}, masks {e3:.2e}");
}

fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

#[test]
fn tiny_matches_reference_from_pth() {
    run_parity(&tiny_dir(), SamConfig::tiny(), "checkpoint.pth");
}

#[test]
fn tiny_matches_reference_from_safetensors() {
    run_parity(&tiny_dir(), SamConfig::tiny(), "checkpoint.safetensors");
}

/// Full ViT-B parity (about a minute in release on 2 cores): see the file header.
#[test]
#[ignore = "needs SALT_SAM_VITB_FIXTURES from scripts/sam_reference.py --preset vit_b"]
fn vit_b_matches_reference() {
    let dir = std::env::var("SALT_SAM_VITB_FIXTURES").expect(
        "set SALT_SAM_VITB_FIXTURES to the folder written by sam_reference.py --preset vit_b",
    );
    run_parity(Path::new(&dir), SamConfig::vit_b(), "checkpoint.pth");
}
