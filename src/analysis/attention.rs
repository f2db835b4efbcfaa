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
    /// (width, height) the image was resized to before the top-left crop: with
    /// [`resized_crop`] it gives back exactly the pixels the network saw.
    pub resized_px: (u32, u32),
    /// `heads` maps of `grid_rows · grid_cols` values.
    pub heads: Vec<Vec<f32>>,
    /// The first three principal components of the last layer's patch features as RGB, one
    /// pixel per patch (row-major); empty unless computed by [`attention_and_pca`].
    pub pca_rgb: Vec<u8>,
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
    let mut chw = vec![0f32; 3 * w * h];
    for (x, y, pixel) in cropped.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        for c in 0..3 {
            chw[c * w * h + y * w + x] =
                (pixel.0[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    (chw, (w, h))
}

/// Last-block CLS attention of `backbone` for one image (one forward pass). `None` when the
/// image is smaller than one patch after resizing.
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
    let (cls_attention, grid) =
        crate::device::on_compute_pool(|| backbone.last_cls_attention(input));
    let [_, heads, tokens] = cls_attention.dims();
    // The CLS key's share is dropped and the rest not renormalised, as the official script.
    let cls_rows = cls_attention.slice(s![.., .., 1..tokens]);
    let data = cls_rows.into_data_as::<f32>();
    let values = data.as_slice::<f32>().ok()?;
    let patches = tokens - 1;
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
    })
}

/// The attention maps and the patch-feature PCA from one full forward pass (the last block's
/// attention is the same as [`attention_maps`]'; the final-norm patch tokens give the PCA).
pub fn attention_and_pca(
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
    let out = crate::device::on_compute_pool(|| backbone.forward(input, None));
    let [_, heads, tokens, _] = out.last_attention.dims();
    let patches = tokens - 1;
    let cls_rows = out.last_attention.slice(s![0..1, .., 0..1, 1..tokens]);
    let data = cls_rows.into_data_as::<f32>();
    let values = data.as_slice::<f32>().ok()?;
    let features = out
        .tokens
        .slice(s![0..1, 1..tokens, ..])
        .into_data_as::<f32>();
    let features = features.as_slice::<f32>().ok()?;
    if values.len() != heads * patches || patches != out.grid.0 * out.grid.1 {
        return None;
    }
    Some(AttentionMaps {
        grid_rows: out.grid.0,
        grid_cols: out.grid.1,
        patch_size: patch,
        resized_px: size,
        heads: values.chunks(patches).map(<[f32]>::to_vec).collect(),
        pca_rgb: pca_rgb(features, patches, backbone.embed_dim()),
    })
}

