//! The viridis colour map for attention heat maps (PNG export, the CPU overlay and the WGSL
//! shader's lookup table all use this one).

/// matplotlib's viridis at 9 anchors, linearly interpolated (perceptually uniform).
const VIRIDIS: [[f32; 3]; 9] = [
    [68.0, 1.0, 84.0],
    [71.0, 44.0, 122.0],
    [59.0, 81.0, 139.0],
    [44.0, 113.0, 142.0],
    [33.0, 144.0, 141.0],
    [39.0, 173.0, 129.0],
    [92.0, 200.0, 99.0],
    [170.0, 220.0, 50.0],
    [253.0, 231.0, 37.0],
];

/// Colour for `t` in [0, 1].
pub fn viridis(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0) * (VIRIDIS.len() - 1) as f32;
    let i = (t.floor() as usize).min(VIRIDIS.len() - 2);
    let f = t - i as f32;
    std::array::from_fn(|c| (VIRIDIS[i][c] * (1.0 - f) + VIRIDIS[i + 1][c] * f).round() as u8)
}

/// A heat map with per-image min–max scaling (as matplotlib's `imsave`).
pub fn heat_image(values: &[f32], width: usize, height: usize) -> image::RgbImage {
    let scaled = crate::analysis::attention::min_max_scaled(values);
    image::RgbImage::from_fn(width as u32, height as u32, |x, y| {
        image::Rgb(viridis(scaled[y as usize * width + x as usize]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_endpoints() {
        assert_eq!(viridis(0.0), [68, 1, 84]);
        assert_eq!(viridis(1.0), [253, 231, 37]);
    }
}
