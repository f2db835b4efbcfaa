//! CLS self-attention maps of the last block and the "keep the top t of the mass" masks, as the
//! official `visualize_attention.py` (reference §7). Maps leave the device as plain `f32` grids
//! so the UI and the CLI never touch tensors.

use crate::augment::normalise_rgb8_chw;
use crate::model::VisionTransformer;
use burn::prelude::*;
use image::RgbImage;

pub use super::overlay::{
    composite, contour_width_px, head_colour, min_max_scaled, MapLayers, OverlayStyle, HEAD_COLOURS,
};
pub use super::pca::{foreground_pca_rgb, pca_rgb};

/// Per-head attention of the CLS query over the patch tokens (CLS key dropped, not
/// renormalised), row-major over the patch grid.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionMaps {
    pub grid_rows: usize,
    pub grid_cols: usize,
    pub patch_size: usize,
    /// (width, height) the image was resized to before the top-left crop: with
    /// [`resized_crop`] it gives back exactly the pixels the network saw.
    pub resized_px: (u32, u32),
    /// `heads` maps of `grid_rows · grid_cols` values.
    pub heads: Vec<Vec<f32>>,
    /// The first three principal components of the last layer's patch features as RGB, one
    /// pixel per patch (row-major); empty unless computed by [`attention_and_pca`].
    pub pca_rgb: Vec<u8>,
    /// DINOv2's foreground-masked PCA of the same features (`analysis::pca`:
    /// [`foreground_pca_rgb`]): the background black, the foreground's 3 components fitted on
    /// this image alone, or across all the followed images where they were computed together
    /// ([`maps_of_images`](super::layers::maps_of_images)); empty where `pca_rgb` is.
    pub pca_foreground_rgb: Vec<u8>,
    /// Which block `heads` come from (the last one unless asked otherwise; one map for
    /// rollout).
    pub layer: super::layers::MapLayer,
    /// `[block][head]` mean attention distance in pixels, when another layer than the last was
    /// asked for (the pass that computes it runs every block in full); empty otherwise.
    pub distance_px: Vec<Vec<f32>>,
    /// ℓ2 norm of each patch token before the final norm, row-major (where the high-norm
    /// outlier tokens of Darcet et al. 2024 show); empty unless computed by
    /// [`attention_and_pca`].
    pub token_norms: Vec<f32>,
    /// DINOv2/v3's registers: CLS's attention to each in every block, and their norms; empty
    /// for DINO or unless computed by [`attention_and_pca`].
    pub registers: super::registers::RegisterStats,
}

/// How several heads are combined into one map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadFusion {
    Mean,
    Min,
    Max,
}

impl AttentionMaps {
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

/// The mean-of-heads mask (the top `threshold` of the mass) drawn over the image the network
/// saw: the one picture of a network's attention outside the app (TensorBoard, the report, a
/// watched checkpoint, an ablation arm, the time-lapse).
pub fn mask_picture(
    image: &RgbImage,
    maps: &AttentionMaps,
    threshold: f32,
    style: &OverlayStyle,
) -> RgbImage {
    let shown = resized_crop(image, maps.resized_px, maps.patch_size);
    let layers = MapLayers::new(
        &maps.fused(HeadFusion::Mean),
        maps.grid_rows,
        maps.grid_cols,
        threshold,
    );
    composite(&shown, &layers, style)
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

/// How the image is sized before the forward pass, as `visualize_attention.py --image_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageSize {
    /// Resize so the shorter side has this many pixels, keeping the aspect ratio (one number).
    ShortSide(u32),
    /// Resize to exactly width × height (two numbers; the aspect ratio is not kept).
    Exact { width: u32, height: u32 },
}

/// Sides outside this range are refused: below one patch nothing is left, above it one
/// forward pass of a ViT-S/8 would need tens of GiB for the attention matrices.
pub const IMAGE_SIDE_RANGE_PX: std::ops::RangeInclusive<u32> = 8..=2048;

impl ImageSize {
    /// `N` (shorter side) or `WxH`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parse = |what: &str, v: &str| -> Result<u32, String> {
            let n: u32 = v.trim().parse().map_err(|_| {
                format!("size `{text}`: the {what} `{v}` is not a whole number; use N or WxH, e.g. 480 or 640x480")
            })?;
            if !IMAGE_SIDE_RANGE_PX.contains(&n) {
                return Err(format!(
                    "size `{text}`: {n} is out of range; allowed {} ..= {} px",
                    IMAGE_SIDE_RANGE_PX.start(),
                    IMAGE_SIDE_RANGE_PX.end()
                ));
            }
            Ok(n)
        };
        match text.split_once(['x', 'X']) {
            Some((w, h)) => Ok(Self::Exact {
                width: parse("width", w)?,
                height: parse("height", h)?,
            }),
            None => Ok(Self::ShortSide(parse("short side", text)?)),
        }
    }

    /// The (width, height) an image of `dims` is resized to; torchvision's `Resize(int)`
    /// rounding down the longer side.
    pub fn resolve(self, dims: (u32, u32)) -> (u32, u32) {
        match self {
            Self::Exact { width, height } => (width, height),
            Self::ShortSide(side) => {
                let (w, h) = (dims.0.max(1) as u64, dims.1.max(1) as u64);
                let side = side as u64;
                let (w, h) = if w <= h {
                    (side, (side * h / w).max(1))
                } else {
                    ((side * w / h).max(1), side)
                };
                (w.min(u32::MAX as u64) as u32, h.min(u32::MAX as u64) as u32)
            }
        }
    }
}