/// Projects `n` feature rows of width `dim` on their first three principal components and
/// scales each component to 0..=255 (min–max), as the DINO follow-up work's PCA pictures.
/// Components come from power iteration with deflation on the covariance (deterministic).
pub fn pca_rgb(features: &[f32], n: usize, dim: usize) -> Vec<u8> {
    if n == 0 || dim == 0 || features.len() != n * dim {
        return Vec::new();
    }
    let mut mean = vec![0f64; dim];
    for row in features.chunks(dim) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64 / n as f64;
        }
    }
    let centred: Vec<f64> = features
        .chunks(dim)
        .flat_map(|row| row.iter().zip(&mean).map(|(v, m)| *v as f64 - m))
        .collect();
    let mut covariance = vec![0f64; dim * dim];
    for row in centred.chunks(dim) {
        for i in 0..dim {
            let ri = row[i];
            if ri == 0.0 {
                continue;
            }
            for (c, rj) in covariance[i * dim..(i + 1) * dim].iter_mut().zip(row) {
                *c += ri * rj;
            }
        }
    }
    let mut components: Vec<Vec<f64>> = Vec::with_capacity(3);
    for k in 0..3.min(dim) {
        // A fixed, non-degenerate start vector keeps the result reproducible.
        let mut v: Vec<f64> = (0..dim)
            .map(|i| 1.0 + ((i * 7 + k * 13) % 11) as f64 / 11.0)
            .collect();
        for _ in 0..200 {
            let mut next = vec![0f64; dim];
            for i in 0..dim {
                next[i] = covariance[i * dim..(i + 1) * dim]
                    .iter()
                    .zip(&v)
                    .map(|(c, x)| c * x)
                    .sum();
            }
            for previous in &components {
                let dot: f64 = next.iter().zip(previous).map(|(a, b)| a * b).sum();
                for (x, p) in next.iter_mut().zip(previous) {
                    *x -= dot * p;
                }
            }
            let norm = next.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm < 1e-20 {
                break;
            }
            v = next.into_iter().map(|x| x / norm).collect();
        }
        // Sign convention: the largest coordinate positive, so reruns give the same colours.
        let largest = v
            .iter()
            .copied()
            .fold(0.0f64, |acc, x| if x.abs() > acc.abs() { x } else { acc });
        if largest < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
        components.push(v);
    }
    let projections: Vec<Vec<f64>> = components
        .iter()
        .map(|c| {
            centred
                .chunks(dim)
                .map(|row| row.iter().zip(c).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect();
    let scaled: Vec<Vec<u8>> = projections
        .iter()
        .map(|p| {
            let (lo, hi) = p
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            let span = hi - lo;
            p.iter()
                .map(|v| {
                    if span > 0.0 {
                        (255.0 * (v - lo) / span).round() as u8
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect();
    (0..n)
        .flat_map(|i| [0, 1, 2].map(|c| scaled.get(c).map_or(0, |s| s[i])))
        .collect()
}

/// Per-head mask colours, as the paper's multi-head figures: distinct hues, head 0 red like
/// the single-head official rendering.
pub const HEAD_COLOURS: [[u8; 3]; 12] = [
    [230, 25, 40],
    [60, 180, 75],
    [0, 130, 230],
    [255, 200, 0],
    [180, 60, 220],
    [0, 210, 210],
    [245, 120, 40],
    [240, 50, 200],
    [150, 220, 40],
    [250, 170, 190],
    [0, 128, 128],
    [170, 110, 40],
];

/// Mask colour of head `head`; fused maps use the official red.
pub fn head_colour(head: Option<usize>) -> [u8; 3] {
    match head {
        Some(h) => HEAD_COLOURS[h % HEAD_COLOURS.len()],
        None => [255, 0, 0],
    }
}

/// How an overlay looks. `shaders/attention_overlay.wgsl` draws exactly this on the GPU;
/// [`composite`] is the CPU version used for export, the CLI and renderers without wgpu.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OverlayStyle {
    /// Opacity of the heat map over the image (0 = image only).
    pub heat_opacity: f32,
    /// Opacity of the mask tint (the official rendering uses 0.5).
    pub tint_opacity: f32,
    /// Outline the mask in its colour.
    pub contour: bool,
    pub colour: [u8; 3],
}

impl Default for OverlayStyle {
    fn default() -> Self {
        Self {
            heat_opacity: 0.0,
            tint_opacity: 0.5,
            contour: true,
            colour: [255, 0, 0],
        }
    }
}

/// One map ready to draw: heat min–max scaled to 0..=1 per map (as matplotlib's `imsave`) and
/// the mask, both per patch, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct MapLayers {
    pub rows: usize,
    pub cols: usize,
    pub heat: Vec<f32>,
    pub mask: Vec<u8>,
}

impl MapLayers {
    pub fn new(values: &[f32], rows: usize, cols: usize, threshold: f32) -> Self {
        Self {
            rows,
            cols,
            heat: min_max_scaled(values),
            mask: mass_mask(values, threshold),
        }
    }

    /// Mask value of cell (row, col); outside the grid counts as 0, as the official
    /// zero-padded contour.
    fn mask_at(&self, row: isize, col: isize) -> u8 {
        if row < 0 || col < 0 || row as usize >= self.rows || col as usize >= self.cols {
            0
        } else {
            self.mask[row as usize * self.cols + col as usize]
        }
    }

    /// Whether image pixel (x, y), in patch cell (row, col), lies on the mask's outline,
    /// `width_px` pixels wide, for a picture of `image_w × image_h` pixels over this grid.
    #[allow(clippy::too_many_arguments)]
    pub fn on_contour(
        &self,
        x: u32,
        y: u32,
        row: usize,
        col: usize,
        image_w: u32,
        image_h: u32,
        width_px: u32,
    ) -> bool {
        let (row, col) = (row as isize, col as isize);
        if self.mask_at(row, col) == 0 {
            return false;
        }
        let cell_w = image_w as f32 / self.cols.max(1) as f32;
        let cell_h = image_h as f32 / self.rows.max(1) as f32;
        let local_x = x as f32 + 0.5 - col as f32 * cell_w;
        let local_y = y as f32 + 0.5 - row as f32 * cell_h;
        let w = width_px as f32;
        (local_x < w && self.mask_at(row, col - 1) == 0)
            || (local_x > cell_w - w && self.mask_at(row, col + 1) == 0)
            || (local_y < w && self.mask_at(row - 1, col) == 0)
            || (local_y > cell_h - w && self.mask_at(row + 1, col) == 0)
    }

    /// One RGBA texel per patch (r: heat, g: mask), the shader's grid texture.
    pub fn grid_texels(&self) -> Vec<u8> {
        self.heat
            .iter()
            .zip(&self.mask)
            .flat_map(|(h, m)| [(h * 255.0).round() as u8, m * 255, 0, 255])
            .collect()
    }
}

/// Per-map min–max scaling to 0..=1 (a constant map becomes 0).
pub fn min_max_scaled(values: &[f32]) -> Vec<f32> {
    let (lo, hi) = values
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let span = hi - lo;
    values
        .iter()
        .map(|v| if span > 0.0 { (v - lo) / span } else { 0.0 })
        .collect()
}

/// Outline width in image pixels: thin on small images, visible on large ones.
pub fn contour_width_px(image_w: u32, image_h: u32) -> u32 {
    (image_w.max(image_h) / 200).max(1)
}

/// Composites `image` (as the network saw it, see [`resized_crop`]) with the heat map and the
/// mask: pixel·(1 − a) + viridis·a, then the official tint pixel·(1 − t) + t·colour inside the
/// mask, then the outline. Cells map to pixels by nearest neighbour as the official code.
pub fn composite(image: &RgbImage, layers: &MapLayers, style: &OverlayStyle) -> RgbImage {
    let (w, h) = image.dimensions();
    if layers.rows == 0 || layers.cols == 0 || layers.heat.len() != layers.rows * layers.cols {
        return image.clone();
    }
    let contour_px = contour_width_px(w, h);
    let colour = style.colour.map(f32::from);
    RgbImage::from_fn(w, h, |x, y| {
        let col = ((x as usize * layers.cols) / w as usize).min(layers.cols - 1);
        let row = ((y as usize * layers.rows) / h as usize).min(layers.rows - 1);
        let cell = row * layers.cols + col;
        // Quantised like the shader's 256-entry colour table.
        let heat = crate::analysis::colormap::viridis((layers.heat[cell] * 255.0).round() / 255.0);
        let pixel = image.get_pixel(x, y).0;
        let mut out: [f32; 3] = std::array::from_fn(|c| {
            pixel[c] as f32 * (1.0 - style.heat_opacity) + heat[c] as f32 * style.heat_opacity
        });
        if layers.mask[cell] == 1 {
            for c in 0..3 {
                out[c] = out[c] * (1.0 - style.tint_opacity) + colour[c] * style.tint_opacity;
            }
            if style.contour && layers.on_contour(x, y, row, col, w, h, contour_px) {
                out = colour;
            }
        }
        image::Rgb(out.map(|v| v.round().clamp(0.0, 255.0) as u8))
    })
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
    fn pca_finds_the_dominant_direction() {
        // Points spread along (1, 1, 0, 0) with small noise on the other axes: the first
        // component orders them along that line, the red channel goes from 0 to 255.
        let n = 20;
        let features: Vec<f32> = (0..n)
            .flat_map(|i| {
                let t = i as f32 / (n - 1) as f32;
                [
                    t,
                    t,
                    0.01 * ((i * 3) % 5) as f32,
                    0.01 * ((i * 7) % 3) as f32,
                ]
            })
            .collect();
        let rgb = pca_rgb(&features, n, 4);
        let red: Vec<u8> = rgb.chunks(3).map(|p| p[0]).collect();
        assert!(
            red.windows(2).all(|w| w[0] <= w[1]) || red.windows(2).all(|w| w[0] >= w[1]),
            "{red:?}"
        );
        assert_eq!(red.iter().copied().max(), Some(255));
        assert_eq!(red.iter().copied().min(), Some(0));
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
