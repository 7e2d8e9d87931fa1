//! A run directory as a transaction: one training at a time (a lock file), no run replaced
//! without `--overwrite`, and checkpoints published whole or not at all.
//!
//! A checkpoint (`last/`, `best/`) is written into a fresh `<name>.tmp-<pid>-<n>/` beside it and
//! published by renames: the old directory goes to `<name>.old-<pid>-<n>`, the new one takes
//! its name, the old one is deleted. A kill at any moment leaves either the old or the new
//! checkpoint under its name, or (between the two renames) none under its name and the old one
//! whole under `.old-`, which [`recover`] puts back on the next start; stale `.tmp-` directories
//! are removed.
//!
//! Test-only fault injection: `SALT_FAULT_INJECT=abort-after-write:N` ends the process at once
//! (exit status 137, as after SIGKILL; no destructor runs, so the lock stays behind as a kill
//! leaves it, and no core dump is written) right after the N-th checkpoint file operation of
//! the process (each file written, each rename, each removal, counted from 1). It exists for the
//! crash test (`tests/bad_inputs.rs`); nothing else sets it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

/// The lock file of a run directory; it holds the pid of the training that owns the run.
pub const LOCK_FILE: &str = ".lock";
/// The fault-injection variable (tests only, see the module docs).
pub const FAULT_ENV: &str = "SALT_FAULT_INJECT";

static OPS: AtomicU64 = AtomicU64::new(0);
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Counts one checkpoint file operation and aborts if `SALT_FAULT_INJECT` asks for it.
pub fn fault_point() {
    let n = OPS.fetch_add(1, Ordering::SeqCst) + 1;
    let Ok(spec) = std::env::var(FAULT_ENV) else {
        return;
    };
    if let Some(k) = spec.strip_prefix("abort-after-write:") {
        if k.trim().parse::<u64>().ok() == Some(n) {
            eprintln!("{FAULT_ENV}: aborting after checkpoint file operation {n}");
            std::process::exit(137);
        }
    }
}

/// An exclusive hold on a run directory for the life of a training; released on drop. A lock
/// left by a process that no longer runs is taken over.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    /// The directory, if this lock created it: removed again on drop when still empty (a run
    /// that failed before writing anything leaves nothing behind).
    created: Option<PathBuf>,
}

fn pid_alive(pid: u32) -> bool {
    // Linux (and most Unix systems with procfs): a running process has /proc/<pid>. Elsewhere we
    // cannot tell without unsafe code, so a lock is taken as held.
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

impl RunLock {
    /// Takes the lock of `dir` (created if needed).
    pub fn acquire(dir: &Path) -> Result<Self> {
        let created = (!dir.exists()).then(|| dir.to_path_buf());
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating output directory {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        for _ in 0..3 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id())
                        .with_context(|| format!("writing {}", path.display()))?;
                    return Ok(Self { path, created });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    match text.trim().parse::<u32>() {
                        Ok(pid) if pid_alive(pid) => bail!(
                            "{} is in use by another training (pid {pid}, lock file {}); wait for it \
                             to finish or give another --out",
                            dir.display(),
                            path.display()
                        ),
                        Ok(pid) => {
                            tracing::warn!(pid, lock = %path.display(), "taking over the lock of a training that no longer runs");
                            let _ = std::fs::remove_file(&path);
                        }
                        // Being written by its owner this very moment, or garbage: an empty
                        // or unreadable lock of a live writer is rare; retry, then refuse.
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
                    }
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("creating lock {}", path.display()))
                }
            }
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "{} is locked ({} holds {:?}); if no training uses it, delete the lock file",
            dir.display(),
            path.display(),
            text.trim()
        )
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = &self.created {
            // Fails (and so keeps it) unless empty.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Whether `dir` holds (part of) a training run.
pub fn holds_run(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.exists())
}

fn temporaries(dir: &Path, name: &str, kind: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}.{kind}-");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn remove_all(p: &Path) -> Result<()> {
    let r = match p.is_dir() {
        true => std::fs::remove_dir_all(p),
        false => std::fs::remove_file(p),
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", p.display()))
        }
        _ => Ok(()),
    }
}

