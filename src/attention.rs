//! CLS self-attention maps of the last block and the "keep the top t of the mass" masks, as the
//! official `visualize_attention.py` (reference §7). Maps leave the device as plain `f32` grids
//! so the UI and the CLI never touch tensors.

use crate::augment::{IMAGENET_MEAN, IMAGENET_STD};
use crate::model::VisionTransformer;
use burn::prelude::*;
use image::RgbImage;

/// Per-head attention of the CLS query over the patch tokens (CLS key dropped, not
/// renormalised), row-major over the patch grid.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionMaps {
    pub grid_rows: usize,
    pub grid_cols: usize,
    pub patch_size: usize,
    /// `heads` maps of `grid_rows · grid_cols` values.
    pub heads: Vec<Vec<f32>>,
}

/// How several heads are combined into one map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadFusion {
    Mean,
    Min,
    Max,
}

impl AttentionMaps {
    /// Splits the CLS row of a `[1, heads, 1+N, 1+N]` attention read back from the device.
    pub fn from_cls_rows(
        attention: &[f32],
        heads: usize,
        tokens: usize,
        grid: (usize, usize),
        patch_size: usize,
    ) -> Option<Self> {
        if attention.len() != heads * tokens * tokens || tokens != 1 + grid.0 * grid.1 {
            return None;
        }
        let maps = (0..heads)
            .map(|h| {
                // Query 0 (CLS), keys 1.. (patches).
                let row = &attention[h * tokens * tokens..h * tokens * tokens + tokens];
                row[1..].to_vec()
            })
            .collect();
        Some(Self {
            grid_rows: grid.0,
            grid_cols: grid.1,
            patch_size,
            heads: maps,
        })
    }

    pub fn fused(&self, fusion: HeadFusion) -> Vec<f32> {
        let n = self.grid_rows * self.grid_cols;
        (0..n)
            .map(|i| {
                let values = self.heads.iter().map(|h| h[i]);
                match fusion {
                    HeadFusion::Mean => values.sum::<f32>() / self.heads.len().max(1) as f32,
                    HeadFusion::Min => values.fold(f32::INFINITY, f32::min),
                    HeadFusion::Max => values.fold(f32::NEG_INFINITY, f32::max),
                }
            })
            .collect()
    }
}

