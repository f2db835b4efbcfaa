//! Pixel operations on one crop (HWC, values in [0, 1]): torchvision's `ColorJitter` parts
//! (brightness, contrast, saturation, hue), grey, PIL's Gaussian blur and solarize, and the
//! ImageNet normalisation to CHW.

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// PIL `solarize` default: invert values ≥ 128 of 255.
const SOLARIZE_THRESHOLD: f32 = 128.0 / 255.0;

/// ITU-R 601 luma, as PIL's `convert("L")` and torchvision's `rgb_to_grayscale`.
fn luma(p: [f32; 3]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

pub(super) fn adjust_brightness(px: &mut [[f32; 3]], factor: f32) {
    for p in px {
        *p = p.map(|v| (v * factor).clamp(0.0, 1.0));
    }
}

/// Blends with the mean grey level (PIL rounds that mean to an integer level).
pub(super) fn adjust_contrast(px: &mut [[f32; 3]], factor: f32) {
    if px.is_empty() {
        return;
    }
    let mean = px.iter().map(|&p| luma(p)).sum::<f32>() / px.len() as f32;
    let mean = (mean * 255.0).round() / 255.0;
    for p in px {
        *p = p.map(|v| (factor * v + (1.0 - factor) * mean).clamp(0.0, 1.0));
    }
}

/// Blends each pixel with its own grey level.
pub(super) fn adjust_saturation(px: &mut [[f32; 3]], factor: f32) {
    for p in px {
        let grey = luma(*p);
        *p = p.map(|v| (factor * v + (1.0 - factor) * grey).clamp(0.0, 1.0));
    }
}

/// Rotates the hue (HSV H in [0, 1)) by `shift`.
pub(super) fn adjust_hue(px: &mut [[f32; 3]], shift: f32) {
    for p in px {
        let [r, g, b] = *p;
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        if delta <= 0.0 {
            continue; // grey: hue undefined, unchanged
        }
        let h = if max == r {
            ((g - b) / delta).rem_euclid(6.0)
        } else if max == g {
            (b - r) / delta + 2.0
        } else {
            (r - g) / delta + 4.0
        } / 6.0;
        *p = crate::data::hsv_to_rgb(h + shift, delta / max, max);
    }
}

pub(super) fn to_grayscale(px: &mut [[f32; 3]]) {
    for p in px {
        *p = [luma(*p); 3];
    }
}

pub(super) fn solarize(px: &mut [[f32; 3]]) {
    for p in px {
        *p = p.map(|v| if v >= SOLARIZE_THRESHOLD { 1.0 - v } else { v });
    }
}

/// Separable Gaussian blur with clamp-to-edge borders. The kernel reaches 3σ but no further
/// than the image itself, so tiny crops stay cheap.
pub(super) fn gaussian_blur(px: &mut [[f32; 3]], width: usize, height: usize, sigma_px: f32) {
    if px.len() != width * height || px.is_empty() || sigma_px.is_nan() || sigma_px <= 0.0 {
        return;
    }
    let radius = ((3.0 * sigma_px).ceil() as usize).min(width.max(height) - 1);
    let weights: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let d = i as f32 - radius as f32;
            (-d * d / (2.0 * sigma_px * sigma_px)).exp()
        })
        .collect();
    let norm: f32 = weights.iter().sum();
    let weights: Vec<f32> = weights.iter().map(|w| w / norm).collect();
    let row_len = width * 3;

    // Horizontal: each row edge-padded once, then straight multiply-adds the compiler vectorises.
    let mut tmp = vec![0f32; px.len() * 3];
    let mut padded = vec![0f32; (width + 2 * radius) * 3];
    for (y, out_row) in tmp.chunks_exact_mut(row_len).enumerate() {
        let row = &px[y * width..(y + 1) * width];
        for (i, p) in padded.chunks_exact_mut(3).enumerate() {
            p.copy_from_slice(&row[i.saturating_sub(radius).min(width - 1)]);
        }
        for (k, &w) in weights.iter().enumerate() {
            for (o, &v) in out_row.iter_mut().zip(&padded[k * 3..k * 3 + row_len]) {
                *o += w * v;
            }
        }
    }
    // Vertical: whole rows at a time, source rows clamped to the edge.
    let mut acc = vec![0f32; row_len];
    for y in 0..height {
        acc.fill(0.0);
        for (k, &w) in weights.iter().enumerate() {
            let sy = (y + k).saturating_sub(radius).min(height - 1);
            for (a, &v) in acc.iter_mut().zip(&tmp[sy * row_len..(sy + 1) * row_len]) {
                *a += w * v;
            }
        }
        for (p, a) in px[y * width..(y + 1) * width]
            .iter_mut()
            .zip(acc.chunks_exact(3))
        {
            *p = [a[0], a[1], a[2]];
        }
    }
}

/// An 8-bit image as ImageNet-normalised CHW floats, `(v / 255 − mean) / std`: the evaluation
/// transforms' (k-NN, attention maps, Jaccard). The training crops' [`normalise_chw`]
/// multiplies by 1/std instead: a rounding of its own, which the golden run records.
pub fn normalise_rgb8_chw(image: &image::RgbImage) -> Vec<f32> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut chw = vec![0f32; 3 * w * h];
    for (x, y, pixel) in image.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        for c in 0..3 {
            chw[c * w * h + y * w + x] =
                (pixel.0[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    chw
}

/// [0, 1] HWC → ImageNet-normalised CHW.
pub(super) fn normalise_chw(px: &[[f32; 3]]) -> Vec<f32> {
    let plane = px.len();
    let mut out = vec![0f32; 3 * plane];
    for c in 0..3 {
        let (mean, inv_std) = (IMAGENET_MEAN[c], 1.0 / IMAGENET_STD[c]);
        for (o, p) in out[c * plane..(c + 1) * plane].iter_mut().zip(px) {
            *o = (p[c] - mean) * inv_std;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_ops_behave() {
        let mut px = vec![[0.2, 0.5, 0.9], [0.9, 0.1, 0.3]];
        let original = px.clone();
        adjust_hue(&mut px, 0.0);
        for (p, o) in px.iter().zip(&original) {
            for c in 0..3 {
                assert!((p[c] - o[c]).abs() < 1e-5);
            }
        }
        adjust_hue(&mut px, 1.0 / 3.0); // R→G→B rotation
        assert!((px[1][1] - 0.9).abs() < 1e-5 && (px[1][2] - 0.1).abs() < 1e-5);
        let mut grey = original.clone();
        to_grayscale(&mut grey);
        assert!(grey.iter().all(|p| p[0] == p[1] && p[1] == p[2]));
        let mut sat0 = original.clone();
        adjust_saturation(&mut sat0, 0.0);
        assert_eq!(sat0, grey);
        let mut flat = vec![[0.3, 0.6, 0.9]; 49];
        gaussian_blur(&mut flat, 7, 7, 2.0);
        assert!(flat
            .iter()
            .all(|p| (p[0] - 0.3).abs() < 1e-5 && (p[2] - 0.9).abs() < 1e-5));
        let mut s = vec![[0.2, 0.6, 1.0]];
        solarize(&mut s);
        assert!((s[0][0] - 0.2).abs() < 1e-6 && (s[0][1] - 0.4).abs() < 1e-6 && s[0][2] == 0.0);
        // A 1-px image and a huge σ must not panic.
        gaussian_blur(&mut s, 1, 1, 50.0);
    }
}
