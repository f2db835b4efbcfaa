//! What the last layer's patch tokens say beyond attention: how alike two patches are (the
//! cosine similarity of their final-norm tokens, as ShirAmir/dino-vit-features'
//! `inspect_similarity.py` shows it) and how large each token is before the final norm, with
//! the outliers marked (the high-norm tokens Darcet et al. 2024, "Vision Transformers Need
//! Registers", describe: measured here, not assumed).

use super::attention::image_input;
use crate::model::VisionTransformer;
use burn::prelude::*;
use image::RgbImage;

/// The last layer's patch tokens of one image, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchTokens {
    pub grid_rows: usize,
    pub grid_cols: usize,
    pub patch_size: usize,
    pub dim: usize,
    /// Final-norm patch tokens, row-major over the grid, `dim` values each.
    pub tokens: Vec<f32>,
    /// ℓ2 norm of each patch token before the final norm.
    pub norms: Vec<f32>,
}

/// One pass over all blocks; `None` when the image is smaller than one patch.
pub fn patch_tokens(
    backbone: &VisionTransformer,
    image: &RgbImage,
    size: (u32, u32),
    device: &Device,
) -> Option<PatchTokens> {
    let patch = backbone.patch_size();
    let input = image_input(image, size, patch, device)?;
    let out = crate::device::on_compute_pool(|| backbone.attention_of_layers(input, &[], true));
    let (rows, cols) = out.grid;
    let tokens = out.tokens?;
    let pre_norm = out.pre_norm_tokens?;
    let [_, count, dim] = tokens.dims();
    let prefix = backbone.prefix_tokens();
    let patches = tokens
        .slice(s![0..1, prefix..count, ..])
        .into_data_as::<f32>();
    let norms = pre_norm
        .slice(s![0..1, prefix..count, ..])
        .powi_scalar(2)
        .sum_dim(2)
        .sqrt()
        .into_data_as::<f32>();
    Some(PatchTokens {
        grid_rows: rows,
        grid_cols: cols,
        patch_size: patch,
        dim,
        tokens: patches.as_slice::<f32>().ok()?.to_vec(),
        norms: norms.as_slice::<f32>().ok()?.to_vec(),
    })
}

impl PatchTokens {
    /// The patch under pixel (x, y) of the image as the network saw it.
    pub fn patch_at(&self, x_px: u32, y_px: u32) -> Option<usize> {
        let (row, col) = (
            y_px as usize / self.patch_size,
            x_px as usize / self.patch_size,
        );
        (row < self.grid_rows && col < self.grid_cols).then_some(row * self.grid_cols + col)
    }

    /// Cosine similarity of patch `index`'s token to every patch of `other` (the same image or
    /// another one of the same network): −1 ..= 1, row-major over `other`'s grid.
    pub fn similarity_to(&self, index: usize, other: &PatchTokens) -> Vec<f32> {
        let d = self.dim;
        let Some(query) = self.tokens.get(index * d..(index + 1) * d) else {
            return Vec::new();
        };
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        let query_norm = norm(query);
        other
            .tokens
            .chunks(d)
            .map(|token| {
                let dot: f32 = token.iter().zip(query).map(|(a, b)| a * b).sum();
                dot / (query_norm * norm(token))
            })
            .collect()
    }

    /// Tokens whose norm is far above the rest (see [`norm_outliers`]). 0/1 per patch.
    pub fn norm_outliers(&self) -> Vec<u8> {
        norm_outliers(&self.norms)
    }
}

/// Tukey's far-out fence of the norms: the upper quartile plus 3 times the interquartile
/// range. `None` for fewer than 4 tokens (no quartiles to speak of).
pub fn norm_fence(norms: &[f32]) -> Option<f32> {
    let mut sorted = norms.to_vec();
    sorted.sort_by(f32::total_cmp);
    if sorted.len() < 4 {
        return None;
    }
    let quartile = |q: f32| sorted[((sorted.len() - 1) as f32 * q).round() as usize];
    let (q1, q3) = (quartile(0.25), quartile(0.75));
    Some(q3 + 3.0 * (q3 - q1))
}

/// Tokens whose norm is above [`norm_fence`]: 0/1 per token, all 0 without a fence.
pub fn norm_outliers(norms: &[f32]) -> Vec<u8> {
    match norm_fence(norms) {
        Some(fence) => norms.iter().map(|&n| u8::from(n > fence)).collect(),
        None => vec![0; norms.len()],
    }
}

/// One image's similarity to the chosen patch.
#[derive(Clone, Debug, PartialEq)]
pub struct SimilarityMap {
    pub name: String,
    pub grid_rows: usize,
    pub grid_cols: usize,
    pub patch_size: usize,
    pub resized_px: (u32, u32),
    /// Cosine similarity per patch, −1 ..= 1, row-major.
    pub values: Vec<f32>,
}

/// The patch inspector's answer: where the user clicked and every image's similarity to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Similarity {
    pub source: String,
    /// (row, column) of the chosen patch.
    pub patch: (usize, usize),
    pub maps: Vec<SimilarityMap>,
}

/// The token under pixel (x, y) of `images[source]` (the image as the network sees it, sized
/// by `size_of`) against every patch of every image: one pass per image.
pub fn similarity_across(
    backbone: &VisionTransformer,
    images: &[(String, &RgbImage)],
    size_of: impl Fn(&RgbImage) -> (u32, u32),
    source: usize,
    (x_px, y_px): (u32, u32),
    device: &Device,
) -> Option<Similarity> {
    let (source_name, source_image) = images.get(source)?;
    let size = size_of(source_image);
    let query = patch_tokens(backbone, source_image, size, device)?;
    let index = query.patch_at(x_px, y_px)?;
    let maps = images
        .iter()
        .filter_map(|(name, image)| {
            let size = size_of(image);
            let tokens = if name == source_name {
                query.clone()
            } else {
                patch_tokens(backbone, image, size, device)?
            };
            Some(SimilarityMap {
                name: name.clone(),
                grid_rows: tokens.grid_rows,
                grid_cols: tokens.grid_cols,
                patch_size: tokens.patch_size,
                resized_px: size,
                values: query.similarity_to(index, &tokens),
            })
        })
        .collect();
    Some(Similarity {
        source: source_name.clone(),
        patch: (index / query.grid_cols, index % query.grid_cols),
        maps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_and_outliers_on_made_up_tokens() {
        let tokens = PatchTokens {
            grid_rows: 2,
            grid_cols: 3,
            patch_size: 8,
            dim: 2,
            tokens: vec![1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 2.0, 0.0, 1.0, 1.0, 0.0, -3.0],
            norms: vec![10.0, 11.0, 10.5, 9.5, 10.2, 90.0],
        };
        let sim = tokens.similarity_to(0, &tokens);
        assert_eq!(sim[0], 1.0);
        assert!(
            (sim[1]).abs() < 1e-7 && (sim[2] + 1.0).abs() < 1e-7 && (sim[3] - 1.0).abs() < 1e-7
        );
        assert!((sim[4] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(tokens.norm_outliers(), vec![0, 0, 0, 0, 0, 1]);
        // Sorted 9.5 10 10.2 10.5 11 90: Q1 10, Q3 11, fence 11 + 3 · 1.
        assert_eq!(norm_fence(&tokens.norms), Some(14.0));
        assert_eq!(norm_fence(&[1.0, 2.0, 3.0]), None);
        assert_eq!(norm_outliers(&[1.0, 2.0, 300.0]), vec![0, 0, 0]);
        assert_eq!(tokens.patch_at(17, 9), Some(5));
        assert_eq!(tokens.patch_at(24, 0), None);
    }
}
