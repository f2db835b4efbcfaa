//! DINO's crops of one image (`DataAugmentationDINO`, reference §4): torchvision's
//! `RandomResizedCrop` parameters, the recipes of the two global and the local crops, and the
//! pipeline each crop goes through, one seeded random stream per crop.

use super::ops::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, gaussian_blur,
    normalise_chw, solarize, to_grayscale,
};
use super::resample::resized_crop;
use crate::data::seed_from;
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::borrow::Cow;

/// torchvision `RandomResizedCrop` default aspect-ratio range.
const CROP_RATIO: (f32, f32) = (3.0 / 4.0, 4.0 / 3.0);
const FLIP_P: f32 = 0.5;
const JITTER_P: f32 = 0.8;
const BRIGHTNESS: f32 = 0.4;
const CONTRAST: f32 = 0.4;
const SATURATION: f32 = 0.2;
const HUE: f32 = 0.1;
const GRAYSCALE_P: f32 = 0.2;
/// PIL `GaussianBlur` radius (= σ in px) range.
const BLUR_SIGMA_PX: (f32, f32) = (0.1, 2.0);

#[derive(Clone, Debug)]
pub struct AugmentConfig {
    pub global_crop_size_px: u32,
    pub local_crop_size_px: u32,
    pub global_crops_scale: (f32, f32),
    pub local_crops_scale: (f32, f32),
    pub local_crops_number: usize,
}

impl Default for AugmentConfig {
    /// The official DINO defaults (`main_dino.py`).
    fn default() -> Self {
        Self {
            global_crop_size_px: 224,
            local_crop_size_px: 96,
            global_crops_scale: (0.4, 1.0),
            local_crops_scale: (0.05, 0.4),
            local_crops_number: 8,
        }
    }
}

/// One image's crops, each CHW f32, normalised.
pub struct MultiCrop {
    pub globals: [Vec<f32>; 2],
    pub locals: Vec<Vec<f32>>,
}

/// What differs between the three crop kinds of DINO's pipeline.
#[derive(Clone, Copy, Debug)]
struct CropRecipe {
    size_px: u32,
    scale: (f32, f32),
    blur_p: f32,
    solarize_p: f32,
}

/// Uniform in [lo, hi) that, unlike `random_range`, cannot panic on an empty or NaN range.
fn uniform(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// Each crop gets its own stream so crop j is the same whatever the number of local crops:
/// lowering `local_crops_number` keeps the first crops unchanged.
fn crop_rng(base_seed: u64, crop_index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed_from(&[base_seed, crop_index]))
}

/// DINO's crops of one image: global 1 (always blurred), global 2 (blur p 0.1, solarize
/// p 0.2) and `local_crops_number` locals (blur p 0.5). `cfg.local_crops_number` is ignored in
/// favour of the argument so a live change can be honoured.
pub fn multi_crop(
    image: &RgbImage,
    cfg: &AugmentConfig,
    local_crops_number: usize,
    rng: &mut impl Rng,
) -> MultiCrop {
    // A 0×0 image cannot be cropped; one black pixel keeps the shapes right.
    let image = if image.width() == 0 || image.height() == 0 {
        Cow::Owned(RgbImage::new(1, 1))
    } else {
        Cow::Borrowed(image)
    };
    let base_seed: u64 = rng.random();
    let global = |blur_p, solarize_p| CropRecipe {
        size_px: cfg.global_crop_size_px,
        scale: cfg.global_crops_scale,
        blur_p,
        solarize_p,
    };
    let local = CropRecipe {
        size_px: cfg.local_crop_size_px,
        scale: cfg.local_crops_scale,
        blur_p: 0.5,
        solarize_p: 0.0,
    };
    MultiCrop {
        globals: [
            augment_crop(&image, global(1.0, 0.0), &mut crop_rng(base_seed, 0)),
            augment_crop(&image, global(0.1, 0.2), &mut crop_rng(base_seed, 1)),
        ],
        locals: (0..local_crops_number)
            .map(|j| augment_crop(&image, local, &mut crop_rng(base_seed, 2 + j as u64)))
            .collect(),
    }
}

