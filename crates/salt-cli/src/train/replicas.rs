//! Data-parallel training: one replica of the model per device, gradients summed with burn's
//! collective (`burn::collective`, burn-collective 0.21) before every replica takes the same
//! AdamW step.
//!
//! - The main replica lives on the training thread (device 0); replica `k ≥ 1` on a thread of
//!   its own, with a clone of the model and optimizer forked to device `k`.
//! - Each global batch (`--batch-size` images, prepared once on the host in the run's seeded
//!   order) is cut into contiguous parts, one per replica ([`split`]): no image is repeated or
//!   skipped, and which replica sees which image is a function of the batch alone.
//! - Per step every replica runs forward on its part; the five loss statistics are summed
//!   across replicas (one all-reduce: the batch-global Dice needs the whole batch's sums, see
//!   [`LocalLoss`]), then backward on the replica's surrogate, then the gradients are summed
//!   (`GradientsParams::all_reduce`), and every replica steps its optimizer on the identical
//!   sum. The replicas' weights stay identical, so only the main one is read: it validates,
//!   writes checkpoints, metrics and progress.
//! - A replica that fails (an error, or a panic) resets the collective, which ends every other
//!   replica's pending all-reduce with an error; the step then returns the failing replica's
//!   own error. Nothing waits forever.
//!
//! burn-collective keeps one local server per backend type in the process, so runs with
//! replicas take turns ([`EXCLUSIVE`]).

use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;

use anyhow::{anyhow, Result};
use burn::collective::{
    all_reduce, register, reset_collective, CollectiveConfig, CollectiveError, PeerId,
    ReduceOperation,
};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorPrimitive};
use salt_data::HostBatch;

use super::loss::{LocalLoss, LossConfig};
use super::model::TrainSegmenter;

/// The optimizer of a run.
pub(crate) type Optim<B, M> = OptimizerAdaptor<AdamW, M, B>;

/// One run with replicas at a time per process (burn-collective's server is per backend type).
static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// A failure to inject into one replica (tests): at `step`, replica `replica` returns an error,
/// or panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaFault {
    /// 0 is the main replica.
    pub replica: usize,
    /// The optimizer step (1-based) that fails.
    pub step: usize,
    /// Panic instead of returning an error.
    pub panic: bool,
}

/// A collective operation that ended because another replica failed (its reset dropped the
/// operation): reported only when no replica has an error of its own.
#[derive(Debug)]
struct Aborted(String);

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for Aborted {}

fn collective_error(what: &str, peer: usize, e: CollectiveError) -> anyhow::Error {
    match e {
        CollectiveError::LocalServerMissing | CollectiveError::RegisterNotFirstOperation => {
            anyhow::Error::new(Aborted(format!(
                "replica {peer}: {what} was stopped because another replica failed"
            )))
        }
        other => anyhow!("replica {peer}: {what} failed in burn's collective: {other:?}"),
    }
}

/// One part of a global batch: its images, and their share of the batch (0 for a stand-in).
#[derive(Debug)]
pub(crate) struct Part {
    batch: HostBatch,
    share: f64,
}

/// Cuts `batch` into `n` contiguous parts, the first `len % n` one image longer. A replica
/// left without an image (a last batch shorter than the device count) gets the batch's first
/// image as a stand-in with share 0: it takes part in the all-reduces and adds exactly zero.
pub(crate) fn split(batch: HostBatch, n: usize) -> Vec<Part> {
    let len = batch.len();
    let (s, per_image) = (batch.size, batch.size * batch.size);
    let mut parts = Vec::with_capacity(n);
    let mut start = 0;
    for k in 0..n {
        let count = len / n + usize::from(k < len % n);
        let (range, share) = if count == 0 {
            (0..1, 0.0)
        } else {
            (start..start + count, count as f64 / len as f64)
        };
        start += count;
        parts.push(Part {
            batch: HostBatch {
                images: batch.images[range.start * 3 * per_image..range.end * 3 * per_image]
                    .to_vec(),
                masks: batch.masks[range.start * per_image..range.end * per_image].to_vec(),
                size: s,
                ids: batch.ids[range.clone()].to_vec(),
                original_sizes: batch.original_sizes[range.clone()].to_vec(),
                resized_sizes: batch.resized_sizes[range].to_vec(),
            },
            share,
        });
    }
    parts
}

/// Refuses a global batch `batch` (the option `what`) smaller than the `devices` of `--device
/// device_flag`: every replica needs an image of every full batch.
pub(crate) fn check_batch_split(
    what: &str,
    batch: usize,
    devices: usize,
    device_flag: &str,
) -> Result<()> {
    if batch < devices {
        anyhow::bail!(
            "{what} = {batch}: smaller than the {devices} devices of --device {device_flag}; the \
             batch is split across the devices, so expected at least {devices}"
        );
    }
    Ok(())
}

