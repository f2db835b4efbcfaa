//! Drawing a map over its image: per-head colours, `OverlayStyle`, `MapLayers` (min–max heat
//! and mass mask per patch, the outline test) and the CPU `composite` that
//! `shaders/attention_overlay.wgsl` mirrors on the GPU.

use super::attention::mass_mask;
use image::RgbImage;

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

/// Composites `image` (as the network saw it, see
/// [`resized_crop`](super::attention::resized_crop)) with the heat map and the
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
