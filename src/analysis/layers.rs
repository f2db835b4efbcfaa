//! Attention of any layer, as plain data: the CLS maps of chosen blocks, attention rollout
//! (Abnar & Zuidema 2020, exactly as jacobgil/vit-explain `vit_rollout.py`) and the mean
//! attention distance of every head (how far, in pixels, a patch looks: local heads near one
//! patch, global heads near the image's mean pairwise distance).

use super::attention::{image_input, HeadFusion};
use crate::model::VisionTransformer;
use burn::prelude::*;
use image::RgbImage;

/// How rollout fuses the heads of a block and how much of the weakest attention it drops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RolloutSettings {
    pub fusion: HeadFusion,
    /// Share of the smallest fused weights set to 0 in each block (the CLS→CLS weight is kept).
    pub discard_ratio: f32,
}

impl Default for RolloutSettings {
    /// vit_rollout.py's defaults.
    fn default() -> Self {
        Self {
            fusion: HeadFusion::Mean,
            discard_ratio: 0.9,
        }
    }
}

/// Which maps the attention view shows: the last block's heads (the official view), another
/// block's heads, or rollout over all blocks (one map).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum MapLayer {
    #[default]
    Last,
    Block(usize),
    Rollout(RolloutSettings),
}

impl MapLayer {
    /// For the view's picker and captions ("block 3 of 12", "rollout (all blocks)").
    pub fn label(self, depth: usize) -> String {
        match self {
            MapLayer::Last => format!("last block ({depth})"),
            MapLayer::Block(block) => format!("block {} of {depth}", block + 1),
            MapLayer::Rollout(_) => "rollout (all blocks)".into(),
        }
    }
}

/// [`attention_and_pca`](super::attention::attention_and_pca)'s maps (the PCA always of the
/// final tokens), with `heads` of the chosen block, or the rollout as the one map, and the
/// distance of every head of every block. The last block without `distances` costs what it
/// costs today; `distances` (the live run's chart over training) adds one pass.
pub fn maps_of_layer(
    backbone: &VisionTransformer,
    image: &RgbImage,
    size: (u32, u32),
    device: &Device,
    layer: MapLayer,
    distances: bool,
) -> Option<super::attention::AttentionMaps> {
    maps_and_features(backbone, (image, size), device, layer, distances, true).map(|(maps, _)| maps)
}

/// [`maps_of_layer`] of every image (named, with its input size), with DINOv2's foreground
/// PCA fitted across all of them (`pca_foreground_rgb`: a part gets one colour in every
/// image). An image smaller than one patch is `None`.
pub fn maps_of_images<'a>(
    backbone: &VisionTransformer,
    images: impl IntoIterator<Item = (&'a RgbImage, (u32, u32))>,
    device: &Device,
    layer: MapLayer,
    distances: bool,
) -> Vec<Option<super::attention::AttentionMaps>> {
    let images: Vec<(&RgbImage, (u32, u32))> = images.into_iter().collect();
    // With several images each one's own foreground fit would be replaced: not made.
    let own = images.len() < 2;
    let mut found: Vec<Option<(super::attention::AttentionMaps, Vec<f32>)>> = images
        .into_iter()
        .map(|(image, size)| {
            maps_and_features(backbone, (image, size), device, layer, distances, own)
        })
        .collect();
    let inputs: Vec<(&[f32], (usize, usize))> = found
        .iter()
        .flatten()
        .map(|(maps, features)| (features.as_slice(), (maps.grid_rows, maps.grid_cols)))
        .collect();
    if !own {
        let shared = super::pca::foreground_pca_rgb(&inputs, backbone.embed_dim());
        for ((maps, _), rgb) in found.iter_mut().flatten().zip(shared) {
            maps.pca_foreground_rgb = rgb;
        }
    }
    found
        .into_iter()
        .map(|found| found.map(|(maps, _)| maps))
        .collect()
}

/// [`maps_of_layer`] of one (image, input size) and the patch features of its PCA;
/// `own_foreground`: the image's own foreground PCA too.
fn maps_and_features(
    backbone: &VisionTransformer,
    (image, size): (&RgbImage, (u32, u32)),
    device: &Device,
    layer: MapLayer,
    distances: bool,
    own_foreground: bool,
) -> Option<(super::attention::AttentionMaps, Vec<f32>)> {
    let (mut maps, features) = super::attention::attention_pca_and_features(
        backbone,
        image,
        size,
        device,
        own_foreground,
    )?;
    let last = backbone.depth().saturating_sub(1);
    let (blocks, rollout) = match layer {
        MapLayer::Block(block) if block < last => (vec![block], None),
        MapLayer::Rollout(settings) => (Vec::new(), Some(settings)),
        MapLayer::Last | MapLayer::Block(_) => (Vec::new(), None),
    };
    let last_only = blocks.is_empty() && rollout.is_none();
    if last_only && !distances {
        return Some((maps, features));
    }
    // Every head's distance of every block comes with another block's maps (the view's
    // charts), as it always has.
    let layers = layer_maps(backbone, image, size, device, &blocks, rollout, true)?;
    match (layers.rollout, layers.cls.into_iter().next()) {
        (Some(rollout), _) => maps.heads = vec![rollout],
        (None, Some(heads)) => maps.heads = heads,
        // The last block's heads are already there.
        (None, None) if last_only => {}
        (None, None) => return None,
    }
    if !last_only {
        maps.layer = layer;
    }
    maps.distance_px = layers.distance_px;
    Some((maps, features))
}