impl std::fmt::Display for ImageSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ShortSide(side) => write!(f, "{side} px short side"),
            Self::Exact { width, height } => write!(f, "{width}x{height} px"),
        }
    }
}

/// The image the network sees: resized (bilinear, as torchvision; skipped when the size is
/// already right) to `size` = (width, height), then cropped from the top-left to multiples of
/// the patch size.
pub fn resized_crop(image: &RgbImage, size: (u32, u32), patch: usize) -> RgbImage {
    let p = patch.max(1) as u32;
    let (w, h) = ((size.0 / p) * p, (size.1 / p) * p);
    let resized = if image.dimensions() == size {
        image.clone()
    } else {
        image::imageops::resize(image, size.0, size.1, image::imageops::FilterType::Triangle)
    };
    if resized.dimensions() == (w, h) {
        resized
    } else {
        image::imageops::crop_imm(&resized, 0, 0, w, h).to_image()
    }
}

/// The official preprocessing: [`resized_crop`] then ImageNet normalisation. Returns CHW
/// floats and the cropped (width, height).
pub fn preprocess(image: &RgbImage, size: (u32, u32), patch: usize) -> (Vec<f32>, (usize, usize)) {
    let cropped = resized_crop(image, size, patch);
    let (w, h) = (cropped.width() as usize, cropped.height() as usize);
    (normalise_rgb8_chw(&cropped), (w, h))
}

/// Last-block CLS attention of `backbone` for one image (one forward pass). `None` when the
/// image is smaller than one patch after resizing.
/// The image as the network's `[1, 3, H, W]` input; `None` when smaller than one patch.
pub(crate) fn image_input(
    image: &RgbImage,
    size: (u32, u32),
    patch: usize,
    device: &Device,
) -> Option<Tensor<4>> {
    let (chw, (w, h)) = preprocess(image, size, patch);
    if w < patch || h < patch {
        return None;
    }
    Some(Tensor::<4>::from_data(
        TensorData::new(chw, [1, 3, h, w]),
        device,
    ))
}

pub fn attention_maps(
    backbone: &VisionTransformer,
    image: &RgbImage,
    size: (u32, u32),
    device: &Device,
) -> Option<AttentionMaps> {
    let patch = backbone.patch_size();
    let input = image_input(image, size, patch, device)?;
    let (cls_attention, grid) =
        crate::device::on_compute_pool(|| backbone.last_cls_attention(input));
    let [_, heads, tokens] = cls_attention.dims();
    // The CLS key's share (and the registers') is dropped and the rest not renormalised, as
    // the official script.
    let prefix = backbone.prefix_tokens();
    let cls_rows = cls_attention.slice(s![.., .., prefix..tokens]);
    let data = cls_rows.into_data_as::<f32>();
    let values = data.as_slice::<f32>().ok()?;
    let patches = tokens - prefix;
    if values.len() != heads * patches || patches != grid.0 * grid.1 {
        return None;
    }
    Some(AttentionMaps {
        grid_rows: grid.0,
        grid_cols: grid.1,
        patch_size: patch,
        resized_px: size,
        heads: values.chunks(patches).map(<[f32]>::to_vec).collect(),
        pca_rgb: Vec::new(),
        pca_foreground_rgb: Vec::new(),
        layer: super::layers::MapLayer::Last,
        distance_px: Vec::new(),
        token_norms: Vec::new(),
        registers: Default::default(),
    })
}

