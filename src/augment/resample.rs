//! PIL's antialiased bicubic resize of a crop (`Image.resize(..., BICUBIC)`, what
//! torchvision's `RandomResizedCrop` runs on PIL images in the official pipeline).
//!
//! Hand-written because the crops should match the official pipeline as closely as possible:
//! PIL's `precompute_coeffs` (kernel a = −0.5, widened by the shrink factor, i.e. antialiased),
//! horizontal pass first, clipped to the 8-bit range after each pass. No crate does exactly
//! that (the image crate's `CatmullRom` has the same kernel but another pass order and
//! rounding); this one also reads the crop straight out of the source image and returns floats
//! ready for the colour ops, with no intermediate image.

use image::RgbImage;

/// PIL's bicubic kernel (a = −0.5), identical to the image crate's `CatmullRom`.
fn bicubic(x: f32) -> f32 {
    const A: f32 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: first input tap and normalised weights (PIL `precompute_coeffs`). When
/// shrinking, the kernel is widened by the scale factor, i.e. antialiased like PIL.
fn resample_coeffs(in_len: usize, out_len: usize) -> (Vec<usize>, Vec<f32>, usize) {
    let scale = in_len as f32 / out_len as f32;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    let taps = (support.ceil() as usize) * 2 + 1;
    let mut starts = Vec::with_capacity(out_len);
    let mut weights = vec![0f32; out_len * taps];
    for (o, ws) in weights.chunks_exact_mut(taps).enumerate() {
        let centre = (o as f32 + 0.5) * scale;
        let first = ((centre - support + 0.5).max(0.0) as usize).min(in_len - 1);
        let end = ((centre + support + 0.5).max(0.0) as usize).clamp(first + 1, in_len);
        let n = (end - first).min(taps);
        for (t, w) in ws[..n].iter_mut().enumerate() {
            *w = bicubic(((first + t) as f32 - centre + 0.5) / filter_scale);
        }
        let sum: f32 = ws.iter().sum();
        if sum != 0.0 {
            ws.iter_mut().for_each(|w| *w /= sum);
        }
        starts.push(first);
    }
    (starts, weights, taps)
}

/// Crops (x, y, w, h) out of `image` and resizes it to `size`×`size`, horizontal pass first
/// as PIL does, clipping to the 8-bit range after each pass. Output in [0, 1], HWC.
pub(super) fn resized_crop(
    image: &RgbImage,
    (x0, y0, w, h): (u32, u32, u32, u32),
    size: u32,
) -> Vec<[f32; 3]> {
    let (w, h, size) = (w as usize, h as usize, size as usize);
    if w == 0 || h == 0 || size == 0 {
        return vec![[0.0; 3]; size * size];
    }
    let stride = image.width() as usize * 3;
    let raw = image.as_raw();
    let (xs, xw, xtaps) = resample_coeffs(w, size);
    let (ys, yw, ytaps) = resample_coeffs(h, size);
    // Horizontal: h rows × size columns.
    let mut tmp = vec![[0f32; 3]; h * size];
    for row in 0..h {
        let start = (y0 as usize + row) * stride + x0 as usize * 3;
        let src = &raw[start..start + w * 3];
        for (o, out) in tmp[row * size..(row + 1) * size].iter_mut().enumerate() {
            let mut acc = [0f32; 3];
            let ws = &xw[o * xtaps..(o + 1) * xtaps];
            for (t, &wt) in ws.iter().enumerate() {
                let i = (xs[o] + t).min(w - 1) * 3;
                acc[0] += wt * src[i] as f32;
                acc[1] += wt * src[i + 1] as f32;
                acc[2] += wt * src[i + 2] as f32;
            }
            *out = acc.map(|v| v.clamp(0.0, 255.0));
        }
    }
    // Vertical: size × size.
    let mut out = vec![[0f32; 3]; size * size];
    for (o, out_row) in out.chunks_exact_mut(size).enumerate() {
        let ws = &yw[o * ytaps..(o + 1) * ytaps];
        for (t, &wt) in ws.iter().enumerate() {
            if wt == 0.0 {
                continue;
            }
            let sy = (ys[o] + t).min(h - 1);
            for (p, s) in out_row.iter_mut().zip(&tmp[sy * size..(sy + 1) * size]) {
                for c in 0..3 {
                    p[c] += wt * s[c];
                }
            }
        }
        for p in out_row.iter_mut() {
            *p = p.map(|v| v.clamp(0.0, 255.0) / 255.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::multi_crop::tests::test_image;

    #[test]
    fn resize_matches_image_crate_catmull_rom() {
        let img = test_image();
        for (region, size) in [
            ((3, 5, 45, 40), 32),
            ((10, 2, 9, 12), 16),
            ((0, 0, 64, 64), 16),
        ] {
            let ours = resized_crop(&img, region, size);
            let (x, y, w, h) = region;
            let view = image::imageops::crop_imm(&img, x, y, w, h);
            let reference = image::imageops::resize(
                &*view,
                size,
                size,
                image::imageops::FilterType::CatmullRom,
            );
            let mut max_diff = 0f32;
            for (p, q) in ours.iter().zip(reference.pixels()) {
                for (a, &b) in p.iter().zip(&q.0) {
                    max_diff = max_diff.max((a * 255.0 - b as f32).abs());
                }
            }
            // Only pass order and rounding differ.
            assert!(max_diff <= 3.0, "{region:?} → {size}: {max_diff}");
        }
    }
}