/// Maps of several blocks of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerMaps {
    pub grid_rows: usize,
    pub grid_cols: usize,
    pub patch_size: usize,
    pub resized_px: (u32, u32),
    /// Block indices of `cls`, in the order asked.
    pub layers: Vec<usize>,
    /// `[layer][head]`: the CLS query's attention over the patches (CLS key dropped, not
    /// renormalised), row-major over the grid.
    pub cls: Vec<Vec<Vec<f32>>>,
    /// `[block][head]` mean attention distance in pixels, for every block of the network.
    pub distance_px: Vec<Vec<f32>>,
    /// Rollout over all blocks, CLS row over the patches, divided by its maximum.
    pub rollout: Option<Vec<f32>>,
}

/// One pass over all blocks: the CLS maps of `layers`, with `distances` the mean attention
/// distance of every head of every block and, when asked, the rollout. `None` when the image
/// is smaller than one patch.
///
/// Without distances or rollout no block keeps its `T × T` probabilities: each block's CLS
/// row comes from its own q, k beside the fused attention (the cost of a plain forward pass).
/// With them, each block's probabilities are reduced as soon as they are computed and dropped
/// (one block's alive at a time, and rollout's running product), so memory does not grow with
/// the depth.
pub fn layer_maps(
    backbone: &VisionTransformer,
    image: &RgbImage,
    size: (u32, u32),
    device: &Device,
    layers: &[usize],
    rollout: Option<RolloutSettings>,
    distances: bool,
) -> Option<LayerMaps> {
    let patch = backbone.patch_size();
    let input = image_input(image, size, patch, device)?;
    // CLS and the registers (DINOv2/v3): kept in rollout's product, dropped from every map.
    let prefix = backbone.prefix_tokens();
    let mut cls: Vec<(usize, Vec<Vec<f32>>)> = Vec::new();
    let mut distance_px = Vec::new();
    let mut cls_rollout = None;
    // A `[1, heads, T]` CLS row → per head, its attention over the patches.
    let cls_of = |row: Tensor<3>| -> Option<Vec<Vec<f32>>> {
        let [_, _, tokens] = row.dims();
        let data = row
            .slice(s![0..1, .., prefix..tokens])
            .into_data_as::<f32>();
        let values = data.as_slice::<f32>().ok()?;
        Some(
            values
                .chunks(tokens - prefix)
                .map(<[f32]>::to_vec)
                .collect(),
        )
    };
    let grid = if !distances && rollout.is_none() {
        let out = crate::device::on_compute_pool(|| {
            backbone.attention_of_layers_and_cls(input, &[], false, true)
        });
        for (block, row) in out.cls_rows.into_iter().enumerate() {
            if layers.contains(&block) {
                cls.push((block, cls_of(row)?));
            }
        }
        out.grid
    } else {
        let (rows, cols) = {
            let [_, _, height, width] = input.dims();
            (height / patch, width / patch)
        };
        let tokens = prefix + rows * cols;
        let pairwise = distances.then(|| {
            Tensor::<3>::from_data(
                TensorData::new(
                    pairwise_distance_px(rows, cols, patch),
                    [1, rows * cols, rows * cols],
                ),
                device,
            )
        });
        let mut product = rollout.map(|settings| Rollout::new(tokens, settings, device));
        let mut failed = false;
        let grid = crate::device::on_compute_pool(|| {
            backbone.each_block_attention(input, |block, attention| {
                if layers.contains(&block) {
                    let [_, heads, _, _] = attention.dims();
                    let row = attention.clone().slice(s![0..1, .., 0..1, ..]);
                    match cls_of(row.reshape([1, heads, tokens])) {
                        Some(maps) => cls.push((block, maps)),
                        None => failed = true,
                    }
                }
                if let Some(pairwise) = &pairwise {
                    match mean_distance_on_device(&attention, prefix, pairwise) {
                        Some(d) => distance_px.push(d),
                        None => failed = true,
                    }
                }
                if let Some(product) = &mut product {
                    failed |= product.push(&attention).is_none();
                }
            })
        });
        if failed {
            return None;
        }
        cls_rollout = product.map(|product| product.cls_row(prefix));
        grid
    };
    let (rows, cols) = grid;
    // In the order asked.
    let cls_in_order: Vec<(usize, Vec<Vec<f32>>)> = layers
        .iter()
        .filter_map(|l| cls.iter().find(|(b, _)| b == l).cloned())
        .collect();
    Some(LayerMaps {
        grid_rows: rows,
        grid_cols: cols,
        patch_size: patch,
        resized_px: size,
        layers: cls_in_order.iter().map(|(b, _)| *b).collect(),
        cls: cls_in_order.into_iter().map(|(_, maps)| maps).collect(),
        distance_px,
        rollout: cls_rollout,
    })
}