/// torchvision `RandomResizedCrop.get_params`: 10 tries at a random area and log-uniform
/// aspect ratio, then a centre crop clamped to the ratio range. Returns (x, y, w, h).
fn random_resized_crop_params(
    width: u32,
    height: u32,
    scale: (f32, f32),
    rng: &mut impl Rng,
) -> (u32, u32, u32, u32) {
    if width == 0 || height == 0 {
        return (0, 0, 0, 0);
    }
    let area = width as f64 * height as f64;
    let (log_lo, log_hi) = (CROP_RATIO.0.ln(), CROP_RATIO.1.ln());
    for _ in 0..10 {
        let target_area = area * uniform(rng, scale.0, scale.1) as f64;
        let aspect = uniform(rng, log_lo, log_hi).exp() as f64;
        // Python's round() is round-half-to-even.
        let w = (target_area * aspect).sqrt().round_ties_even();
        let h = (target_area / aspect).sqrt().round_ties_even();
        if w >= 1.0 && w <= width as f64 && h >= 1.0 && h <= height as f64 {
            let (w, h) = (w as u32, h as u32);
            let y = rng.random_range(0..=height - h);
            let x = rng.random_range(0..=width - w);
            return (x, y, w, h);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < CROP_RATIO.0 as f64 {
        let h = (width as f64 / CROP_RATIO.0 as f64).round_ties_even() as u32;
        (width, h.clamp(1, height))
    } else if in_ratio > CROP_RATIO.1 as f64 {
        let w = (height as f64 * CROP_RATIO.1 as f64).round_ties_even() as u32;
        (w.clamp(1, width), height)
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

/// One crop through DINO's pipeline: RandomResizedCrop (bicubic) → flip → ColorJitter
/// (p 0.8, random order) → grayscale (p 0.2) → blur (p recipe) → solarize (p recipe) →
/// normalise, CHW. Every random number is drawn whether or not its op fires, so recipes that
/// differ only in a probability see the same draws.
fn augment_crop(image: &RgbImage, recipe: CropRecipe, rng: &mut impl Rng) -> Vec<f32> {
    let size = recipe.size_px;
    let (x, y, w, h) = random_resized_crop_params(image.width(), image.height(), recipe.scale, rng);
    let mut px = resized_crop(image, (x, y, w, h), size);

    let flip = rng.random::<f32>() < FLIP_P;
    let jitter = rng.random::<f32>() < JITTER_P;
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    let brightness = uniform(rng, 1.0 - BRIGHTNESS, 1.0 + BRIGHTNESS);
    let contrast = uniform(rng, 1.0 - CONTRAST, 1.0 + CONTRAST);
    let saturation = uniform(rng, 1.0 - SATURATION, 1.0 + SATURATION);
    let hue = uniform(rng, -HUE, HUE);
    let grayscale = rng.random::<f32>() < GRAYSCALE_P;
    let blur = rng.random::<f32>() < recipe.blur_p;
    let sigma_px = uniform(rng, BLUR_SIGMA_PX.0, BLUR_SIGMA_PX.1);
    let solar = rng.random::<f32>() < recipe.solarize_p;

    if flip {
        for row in px.chunks_exact_mut(size.max(1) as usize) {
            row.reverse();
        }
    }
    if jitter {
        for op in order {
            match op {
                0 => adjust_brightness(&mut px, brightness),
                1 => adjust_contrast(&mut px, contrast),
                2 => adjust_saturation(&mut px, saturation),
                _ => adjust_hue(&mut px, hue),
            }
        }
    }
    if grayscale {
        to_grayscale(&mut px);
    }
    if blur {
        gaussian_blur(&mut px, size as usize, size as usize, sigma_px);
    }
    if solar {
        solarize(&mut px);
    }
    normalise_chw(&px)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::augment::{IMAGENET_MEAN, IMAGENET_STD};
    use crate::data::{Dataset, SyntheticShapes};

    pub(crate) fn small_cfg() -> AugmentConfig {
        AugmentConfig {
            global_crop_size_px: 32,
            local_crop_size_px: 16,
            global_crops_scale: (0.4, 1.0),
            local_crops_scale: (0.05, 0.4),
            local_crops_number: 6,
        }
    }

    pub(crate) fn test_image() -> RgbImage {
        SyntheticShapes::new(0, 64, 10).get(1).unwrap().image
    }

    /// Sum of absolute horizontal neighbour differences of a CHW crop: high-frequency energy.
    fn roughness(chw: &[f32], size: usize) -> f32 {
        chw.chunks(size)
            .map(|row| row.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f32>())
            .sum()
    }

    #[test]
    fn multi_crop_shapes_and_ranges() {
        let cfg = small_cfg();
        let crops = multi_crop(&test_image(), &cfg, 6, &mut ChaCha8Rng::seed_from_u64(1));
        let lo = (0.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0] - 1e-4;
        let hi = (1.0 - IMAGENET_MEAN[2]) / IMAGENET_STD[2] + 1e-4;
        for g in &crops.globals {
            assert_eq!(g.len(), 3 * 32 * 32);
        }
        assert_eq!(crops.locals.len(), 6);
        for crop in crops.globals.iter().chain(&crops.locals) {
            assert!(crop.iter().all(|v| v.is_finite() && (lo..=hi).contains(v)));
        }
        for l in &crops.locals {
            assert_eq!(l.len(), 3 * 16 * 16);
        }
        // Degenerate inputs still give full-size crops.
        let tiny = multi_crop(
            &RgbImage::new(0, 0),
            &cfg,
            2,
            &mut ChaCha8Rng::seed_from_u64(1),
        );
        assert_eq!(tiny.globals[0].len(), 3 * 32 * 32);
        let strip = multi_crop(
            &RgbImage::new(1, 500),
            &cfg,
            0,
            &mut ChaCha8Rng::seed_from_u64(1),
        );
        assert_eq!(strip.globals[1].len(), 3 * 32 * 32);
        assert!(strip.locals.is_empty());
    }

    #[test]
    fn multi_crop_is_deterministic_and_prefix_stable() {
        let (img, cfg) = (test_image(), small_cfg());
        let a = multi_crop(&img, &cfg, 6, &mut ChaCha8Rng::seed_from_u64(9));
        let b = multi_crop(&img, &cfg, 6, &mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(a.globals, b.globals);
        assert_eq!(a.locals, b.locals);
        let c = multi_crop(&img, &cfg, 6, &mut ChaCha8Rng::seed_from_u64(10));
        assert_ne!(a.globals[0], c.globals[0]);
        assert_ne!(a.locals[0], a.locals[1]);
        // Fewer locals: the same first crops.
        let fewer = multi_crop(&img, &cfg, 2, &mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(fewer.globals, a.globals);
        assert_eq!(fewer.locals[..], a.locals[..2]);
    }

    #[test]
    fn global_one_is_always_blurred() {
        let (img, cfg) = (test_image(), small_cfg());
        let sharp = CropRecipe {
            size_px: 32,
            scale: cfg.global_crops_scale,
            blur_p: 0.0,
            solarize_p: 0.0,
        };
        let blurred = CropRecipe {
            blur_p: 1.0,
            ..sharp
        };
        let (mut total_blurred, mut total_sharp) = (0.0, 0.0);
        for seed in 0..20u64 {
            let crops = multi_crop(&img, &cfg, 0, &mut ChaCha8Rng::seed_from_u64(seed));
            let base: u64 = ChaCha8Rng::seed_from_u64(seed).random();
            let via_blur = augment_crop(&img, blurred, &mut crop_rng(base, 0));
            let via_sharp = augment_crop(&img, sharp, &mut crop_rng(base, 0));
            assert_eq!(
                crops.globals[0], via_blur,
                "global 1 = the always-blur recipe"
            );
            let (rb, rs) = (roughness(&via_blur, 32), roughness(&via_sharp, 32));
            // σ near 0.1 px is (as in PIL) almost the identity, so only "never sharper" per crop.
            assert!(rb <= rs * 1.0001, "seed {seed}: {rb} vs {rs}");
            total_blurred += rb;
            total_sharp += rs;
        }
        assert!(
            total_blurred < 0.8 * total_sharp,
            "{total_blurred} vs {total_sharp}"
        );
    }

    #[test]
    fn blur_and_solarize_fire_at_their_rates() {
        let img = test_image();
        let recipe = |blur_p, solarize_p| CropRecipe {
            size_px: 16,
            scale: (0.3, 1.0),
            blur_p,
            solarize_p,
        };
        let mut blurred = 0;
        let mut solarized = 0;
        for seed in 0..400u64 {
            let sharp = augment_crop(&img, recipe(0.0, 0.0), &mut ChaCha8Rng::seed_from_u64(seed));
            if augment_crop(&img, recipe(0.5, 0.0), &mut ChaCha8Rng::seed_from_u64(seed)) != sharp {
                blurred += 1;
            }
            if augment_crop(&img, recipe(0.0, 0.2), &mut ChaCha8Rng::seed_from_u64(seed)) != sharp {
                solarized += 1;
            }
        }
        assert!((160..240).contains(&blurred), "{blurred}/400 blurred");
        // A crop with no value ≥ 128 is unchanged by solarize, so this can only undercount.
        assert!((40..110).contains(&solarized), "{solarized}/400 solarized");
    }

    #[test]
    fn crop_params_follow_torchvision() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..500 {
            let (x, y, w, h) = random_resized_crop_params(200, 100, (0.05, 0.4), &mut rng);
            assert!(x + w <= 200 && y + h <= 100);
            let frac = (w * h) as f32 / 20_000.0;
            assert!((0.04..0.42).contains(&frac), "{frac}");
            let ratio = w as f32 / h as f32;
            assert!((0.7..1.4).contains(&ratio), "{ratio}");
        }
        // No 10-try success is possible: centre crop clamped to the ratio range.
        assert_eq!(
            random_resized_crop_params(1000, 10, (0.9, 1.0), &mut rng),
            (493, 0, 13, 10)
        );
        assert_eq!(
            random_resized_crop_params(10, 10, (2.0, 3.0), &mut rng),
            (0, 0, 10, 10)
        );
        assert_eq!(
            random_resized_crop_params(5, 5, (f32::NAN, 1.0), &mut rng),
            (0, 0, 5, 5)
        );
    }
}
