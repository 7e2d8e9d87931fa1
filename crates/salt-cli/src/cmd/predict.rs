//! `salt predict`: segment one image with SAM from point and box prompts.
//!
//! The image is resized like SAM's `ResizeLongestSide` (Pillow-exact bilinear, salt-data),
//! embedded once, decoded for the prompts, and the logits are post-processed to the original
//! size. Coordinates on the command line are original-image pixels.
//!
//! The model is a checkpoint (Meta's, or one written by `salt export-merged`) or, with
//! `--adapter`, the base model of a training run with its adapter merged in. A model trained
//! without prompts (the paper's learned prompt token) segments with no `--point`/`--box`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use salt_data::image_io::{read_image, write_image, write_mask};
use salt_data::resize::{longest_side_size, resize_rgb8};
use salt_data::{Image8, Mask};
use salt_sam::{load_checkpoint, ImagePrompt, ResizeLongestSide, Sam};

use crate::backend::{dispatch_in, DeviceSpec, Task};
use crate::cmd::eval::run_config;
use crate::cmd::export::{MODEL_KEY, PREPROCESS_KEY};
use crate::train::config::{MethodName, TrainConfig};
use crate::train::model::{to_original, with_model, ModelFamily, ModelTask, Segmenter};
use crate::train::run::{load_trained, model_config};

/// The overlay's tint (RGB) and its opacity over the mask.
const TINT: [f32; 3] = [30.0, 144.0, 255.0];
const TINT_ALPHA: f32 = 0.5;

/// Arguments of `salt predict`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// SAM checkpoint: Meta's `torch.save`d state_dict (`sam_vit_b_01ec64.pth`, ...), a
    /// safetensors file, or a model written by `salt export-merged`. With `--adapter`: the base
    /// checkpoint (default: the training run's).
    #[arg(long, required_unless_present = "adapter")]
    pub checkpoint: Option<PathBuf>,
    /// A trained adapter directory (`adapter.safetensors` + `adapter_config.json`, e.g.
    /// `runs/x/best`): the base model of its run with the adapter merged in.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// With `--adapter`: use it even if the base differs from (or is not recorded with) the one
    /// it was trained on.
    #[arg(long)]
    pub allow_base_mismatch: bool,
    /// Model preset the checkpoint was made for (vit_b, vit_l, vit_h, salt_paper, small, tiny,
    /// tiny_salt_paper); default: the `salt.model` of a checkpoint written by
    /// `salt export-merged`, else vit_b. With `--adapter` the run's model is used.
    #[arg(long, conflicts_with = "adapter")]
    pub model: Option<String>,
    /// Input pre-processing: `sam` (SAM's: resize, normalise, pad), `paper` (per-image min–max
    /// to 0–255 first, as `salt train` and `salt eval` do), or `auto`: `paper` for a model that
    /// salt trained (`--adapter`, or a file from `salt export-merged`), else `sam`.
    #[arg(long, value_enum, default_value = "auto")]
    pub preprocess: Preprocessing,
    /// Image to segment (PNG, TIFF, JPEG, GIF; grey or RGB).
    #[arg(long)]
    pub image: PathBuf,
    /// A point prompt `X,Y[,LABEL]` in image pixels; LABEL 1 = foreground (default), 0 =
    /// background. Repeat for several points.
    #[arg(long = "point", value_name = "X,Y[,LABEL]", value_parser = parse_point)]
    pub points: Vec<([f32; 2], i64)>,
    /// A box prompt `X0,Y0,X1,Y1` in image pixels.
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1", value_parser = parse_box)]
    pub bbox: Option<[f32; 4]>,
    /// Predict SAM's three candidate masks and write the one with the best predicted IoU.
    #[arg(long)]
    pub multimask: bool,
    /// Output mask (0/255, at the image's size): `.png` (or `.tif`/`.tiff`), lossless; another
    /// extension (a lossy `.jpg` would blur the 0/255 values) is an error.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the image with the mask tinted (PNG).
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    /// Also write the raw f32 outputs as safetensors: `image_embedding` [1,256,64,64],
    /// `low_res_logits` [1,C,256,256], `iou_predictions` [1,C], `masks_logits` [1,C,H,W].
    #[arg(long)]
    pub save_logits: Option<PathBuf>,
    /// Device: cpu, flex, wgpu[:N] or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Compute precision of matmuls and attention: f32, bf16 or f16 (mixed precision; bf16 and
    /// f16 need a GPU backend or flex).
    #[arg(long, default_value = "f32", value_parser = crate::backend::parse_precision)]
    pub precision: salt_core::Precision,
}

/// Input pre-processing of `salt predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preprocessing {
    /// `paper` for models salt trained, `sam` for others.
    Auto,
    /// SAM's own: resize the longest side, normalise, pad.
    Sam,
    /// Per-image min–max to 0–255, then SAM's (the training pipeline's).
    Paper,
}

