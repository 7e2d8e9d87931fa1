//! Batches prepared ahead on a background thread: decoding is done at open time, so what runs
//! ahead is augmentation and pre-processing ([`VesselBatcher::prepare`]); the consumer only
//! uploads the ready host buffers ([`HostBatch::to_device`]).
//!
//! Order: [`epoch_batches`] is the item order of burn's `DataLoader` with the same shuffle seed
//! and batch size (it runs burn's own loader over the item indices), so a training run batches
//! exactly as it did through [`crate::dataloader`], and the batches are a pure function of the
//! seeds: prefetching changes when a batch is prepared, never which batch comes next.

use std::sync::mpsc;

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::NdArray;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::batch::{VesselBatch, VesselBatcher};
use crate::dataset::VesselDataset;
use crate::error::{Error, Result};

/// A batch in model space, in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// `[n, 3, size, size]` row-major, SAM-normalised.
    pub images: Vec<f32>,
    /// `[n, 1, size, size]` row-major, values in [0, 1].
    pub masks: Vec<f32>,
    /// The square model size.
    pub size: usize,
    /// Item ids, in batch order.
    pub ids: Vec<String>,
    /// `(h, w)` of each original image.
    pub original_sizes: Vec<(usize, usize)>,
    /// `(h, w)` of each resized image inside the padded square.
    pub resized_sizes: Vec<(usize, usize)>,
}