/// Pixel distance between the centres of patches i and j, `[P · P]` row-major.
pub fn pairwise_distance_px(rows: usize, cols: usize, patch: usize) -> Vec<f32> {
    let n = rows * cols;
    let mut out = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let (dr, dc) = (
                (i / cols) as f32 - (j / cols) as f32,
                (i % cols) as f32 - (j % cols) as f32,
            );
            out.push((dr * dr + dc * dc).sqrt() * patch as f32);
        }
    }
    out
}

/// Mean attention distance per head of one `[heads, 1+P, 1+P]` attention (batch 1, given as
/// flat host values): for each patch query, the attention over the patch keys renormalised to
/// sum 1 (the CLS key's share dropped) times the distance to each key, averaged over queries.
pub fn mean_attention_distance(attention: &[f32], heads: usize, distances_px: &[f32]) -> Vec<f32> {
    let tokens = (attention.len() / heads.max(1)) as f64;
    let tokens = tokens.sqrt().round() as usize;
    let patches = tokens.saturating_sub(1);
    (0..heads)
        .map(|h| {
            let mut total = 0f64;
            for q in 0..patches {
                let row =
                    &attention[(h * tokens + 1 + q) * tokens + 1..(h * tokens + 2 + q) * tokens];
                let mass: f64 = row.iter().map(|&a| a as f64).sum();
                let weighted: f64 = row
                    .iter()
                    .zip(&distances_px[q * patches..(q + 1) * patches])
                    .map(|(&a, &d)| a as f64 * d as f64)
                    .sum();
                total += if mass > 0.0 { weighted / mass } else { 0.0 };
            }
            (total / patches.max(1) as f64) as f32
        })
        .collect()
}

/// [`mean_attention_distance`] on the device (a 480-px ViT-S/8 block holds 6 × 3601² weights):
/// only the per-head means come back. Queries and keys are the patches (the `prefix` tokens,
/// CLS and registers, are not in the image).
fn mean_distance_on_device(
    attention: &Tensor<4>,
    prefix: usize,
    distances_px: &Tensor<3>,
) -> Option<Vec<f32>> {
    let [_, heads, tokens, _] = attention.dims();
    let patches = tokens - prefix;
    let keys = attention
        .clone()
        .slice(s![0..1, .., prefix..tokens, prefix..tokens])
        .reshape([heads, patches, patches]);
    let mass = keys.clone().sum_dim(2);
    let per_query = (keys * distances_px.clone()).sum_dim(2) / mass;
    let means = per_query.mean_dim(1).reshape([heads]).into_data_as::<f32>();
    Some(means.as_slice::<f32>().ok()?.to_vec())
}

/// `vit_rollout.py`'s `rollout` for batch 1: per block (head-fused `[T · T]`, in order) drop
/// the smallest `discard_ratio` of the weights except index 0, add the identity and halve,
/// divide as `a / a.sum(dim=-1)` broadcasts (entry (i, j) by row j's sum: the original's
/// quirk, kept so the maps are the ones people compare with), multiply onto the running
/// product; return the CLS row over the patches divided by its maximum. The `prefix` tokens
/// (CLS and any registers) stay in the product and are dropped from the row.
pub fn attention_rollout(
    fused: &[Vec<f32>],
    tokens: usize,
    prefix: usize,
    discard_ratio: f32,
    device: &Device,
) -> Vec<f32> {
    let settings = RolloutSettings {
        fusion: HeadFusion::Mean,
        discard_ratio,
    };
    let mut product = Rollout::new(tokens, settings, device);
    for block in fused {
        product.push_fused(block.clone());
    }
    product.cls_row(prefix)
}

/// [`attention_rollout`]'s running product, fed one block at a time (no block's map kept).
struct Rollout {
    result: Tensor<2>,
    tokens: usize,
    settings: RolloutSettings,
}