fn parse_point(s: &str) -> std::result::Result<([f32; 2], i64), String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(format!("`{s}`: expected X,Y or X,Y,LABEL"));
    }
    let num = |p: &str| {
        p.parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("`{p}` in `{s}` is not a number"))
    };
    let label = match parts.get(2) {
        None | Some(&"1") => 1,
        Some(&"0") => 0,
        Some(other) => {
            return Err(format!(
                "label `{other}` in `{s}`: expected 1 (foreground) or 0 (background)"
            ))
        }
    };
    Ok(([num(parts[0])?, num(parts[1])?], label))
}

fn parse_box(s: &str) -> std::result::Result<[f32; 4], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>().ok().filter(|v| v.is_finite()))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("`{s}`: expected four numbers X0,Y0,X1,Y1"))?;
    if v.len() != 4 {
        return Err(format!("`{s}`: expected four numbers X0,Y0,X1,Y1"));
    }
    if v[0] >= v[2] || v[1] >= v[3] {
        return Err(format!("`{s}`: expected X0 < X1 and Y0 < Y1"));
    }
    Ok([v[0], v[1], v[2], v[3]])
}

/// Checks the prompts against the image size before anything heavy runs.
fn check_prompts(args: &Args, w: usize, h: usize) -> Result<()> {
    for ([x, y], _) in &args.points {
        ensure!(
            *x >= 0.0 && *y >= 0.0 && *x < w as f32 && *y < h as f32,
            "point ({x}, {y}) is outside the image {} ({w}×{h} pixels; x in [0, {w}), y in [0, {h}))",
            args.image.display()
        );
    }
    if let Some([x0, y0, x1, y1]) = args.bbox {
        ensure!(
            x1 > 0.0 && y1 > 0.0 && x0 < w as f32 && y0 < h as f32,
            "box ({x0}, {y0}, {x1}, {y1}) does not overlap the image {} ({w}×{h} pixels)",
            args.image.display()
        );
    }
    Ok(())
}

/// Extensions `--out` may have: lossless formats only, so the mask stays exactly 0/255.
const MASK_EXTENSIONS: [&str; 3] = ["png", "tif", "tiff"];

/// Refuses a mask path whose format would not keep 0/255 exactly.
fn check_mask_path(path: &std::path::Path) -> Result<()> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let given = match ext.is_empty() {
        true => "a file without extension".to_string(),
        false => format!("`.{ext}`"),
    };
    ensure!(
        MASK_EXTENSIONS.contains(&ext.as_str()),
        "--out {}: a mask is written losslessly as .png (or .tif/.tiff), not as {given} (JPEG \
         would blur the 0/255 values)",
        path.display()
    );
    Ok(())
}

/// Runs `salt predict`.
pub fn run(args: Args) -> Result<()> {
    check_mask_path(&args.out)?;
    ensure!(
        args.adapter.is_some() || !args.allow_base_mismatch,
        "--allow-base-mismatch only applies to --adapter (a plain --checkpoint has no recorded base)"
    );
    let image = read_image(&args.image)
        .with_context(|| format!("reading image {}", args.image.display()))?
        .to_rgb();
    check_prompts(&args, image.width, image.height)?;
    let device = args.device;
    let precision = args.precision;
    dispatch_in(device, precision, Predict { args, image })
}

struct Predict {
    args: Args,
    image: Image8,
}

impl Task for Predict {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        // Inference only: no autodiff graph.
        predict::<B::InnerBackend>(self.args, self.image, &device)
    }
}

/// The model to run (a checkpoint, or the base of a run with its adapter merged in), its
/// preset, and whether salt trained it (so it expects the training pipeline's min–max).
fn load_model<B: Backend>(args: &Args, device: &B::Device) -> Result<(Sam<B>, String, bool)> {
    if let Some(dir) = &args.adapter {
        let cfg = run_config(dir, args.checkpoint.clone())?;
        let mut sam: Sam<B> = load_trained(&cfg, dir, args.allow_base_mismatch, device)?;
        let merged = salt_core::merge(&mut sam);
        tracing::info!(adapter = %dir.display(), model = %cfg.model, merged, "adapter merged");
        return Ok((sam, cfg.model, true));
    }
    let Some(checkpoint) = &args.checkpoint else {
        bail!("give --checkpoint (a SAM checkpoint) or --adapter (a trained adapter directory)");
    };
    let mut metadata = salt_sam::checkpoint_metadata(checkpoint)?;
    let trained = metadata.get(PREPROCESS_KEY).map(String::as_str) == Some("paper");
    let model = match &args.model {
        Some(m) => m.clone(),
        None => metadata
            .remove(MODEL_KEY)
            .unwrap_or_else(|| "vit_b".to_string()),
    };
    let config = model_config(&model)?;
    let mut sam: Sam<B> = config.init(device).context("building the SAM model")?;
    let report = load_checkpoint(&mut sam, checkpoint)
        .with_context(|| format!("loading checkpoint {} as `{model}`", checkpoint.display()))?;
    salt_core::check_finite::<B, _>(&sam, checkpoint).context("checking the checkpoint")?;
    tracing::info!(tensors = report.applied, model = %model, "checkpoint loaded");
    Ok((sam, model, trained))
}