impl HostBatch {
    /// Pre-processes (and augments) the items of `dataset` at `indices`.
    pub fn prepare(dataset: &VesselDataset, batcher: &VesselBatcher, indices: &[usize]) -> Self {
        let items: Vec<_> = indices
            .iter()
            .map(|&i| dataset.items()[i].clone())
            .collect();
        let prepared = batcher.prepare(&items);
        let s = batcher.preprocess.size;
        let mut images = Vec::with_capacity(items.len() * 3 * s * s);
        let mut masks = Vec::with_capacity(items.len() * s * s);
        for p in &prepared {
            images.extend_from_slice(&p.image);
            masks.extend_from_slice(&p.mask);
        }
        Self {
            images,
            masks,
            size: s,
            ids: items.iter().map(|it| it.id.clone()).collect(),
            original_sizes: prepared.iter().map(|p| p.original).collect(),
            resized_sizes: prepared.iter().map(|p| p.resized).collect(),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The batch as tensors on `device`.
    pub fn to_device<B: Backend>(self, device: &B::Device) -> VesselBatch<B> {
        let (n, s) = (self.len(), self.size);
        VesselBatch {
            images: Tensor::from_data(TensorData::new(self.images, [n, 3, s, s]), device),
            masks: Tensor::from_data(TensorData::new(self.masks, [n, 1, s, s]), device),
            ids: self.ids,
            original_sizes: self.original_sizes,
            resized_sizes: self.resized_sizes,
        }
    }
}

/// burn's loader over item indices: a batch is the list of its indices.
#[derive(Debug, Clone)]
struct IndexBatcher;

impl Batcher<NdArray, usize, Vec<usize>> for IndexBatcher {
    fn batch(&self, items: Vec<usize>, _: &NdArrayDevice) -> Vec<usize> {
        items
    }
}

/// The item indices of each batch of one pass over `len` items: batches of `batch_size` (the
/// last one shorter when `len` is not a multiple), in the order burn's `DataLoader` with
/// `shuffle(seed)` (or none) produces them on its first iteration.
pub fn epoch_batches(len: usize, batch_size: usize, shuffle_seed: Option<u64>) -> Vec<Vec<usize>> {
    let mut builder = DataLoaderBuilder::<NdArray, usize, Vec<usize>>::new(IndexBatcher)
        .batch_size(batch_size.max(1))
        .set_device(NdArrayDevice::Cpu);
    if let Some(seed) = shuffle_seed {
        builder = builder.shuffle(seed);
    }
    let loader = builder.build(InMemDataset::new((0..len).collect()));
    let batches: Vec<Vec<usize>> = loader.iter().collect();
    batches
}

/// Calls `consume` with an iterator over the batches `batches` of `dataset`, each prepared by
/// `batcher`. With `ahead > 0` a background thread prepares up to `ahead` batches in advance
/// (a bounded queue); with 0 they are prepared in the calling thread when asked for.
///
/// `consume` may stop early (the producer then stops too). A producer that panics is an
/// [`Error::Prefetch`] after `consume` returns; `consume` sees the iterator end early.
pub fn with_prefetch<R>(
    dataset: &VesselDataset,
    batcher: &VesselBatcher,
    batches: &[Vec<usize>],
    ahead: usize,
    consume: impl FnOnce(&mut dyn Iterator<Item = HostBatch>) -> R,
) -> Result<R> {
    if ahead == 0 {
        let mut it = batches
            .iter()
            .map(|idx| HostBatch::prepare(dataset, batcher, idx));
        return Ok(consume(&mut it));
    }
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<HostBatch>(ahead);
        let producer = std::thread::Builder::new()
            .name("salt-prefetch".into())
            .spawn_scoped(scope, move || {
                for idx in batches {
                    // A closed channel: the consumer stopped early.
                    if tx.send(HostBatch::prepare(dataset, batcher, idx)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Prefetch(format!("cannot start the loader thread: {e}")))?;
        let out = consume(&mut rx.iter());
        drop(rx);
        producer.join().map_err(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Error::Prefetch(format!("the loader thread stopped: {what}"))
        })?;
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::dataloader;
    use crate::preprocess::Preprocess;
    use crate::synth::{generate, items, Style};

    type TestBackend = NdArray<f32>;

    fn dataset(n: usize) -> VesselDataset {
        VesselDataset::from_items(items(generate(Style::XrayAngio, n, 9, 48)))
    }

    #[test]
    fn prefetched_batches_equal_burns_dataloader_batches() {
        let data = dataset(7);
        let pre = Preprocess {
            size: 32,
            ..Default::default()
        };
        let batcher = VesselBatcher::train(pre, 11);
        let device = Default::default();
        let reference: Vec<VesselBatch<TestBackend>> =
            dataloader::<TestBackend>(data.clone(), batcher.clone(), 3, Some(5), 0, device)
                .iter()
                .collect();
        let order = epoch_batches(7, 3, Some(5));
        assert_eq!(
            order.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        for ahead in [0, 1, 4] {
            let ours = with_prefetch(&data, &batcher, &order, ahead, |it| {
                it.map(|b| b.to_device::<TestBackend>(&device))
                    .collect::<Vec<_>>()
            })
            .unwrap();
            assert_eq!(ours.len(), reference.len());
            for (a, b) in ours.iter().zip(&reference) {
                assert_eq!(a.ids, b.ids, "ahead {ahead}");
                assert_eq!(a.resized_sizes, b.resized_sizes);
                assert_eq!(a.images.to_data(), b.images.to_data(), "ahead {ahead}");
                assert_eq!(a.masks.to_data(), b.masks.to_data(), "ahead {ahead}");
            }
        }
    }

    #[test]
    fn unshuffled_order_is_sequential_and_a_consumer_may_stop_early() {
        assert_eq!(
            epoch_batches(5, 2, None),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        let data = dataset(6);
        let batcher = VesselBatcher::eval(Preprocess {
            size: 16,
            ..Default::default()
        });
        let order = epoch_batches(6, 1, Some(1));
        let first = with_prefetch(&data, &batcher, &order, 2, |it| it.next().map(|b| b.ids))
            .unwrap()
            .unwrap();
        assert_eq!(first, vec![data.items()[order[0][0]].id.clone()]);
    }

    #[test]
    fn a_panicking_producer_is_an_error_not_a_hang() {
        let data = dataset(2);
        let batcher = VesselBatcher::eval(Preprocess {
            size: 16,
            ..Default::default()
        });
        // Index 9 is outside the dataset: the producer panics on it.
        let err =
            with_prefetch(&data, &batcher, &[vec![0], vec![9]], 1, |it| it.count()).unwrap_err();
        assert!(matches!(err, Error::Prefetch(_)), "{err}");
        assert!(err.to_string().contains("loader thread"), "{err}");
    }
}