/// Brings the checkpoint `dir/name` back to a whole state after a crash: an `.old-` directory
/// with no `name` beside it is put back (the crash fell between the two renames of
/// [`publish`]); every other `.old-` and every `.tmp-` directory is removed.
pub fn recover(dir: &Path, name: &str) -> Result<()> {
    let target = dir.join(name);
    let mut olds = temporaries(dir, name, "old");
    if !target.exists() {
        if let Some(old) = olds.pop() {
            tracing::warn!(from = %old.display(), to = %target.display(), "restoring the checkpoint of an interrupted publish");
            std::fs::rename(&old, &target)
                .with_context(|| format!("restoring {}", target.display()))?;
        }
    }
    for p in olds.iter().chain(&temporaries(dir, name, "tmp")) {
        tracing::info!(path = %p.display(), "removing a stale temporary");
        remove_all(p)?;
    }
    Ok(())
}

/// Removes what a killed [`salt_core::write_atomic`] of `dir/<file>` left behind
/// (`.<file>.tmp-<pid>-<n>`), for each of `files`. Call it only while holding the run's lock.
pub fn remove_stale_file_temporaries(dir: &Path, files: &[&str]) -> Result<()> {
    for f in files {
        for p in temporaries(dir, &format!(".{f}"), "tmp") {
            tracing::info!(path = %p.display(), "removing a stale temporary");
            remove_all(&p)?;
        }
    }
    Ok(())
}

/// A fresh, empty temporary directory for checkpoint `dir/name`.
pub fn staging(dir: &Path, name: &str) -> Result<PathBuf> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.tmp-{}-{n}", std::process::id()));
    remove_all(&tmp)?;
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    Ok(tmp)
}

/// Publishes the complete directory `tmp` as `dir/name` (see the module docs).
pub fn publish(tmp: &Path, dir: &Path, name: &str) -> Result<()> {
    let target = dir.join(name);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let old = dir.join(format!("{name}.old-{}-{n}", std::process::id()));
    let had_old = target.exists();
    if had_old {
        std::fs::rename(&target, &old)
            .with_context(|| format!("moving {} aside", target.display()))?;
        fault_point();
    }
    std::fs::rename(tmp, &target).with_context(|| format!("publishing {}", target.display()))?;
    fault_point();
    if had_old {
        remove_all(&old)?;
        fault_point();
    }
    Ok(())
}

/// Removes the files of a previous run (`--overwrite`): exactly `names` and their temporaries,
/// nothing else in the directory.
pub fn clear_run(dir: &Path, names: &[&str]) -> Result<()> {
    for name in names {
        remove_all(&dir.join(name))?;
        for p in temporaries(dir, name, "tmp")
            .into_iter()
            .chain(temporaries(dir, name, "old"))
        {
            remove_all(&p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_dead_holder_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        let err = format!("{:#}", RunLock::acquire(dir.path()).unwrap_err());
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(lock);
        assert!(!dir.path().join(LOCK_FILE).exists());
        // A pid far above any pid_max: no such process.
        std::fs::write(dir.path().join(LOCK_FILE), "4294967295\n").unwrap();
        let _lock = RunLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn publish_swaps_and_recover_restores_an_interrupted_swap() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let tmp = staging(d, "last").unwrap();
        std::fs::write(tmp.join("a"), "1").unwrap();
        publish(&tmp, d, "last").unwrap();
        let tmp = staging(d, "last").unwrap();
        std::fs::write(tmp.join("a"), "2").unwrap();
        publish(&tmp, d, "last").unwrap();
        assert_eq!(std::fs::read_to_string(d.join("last/a")).unwrap(), "2");
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 1);
        // Interrupted between the renames: only `.old-` and a `.tmp-` remain.
        std::fs::rename(d.join("last"), d.join("last.old-1-0")).unwrap();
        std::fs::create_dir(d.join("last.tmp-1-1")).unwrap();
        recover(d, "last").unwrap();
        assert_eq!(std::fs::read_to_string(d.join("last/a")).unwrap(), "2");
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 1);
    }
}