/// The attention maps, the patch-feature PCA and the token norms from one full forward pass
/// (the last block's attention is the same as [`attention_maps`]'; the final-norm patch
/// tokens give the PCA, the tokens before the final norm their norms).
pub fn attention_and_pca(
    backbone: &VisionTransformer,
    image: &RgbImage,
    size: (u32, u32),
    device: &Device,
) -> Option<AttentionMaps> {
    attention_pca_and_features(backbone, image, size, device, true).map(|(maps, _)| maps)
}

/// [`attention_and_pca`] and the final-norm patch features it was computed from
/// (`rows · cols · dim`, row-major), for a PCA fitted across several images; without
/// `foreground` the image's own foreground picture is left empty (a shared fit follows).
pub fn attention_pca_and_features(
    backbone: &VisionTransformer,
    image: &RgbImage,
    size: (u32, u32),
    device: &Device,
    foreground: bool,
) -> Option<(AttentionMaps, Vec<f32>)> {
    let patch = backbone.patch_size();
    let input = image_input(image, size, patch, device)?;
    let last = backbone.depth().saturating_sub(1);
    let prefix = backbone.prefix_tokens();
    // Models with registers also give every block's CLS row (the registers panel).
    let out = crate::device::on_compute_pool(|| {
        backbone.attention_of_layers_and_cls(input, &[last], true, prefix > 1)
    });
    let (attention, tokens_out, pre_norm) = match (
        out.attentions.into_iter().next(),
        out.tokens,
        out.pre_norm_tokens,
    ) {
        (Some((_, attention)), Some(tokens), Some(pre_norm)) => (attention, tokens, pre_norm),
        _ => return None,
    };
    let [_, heads, tokens, _] = attention.dims();
    let registers = super::registers::RegisterStats::from_rows(&out.cls_rows, &pre_norm, prefix);
    let patches = tokens - prefix;
    let cls_rows = attention.slice(s![0..1, .., 0..1, prefix..tokens]);
    let data = cls_rows.into_data_as::<f32>();
    let values = data.as_slice::<f32>().ok()?;
    let features = tokens_out
        .slice(s![0..1, prefix..tokens, ..])
        .into_data_as::<f32>();
    let features = features.as_slice::<f32>().ok()?;
    let norms = pre_norm
        .slice(s![0..1, prefix..tokens, ..])
        .powi_scalar(2)
        .sum_dim(2)
        .sqrt()
        .into_data_as::<f32>();
    if values.len() != heads * patches || patches != out.grid.0 * out.grid.1 {
        return None;
    }
    let dim = backbone.embed_dim();
    let (pca_rgb, pca_foreground_rgb) =
        super::pca::pca_pictures(features, out.grid, dim, foreground);
    let maps = AttentionMaps {
        grid_rows: out.grid.0,
        grid_cols: out.grid.1,
        patch_size: patch,
        resized_px: size,
        heads: values.chunks(patches).map(<[f32]>::to_vec).collect(),
        pca_rgb,
        pca_foreground_rgb,
        layer: super::layers::MapLayer::Last,
        distance_px: Vec::new(),
        token_norms: norms.as_slice::<f32>().ok()?.to_vec(),
        registers,
    };
    Some((maps, features.to_vec()))
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
        // The CLS-only last block equals the CLS row of the full forward's attention.
        let (chw, (w, h)) = preprocess(&image, (30, 22), 4);
        let input = Tensor::<4>::from_data(TensorData::new(chw, [1, 3, h, w]), &device);
        let full = backbone.forward(input, None).last_attention;
        let row: Vec<f32> = full
            .slice(s![0..1, .., 0..1, 1..36])
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let ours: Vec<f32> = maps.heads.concat();
        let diff = row
            .iter()
            .zip(&ours)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-6, "CLS-only path differs by {diff}");
        // One full pass gives the same maps plus the PCA picture.
        let with_pca = attention_and_pca(&backbone, &image, (30, 22), &device).unwrap();
        let diff = with_pca
            .heads
            .concat()
            .iter()
            .zip(&maps.heads.concat())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-6, "full-pass maps differ by {diff}");
        assert_eq!(with_pca.pca_rgb.len(), 35 * 3);
        let mean = maps.fused(HeadFusion::Mean);
        let max = maps.fused(HeadFusion::Max);
        assert!(mean.iter().zip(&max).all(|(a, b)| a <= b));
    }
}