/// Sums `t` over the replicas.
fn sum_over_replicas<B: AutodiffBackend>(peer: usize, t: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
    let inner = t.inner().into_primitive().tensor();
    let summed =
        all_reduce::<B::InnerBackend>(PeerId::from(peer as u32), inner, ReduceOperation::Sum)
            .map_err(|e| collective_error("summing the loss statistics", peer, e))?;
    Ok(Tensor::from_inner(Tensor::from_primitive(
        TensorPrimitive::Float(summed),
    )))
}

/// One replica's share of an optimizer step (see the module docs). Returns the batch's detached
/// `[total, dice, focal, bce]`.
fn replica_step<B: AutodiffBackend, M: TrainSegmenter<B>>(
    peer: usize,
    model: &mut M,
    optim: &mut Optim<B, M>,
    loss: &LossConfig,
    part: Part,
    lr: f64,
    device: &B::Device,
) -> Result<Tensor<B, 1>> {
    let batch = part.batch.to_device::<B>(device);
    let logits = model.logits(batch.images)?;
    let local: LocalLoss<B> = loss.local(logits, batch.masks, part.share);
    let stats = sum_over_replicas::<B>(peer, local.stats())?;
    let (surrogate, row) = local.finish(stats);
    let grads = GradientsParams::from_grads(surrogate.backward(), model)
        .all_reduce::<B::InnerBackend>(PeerId::from(peer as u32), ReduceOperation::Sum)
        .map_err(|e| collective_error("summing the gradients", peer, e))?;
    *model = optim.step(lr, model.clone(), grads);
    Ok(row)
}

fn injected(fault: Option<ReplicaFault>, replica: usize, step: usize) -> Result<()> {
    match fault {
        Some(f) if f.replica == replica && f.step == step => {
            if f.panic {
                panic!("injected panic of replica {replica} at step {step}");
            }
            Err(anyhow!(
                "replica {replica}: injected failure at step {step} (ReplicaFault)"
            ))
        }
        _ => Ok(()),
    }
}

/// Resets the collective when a replica's thread unwinds, so no other replica waits for it.
struct ResetOnPanic<B: AutodiffBackend>(std::marker::PhantomData<B>);

impl<B: AutodiffBackend> Drop for ResetOnPanic<B> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            reset_collective::<B::InnerBackend>();
        }
    }
}

struct Command {
    part: Part,
    lr: f64,
    step: usize,
}

struct Worker {
    replica: usize,
    device: String,
    commands: Option<mpsc::Sender<Command>>,
    replies: mpsc::Receiver<Result<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Why the worker's thread ended without replying: its panic message, if any.
    fn died(&mut self) -> anyhow::Error {
        let why = match self.handle.take().map(JoinHandle::join) {
            Some(Err(payload)) => payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into()),
            _ => "its thread ended".into(),
        };
        anyhow!(
            "replica {} (device {}) stopped: {why}",
            self.replica,
            self.device
        )
    }
}

/// The replicas `1..N` of a data-parallel run (the main replica is the caller's model).
pub(crate) struct Replicas<B: AutodiffBackend, M: TrainSegmenter<B>> {
    workers: Vec<Worker>,
    loss: LossConfig,
    fault: Option<ReplicaFault>,
    _marker: std::marker::PhantomData<fn() -> (B, M)>,
    // Declared last: released after the workers are joined (Drop below).
    _exclusive: MutexGuard<'static, ()>,
}