/// The official threshold: sort ascending, normalise by the sum, cumulative sum, keep the
/// positions whose cumulative mass is `> 1 − threshold` (the largest values that together
/// carry about `threshold` of the mass). Returns 0/1 per position, in the original order.
pub fn mass_mask(values: &[f32], threshold: f32) -> Vec<u8> {
    let total: f32 = values.iter().sum();
    if values.is_empty() || total <= 0.0 {
        return vec![0; values.len()];
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut mask = vec![0u8; values.len()];
    let mut cumulative = 0.0f32;
    for index in order {
        cumulative += values[index] / total;
        if cumulative > 1.0 - threshold {
            mask[index] = 1;
        }
    }
    mask
}

/// Nearest-neighbour upsampling of a grid by the patch size (each patch becomes p × p pixels).
pub fn upsample_nearest<T: Copy>(grid: &[T], rows: usize, cols: usize, patch: usize) -> Vec<T> {
    let (height, width) = (rows * patch, cols * patch);
    (0..height * width)
        .map(|i| {
            let (y, x) = (i / width, i % width);
            grid[(y / patch) * cols + x / patch]
        })
        .collect()
}

/// The official preprocessing: resize (bilinear) to `size` = (width, height), normalise, crop
/// the bottom/right to multiples of the patch size. Returns CHW floats and the cropped size.
pub fn preprocess(image: &RgbImage, size: (u32, u32), patch: usize) -> (Vec<f32>, (usize, usize)) {
    let resized = if image.dimensions() == size {
        image.clone()
    } else {
        image::imageops::resize(image, size.0, size.1, image::imageops::FilterType::Triangle)
    };
    let p = patch.max(1);
    let (w, h) = ((size.0 as usize / p) * p, (size.1 as usize / p) * p);
    let mut chw = vec![0f32; 3 * w * h];
    for y in 0..h {
        for x in 0..w {
            let pixel = resized.get_pixel(x as u32, y as u32).0;
            for c in 0..3 {
                chw[c * w * h + y * w + x] =
                    (pixel[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
    }
    (chw, (w, h))
}

/// Last-block CLS attention of `backbone` for one image (one forward pass).
pub fn attention_maps(
    backbone: &VisionTransformer,
    image: &RgbImage,
    size: (u32, u32),
    device: &Device,
) -> Option<AttentionMaps> {
    let patch = backbone.patch_size();
    let (chw, (w, h)) = preprocess(image, size, patch);
    if w < patch || h < patch {
        return None;
    }
    let input = Tensor::<4>::from_data(TensorData::new(chw, [1, 3, h, w]), device);
    let out = backbone.forward(input, None);
    let [_, heads, tokens, _] = out.last_attention.dims();
    let data = out.last_attention.into_data_as::<f32>();
    let values = data.as_slice::<f32>().ok()?;
    AttentionMaps::from_cls_rows(values, heads, tokens, out.grid, patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HostInit, VitArch, VitConfig};

    #[test]
    fn mass_mask_keeps_the_top_share_of_the_mass() {
        // 0.5 + 0.3 = 0.8 ≥ 0.6: the two largest are kept; the cumulative sum of the rest
        // (0.05 + 0.05 + 0.1 = 0.2) is not above 0.4.
        let values = [0.05, 0.5, 0.1, 0.3, 0.05];
        assert_eq!(mass_mask(&values, 0.6), vec![0, 1, 0, 1, 0]);
        assert_eq!(mass_mask(&values, 1.0), vec![1, 1, 1, 1, 1]);
        // Not normalised input (the CLS share is dropped): same answer.
        let scaled: Vec<f32> = values.iter().map(|v| v * 0.7).collect();
        assert_eq!(mass_mask(&scaled, 0.6), vec![0, 1, 0, 1, 0]);
    }

    #[test]
    fn upsampling_is_nearest_by_patch() {
        let up = upsample_nearest(&[1, 2, 3, 4, 5, 6], 2, 3, 2);
        assert_eq!(&up[..6], &[1, 1, 2, 2, 3, 3]);
        assert_eq!(&up[6..12], &[1, 1, 2, 2, 3, 3]);
        assert_eq!(&up[12..18], &[4, 4, 5, 5, 6, 6]);
    }

    #[test]
    fn maps_from_a_model_have_the_grid_and_sum_below_one() {
        let device = Device::flex();
        let vit = VitConfig {
            arch: VitArch {
                embed_dim: 24,
                depth: 2,
                num_heads: 3,
            },
            patch_size: 4,
            img_size: 16,
            drop_path_rate: 0.0,
        };
        let backbone = VisionTransformer::new(&vit, &mut HostInit::new(0), &device);
        let image = RgbImage::from_fn(30, 22, |x, y| image::Rgb([x as u8 * 8, y as u8 * 9, 90]));
        // 30 × 22 is already the requested size: cropped to 28 × 20 → a 5 × 7 grid.
        let maps = attention_maps(&backbone, &image, (30, 22), &device).unwrap();
        assert_eq!((maps.grid_rows, maps.grid_cols), (5, 7));
        assert_eq!(maps.heads.len(), 3);
        for head in &maps.heads {
            assert_eq!(head.len(), 35);
            let sum: f32 = head.iter().sum();
            assert!(
                sum > 0.0 && sum < 1.0,
                "CLS key share dropped, not renormalised: {sum}"
            );
        }
        let mean = maps.fused(HeadFusion::Mean);
        let max = maps.fused(HeadFusion::Max);
        assert!(mean.iter().zip(&max).all(|(a, b)| a <= b));
    }
}
