//! Bad and unusual inputs across every command, through the built `salt` binary: each case must
//! exit non-zero, say what is wrong naming the file / key / value, and leave no file under a
//! final name. Plus the crash test: trainings killed at every moment around checkpoint writes
//! (`SALT_FAULT_INJECT`, test-only) leave a whole `last/` and resume to the uninterrupted
//! run's metrics (every checkpoint file operation of a two-epoch run is a kill point).
//!
//! Run with `--nocapture` to see the table of cases and their messages.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../salt-sam/tests/fixtures/tiny")
}

/// Runs `salt` with `args`; returns (success, stdout, stderr).
fn salt_env(args: &[String], envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_salt"));
    // Keep the sha256 cache of the tests out of the user's cache directory.
    cmd.args(args).env("SALT_LOG", "error").env(
        "SALT_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("salt-cache"),
    );
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run salt");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn salt(args: &[String]) -> (bool, String, String) {
    salt_env(args, &[])
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

macro_rules! args {
    ($($a:expr),* $(,)?) => { <[String]>::to_vec(&[$(String::from($a)),*]) };
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Overwrites the first value of tensor `key` (or the first tensor if `None`) of a safetensors
/// file with NaN; returns the key.
fn poke_nan(file: &Path, key: Option<&str>) -> String {
    let mut bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let key = match key {
        Some(k) => k.to_string(),
        None => header
            .as_object()
            .unwrap()
            .keys()
            .find(|k| *k != "__metadata__")
            .unwrap()
            .clone(),
    };
    let off = header[&key]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[8 + n + off..8 + n + off + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
    key
}

/// Edits `dir/adapter_config.json`.
fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("adapter_config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn truncated_jpeg(path: &Path) {
    let img = image::GrayImage::from_fn(64, 64, |x, y| image::Luma([(x * 3 + y) as u8]));
    let mut buf = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut buf, image::ImageFormat::Jpeg)
        .unwrap();
    let b = buf.into_inner();
    std::fs::write(path, &b[..b.len() / 2]).unwrap();
}

/// Everything the cases share: a dataset, a run trained on Meta's tiny checkpoint, a merged
/// export of it (another base), and damaged copies of each.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    run: PathBuf,
    merged: PathBuf,
    nan_ckpt: PathBuf,
    nan_ckpt_key: String,
    nan_run: PathBuf,
    nan_key: String,
    orphan: PathBuf,
    lost_base: PathBuf,
    null_base_run: PathBuf,
    dotdot: PathBuf,
    absolute: PathBuf,
    symlink: PathBuf,
    jpeg: PathBuf,
    arcade_escape: PathBuf,
    drive_escape: PathBuf,
}

fn with_row(data: &Path, to: &Path, row: &str) -> PathBuf {
    copy_dir(data, to);
    let csv = to.join("data_split.csv");
    let mut text = std::fs::read_to_string(&csv).unwrap();
    text.push_str(row);
    text.push('\n');
    std::fs::write(csv, text).unwrap();
    to.to_path_buf()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let data = common::synth_dataset(root.join("data"), 4, 3);
        let run = root.join("run");
        let ckpt = fixtures().join("checkpoint.pth");
        let (ok, _, err) = salt(&args![
            "train",
            "--data",
            s(&data),
            "--model",
            "tiny",
            "--checkpoint",
            s(&ckpt),
            "--method",
            "salt",
            "--svd-rank",
            "4",
            "--rank",
            "2",
            "--lr",
            "0.01",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--out",
            s(&run),
        ]);
        assert!(ok, "training the fixture failed: {err}");
        let merged = root.join("merged.safetensors");
        let (ok, _, err) = salt(&args![
            "export-merged",
            "--adapter",
            s(&run.join("last")),
            "--out",
            s(&merged)
        ]);
        assert!(ok, "export failed: {err}");
        let nan_ckpt = root.join("nan.safetensors");
        std::fs::copy(&merged, &nan_ckpt).unwrap();
        let nan_ckpt_key = poke_nan(&nan_ckpt, Some("image_encoder.patch_embed.proj.weight"));

        let nan_run = root.join("nan-run");
        copy_dir(&run, &nan_run);
        let nan_key = poke_nan(&nan_run.join("last/adapter.safetensors"), None);

        // An adapter copied without its run's config.toml, its base not recorded.
        let orphan = root.join("orphan/adapter");
        copy_dir(&run.join("last"), &orphan);
        edit_manifest(&orphan, |v| v["base"] = serde_json::Value::Null);
        // Copied alone, its recorded base checkpoint no longer where it was.
        let lost_base = root.join("lost/adapter");
        copy_dir(&run.join("last"), &lost_base);
        edit_manifest(&lost_base, |v| {
            v["base"]["file"] = "/nonexistent/sam_base.pth".into()
        });
        // A whole run whose adapter records no base (as runs before base identities did).
        let null_base_run = root.join("null-base-run");
        copy_dir(&run, &null_base_run);
        edit_manifest(&null_base_run.join("last"), |v| {
            v["base"] = serde_json::Value::Null
        });

        let dotdot = with_row(&data, &root.join("dotdot"), "../outside.png,train");
        let absolute = with_row(&data, &root.join("absolute"), "/etc/hostname,val");
        let symlink = with_row(&data, &root.join("symlink"), "link.png,train");
        let outside = root.join("outside.png");
        std::fs::copy(data.join("images/xray-angio_0000.png"), &outside).unwrap();
        std::os::unix::fs::symlink(&outside, symlink.join("images/link.png")).unwrap();
        std::fs::copy(
            data.join("masks/xray-angio_0000_mask.png"),
            symlink.join("masks/link_mask.png"),
        )
        .unwrap();
        let jpeg = with_row(&data, &root.join("jpeg"), "trunc.jpg,val");
        truncated_jpeg(&jpeg.join("images/trunc.jpg"));
        std::fs::copy(
            data.join("masks/xray-angio_0000_mask.png"),
            jpeg.join("masks/trunc_mask.png"),
        )
        .unwrap();
        // ARCADE whose JSON names a file above images/.
        let arcade_escape = root.join("arcade-escape");
        salt_data::synth::write_dataset_sized(
            &arcade_escape,
            salt_data::synth::Style::parse("arcade").unwrap(),
            4,
            3,
            salt_data::synth::SynthLayout::Native,
            64,
        )
        .unwrap();
        let json = arcade_escape.join("syntax/train/annotations/train.json");
        let text = std::fs::read_to_string(&json).unwrap();
        std::fs::write(
            &json,
            text.replacen("\"1.png\"", "\"../../../outside.png\"", 1),
        )
        .unwrap();
        // DRIVE whose first training image is a symlink out of the dataset.
        let drive_escape = root.join("drive-escape");
        salt_data::synth::write_dataset_sized(
            &drive_escape,
            salt_data::synth::Style::parse("drive").unwrap(),
            4,
            3,
            salt_data::synth::SynthLayout::Native,
            64,
        )
        .unwrap();
        let first = std::fs::read_dir(drive_escape.join("training/images"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .min()
            .unwrap();
        let moved = root.join("drive-image-outside.tif");
        std::fs::rename(&first, &moved).unwrap();
        std::os::unix::fs::symlink(&moved, &first).unwrap();
        Fixture {
            _dir: dir,
            root,
            data,
            run,
            merged,
            nan_ckpt,
            nan_ckpt_key,
            nan_run,
            nan_key,
            orphan,
            lost_base,
            null_base_run,
            dotdot,
            absolute,
            symlink,
            jpeg,
            arcade_escape,
            drive_escape,
        }
    })
}

/// One bad input: the arguments, the texts the error must contain, the paths that must not
/// exist afterwards, and files that must be unchanged.
struct Case {
    name: &'static str,
    args: Vec<String>,
    expect: Vec<String>,
    absent: Vec<PathBuf>,
    unchanged: Vec<PathBuf>,
}

fn case(name: &'static str, args: Vec<String>, expect: &[&str]) -> Case {
    Case {
        name,
        args,
        expect: expect.iter().map(|e| e.to_string()).collect(),
        absent: Vec::new(),
        unchanged: Vec::new(),
    }
}

impl Case {
    fn absent(mut self, p: impl Into<PathBuf>) -> Self {
        self.absent.push(p.into());
        self
    }
    fn unchanged(mut self, p: impl Into<PathBuf>) -> Self {
        self.unchanged.push(p.into());
        self
    }
}

/// Runs every case; fails listing every case that did not behave, and prints the table.
fn run_cases(group: &str, cases: Vec<Case>) {
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for c in &cases {
        let before: Vec<Option<Vec<u8>>> =
            c.unchanged.iter().map(|p| std::fs::read(p).ok()).collect();
        let (ok, _, stderr) = salt(&c.args);
        let message = stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or("")
            .to_string();
        table.push(format!(
            "| {group} | {} | {} |",
            c.name,
            message.replace('|', "\\|")
        ));
        if ok {
            failures.push(format!("{}: exited 0", c.name));
            continue;
        }
        for e in &c.expect {
            if !stderr.contains(e.as_str()) {
                failures.push(format!("{}: message lacks {e:?}: {stderr}", c.name));
            }
        }
        if stderr.contains("panicked") {
            failures.push(format!("{}: panicked: {stderr}", c.name));
        }
        for p in &c.absent {
            if p.exists() {
                failures.push(format!("{}: {} exists", c.name, p.display()));
            }
        }
        for (p, b) in c.unchanged.iter().zip(before) {
            if std::fs::read(p).ok() != b {
                failures.push(format!("{}: {} changed", c.name, p.display()));
            }
        }
    }
    println!("{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// No `*.tmp-*` / `*.old-*` left in `dir`.
fn no_temporaries(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(".tmp-") && !name.contains(".old-"),
            "temporary {name} left in {}",
            dir.display()
        );
    }
}

#[test]
fn train_refuses_bad_inputs() {
    let f = fixture();
    let fresh = |n: &str| f.root.join(format!("train-{n}"));
    let ckpt = s(&fixtures().join("checkpoint.pth"));
    // `salt train` on `data` into `out` with `extra`; the defaults below fill the flags that
    // `extra` does not give.
    let with_data = |data: &Path, out: &Path, extra: &[&str]| {
        let defaults = [
            ("--model", "tiny"),
            ("--checkpoint", ckpt.as_str()),
            ("--epochs", "1"),
            ("--svd-rank", "4"),
            ("--rank", "2"),
        ];
        let given: Vec<&str> = extra
            .iter()
            .filter(|e| e.starts_with("--"))
            .map(|e| e.split('=').next().unwrap())
            .collect();
        let mut a = args!["train", "--data", s(data), "--out", s(out)];
        for (k, v) in defaults {
            if !given.contains(&k) {
                a.extend([k.to_string(), v.to_string()]);
            }
        }
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let with = |out: &Path, extra: &[&str]| with_data(&f.data, out, extra);
    let resume = |out: &Path, extra: &[&str]| {
        let mut a = args![
            "train",
            "--config",
            s(&f.run.join("config.toml")),
            "--resume",
            "--out",
            s(out),
            "--epochs",
            "2"
        ];
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let copy_run = |n: &str| {
        let d = f.root.join(format!("copy-{n}"));
        copy_dir(&f.run, &d);
        d
    };
    let locked = fresh("locked");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::write(locked.join(".lock"), format!("{}\n", std::process::id())).unwrap();
    let config_only = fresh("config-only");
    std::fs::create_dir_all(&config_only).unwrap();
    std::fs::copy(f.run.join("config.toml"), config_only.join("config.toml")).unwrap();
    let unknown_key = f.root.join("unknown.toml");
    std::fs::write(&unknown_key, "epochz = 3\n").unwrap();
    let (lr_run, method_run, base_run, nan_run) = (
        copy_run("lr"),
        copy_run("method"),
        copy_run("base"),
        f.nan_run.clone(),
    );
    let cases = vec![
        case(
            "into a finished run",
            with(&f.run, &[]),
            &["already holds a training run", "--overwrite", "--resume"],
        )
        .unchanged(f.run.join("config.toml"))
        .unchanged(f.run.join("last/adapter.safetensors")),
        case(
            "into a finished run, other method",
            with(&f.run, &["--method", "lora"]),
            &["already holds a training run"],
        )
        .unchanged(f.run.join("metrics.csv")),
        case(
            "--resume and --overwrite",
            with(&f.run, &["--resume", "--overwrite"]),
            &["--overwrite"],
        ),
        case(
            "--resume, another lr",
            resume(&lr_run, &["--lr", "0.001"]),
            &["lr = 0.01 in the run, 0.001 now"],
        )
        .unchanged(lr_run.join("config.toml"))
        .unchanged(lr_run.join("last/train_state.json")),
        case(
            "--resume, two keys differ",
            resume(&method_run, &["--method", "lora", "--seed", "9"]),
            &[
                "method = \"salt\" in the run, \"lora\" now",
                "seed = 42 in the run, 9 now",
            ],
        )
        .unchanged(method_run.join("config.toml")),
        case(
            "--resume, no run",
            resume(&fresh("empty"), &[]),
            &["--resume needs the run's config.toml"],
        )
        .absent(fresh("empty")),
        case(
            "--resume, no finished checkpoint",
            resume(&config_only, &[]),
            &["holds no finished checkpoint", "--overwrite"],
        )
        .absent(config_only.join("last")),
        case(
            "--resume, other base",
            resume(&base_run, &["--checkpoint", &s(&f.merged)]),
            &[
                "was trained on base checkpoint",
                "checkpoint.pth (sha256:",
                "merged.safetensors (sha256:",
            ],
        )
        .unchanged(base_run.join("last/adapter.safetensors")),
        case(
            "--resume, NaN in the adapter",
            resume(&nan_run, &[]),
            &["non-finite", &f.nan_key],
        )
        .unchanged(nan_run.join("last/adapter.safetensors")),
        case(
            "--allow-base-mismatch without --resume",
            with(&fresh("abm"), &["--allow-base-mismatch"]),
            &["--resume"],
        )
        .absent(fresh("abm")),
        case(
            "directory locked by a running training",
            with(&locked, &[]),
            &[&format!(
                "in use by another training (pid {}",
                std::process::id()
            )],
        )
        .absent(locked.join("config.toml"))
        .unchanged(locked.join(".lock")),
        case(
            "--batch-size 0",
            with(&fresh("b0"), &["--batch-size", "0"]),
            &["batch_size = 0"],
        )
        .absent(fresh("b0")),
        case(
            "--batch-size larger than the data",
            with(&fresh("b1"), &["--batch-size", "100000000"]),
            &["batch_size = 100000000: larger than the training split"],
        )
        .absent(fresh("b1")),
        case(
            "--batch-size usize::MAX",
            with(&fresh("b2"), &["--batch-size", "18446744073709551615"]),
            &["batch_size = 18446744073709551615"],
        )
        .absent(fresh("b2")),
        case(
            "--batch-size negative",
            with(&fresh("b3"), &["--batch-size=-2"]),
            &["-2"],
        )
        .absent(fresh("b3")),
        case(
            "--lr NaN",
            with(&fresh("lr0"), &["--lr", "NaN"]),
            &["lr = NaN"],
        )
        .absent(fresh("lr0")),
        case(
            "--lr negative",
            with(&fresh("lr1"), &["--lr=-0.1"]),
            &["lr = -0.1"],
        )
        .absent(fresh("lr1")),
        case(
            "--lr infinite",
            with(&fresh("lr2"), &["--lr", "inf"]),
            &["lr = inf"],
        )
        .absent(fresh("lr2")),
        case(
            "--epochs 0",
            with(&fresh("e0"), &["--epochs", "0"]),
            &["epochs = 0"],
        )
        .absent(fresh("e0")),
        case(
            "--lora-dropout 1.5",
            with(&fresh("do"), &["--method", "lora", "--lora-dropout", "1.5"]),
            &["lora_dropout = 1.5"],
        )
        .absent(fresh("do")),
        case(
            "--weight-decay -1",
            with(&fresh("wd"), &["--weight-decay=-1"]),
            &["weight_decay = -1"],
        )
        .absent(fresh("wd")),
        case(
            "--svd-rank too large",
            with(&fresh("sr"), &["--svd-rank", "1000"]),
            &["svd_rank = 1000"],
        )
        .absent(fresh("sr")),
        case(
            "--rank 0",
            with(&fresh("r0"), &["--rank", "0"]),
            &["rank = 0"],
        )
        .absent(fresh("r0")),
        case(
            "--method unknown",
            with(&fresh("m"), &["--method", "dora"]),
            &["dora"],
        )
        .absent(fresh("m")),
        case(
            "--model unknown",
            with(&fresh("vz"), &["--model", "vit_z"]),
            &["vit_z"],
        )
        .absent(fresh("vz")),
        case(
            "--salt-init unknown",
            with(&fresh("si"), &["--salt-init", "random"]),
            &["--salt-init random"],
        )
        .absent(fresh("si")),
        case(
            "--device unknown",
            with(&fresh("dv"), &["--device", "tpu"]),
            &["tpu"],
        )
        .absent(fresh("dv")),
        case(
            "--device list mixing backends",
            with(&fresh("dm"), &["--device", "cuda:0,wgpu:0"]),
            &["cuda:0,wgpu:0", "mixes backends"],
        )
        .absent(fresh("dm")),
        case(
            "--devices naming a GPU twice",
            with(&fresh("d2"), &["--devices", "cuda:1,cuda:1"]),
            &["cuda:1 twice"],
        )
        .absent(fresh("d2")),
        case(
            "--device list longer than the batch",
            with(
                &fresh("db"),
                &["--device", "cpu,cpu,cpu", "--batch-size", "2"],
            ),
            &["batch_size = 2", "3 devices"],
        )
        .absent(fresh("db")),
        case(
            "--config with an unknown key",
            args![
                "train",
                "--config",
                s(&unknown_key),
                "--data",
                s(&f.data),
                "--out",
                s(&fresh("cfg"))
            ],
            &["epochz"],
        )
        .absent(fresh("cfg")),
        case(
            "--data missing",
            args![
                "train",
                "--data",
                s(&f.root.join("no-data")),
                "--model",
                "tiny",
                "--out",
                s(&fresh("nd"))
            ],
            &["no-data", "does not exist"],
        )
        .absent(fresh("nd")),
        case(
            "--checkpoint missing",
            with(&fresh("nc"), &["--checkpoint", "/nonexistent/sam.pth"]),
            &["/nonexistent/sam.pth"],
        )
        .absent(fresh("nc")),
        case(
            "--checkpoint with NaN",
            with(&fresh("nanc"), &["--checkpoint", &s(&f.nan_ckpt)]),
            &["non-finite", &f.nan_ckpt_key],
        )
        .absent(fresh("nanc")),
        case(
            "row with ..",
            with_data(&f.dotdot, &fresh("dd"), &[]),
            &["data_split.csv:6", "\"../outside.png\" leaves images/"],
        )
        .absent(fresh("dd")),
        case(
            "row with an absolute path",
            with_data(&f.absolute, &fresh("ab"), &[]),
            &["data_split.csv:6", "\"/etc/hostname\" leaves images/"],
        )
        .absent(fresh("ab")),
        case(
            "row through a symlink out of the root",
            with_data(&f.symlink, &fresh("sl"), &[]),
            &["data_split.csv:6", "outside the dataset root"],
        )
        .absent(fresh("sl")),
        case(
            "truncated JPEG in the data",
            with_data(&f.jpeg, &fresh("tj"), &[]),
            &["trunc.jpg", "truncated JPEG"],
        )
        .absent(fresh("tj")),
        case(
            "ARCADE file_name with ..",
            with_data(&f.arcade_escape, &fresh("ae"), &[]),
            &["train.json", "\"../../../outside.png\" leaves images/"],
        )
        .absent(fresh("ae")),
        case(
            "DRIVE image symlinked out of the root",
            with_data(&f.drive_escape, &fresh("de"), &[]),
            &["drive-image-outside.tif", "outside the dataset root"],
        )
        .absent(fresh("de")),
        case(
            "diverging learning rate",
            with(
                &fresh("div"),
                &["--lr", "1e30", "--method", "full", "--batch-size", "1"],
            ),
            &["at step", "(epoch 1)", "no checkpoint was written yet"],
        )
        .absent(fresh("div").join("last"))
        .absent(fresh("div").join("metrics.csv")),
    ];
    run_cases("train", cases);
    for d in [&lr_run, &method_run, &base_run, &nan_run] {
        no_temporaries(d);
        assert!(!d.join(".lock").exists(), "lock left in {}", d.display());
    }
}

#[test]
fn predict_eval_and_export_refuse_bad_inputs() {
    let f = fixture();
    let last = f.run.join("last");
    let image = f.data.join("images/xray-angio_0000.png");
    let out = |n: &str| f.root.join(format!("p-{n}.png"));
    let predict = |adapter: &Path, extra: &[&str], o: &Path| {
        let mut a = args![
            "predict",
            "--adapter",
            s(adapter),
            "--image",
            s(&image),
            "--out",
            s(o)
        ];
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let predict_ckpt = |ckpt: &Path, img: &Path, extra: &[&str], o: &Path| {
        let model = if extra.contains(&"--model") {
            vec![]
        } else {
            args!["--model", "tiny"]
        };
        let mut a = args![
            "predict",
            "--checkpoint",
            s(ckpt),
            "--image",
            s(img),
            "--out",
            s(o)
        ];
        a.extend(model);
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let ev = |n: &str| f.root.join(format!("eval-{n}"));
    let eval = |adapter: &Path, data: &Path, extra: &[&str], o: &Path| {
        let mut a = args![
            "eval",
            "--adapter",
            s(adapter),
            "--data",
            s(data),
            "--out",
            s(o)
        ];
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let ex = |n: &str| f.root.join(format!("export-{n}.safetensors"));
    let export = |adapter: &Path, extra: &[&str], o: &Path| {
        let mut a = args!["export-merged", "--adapter", s(adapter), "--out", s(o)];
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let garbage = f.root.join("garbage.png");
    std::fs::write(&garbage, b"\x89PNG not really").unwrap();
    let trunc = f.root.join("alone-trunc.jpg");
    truncated_jpeg(&trunc);
    let ckpt = fixtures().join("checkpoint.pth");
    let merged = s(&f.merged);
    let cases = vec![
        case(
            "--out mask.jpg (lossy)",
            predict(&last, &[], &f.root.join("mask.jpg")),
            &["mask.jpg", "losslessly", ".png"],
        )
        .absent(f.root.join("mask.jpg")),
        case(
            "--out without extension",
            predict(&last, &[], &f.root.join("mask")),
            &["losslessly"],
        )
        .absent(f.root.join("mask")),
        case(
            "adapter on another base",
            predict(&last, &["--checkpoint", &merged], &out("base")),
            &[
                "was trained on base checkpoint",
                "checkpoint.pth (sha256:",
                "merged.safetensors (sha256:",
            ],
        )
        .absent(out("base")),
        case(
            "adapter without run config, base unknown",
            predict(&f.orphan, &[], &out("orphan")),
            &["base model is unknown", "--checkpoint"],
        )
        .absent(out("orphan")),
        case(
            "adapter without run config, base unknown, --checkpoint",
            predict(&f.orphan, &["--checkpoint", &s(&ckpt)], &out("orphan2")),
            &["does not record its base model", "--allow-base-mismatch"],
        )
        .absent(out("orphan2")),
        case(
            "adapter recording no base, in its run",
            predict(&f.null_base_run.join("last"), &[], &out("null")),
            &["does not record its base model"],
        )
        .absent(out("null")),
        case(
            "adapter whose base file is gone",
            predict(&f.lost_base, &[], &out("lost")),
            &["/nonexistent/sam_base.pth", "--checkpoint"],
        )
        .absent(out("lost")),
        case(
            "adapter with NaN",
            predict(&f.nan_run.join("last"), &[], &out("nan")),
            &["non-finite", &f.nan_key],
        )
        .absent(out("nan")),
        case(
            "adapter directory missing",
            predict(&f.root.join("no-such-run/best"), &[], &out("missing")),
            &["no-such-run"],
        )
        .absent(out("missing")),
        case(
            "checkpoint with NaN",
            predict_ckpt(&f.nan_ckpt, &image, &["--point", "5,5"], &out("nanc")),
            &["non-finite", &f.nan_ckpt_key],
        )
        .absent(out("nanc")),
        case(
            "checkpoint missing",
            predict_ckpt(
                &f.root.join("nope.pth"),
                &image,
                &["--point", "5,5"],
                &out("nock"),
            ),
            &["nope.pth"],
        )
        .absent(out("nock")),
        case(
            "--model of another size",
            predict_ckpt(
                &ckpt,
                &image,
                &["--model", "vit_b", "--point", "5,5"],
                &out("vitb"),
            ),
            &["--model tiny"],
        )
        .absent(out("vitb")),
        case(
            "truncated JPEG image",
            predict_ckpt(&ckpt, &trunc, &["--point", "5,5"], &out("tj")),
            &["alone-trunc.jpg", "truncated JPEG"],
        )
        .absent(out("tj")),
        case(
            "not an image",
            predict_ckpt(&ckpt, &garbage, &["--point", "5,5"], &out("gb")),
            &["garbage.png"],
        )
        .absent(out("gb")),
        case(
            "image missing",
            predict_ckpt(
                &ckpt,
                &f.root.join("none.png"),
                &["--point", "5,5"],
                &out("im"),
            ),
            &["none.png"],
        )
        .absent(out("im")),
        case(
            "point outside the image",
            predict_ckpt(&ckpt, &image, &["--point", "64,10"], &out("pt")),
            &["outside the image"],
        )
        .absent(out("pt")),
        case(
            "point not a number",
            predict_ckpt(&ckpt, &image, &["--point", "a,2"], &out("pn")),
            &["`a`"],
        )
        .absent(out("pn")),
        case(
            "point NaN",
            predict_ckpt(&ckpt, &image, &["--point", "NaN,2"], &out("pnan")),
            &["NaN"],
        )
        .absent(out("pnan")),
        case(
            "point label 3",
            predict_ckpt(&ckpt, &image, &["--point", "1,2,3"], &out("pl")),
            &["label `3`"],
        )
        .absent(out("pl")),
        case(
            "box inverted",
            predict_ckpt(&ckpt, &image, &["--box", "30,2,10,40"], &out("bx")),
            &["X0 < X1"],
        )
        .absent(out("bx")),
        case(
            "box outside",
            predict_ckpt(&ckpt, &image, &["--box", "100,100,200,200"], &out("bo")),
            &["does not overlap"],
        )
        .absent(out("bo")),
        case(
            "--allow-base-mismatch without --adapter",
            predict_ckpt(&ckpt, &image, &["--allow-base-mismatch"], &out("abm")),
            &["--adapter"],
        )
        .absent(out("abm")),
        case(
            "eval: adapter on another base",
            eval(&last, &f.data, &["--checkpoint", &merged], &ev("base")),
            &["was trained on base checkpoint", "merged.safetensors"],
        )
        .absent(ev("base")),
        case(
            "eval: base unknown",
            eval(&f.orphan, &f.data, &[], &ev("orphan")),
            &["base model is unknown"],
        )
        .absent(ev("orphan")),
        case(
            "eval: adapter with NaN",
            eval(&f.nan_run.join("last"), &f.data, &[], &ev("nan")),
            &["non-finite", &f.nan_key],
        )
        .absent(ev("nan")),
        case(
            "eval: --split unknown",
            eval(&last, &f.data, &["--split", "holdout"], &ev("split")),
            &["--split holdout"],
        )
        .absent(ev("split")),
        case(
            "eval: --hd95 unknown",
            eval(&last, &f.data, &["--hd95", "scipy"], &ev("hd")),
            &["--hd95 scipy"],
        )
        .absent(ev("hd")),
        case(
            "eval: row with ..",
            eval(&last, &f.dotdot, &["--split", "train"], &ev("dd")),
            &["\"../outside.png\" leaves images/"],
        )
        .absent(ev("dd")),
        case(
            "eval: truncated JPEG",
            eval(&last, &f.jpeg, &[], &ev("tj")),
            &["trunc.jpg", "truncated JPEG"],
        )
        .absent(ev("tj")),
        case(
            "eval: data missing",
            eval(&last, &f.root.join("no-data"), &[], &ev("nd")),
            &["no-data"],
        )
        .absent(ev("nd")),
        case(
            "eval: --out a folder that is not an evaluation",
            eval(&last, &f.data, &[], &f.root.join("orphan")),
            &["is not an evaluation", "orphan"],
        )
        .unchanged(f.orphan.join("adapter_config.json")),
        case(
            "export: adapter with NaN",
            export(&f.nan_run.join("last"), &[], &ex("nan")),
            &["non-finite", &f.nan_key],
        )
        .absent(ex("nan")),
        case(
            "export: adapter on another base",
            export(&last, &["--checkpoint", &merged], &ex("base")),
            &["was trained on base checkpoint", "merged.safetensors"],
        )
        .absent(ex("base")),
        case(
            "export: base unknown",
            export(&f.orphan, &[], &ex("orphan")),
            &["base model is unknown"],
        )
        .absent(ex("orphan")),
        case(
            "export: base file gone",
            export(&f.lost_base, &[], &ex("lost")),
            &["/nonexistent/sam_base.pth"],
        )
        .absent(ex("lost")),
        case(
            "export: --out .pth",
            export(&last, &[], &f.root.join("m.pth")),
            &[".safetensors"],
        )
        .absent(f.root.join("m.pth")),
        case(
            "export: adapter missing",
            export(&f.root.join("no-such-run/best"), &[], &ex("missing")),
            &["no-such-run"],
        )
        .absent(ex("missing")),
    ];
    run_cases("predict/eval/export", cases);
}

#[test]
fn data_metrics_and_demo_refuse_bad_inputs() {
    let f = fixture();
    let root = f.root.join("data-cases");
    std::fs::create_dir_all(&root).unwrap();
    let mask = f.data.join("masks/xray-angio_0000_mask.png");
    let mask2 = f.data.join("masks/xray-angio_0001_mask.png");
    let report = root.join("report.json");
    let metrics = |extra: &[&str]| {
        let mut a = args![
            "metrics",
            "--pred",
            s(&mask),
            "--target",
            s(&mask2),
            "--out",
            s(&report)
        ];
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    // Import sources: one with a pair missing its mask, one with a truncated JPEG.
    let src_missing = root.join("src-missing");
    std::fs::create_dir_all(&src_missing).unwrap();
    std::fs::copy(
        f.data.join("images/xray-angio_0000.png"),
        src_missing.join("a.png"),
    )
    .unwrap();
    std::fs::copy(
        f.data.join("images/xray-angio_0001.png"),
        src_missing.join("b.png"),
    )
    .unwrap();
    std::fs::copy(&mask, src_missing.join("a_mask.png")).unwrap();
    let src_jpeg = root.join("src-jpeg");
    std::fs::create_dir_all(&src_jpeg).unwrap();
    truncated_jpeg(&src_jpeg.join("c.jpg"));
    std::fs::copy(&mask, src_jpeg.join("c_mask.png")).unwrap();
    let nonempty = root.join("nonempty");
    std::fs::create_dir_all(&nonempty).unwrap();
    std::fs::write(nonempty.join("keep.txt"), "mine").unwrap();
    let split_dir = root.join("split");
    copy_dir(&f.data, &split_dir);
    let demo_foreign = root.join("demo-foreign");
    std::fs::create_dir_all(demo_foreign.join("data")).unwrap();
    std::fs::write(demo_foreign.join("data/notes.txt"), "not a demo").unwrap();
    let demo_other = root.join("demo-other");
    std::fs::create_dir_all(demo_other.join("data")).unwrap();
    std::fs::write(
        demo_other.join("data/salt-demo.json"),
        r#"{"style":"xray-angio","images":40,"seed":1,"size":128}"#,
    )
    .unwrap();
    let cases = vec![
        case(
            "metrics --threshold NaN",
            metrics(&["--threshold", "NaN"]),
            &["NaN", "expected a pixel value"],
        )
        .absent(&report),
        case(
            "metrics --threshold -1",
            metrics(&["--threshold=-1"]),
            &["-1", "expected a pixel value"],
        )
        .absent(&report),
        case(
            "metrics --threshold 300 on 8-bit masks",
            metrics(&["--threshold", "300"]),
            &[
                "threshold 300 is outside its sample range",
                "xray-angio_0000_mask.png",
                "[0, 255)",
            ],
        )
        .absent(&report),
        case(
            "metrics --threshold 255 on 8-bit masks",
            metrics(&["--threshold", "255"]),
            &["threshold 255 is outside"],
        )
        .absent(&report),
        case(
            "metrics --threshold 1e9",
            metrics(&["--threshold", "1e9"]),
            &["1000000000", "expected a pixel value"],
        )
        .absent(&report),
        case(
            "metrics --threshold text",
            metrics(&["--threshold", "half"]),
            &["`half` is not a number"],
        )
        .absent(&report),
        case(
            "metrics --spacing negative",
            metrics(&["--spacing=-1,1"]),
            &["spacing `-1`"],
        )
        .absent(&report),
        case(
            "metrics --hd95 unknown",
            metrics(&["--hd95", "scipy"]),
            &["scipy"],
        )
        .absent(&report),
        case(
            "metrics --pred missing",
            args![
                "metrics",
                "--pred",
                s(&root.join("none.png")),
                "--target",
                s(&mask),
                "--out",
                s(&report)
            ],
            &["none.png"],
        )
        .absent(&report),
        case(
            "metrics sizes differ",
            args![
                "metrics",
                "--pred",
                s(&fixtures().join("image.png")),
                "--target",
                s(&mask),
                "--out",
                s(&report)
            ],
            &["image.png", "160x120"],
        )
        .absent(&report),
        case(
            "data check: row with ..",
            args!["data", "check", s(&f.dotdot)],
            &["1 problem(s)"],
        ),
        case(
            "data check: row with an absolute path",
            args!["data", "check", s(&f.absolute)],
            &["1 problem(s)"],
        ),
        case(
            "data check: symlink out of the root",
            args!["data", "check", s(&f.symlink)],
            &["problem(s)"],
        ),
        case(
            "data check: truncated JPEG",
            args!["data", "check", s(&f.jpeg)],
            &["problem(s)"],
        ),
        case(
            "data check: ARCADE file_name with ..",
            args!["data", "check", s(&f.arcade_escape)],
            &["problem(s)"],
        ),
        case(
            "data check: DRIVE symlink out of the root",
            args!["data", "check", s(&f.drive_escape)],
            &["problem(s)"],
        ),
        case(
            "demo: --images 1",
            args!["demo", "--out", s(&root.join("demo-1")), "--images", "1"],
            &["--images 1", "at least 2"],
        )
        .absent(root.join("demo-1")),
        case(
            "demo: --epochs 0",
            args!["demo", "--out", s(&root.join("demo-0")), "--epochs", "0"],
            &["--epochs 0"],
        )
        .absent(root.join("demo-0")),
        case(
            "data check: no dataset",
            args!["data", "check", s(&root.join("nothing"))],
            &["nothing"],
        ),
        case(
            "data split --train 0",
            args![
                "data",
                "split",
                s(&split_dir),
                "--train",
                "0",
                "--test",
                "1",
                "--force"
            ],
            &["must be > 0"],
        )
        .unchanged(split_dir.join("data_split.csv")),
        case(
            "data split too many",
            args![
                "data",
                "split",
                s(&split_dir),
                "--train",
                "30",
                "--test",
                "1",
                "--force"
            ],
            &["30 train + 1 test > 4 images"],
        )
        .unchanged(split_dir.join("data_split.csv")),
        case(
            "data split over an existing CSV",
            args![
                "data",
                "split",
                s(&split_dir),
                "--train",
                "2",
                "--test",
                "1"
            ],
            &["--force"],
        )
        .unchanged(split_dir.join("data_split.csv")),
        case(
            "data import: image without mask",
            args![
                "data",
                "import",
                "--images",
                s(&src_missing),
                "--out",
                s(&root.join("imp1"))
            ],
            &["mask for image", "b.png"],
        )
        .absent(root.join("imp1")),
        case(
            "data import: truncated JPEG",
            args![
                "data",
                "import",
                "--images",
                s(&src_jpeg),
                "--out",
                s(&root.join("imp2"))
            ],
            &["c.jpg", "truncated JPEG"],
        )
        .absent(root.join("imp2")),
        case(
            "data import: into a non-empty folder",
            args![
                "data",
                "import",
                "--images",
                s(&src_missing),
                "--out",
                s(&nonempty)
            ],
            &["not empty"],
        )
        .absent(nonempty.join("images")),
        case(
            "data import: images folder missing",
            args![
                "data",
                "import",
                "--images",
                s(&root.join("no-src")),
                "--out",
                s(&root.join("imp3"))
            ],
            &["no-src"],
        )
        .absent(root.join("imp3")),
        case(
            "data synth: unknown style",
            args![
                "data",
                "synth",
                "--style",
                "mri",
                "--n",
                "2",
                "--out",
                s(&root.join("syn1"))
            ],
            &["mri"],
        )
        .absent(root.join("syn1")),
        case(
            "data synth: native layout of rose",
            args![
                "data",
                "synth",
                "--style",
                "rose",
                "--n",
                "2",
                "--layout",
                "native",
                "--out",
                s(&root.join("syn2"))
            ],
            &["--layout paper"],
        ),
        case(
            "demo: data folder not the demo's",
            args!["demo", "--out", s(&demo_foreign)],
            &["was not written by `salt demo`"],
        )
        .absent(demo_foreign.join("run")),
        case(
            "demo: data of other settings",
            args!["demo", "--out", s(&demo_other), "--seed", "7"],
            &["other settings"],
        )
        .absent(demo_other.join("run")),
    ];
    run_cases("data/metrics/demo", cases);
    // `data check` names the row and the file of each problem (stdout holds the list).
    for (data, text) in [
        (&f.dotdot, "\"../outside.png\" leaves images/"),
        (&f.absolute, "\"/etc/hostname\" leaves images/"),
        (&f.symlink, "outside the dataset root"),
        (&f.jpeg, "trunc.jpg: truncated JPEG"),
        (&f.arcade_escape, "\"../../../outside.png\" leaves images/"),
        (&f.drive_escape, "outside the dataset root"),
    ] {
        let (ok, stdout, _) = salt(&args!["data", "check", s(data)]);
        assert!(
            !ok && stdout.contains(text),
            "data check {}: {stdout}",
            data.display()
        );
    }
    // (Only this test's folder: the others write beside f.root's files concurrently.)
    no_temporaries(&root);
}

#[test]
fn data_split_writes_csv_that_train_reads() {
    let f = fixture();
    let d = f.root.join("quoted");
    copy_dir(&f.data, &d);
    // A file name with a comma and a quote.
    std::fs::rename(
        d.join("images/xray-angio_0000.png"),
        d.join("images/a, \"b\".png"),
    )
    .unwrap();
    std::fs::rename(
        d.join("masks/xray-angio_0000_mask.png"),
        d.join("masks/a, \"b\"_mask.png"),
    )
    .unwrap();
    let (ok, _, err) = salt(&args![
        "data",
        "split",
        s(&d),
        "--train",
        "3",
        "--test",
        "1",
        "--force",
        "--seed",
        "1"
    ]);
    assert!(ok, "{err}");
    let (ok, stdout, _) = salt(&args!["data", "check", s(&d)]);
    assert!(ok && stdout.contains("no problem found"), "{stdout}");
}

#[test]
fn the_documented_ways_past_a_refusal_work() {
    let f = fixture();
    let root = f.root.join("escape-hatches");
    std::fs::create_dir_all(&root).unwrap();
    // A run copied elsewhere resumes (the output path is not part of its identity).
    let copied = root.join("copied");
    copy_dir(&f.run, &copied);
    let (ok, stdout, err) = salt(&args![
        "train",
        "--config",
        s(&f.run.join("config.toml")),
        "--resume",
        "--out",
        s(&copied),
        "--epochs",
        "2"
    ]);
    assert!(ok, "resume of a copied run: {err}");
    assert!(stdout.contains("\"epochs\": 2"), "{stdout}");
    no_temporaries(&copied);
    // --overwrite replaces a finished run.
    let replaced = root.join("replaced");
    copy_dir(&f.run, &replaced);
    let (ok, _, err) = salt(&args![
        "train",
        "--data",
        s(&f.data),
        "--model",
        "tiny",
        "--checkpoint",
        s(&fixtures().join("checkpoint.pth")),
        "--method",
        "lora",
        "--rank",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--out",
        s(&replaced),
        "--overwrite"
    ]);
    assert!(ok, "--overwrite: {err}");
    let m = salt_core::AdapterManifest::read(&replaced.join("last")).unwrap();
    assert_eq!(m.adapter.unwrap().method.name(), "lora");
    // --allow-base-mismatch runs an adapter on another base, or one whose base is unknown.
    let image = s(&f.data.join("images/xray-angio_0000.png"));
    for (adapter, name) in [(&f.run.join("last"), "other"), (&f.orphan, "orphan")] {
        let out = root.join(format!("{name}.png"));
        let (ok, _, err) = salt(&args![
            "predict",
            "--adapter",
            s(adapter),
            "--checkpoint",
            s(&f.merged),
            "--allow-base-mismatch",
            "--image",
            image.clone(),
            "--out",
            s(&out)
        ]);
        assert!(ok && out.is_file(), "{name}: {err}");
    }
    // The demo writes its dataset under a temporary name, and a rerun with the same settings
    // reuses it and replaces its own run.
    let demo = root.join("demo");
    for _ in 0..2 {
        let (ok, _, err) = salt(&args![
            "demo",
            "--out",
            s(&demo),
            "--images",
            "6",
            "--epochs",
            "1"
        ]);
        assert!(ok, "demo: {err}");
        assert!(demo.join("report.md").is_file() && demo.join("data/salt-demo.json").is_file());
        no_temporaries(&demo);
        no_temporaries(&demo.join("run"));
    }
    // An evaluation into the folder of an earlier one replaces it.
    let ev = root.join("eval");
    for _ in 0..2 {
        let (ok, _, err) = salt(&args![
            "eval",
            "--adapter",
            s(&f.run.join("last")),
            "--data",
            s(&f.data),
            "--out",
            s(&ev)
        ]);
        assert!(ok && ev.join("summary.json").is_file(), "eval: {err}");
    }
    no_temporaries(&root);
    // An adapter copied without its run, its recorded base still in place, runs on that base.
    let alone = root.join("alone/adapter");
    copy_dir(&f.run.join("last"), &alone);
    let out = root.join("alone.png");
    let (ok, _, err) = salt(&args![
        "predict",
        "--adapter",
        s(&alone),
        "--image",
        image,
        "--out",
        s(&out)
    ]);
    assert!(ok && out.is_file(), "{err}");
}

#[test]
fn a_second_training_on_a_running_run_is_refused_naming_the_first() {
    let f = fixture();
    let out = f.root.join("contended");
    let train = |epochs: &str, extra: &[&str]| {
        let mut a = args![
            "train",
            "--data",
            s(&f.data),
            "--model",
            "tiny_salt_paper",
            "--method",
            "ssam",
            "--epochs",
            epochs,
            "--batch-size",
            "1",
            "--out",
            s(&out)
        ];
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let mut first = Command::new(env!("CARGO_BIN_EXE_salt"))
        .args(train("100000", &[]))
        .env("SALT_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first training holds the lock and has started its run.
    let t0 = std::time::Instant::now();
    while !out.join("config.toml").is_file() {
        assert!(
            t0.elapsed().as_secs() < 60,
            "the first training did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (ok, _, err) = salt(&train("1", &["--resume"]));
    let pid = first.id();
    assert!(
        !ok && err.contains(&format!("in use by another training (pid {pid}")),
        "{err}"
    );
    let (ok, _, err) = salt(&train("1", &["--overwrite"]));
    assert!(!ok && err.contains(&format!("pid {pid}")), "{err}");
    // Killed, its lock is stale: the next training takes it over.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(out.join(".lock").is_file());
    let (ok, _, err) = salt(&train("1", &["--overwrite"]));
    assert!(ok, "taking over a stale lock: {err}");
    assert!(!out.join(".lock").exists());
}

/// `metrics.csv` without the `seconds` column (wall time differs run to run).
fn metrics_without_time(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

/// Checks a killed run directory (`last/` whole or absent, an interrupted swap's `.old-` whole),
/// finishes it (`--resume`, or `--overwrite` when no checkpoint was written yet) and compares
/// its metrics with the uninterrupted run's.
fn finish_killed_run(
    out: &Path,
    label: &str,
    train: &dyn Fn(&Path, &[&str]) -> Vec<String>,
    env: &[(&str, &str)],
    expected: &[String],
) {
    // `last/` is whole or absent (an interrupted swap keeps the old one under `.old-`).
    let last = out.join("last");
    let olds: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("last.old-"))
        .collect();
    for dir in std::iter::once(&last).filter(|d| d.exists()).chain(&olds) {
        for file in [
            "adapter.safetensors",
            "adapter_config.json",
            "optimizer.bin",
            "train_state.json",
        ] {
            assert!(
                dir.join(file).is_file(),
                "{label}: {} lacks {file}",
                dir.display()
            );
        }
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("train_state.json")).unwrap()).unwrap();
        let manifest = salt_core::AdapterManifest::read(dir).unwrap();
        assert_eq!(
            manifest.metadata["epoch"],
            state["epoch"].to_string(),
            "{label}: adapter and state of {} are of different epochs",
            dir.display()
        );
        salt_core::AdapterTensors::read(dir).unwrap();
    }
    let has_checkpoint = last.join("train_state.json").is_file() || !olds.is_empty();
    let flag = if has_checkpoint {
        "--resume"
    } else {
        "--overwrite"
    };
    println!(
        "crash {label}: last/ {}, {} last.old-*, then {flag}",
        if last.exists() { "whole" } else { "absent" },
        olds.len()
    );
    let (ok, _, err) = salt_env(&train(out, &[flag]), env);
    assert!(ok, "{label}: {flag} failed: {err}");
    assert_eq!(
        metrics_without_time(out),
        expected,
        "{label}: the resumed run differs from the uninterrupted one"
    );
    no_temporaries(out);
    assert!(!out.join(".lock").exists());
}

#[test]
fn a_training_killed_around_checkpoint_writes_resumes_to_the_uninterrupted_metrics() {
    let f = fixture();
    let root = f.root.join("crash");
    std::fs::create_dir_all(&root).unwrap();
    let train = |out: &Path, extra: &[&str]| {
        let mut a = args![
            "train",
            "--data",
            s(&f.data),
            "--model",
            "tiny_salt_paper",
            "--method",
            "salt",
            "--svd-rank",
            "4",
            "--rank",
            "4",
            "--epochs",
            "2",
            "--batch-size",
            "1",
            "--lr",
            "0.003",
            "--no-augment",
            "--out",
            s(out)
        ];
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    // One rayon thread: burn-ndarray's parallel sums are not bitwise reproducible.
    let env = [("RAYON_NUM_THREADS", "1")];
    let reference = root.join("reference");
    let t0 = std::time::Instant::now();
    let (ok, _, err) = salt_env(&train(&reference, &[]), &env);
    let t_reference = t0.elapsed();
    assert!(ok, "{err}");
    let expected = metrics_without_time(&reference);
    assert_eq!(expected.len(), 3);
    // Checkpoint file operations: epoch 1 does 8 (last/: adapter, optimizer, state; best/:
    // adapter, rename; last/ rename; metrics.csv, curves.png), epoch 2 8 or 12 (the swaps of
    // last/ and, when the Dice improves, best/: aside, in, delete). Every moment is tried, from
    // the first operation until a training is no longer killed.
    let mut killed = 0;
    for point in 1..=40u64 {
        let out = root.join(format!("killed-{point}"));
        let spec = format!("abort-after-write:{point}");
        let (ok, _, err) = salt_env(
            &train(&out, &[]),
            &[("RAYON_NUM_THREADS", "1"), ("SALT_FAULT_INJECT", &spec)],
        );
        if ok {
            // Past the last operation: the run finished normally.
            assert_eq!(metrics_without_time(&out), expected);
            break;
        }
        killed += 1;
        assert!(
            err.contains("aborting after checkpoint file operation"),
            "{err}"
        );
        finish_killed_run(&out, &format!("point {point}"), &train, &env, &expected);
    }
    assert!(killed >= 16, "only {killed} moments were tried");
    // And real SIGKILLs at seeded moments within the uninterrupted run's duration.
    let (mut x, wall) = (7u64, t_reference.as_millis() as u64 + 1);
    for k in 0..3 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = (x >> 33) % wall;
        let out = root.join(format!("sigkill-{k}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_salt"))
            .args(train(&out, &[]))
            .env("SALT_LOG", "error")
            .env("RAYON_NUM_THREADS", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let label = format!("SIGKILL after {delay} ms");
        println!("{label}: {status}");
        if status.success() {
            assert_eq!(metrics_without_time(&out), expected, "{label}");
            continue;
        }
        if !out.join("config.toml").is_file() {
            // Killed before the run began: nothing to finish, nothing written under a final name.
            assert!(!out.join("last").exists(), "{label}");
            continue;
        }
        finish_killed_run(&out, &label, &train, &env, &expected);
    }
}
