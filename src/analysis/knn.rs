//! What a run learned, as numbers: the official weighted k-NN (`eval_knn.py`, reference §8.1)
//! on L2-normalised teacher CLS features, and the Jaccard similarity of attention masks with
//! ground-truth masks (the paper's Fig. 4 protocol, §7.7). Results leave as plain numbers.

use crate::augment::normalise_rgb8_chw;
use crate::data::{DataError, Dataset};
use crate::model::VisionTransformer;
use burn::prelude::*;
use image::{GrayImage, RgbImage};
use std::time::Instant;

/// Weighted k-NN settings; the defaults are the reference's (k = 20, T = 0.07).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KnnSettings {
    pub k: usize,
    pub temperature: f64,
    /// Side of the centre crop fed to the network (the reference: 224 after a 256 resize).
    pub crop_px: u32,
    /// Images per forward pass.
    pub batch_size: usize,
}

impl KnnSettings {
    pub fn for_crop(crop_px: u32) -> Self {
        Self {
            k: 20,
            temperature: 0.07,
            crop_px,
            batch_size: 64,
        }
    }
}

/// Accuracies in percent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KnnResult {
    pub top1: f64,
    pub top5: f64,
    pub train_images: usize,
    pub val_images: usize,
    pub elapsed_secs: f64,
}

/// The reference's k-NN transform scaled to `crop`: resize the short side to crop·256/224,
/// centre-crop, normalise. CHW floats.
pub fn knn_transform(image: &RgbImage, crop: u32) -> Vec<f32> {
    let short = ((crop as f64) * 256.0 / 224.0).round().max(crop as f64) as u32;
    let (w, h) = image.dimensions();
    let (rw, rh) = if w <= h {
        (
            short,
            ((short as u64 * h as u64) / w.max(1) as u64).max(short as u64) as u32,
        )
    } else {
        (
            ((short as u64 * w as u64) / h.max(1) as u64).max(short as u64) as u32,
            short,
        )
    };
    let resized = image::imageops::resize(image, rw, rh, image::imageops::FilterType::CatmullRom);
    let (x0, y0) = ((rw - crop) / 2, (rh - crop) / 2);
    normalise_rgb8_chw(&image::imageops::crop_imm(&resized, x0, y0, crop, crop).to_image())
}

/// L2-normalised CLS features `[n, D]` (row-major) and labels of `indices` of `dataset`.
pub fn extract_features(
    backbone: &VisionTransformer,
    dataset: &dyn Dataset,
    indices: &[usize],
    settings: &KnnSettings,
    device: &Device,
) -> Result<(Vec<f32>, Vec<usize>), DataError> {
    let dim = backbone.embed_dim();
    let c = settings.crop_px as usize;
    let mut features = Vec::with_capacity(indices.len() * dim);
    let mut labels = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(settings.batch_size.max(1)) {
        let mut pixels = Vec::with_capacity(chunk.len() * 3 * c * c);
        for &index in chunk {
            let sample = dataset.get(index)?;
            pixels.extend(knn_transform(&sample.image, settings.crop_px));
            labels.push(sample.label);
        }
        let input = Tensor::<4>::from_data(TensorData::new(pixels, [chunk.len(), 3, c, c]), device);
        let cls = crate::device::on_compute_pool(|| backbone.forward_cls(input, None));
        let norm = cls
            .clone()
            .powf_scalar(2.0)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        let normalised = cls / norm;
        let data = normalised.into_data_as::<f32>();
        match data.as_slice::<f32>() {
            Ok(values) => features.extend_from_slice(values),
            Err(_) => features.extend(std::iter::repeat_n(0.0, chunk.len() * dim)),
        }
    }
    Ok((features, labels))
}

/// The official weighted vote: top-k cosine neighbours, weights exp(sim / T), class score =
/// sum of weights; top-1 / top-5 in percent. Similarities are computed on `device` in chunks.
#[allow(clippy::too_many_arguments)]
pub fn weighted_knn(
    train: &[f32],
    train_labels: &[usize],
    val: &[f32],
    val_labels: &[usize],
    dim: usize,
    num_classes: usize,
    settings: &KnnSettings,
    device: &Device,
) -> (f64, f64) {
    let n_train = train_labels.len();
    if n_train == 0 || val_labels.is_empty() || dim == 0 {
        return (0.0, 0.0);
    }
    let k = settings.k.min(n_train).max(1);
    let train_t =
        Tensor::<2>::from_data(TensorData::new(train.to_vec(), [n_train, dim]), device).transpose();
    let (mut top1, mut top5) = (0usize, 0usize);
    // A fixed chunk size (the reference splits into 100 chunks and crashes below 100 images).
    for (chunk_index, chunk_labels) in val_labels.chunks(256).enumerate() {
        let start = chunk_index * 256;
        let rows = chunk_labels.len();
        let queries = Tensor::<2>::from_data(
            TensorData::new(val[start * dim..(start + rows) * dim].to_vec(), [rows, dim]),
            device,
        );
        let similarity = queries.matmul(train_t.clone()).into_data_as::<f32>();
        let Ok(similarity) = similarity.as_slice::<f32>() else {
            continue;
        };
        for (row, &target) in chunk_labels.iter().enumerate() {
            let sims = &similarity[row * n_train..(row + 1) * n_train];
            let mut order: Vec<usize> = (0..n_train).collect();
            order.select_nth_unstable_by(k - 1, |&a, &b| sims[b].total_cmp(&sims[a]));
            let mut scores = vec![0f64; num_classes.max(1)];
            for &neighbour in &order[..k] {
                let label = train_labels[neighbour];
                if label < scores.len() {
                    scores[label] += (sims[neighbour] as f64 / settings.temperature).exp();
                }
            }
            let mut classes: Vec<usize> = (0..scores.len()).collect();
            classes.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
            top1 += usize::from(classes[0] == target);
            top5 += usize::from(classes.iter().take(5).any(|&c| c == target));
        }
    }
    let n = val_labels.len() as f64;
    (100.0 * top1 as f64 / n, 100.0 * top5 as f64 / n)
}