impl<B: AutodiffBackend, M: TrainSegmenter<B>> Replicas<B, M> {
    /// Starts one replica per device after the first (`devices[0]` holds `model` itself):
    /// clones of `model` and `optim` forked to each device, on threads of their own, all
    /// registered with burn's collective. `names` are the devices as the user gave them.
    pub(crate) fn start(
        model: &M,
        optim: &Optim<B, M>,
        devices: &[B::Device],
        names: &[String],
        loss: LossConfig,
        fault: Option<ReplicaFault>,
    ) -> Result<Self> {
        let exclusive = EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner());
        reset_collective::<B::InnerBackend>();
        let n = devices.len();
        let config = CollectiveConfig::default().with_num_devices(n);
        let precision = salt_core::precision::current();
        let mut workers = Vec::with_capacity(n.saturating_sub(1));
        for (k, device) in devices.iter().enumerate().skip(1) {
            let (commands, rx) = mpsc::channel::<Command>();
            let (tx, replies) = mpsc::channel::<Result<()>>();
            let mut model = model.clone().fork(device);
            let mut optim = optim.clone();
            let (device, config) = (device.clone(), config.clone());
            let handle = std::thread::Builder::new()
                .name(format!("replica-{k}"))
                .spawn(move || {
                    let _reset = ResetOnPanic::<B>(std::marker::PhantomData);
                    let _precision = salt_core::PrecisionGuard::set(precision);
                    if let Err(e) =
                        register::<B::InnerBackend>(PeerId::from(k as u32), device.clone(), config)
                    {
                        let _ = tx.send(Err(collective_error("registering", k, e)));
                        return;
                    }
                    while let Ok(Command { part, lr, step }) = rx.recv() {
                        let result = injected(fault, k, step).and_then(|()| {
                            replica_step::<B, M>(
                                k, &mut model, &mut optim, &loss, part, lr, &device,
                            )
                        });
                        if result.is_err() {
                            reset_collective::<B::InnerBackend>();
                        }
                        if tx.send(result.map(drop)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| anyhow!("starting the thread of replica {k}: {e}"))?;
            workers.push(Worker {
                replica: k,
                device: names.get(k).cloned().unwrap_or_default(),
                commands: Some(commands),
                replies,
                handle: Some(handle),
            });
        }
        let mut replicas = Self {
            workers,
            loss,
            fault,
            _marker: std::marker::PhantomData,
            _exclusive: exclusive,
        };
        if let Err(e) = register::<B::InnerBackend>(PeerId::from(0), devices[0].clone(), config) {
            reset_collective::<B::InnerBackend>();
            replicas.stop();
            return Err(collective_error("registering", 0, e));
        }
        tracing::info!(
            replicas = n,
            devices = names.join(","),
            "data-parallel replicas ready"
        );
        Ok(replicas)
    }

    /// Number of replicas, the main one included.
    pub(crate) fn len(&self) -> usize {
        self.workers.len() + 1
    }

    /// One optimizer step of the global batch `batch` over every replica; `model` and `optim`
    /// are the main replica's (on `device`). Returns the batch's `[total, dice, focal, bce]`,
    /// or the first failing replica's error (after every replica has stopped waiting).
    pub(crate) fn step(
        &mut self,
        model: &mut M,
        optim: &mut Optim<B, M>,
        batch: HostBatch,
        lr: f64,
        step: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 1>> {
        let mut parts = split(batch, self.len()).into_iter();
        let own = parts.next().expect("split gives one part per replica");
        let mut errors: Vec<anyhow::Error> = Vec::new();
        let mut sent = vec![false; self.workers.len()];
        for ((w, part), sent) in self.workers.iter().zip(parts).zip(&mut sent) {
            let command = Command { part, lr, step };
            *sent = w.commands.as_ref().is_some_and(|c| c.send(command).is_ok());
        }
        if sent.iter().any(|s| !s) {
            reset_collective::<B::InnerBackend>();
        }
        let mine = injected(self.fault, 0, step)
            .and_then(|()| replica_step::<B, M>(0, model, optim, &self.loss, own, lr, device));
        if mine.is_err() {
            reset_collective::<B::InnerBackend>();
        }
        for (w, sent) in self.workers.iter_mut().zip(sent) {
            let reply = if sent { w.replies.recv().ok() } else { None };
            match reply {
                Some(Ok(())) => {}
                Some(Err(e)) => errors.push(e),
                None => errors.push(w.died()),
            }
        }
        let row = match mine {
            Ok(row) => row,
            Err(e) => {
                errors.insert(0, e);
                Tensor::zeros([4], device)
            }
        };
        if errors.is_empty() {
            return Ok(row);
        }
        self.stop();
        // A replica's own failure first; "stopped because another failed" only if none has one.
        let first = errors
            .iter()
            .position(|e| e.downcast_ref::<Aborted>().is_none())
            .unwrap_or(0);
        Err(errors.swap_remove(first))
    }

    /// Ends every replica's thread (closing its command channel) and waits for it.
    fn stop(&mut self) {
        for w in &mut self.workers {
            w.commands = None;
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

impl<B: AutodiffBackend, M: TrainSegmenter<B>> Drop for Replicas<B, M> {
    fn drop(&mut self) {
        self.stop();
        reset_collective::<B::InnerBackend>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, s: usize) -> HostBatch {
        HostBatch {
            images: (0..n * 3 * s * s).map(|v| v as f32).collect(),
            masks: (0..n * s * s).map(|v| v as f32).collect(),
            size: s,
            ids: (0..n).map(|i| format!("img{i}")).collect(),
            original_sizes: (0..n).map(|i| (i, i)).collect(),
            resized_sizes: (0..n).map(|i| (i, i + 1)).collect(),
        }
    }

    #[test]
    fn split_keeps_every_image_once_in_order_and_stands_in_for_empty_parts() {
        let whole = batch(5, 2);
        let parts = split(whole.clone(), 3);
        let sizes: Vec<usize> = parts.iter().map(|p| p.batch.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let shares: Vec<f64> = parts.iter().map(|p| p.share).collect();
        assert_eq!(shares, [0.4, 0.4, 0.2]);
        let ids: Vec<String> = parts.iter().flat_map(|p| p.batch.ids.clone()).collect();
        assert_eq!(ids, whole.ids);
        let images: Vec<f32> = parts.iter().flat_map(|p| p.batch.images.clone()).collect();
        assert_eq!(images, whole.images);
        let masks: Vec<f32> = parts.iter().flat_map(|p| p.batch.masks.clone()).collect();
        assert_eq!(masks, whole.masks);
        assert_eq!(parts[2].batch.resized_sizes, [(4, 5)]);

        let parts = split(batch(1, 2), 3);
        assert_eq!(parts[0].share, 1.0);
        for p in &parts[1..] {
            assert_eq!(
                (p.share, p.batch.ids.as_slice()),
                (0.0, ["img0".to_string()].as_slice())
            );
        }
    }
}