/// The preset `salt predict` runs: `--model`, the run's (with `--adapter`), the `salt.model`
/// of an exported checkpoint, else vit_b.
fn model_name(args: &Args) -> Result<String> {
    if let Some(dir) = &args.adapter {
        return Ok(run_config(dir, args.checkpoint.clone())?.model);
    }
    if let Some(m) = &args.model {
        return Ok(m.clone());
    }
    Ok(match &args.checkpoint {
        Some(c) => salt_sam::checkpoint_metadata(c)?
            .remove(MODEL_KEY)
            .unwrap_or_else(|| "vit_b".to_string()),
        None => "vit_b".to_string(),
    })
}

fn predict<B: Backend>(args: Args, image: Image8, device: &B::Device) -> Result<()> {
    let name = model_name(&args)?;
    if let ModelFamily::Baseline(_) = ModelFamily::of(&name)? {
        return predict_baseline::<B>(args, image, &name, device);
    }
    let (sam, model, trained) = load_model::<B>(&args, device)?;
    let min_max = match args.preprocess {
        Preprocessing::Auto => trained,
        Preprocessing::Sam => false,
        Preprocessing::Paper => true,
    };
    let scaled;
    let input_image = match min_max {
        true => {
            scaled = salt_data::preprocess::min_max_u8(&image);
            &scaled
        }
        false => &image,
    };
    let (h, w) = (image.height, image.width);
    let target = sam.img_size();
    let (rh, rw) = longest_side_size(h, w, target);
    let resized = resize_rgb8(&input_image.data, w, h, 3, rw, rh);
    let input = sam.preprocess(&resized, rh, rw, device)?;

    let spinner = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid progress template"),
    );
    spinner.set_message(format!("embedding the image ({model}, {target}×{target})"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let embedding = sam.image_embeddings(input);
    let transform = ResizeLongestSide::new(target, (h, w));
    let prompt = ImagePrompt {
        points: args.points.clone(),
        bbox: args.bbox,
        mask_input: None,
    };
    spinner.set_message("decoding the prompts");
    let pred = sam
        .predict(embedding.clone(), &transform, &prompt, args.multimask)
        .context("decoding the prompts")?;
    spinner.finish_and_clear();

    let iou = to_vec(pred.iou_predictions.clone());
    let best = iou
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let [_, c, mh, mw] = pred.masks_logits.dims();
    let logits = to_vec(pred.masks_logits.clone().narrow(1, best, 1));
    let threshold = sam.config.mask_threshold as f32;
    let mask = Mask {
        width: mw,
        height: mh,
        data: logits.iter().map(|&v| u8::from(v > threshold)).collect(),
    };
    write_mask(&args.out, &mask).with_context(|| format!("writing mask {}", args.out.display()))?;
    if let Some(path) = &args.overlay {
        write_image(path, &overlay(&image, &mask))
            .with_context(|| format!("writing overlay {}", path.display()))?;
    }
    if let Some(path) = &args.save_logits {
        let tensors = [
            named("image_embedding", embedding),
            named("low_res_logits", pred.low_res_logits),
            named("iou_predictions", pred.iou_predictions),
            named("masks_logits", pred.masks_logits),
        ];
        salt_core::write_f32_safetensors(path, &tensors, Default::default())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "mask {} of {c}: predicted IoU {:.4}, {} of {} pixels foreground -> {}",
        best,
        iou.get(best).copied().unwrap_or(f32::NAN),
        mask.count(),
        mw * mh,
        args.out.display()
    );
    Ok(())
}

/// `salt predict` with a baseline: no prompts; the image is pre-processed as in training
/// (`--preprocess auto` = `paper`), the logits cut and resized to the image.
fn predict_baseline<B: Backend>(
    args: Args,
    image: Image8,
    name: &str,
    device: &B::Device,
) -> Result<()> {
    ensure!(
        args.points.is_empty() && args.bbox.is_none() && !args.multimask,
        "`{name}` is a baseline: it segments the whole image and takes no --point, --box or \
         --multimask"
    );
    struct Run<'a, B: Backend> {
        args: &'a Args,
        name: &'a str,
        image: &'a Image8,
        device: &'a B::Device,
    }
    impl<B: Backend> ModelTask<B> for Run<'_, B> {
        type Output = (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>);
        fn run<M: Segmenter<B>>(self) -> Result<Self::Output> {
            let model: M = match &self.args.adapter {
                Some(dir) => {
                    let cfg = run_config(dir, self.args.checkpoint.clone())?;
                    load_trained(&cfg, dir, self.args.allow_base_mismatch, self.device)?
                }
                None => {
                    let cfg = TrainConfig {
                        model: self.name.to_string(),
                        method: MethodName::Full,
                        checkpoint: self.args.checkpoint.clone(),
                        ..TrainConfig::default()
                    };
                    M::build(&cfg, self.device)?.0
                }
            };
            let min_max = !matches!(self.args.preprocess, Preprocessing::Sam);
            let rgb = match min_max {
                true => salt_data::preprocess::min_max_u8(self.image),
                false => self.image.clone(),
            };
            let empty = Mask {
                width: rgb.width,
                height: rgb.height,
                data: vec![0; rgb.width * rgb.height],
            };
            let s = model.input_size();
            let p = salt_data::Preprocess {
                size: s,
                ..Default::default()
            }
            .to_model(&rgb, &empty);
            let input = Tensor::<B, 4>::from_data(
                burn::tensor::TensorData::new(p.image, [1, 3, s, s]),
                self.device,
            );
            let logits = model.logits(input.clone())?; // [1, 1, S, S]
            let full = to_original(logits.clone(), p.resized, p.original); // [1, 1, H, W]
            Ok((input, logits, full))
        }
    }
    let run = Run::<B> {
        args: &args,
        name,
        image: &image,
        device,
    };
    let (input, logits, full) = with_model(name, run)?;
    let [_, _, mh, mw] = full.dims();
    let values = to_vec(full.clone());
    let mask = Mask {
        width: mw,
        height: mh,
        // p ≥ 0.5 ⇔ logit ≥ 0, as training's validation.
        data: values.iter().map(|&v| u8::from(v >= 0.0)).collect(),
    };
    write_mask(&args.out, &mask).with_context(|| format!("writing mask {}", args.out.display()))?;
    if let Some(path) = &args.overlay {
        write_image(path, &overlay(&image, &mask))
            .with_context(|| format!("writing overlay {}", path.display()))?;
    }
    if let Some(path) = &args.save_logits {
        let tensors = [
            named("input", input),
            named("logits", logits),
            named("masks_logits", full),
        ];
        salt_core::write_f32_safetensors(path, &tensors, Default::default())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "{name}: {} of {} pixels foreground -> {}",
        mask.count(),
        mw * mh,
        args.out.display()
    );
    Ok(())
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 after convert")
}