/// Evenly spread indices: at most `max` of `len`, deterministic.
pub fn subset(len: usize, max: usize) -> Vec<usize> {
    if len <= max {
        return (0..len).collect();
    }
    (0..max).map(|i| i * len / max).collect()
}

/// k-NN accuracy of `backbone` with `train` as memory and `val` as queries.
pub fn knn_accuracy(
    backbone: &VisionTransformer,
    train: &dyn Dataset,
    val: &dyn Dataset,
    max_train: usize,
    max_val: usize,
    settings: &KnnSettings,
    device: &Device,
) -> Result<KnnResult, DataError> {
    let started = Instant::now();
    let train_indices = subset(train.len(), max_train);
    let val_indices = subset(val.len(), max_val);
    let (train_features, train_labels) =
        extract_features(backbone, train, &train_indices, settings, device)?;
    let (val_features, val_labels) =
        extract_features(backbone, val, &val_indices, settings, device)?;
    let num_classes = train.class_names().len().max(val.class_names().len());
    let (top1, top5) = weighted_knn(
        &train_features,
        &train_labels,
        &val_features,
        &val_labels,
        backbone.embed_dim(),
        num_classes,
        settings,
        device,
    );
    Ok(KnnResult {
        top1,
        top5,
        train_images: train_labels.len(),
        val_images: val_labels.len(),
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

/// Jaccard of the attention masks with ground truth, in percent.
#[derive(Clone, Debug, PartialEq)]
pub struct JaccardResult {
    /// Mean over images, per head.
    pub per_head: Vec<f64>,
    /// The head with the highest mean (the paper reports the best head).
    pub best_head: usize,
    pub best: f64,
    /// The mask of the mean-over-heads map.
    pub mean_map: f64,
    pub images: usize,
}

/// |A ∩ B| / |A ∪ B| of two 0/1 masks; 1 when both are empty.
pub fn jaccard(a: &[u8], b: &[u8]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        inter += usize::from(*x != 0 && *y != 0);
        union += usize::from(*x != 0 || *y != 0);
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Fig. 4 protocol: per image, each head's map thresholded to keep `threshold` of the mass,
/// upsampled to pixels (nearest), compared with the ground-truth mask of the image as the
/// network saw it (the image is used at its own size, cropped to patch multiples).
pub fn attention_jaccard(
    backbone: &VisionTransformer,
    samples: &[(RgbImage, GrayImage)],
    threshold: f32,
    device: &Device,
) -> JaccardResult {
    use crate::analysis::attention::{attention_maps, mass_mask, upsample_nearest, HeadFusion};
    let heads = backbone.num_heads;
    let mut sums = vec![0f64; heads];
    let mut mean_sum = 0f64;
    let mut count = 0usize;
    for (image, truth) in samples {
        let Some(maps) = attention_maps(backbone, image, image.dimensions(), device) else {
            continue;
        };
        let (rows, cols, p) = (maps.grid_rows, maps.grid_cols, maps.patch_size);
        let (w, h) = (cols * p, rows * p);
        let truth: Vec<u8> = (0..h * w)
            .map(|i| u8::from(truth.get_pixel((i % w) as u32, (i / w) as u32).0[0] > 127))
            .collect();
        for (head, values) in maps.heads.iter().enumerate().take(heads) {
            let mask = upsample_nearest(&mass_mask(values, threshold), rows, cols, p);
            sums[head] += jaccard(&mask, &truth);
        }
        let mean = upsample_nearest(
            &mass_mask(&maps.fused(HeadFusion::Mean), threshold),
            rows,
            cols,
            p,
        );
        mean_sum += jaccard(&mean, &truth);
        count += 1;
    }
    let n = count.max(1) as f64;
    let per_head: Vec<f64> = sums.iter().map(|s| 100.0 * s / n).collect();
    let (best_head, best) = per_head
        .iter()
        .copied()
        .enumerate()
        .fold((0, 0.0), |acc, (i, v)| if v > acc.1 { (i, v) } else { acc });
    JaccardResult {
        per_head,
        best_head,
        best,
        mean_map: 100.0 * mean_sum / n,
        images: count,
    }
}

/// Held-out data for the monitor: a labelled memory and query split for k-NN, and images with
/// ground-truth masks for the Jaccard (only the embedded dataset has masks).
pub struct EvalData {
    pub train: std::sync::Arc<dyn Dataset>,
    pub val: std::sync::Arc<dyn Dataset>,
    pub masked: Vec<(RgbImage, GrayImage)>,
    pub max_train: usize,
    pub max_val: usize,
    pub settings: KnnSettings,
}

impl EvalData {
    /// The labelled splits a config has (`datasets::open_labelled_splits`), or `None` when it
    /// has none (a folder without `knn_train_path`/`knn_val_path`). The embedded dataset also
    /// gives 64 held-out images with their true masks for the Jaccard.
    pub fn for_config(config: &crate::config::Config) -> Result<Option<Self>, DataError> {
        use crate::config::DataSource;
        use crate::data::datasets::{SYNTHETIC_VAL_MAX_IMAGES, SYNTHETIC_VAL_SEED_OFFSET};
        use crate::data::SyntheticShapes;
        let Some(splits) = crate::data::datasets::open_labelled_splits(config)? else {
            return Ok(None);
        };
        let masked = match config.data.source {
            DataSource::Synthetic => {
                // The same images as the k-NN queries, with their true masks.
                let held_out = SyntheticShapes::new(
                    config.seed.wrapping_add(SYNTHETIC_VAL_SEED_OFFSET),
                    config.data.image_size,
                    config.data.num_images.min(SYNTHETIC_VAL_MAX_IMAGES),
                );
                (0..64.min(held_out.len()))
                    .map(|i| {
                        let (sample, mask) = held_out.sample_with_mask(i);
                        (sample.image, mask)
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok(Some(Self {
            train: splits.train,
            val: splits.val,
            masked,
            max_train: config.data.knn_max_train,
            max_val: config.data.knn_max_val,
            settings: KnnSettings::for_crop(config.data.global_crop_size),
        }))
    }

    pub fn knn(
        &self,
        backbone: &VisionTransformer,
        device: &Device,
    ) -> Result<KnnResult, DataError> {
        knn_accuracy(
            backbone,
            self.train.as_ref(),
            self.val.as_ref(),
            self.max_train,
            self.max_val,
            &self.settings,
            device,
        )
    }

    pub fn jaccard(&self, backbone: &VisionTransformer, device: &Device) -> Option<JaccardResult> {
        (!self.masked.is_empty()).then(|| attention_jaccard(backbone, &self.masked, 0.6, device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_vote_follows_the_reference() {
        // Four train points on two axes, two classes; queries near each axis.
        let train = [1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9];
        let norm = |v: [f32; 2]| {
            let n = (v[0] * v[0] + v[1] * v[1]).sqrt();
            [v[0] / n, v[1] / n]
        };
        let train: Vec<f32> = train.chunks(2).flat_map(|c| norm([c[0], c[1]])).collect();
        let labels = [0, 0, 1, 1];
        let val: Vec<f32> = [norm([1.0, 0.2]), norm([0.2, 1.0]), norm([1.0, 0.3])].concat();
        let settings = KnnSettings {
            k: 3,
            ..KnnSettings::for_crop(8)
        };
        let device = Device::flex();
        let (top1, top5) =
            weighted_knn(&train, &labels, &val, &[0, 1, 1], 2, 2, &settings, &device);
        // The third query is nearer class 0 but labelled 1: 2 of 3 right; top-5 covers both.
        assert!((top1 - 200.0 / 3.0).abs() < 1e-9, "{top1}");
        assert_eq!(top5, 100.0);
    }

    #[test]
    fn jaccard_of_masks() {
        assert_eq!(jaccard(&[1, 1, 0, 0], &[1, 0, 1, 0]), 1.0 / 3.0);
        assert_eq!(jaccard(&[0, 0], &[0, 0]), 1.0);
        assert_eq!(subset(10, 4), vec![0, 2, 5, 7]);
        assert_eq!(subset(3, 4), vec![0, 1, 2]);
    }

    #[test]
    fn transform_is_a_centre_crop_of_the_scaled_image() {
        let image = RgbImage::from_fn(40, 20, |x, _| image::Rgb([x as u8 * 6, 0, 0]));
        let chw = knn_transform(&image, 14);
        assert_eq!(chw.len(), 3 * 14 * 14);
        // Red rises left to right across the crop.
        assert!(chw[13] > chw[0]);
    }
}
