//! Batches for burn: a [`Batcher`] that pre-processes (and, for training, augments) items into
//! `images: [N, 3, S, S]` (SAM-normalised) and `masks: [N, 1, S, S]` (in [0, 1]), and a helper
//! that builds burn's multi-worker `DataLoader`.
//!
//! Determinism: the augmentation of an item draws from an RNG seeded by (seed, the ids of the
//! whole batch in order, the item's position), never from a worker's own RNG state. Each batch is
//! therefore a pure function of the seed and of the shuffled order, which burn derives from the
//! shuffle seed; a new epoch reshuffles, so batches (and their augmentations) change per epoch.
//! With `num_workers > 1` burn hands batches over in the order workers finish them; the set of
//! batches is the same, their order may vary. Use one worker for a fixed order (the batcher
//! itself pre-processes the items of a batch in parallel with rayon).

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::augment::{Pipeline, Sample};
use crate::dataset::{VesselDataset, VesselItem};
use crate::preprocess::{min_max_u8, Prepared, Preprocess};

/// A batch in model space.
#[derive(Debug, Clone)]
pub struct VesselBatch<B: Backend> {
    /// `[N, 3, S, S]`, SAM-normalised, zero padding.
    pub images: Tensor<B, 4>,
    /// `[N, 1, S, S]`, values in [0, 1].
    pub masks: Tensor<B, 4>,
    /// Item ids, in batch order.
    pub ids: Vec<String>,
    /// `(h, w)` of each original image.
    pub original_sizes: Vec<(usize, usize)>,
    /// `(h, w)` of each resized image inside the padded square.
    pub resized_sizes: Vec<(usize, usize)>,
}

/// Turns [`VesselItem`]s into a [`VesselBatch`].
#[derive(Debug, Clone)]
pub struct VesselBatcher {
    /// Pre-processing.
    pub preprocess: Preprocess,
    /// Augmentation (training) or `None` (evaluation).
    pub augment: Option<Arc<Pipeline>>,
    /// Seed of the augmentation.
    pub seed: u64,
}

impl VesselBatcher {
    /// A training batcher with the paper's augmentation.
    pub fn train(preprocess: Preprocess, seed: u64) -> Self {
        Self {
            preprocess,
            augment: Some(Arc::new(Pipeline::paper())),
            seed,
        }
    }

    /// An evaluation batcher (no augmentation).
    pub fn eval(preprocess: Preprocess) -> Self {
        Self {
            preprocess,
            augment: None,
            seed: 0,
        }
    }

    /// Pre-processes (and augments) a batch of items on the CPU, without building tensors.
    pub fn prepare(&self, items: &[VesselItem]) -> Vec<Prepared> {
        let batch_key = items
            .iter()
            .fold(splitmix(self.seed), |h, it| splitmix(h ^ fnv1a(&it.id)));
        items
            .par_iter()
            .enumerate()
            .map(|(pos, it)| {
                let rgb = min_max_u8(&it.image.to_rgb());
                match &self.augment {
                    Some(pipeline) if !pipeline.is_empty() => {
                        let mut rng = StdRng::seed_from_u64(splitmix(batch_key ^ pos as u64));
                        let mut s = Sample {
                            image: rgb,
                            mask: it.mask.clone(),
                        };
                        pipeline.apply(&mut s, &mut rng);
                        self.preprocess.to_model(&s.image, &s.mask)
                    }
                    _ => self.preprocess.to_model(&rgb, &it.mask),
                }
            })
            .collect()
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl<B: Backend> Batcher<B, VesselItem, VesselBatch<B>> for VesselBatcher {
    fn batch(&self, items: Vec<VesselItem>, device: &B::Device) -> VesselBatch<B> {
        let n = items.len();
        let s = self.preprocess.size;
        let prepared = self.prepare(&items);
        let mut images = Vec::with_capacity(n * 3 * s * s);
        let mut masks = Vec::with_capacity(n * s * s);
        for p in &prepared {
            images.extend_from_slice(&p.image);
            masks.extend_from_slice(&p.mask);
        }
        VesselBatch {
            images: Tensor::from_data(TensorData::new(images, [n, 3, s, s]), device),
            masks: Tensor::from_data(TensorData::new(masks, [n, 1, s, s]), device),
            ids: items.iter().map(|it| it.id.clone()).collect(),
            original_sizes: prepared.iter().map(|p| p.original).collect(),
            resized_sizes: prepared.iter().map(|p| p.resized).collect(),
        }
    }
}

/// burn's `DataLoader` over `dataset`: batches of `batch_size`, shuffled with `seed` (if given),
/// `num_workers` threads (0 = in the calling thread), tensors on `device`.
pub fn dataloader<B: Backend>(
    dataset: VesselDataset,
    batcher: VesselBatcher,
    batch_size: usize,
    shuffle_seed: Option<u64>,
    num_workers: usize,
    device: B::Device,
) -> Arc<dyn DataLoader<B, VesselBatch<B>>> {
    let mut builder = DataLoaderBuilder::new(batcher)
        .batch_size(batch_size.max(1))
        .set_device(device);
    if let Some(seed) = shuffle_seed {
        builder = builder.shuffle(seed);
    }
    if num_workers > 0 {
        builder = builder.num_workers(num_workers);
    }
    builder.build(dataset)
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use super::*;
    use crate::synth::{generate, Style};

    type TestBackend = NdArray<f32>;

    fn dataset(n: usize) -> VesselDataset {
        VesselDataset::from_items(crate::synth::items(generate(Style::XrayAngio, n, 5, 64)))
    }

    fn summary(b: &VesselBatch<TestBackend>) -> (Vec<String>, Vec<f32>) {
        let imgs: Vec<f32> = b.images.to_data().to_vec().unwrap();
        let masks: Vec<f32> = b.masks.to_data().to_vec().unwrap();
        (b.ids.clone(), vec![imgs.iter().sum(), masks.iter().sum()])
    }

    #[test]
    fn batches_have_shapes_ranges_and_are_deterministic() {
        let pre = Preprocess {
            size: 32,
            ..Default::default()
        };
        let run = |workers| {
            let dl = dataloader::<TestBackend>(
                dataset(6),
                VesselBatcher::train(pre, 9),
                2,
                Some(4),
                workers,
                Default::default(),
            );
            let mut out: Vec<_> = dl
                .iter()
                .map(|b| {
                    assert_eq!(b.images.dims(), [2, 3, 32, 32]);
                    assert_eq!(b.masks.dims(), [2, 1, 32, 32]);
                    let m: Vec<f32> = b.masks.to_data().to_vec().unwrap();
                    assert!(m.iter().all(|v| (0.0..=1.0).contains(v)));
                    summary(&b)
                })
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        };
        let single = run(0);
        assert_eq!(single.len(), 3);
        assert_eq!(single, run(0));
        // Two workers partition differently, but each is deterministic run to run.
        assert_eq!(run(2), run(2));
    }

    #[test]
    fn eval_batcher_does_not_augment() {
        let items: Vec<VesselItem> = dataset(2).items().to_vec();
        let b = VesselBatcher::eval(Preprocess {
            size: 32,
            ..Default::default()
        });
        let direct = b.preprocess.apply(&items[0].image, &items[0].mask);
        assert_eq!(b.prepare(&items)[0], direct);
    }
}