/// `(name, shape, values)` of a tensor, for [`salt_core::write_f32_safetensors`].
fn named<B: Backend, const D: usize>(
    name: &str,
    t: Tensor<B, D>,
) -> (String, Vec<usize>, Vec<f32>) {
    (name.to_string(), t.dims().to_vec(), to_vec(t))
}

/// The image with the mask's pixels blended towards [`TINT`].
fn overlay(image: &Image8, mask: &Mask) -> Image8 {
    let mut out = image.to_rgb();
    for (i, px) in out.data.chunks_exact_mut(3).enumerate() {
        if mask.data[i] != 0 {
            for (v, t) in px.iter_mut().zip(TINT) {
                *v = ((1.0 - TINT_ALPHA) * *v as f32 + TINT_ALPHA * t).round() as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_and_boxes() {
        assert_eq!(parse_point("10,20"), Ok(([10.0, 20.0], 1)));
        assert_eq!(parse_point(" 1.5, 2 ,0"), Ok(([1.5, 2.0], 0)));
        assert!(parse_point("1,2,3").unwrap_err().contains("label `3`"));
        assert!(parse_point("1").is_err());
        assert!(parse_point("a,2").unwrap_err().contains("`a`"));
        assert_eq!(parse_box("1,2,3,4"), Ok([1.0, 2.0, 3.0, 4.0]));
        assert!(parse_box("3,2,1,4").unwrap_err().contains("X0 < X1"));
        assert!(parse_box("1,2,3").is_err());
    }

    #[test]
    fn overlay_tints_only_the_mask() {
        let image = Image8 {
            width: 2,
            height: 1,
            channels: 3,
            data: vec![100, 100, 100, 10, 20, 30],
        };
        let mask = Mask {
            width: 2,
            height: 1,
            data: vec![1, 0],
        };
        // 0.5·100 + 0.5·(30, 144, 255) = (65, 122, 177.5 → 178); the unmasked pixel is unchanged.
        assert_eq!(overlay(&image, &mask).data, vec![65, 122, 178, 10, 20, 30]);
    }
}