impl Rollout {
    fn new(tokens: usize, settings: RolloutSettings, device: &Device) -> Self {
        let identity: Vec<f32> = (0..tokens * tokens)
            .map(|k| if k / tokens == k % tokens { 1.0 } else { 0.0 })
            .collect();
        Self {
            result: Tensor::<2>::from_data(TensorData::new(identity, [tokens, tokens]), device),
            tokens,
            settings,
        }
    }

    /// One block's `[1, heads, T, T]` probabilities, its heads fused as the settings say.
    fn push(&mut self, attention: &Tensor<4>) -> Option<()> {
        let first = attention.clone().slice(s![0..1]);
        let reduced = match self.settings.fusion {
            HeadFusion::Mean => first.mean_dim(1),
            HeadFusion::Max => first.max_dim(1),
            HeadFusion::Min => first.min_dim(1),
        };
        let data = reduced
            .reshape([self.tokens, self.tokens])
            .into_data_as::<f32>();
        self.push_fused(data.as_slice::<f32>().ok()?.to_vec());
        Some(())
    }

    fn push_fused(&mut self, mut a: Vec<f32>) {
        let tokens = self.tokens;
        let count = (a.len() as f64 * self.settings.discard_ratio as f64) as usize;
        let mut order: Vec<usize> = (0..a.len()).collect();
        // Smallest first; a stable order on ties, as a sort of the values would give.
        order.sort_by(|&x, &y| a[x].total_cmp(&a[y]));
        for &index in order.iter().take(count) {
            if index != 0 {
                a[index] = 0.0;
            }
        }
        for i in 0..tokens {
            a[i * tokens + i] += 1.0;
        }
        for v in &mut a {
            *v /= 2.0;
        }
        let row_sums: Vec<f32> = a.chunks(tokens).map(|row| row.iter().sum()).collect();
        for (k, v) in a.iter_mut().enumerate() {
            *v /= row_sums[k % tokens];
        }
        let device = self.result.device();
        let a = Tensor::<2>::from_data(TensorData::new(a, [tokens, tokens]), &device);
        self.result = a.matmul(self.result.clone());
    }

    fn cls_row(self, prefix: usize) -> Vec<f32> {
        let cls = self
            .result
            .slice(s![0..1, prefix..self.tokens])
            .into_data_as::<f32>();
        let mask = cls
            .as_slice::<f32>()
            .map(<[f32]>::to_vec)
            .unwrap_or_default();
        let max = mask.iter().copied().fold(f32::MIN, f32::max);
        mask.iter()
            .map(|v| if max > 0.0 { v / max } else { 0.0 })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_zero_on_the_own_patch_and_the_mean_pairwise_when_uniform() {
        let (rows, cols, patch, heads) = (3, 4, 8, 2);
        let p = rows * cols;
        let t = p + 1;
        let distances = pairwise_distance_px(rows, cols, patch);
        let mut attention = vec![0f32; heads * t * t];
        for q in 0..p {
            // Head 0: all on its own patch (and some on CLS, which does not count).
            attention[(1 + q) * t] = 0.5;
            attention[(1 + q) * t + 1 + q] = 0.5;
            // Head 1: uniform over the patches.
            for k in 0..p {
                attention[(t + 1 + q) * t + 1 + k] = 1.0 / p as f32;
            }
        }
        let d = mean_attention_distance(&attention, heads, &distances);
        let mean_pairwise = distances.iter().sum::<f32>() / (p * p) as f32;
        assert_eq!(d[0], 0.0);
        assert!(
            (d[1] - mean_pairwise).abs() < 1e-4,
            "{d:?} vs {mean_pairwise}"
        );
        let device = Device::flex();
        let tensor = Tensor::<4>::from_data(TensorData::new(attention, [1, heads, t, t]), &device);
        let pairwise = Tensor::<3>::from_data(TensorData::new(distances, [1, p, p]), &device);
        let on_device = mean_distance_on_device(&tensor, 1, &pairwise).unwrap();
        assert!((on_device[0] - d[0]).abs() < 1e-4 && (on_device[1] - d[1]).abs() < 1e-3);
    }

    #[test]
    fn rollout_of_identity_blocks_is_the_cls_row() {
        // A block that attends only to itself leaves the identity: the CLS row is 0 over the
        // patches; with uniform blocks every patch gets the same share.
        let t = 5;
        let uniform = vec![vec![1.0 / t as f32; t * t]; 3];
        let device = Device::flex();
        let mask = attention_rollout(&uniform, t, 1, 0.0, &device);
        assert_eq!(mask.len(), t - 1);
        assert!(mask.iter().all(|v| (v - 1.0).abs() < 1e-6), "{mask:?}");
    }
}
