//! DINO multi-crop augmentation (`DataAugmentationDINO`, reference §4) and a deterministic,
//! multi-threaded loader that turns a `Dataset` into batches of normalised crops.

use crate::data::{seed_from, Dataset};
use crossbeam_channel::{Receiver, Sender};
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

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
/// PIL `solarize` default: invert values ≥ 128 of 255.
const SOLARIZE_THRESHOLD: f32 = 128.0 / 255.0;
/// Consecutive unreadable images after which the data set is declared unreadable.
const MAX_CONSECUTIVE_FAILURES: usize = 50;

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

/// ITU-R 601 luma, as PIL's `convert("L")` and torchvision's `rgb_to_grayscale`.
fn luma(p: [f32; 3]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

fn adjust_brightness(px: &mut [[f32; 3]], factor: f32) {
    for p in px {
        *p = p.map(|v| (v * factor).clamp(0.0, 1.0));
    }
}

/// Blends with the mean grey level (PIL rounds that mean to an integer level).
fn adjust_contrast(px: &mut [[f32; 3]], factor: f32) {
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
fn adjust_saturation(px: &mut [[f32; 3]], factor: f32) {
    for p in px {
        let grey = luma(*p);
        *p = p.map(|v| (factor * v + (1.0 - factor) * grey).clamp(0.0, 1.0));
    }
}

/// Rotates the hue (HSV H in [0, 1)) by `shift`.
fn adjust_hue(px: &mut [[f32; 3]], shift: f32) {
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

fn to_grayscale(px: &mut [[f32; 3]]) {
    for p in px {
        *p = [luma(*p); 3];
    }
}

fn solarize(px: &mut [[f32; 3]]) {
    for p in px {
        *p = p.map(|v| if v >= SOLARIZE_THRESHOLD { 1.0 - v } else { v });
    }
}

/// Separable Gaussian blur with clamp-to-edge borders. The kernel reaches 3σ but no further
/// than the image itself, so tiny crops stay cheap.
fn gaussian_blur(px: &mut [[f32; 3]], width: usize, height: usize, sigma_px: f32) {
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
fn resized_crop(
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

/// [0, 1] HWC → ImageNet-normalised CHW.
fn normalise_chw(px: &[[f32; 3]]) -> Vec<f32> {
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

// ---------------------------------------------------------------------------------------------
// Loader
// ---------------------------------------------------------------------------------------------

pub struct CropBatch {
    pub batch_size: usize,
    pub global_size_px: u32,
    pub local_size_px: u32,
    /// Each batch_size × 3 × G × G, sample-major (NCHW).
    pub globals: [Vec<f32>; 2],
    /// One entry per local crop, each batch_size × 3 × L × L.
    pub locals: Vec<Vec<f32>>,
    pub labels: Vec<usize>,
    pub epoch: usize,
    pub batch_index: usize,
    /// E.g. "skipped corrupt image: cannot decode image /x/y.jpg: ...".
    pub warnings: Vec<String>,
}

pub struct LoaderConfig {
    pub augment: AugmentConfig,
    pub batch_size: usize,
    pub workers: usize,
    pub prefetch_batches: usize,
    pub seed: u64,
    /// Index of the first batch to deliver: batch k is a pure function of (seed, k), so a
    /// resumed run starts at its step and sees exactly the crops it would have seen.
    pub first_batch: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("data has {images} images but batch_size is {batch_size}; lower optim.batch_size_per_gpu to at most {images} or add images")]
    BatchTooLarge { images: usize, batch_size: usize },
    #[error("invalid data loader setting: {0}")]
    InvalidConfig(String),
    #[error("{attempts} images in a row failed to load (last: {last_error}); the data set looks unreadable, check data.path")]
    AllImagesFailed { attempts: usize, last_error: String },
    #[error("a data loader thread panicked: {0}")]
    WorkerPanicked(String),
    #[error("the data loader threads stopped unexpectedly")]
    Disconnected,
    #[error("cannot start a data loader thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// What every worker reads.
struct Shared {
    dataset: Arc<dyn Dataset>,
    augment: AugmentConfig,
    batch_size: usize,
    batches_per_epoch: usize,
    seed: u64,
    local_crops_number: Arc<AtomicUsize>,
    stop: AtomicBool,
}

type BatchResult = (u64, Result<CropBatch, LoaderError>);

/// Batches that arrived ahead of their turn.
struct Reorder {
    next: u64,
    pending: BTreeMap<u64, Result<CropBatch, LoaderError>>,
}

/// Multi-threaded, deterministic DINO batch producer.
///
/// Batch k of the endless stream (epoch k / batches_per_epoch) is built whole by whichever
/// worker takes ticket k first; the consumer reorders, so the output never depends on thread
/// timing or the number of workers. Tickets are handed out only `window` batches ahead of
/// the consumer, which bounds memory even when one worker is slow.
pub struct CropLoader {
    shared: Arc<Shared>,
    tickets: Option<Sender<u64>>,
    results: Option<Receiver<BatchResult>>,
    reorder: Mutex<Reorder>,
    workers: Vec<JoinHandle<()>>,
    window: u64,
}

fn check_scale(name: &str, (lo, hi): (f32, f32)) -> Result<(), LoaderError> {
    if lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi {
        Ok(())
    } else {
        Err(LoaderError::InvalidConfig(format!(
            "{name} = ({lo}, {hi}) must satisfy 0 < min ≤ max (e.g. (0.4, 1.0))"
        )))
    }
}

impl CropLoader {
    /// Spawns `workers` threads. `local_crops_number` is read when each batch is generated, so a
    /// change applies within `max(prefetch_batches, workers)` batches (a decrease at once).
    pub fn spawn(
        dataset: Arc<dyn Dataset>,
        cfg: LoaderConfig,
        local_crops_number: Arc<AtomicUsize>,
    ) -> Result<Self, LoaderError> {
        let images = dataset.len();
        if cfg.batch_size == 0 {
            return Err(LoaderError::InvalidConfig(
                "optim.batch_size_per_gpu is 0; it must be at least 1".into(),
            ));
        }
        if cfg.batch_size > images {
            return Err(LoaderError::BatchTooLarge {
                images,
                batch_size: cfg.batch_size,
            });
        }
        if cfg.workers == 0 {
            return Err(LoaderError::InvalidConfig(
                "data.num_workers is 0; it must be at least 1".into(),
            ));
        }
        if cfg.prefetch_batches == 0 {
            return Err(LoaderError::InvalidConfig(
                "data.prefetch_batches is 0; it must be at least 1".into(),
            ));
        }
        let a = &cfg.augment;
        if a.global_crop_size_px == 0 || a.local_crop_size_px == 0 {
            return Err(LoaderError::InvalidConfig(format!(
                "crop sizes must be at least 1 px (data.global_crop_size = {}, data.local_crop_size = {})",
                a.global_crop_size_px, a.local_crop_size_px
            )));
        }
        check_scale("dino.global_crops_scale", a.global_crops_scale)?;
        check_scale("dino.local_crops_scale", a.local_crops_scale)?;

        let shared = Arc::new(Shared {
            batches_per_epoch: images / cfg.batch_size,
            dataset,
            augment: cfg.augment,
            batch_size: cfg.batch_size,
            seed: cfg.seed,
            local_crops_number,
            stop: AtomicBool::new(false),
        });
        let window = cfg.prefetch_batches.max(cfg.workers) as u64;
        let (ticket_tx, ticket_rx) = crossbeam_channel::unbounded();
        let (result_tx, result_rx) = crossbeam_channel::bounded(cfg.prefetch_batches);
        let first = cfg.first_batch;
        for k in first..first + window {
            // Cannot fail: the receiver is alive and the channel unbounded.
            let _ = ticket_tx.send(k);
        }
        // Built before the threads so an early return (spawn failure) still stops and joins them.
        let mut loader = Self {
            shared: shared.clone(),
            tickets: Some(ticket_tx),
            results: Some(result_rx),
            reorder: Mutex::new(Reorder {
                next: first,
                pending: BTreeMap::new(),
            }),
            workers: Vec::with_capacity(cfg.workers),
            window,
        };
        for i in 0..cfg.workers {
            let (shared, tickets, results) = (shared.clone(), ticket_rx.clone(), result_tx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("dino-loader-{i}"))
                .spawn(move || worker_loop(&shared, &tickets, &results))
                .map_err(LoaderError::Spawn)?;
            loader.workers.push(handle);
        }
        tracing::debug!(
            workers = cfg.workers,
            window,
            batches_per_epoch = shared.batches_per_epoch,
            "crop loader started"
        );
        Ok(loader)
    }

    /// Blocks until the next batch (strictly in order) is ready.
    pub fn next_batch(&self) -> Result<CropBatch, LoaderError> {
        // A poisoned lock only means another caller panicked; the map itself is consistent.
        let mut reorder = self.reorder.lock().unwrap_or_else(PoisonError::into_inner);
        let results = self.results.as_ref().ok_or(LoaderError::Disconnected)?;
        let k = reorder.next;
        let out = loop {
            if let Some(out) = reorder.pending.remove(&k) {
                break out;
            }
            let (got, out) = results.recv().map_err(|_| LoaderError::Disconnected)?;
            reorder.pending.insert(got, out);
        };
        reorder.next += 1;
        if let Some(tickets) = &self.tickets {
            // Fails only when every worker is gone, which the next recv reports.
            let _ = tickets.send(k + self.window);
        }
        let mut batch = out?;
        // Crop streams are independent, so dropping trailing locals equals building fewer.
        let wanted = self.shared.local_crops_number.load(Ordering::Relaxed);
        batch.locals.truncate(wanted);
        Ok(batch)
    }

    /// Full batches per epoch (drop_last).
    pub fn batches_per_epoch(&self) -> usize {
        self.shared.batches_per_epoch
    }
}

impl Drop for CropLoader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Closing both channels wakes workers blocked on a ticket or on a full result queue.
        self.tickets.take();
        self.results.take();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

fn worker_loop(shared: &Shared, tickets: &Receiver<u64>, results: &Sender<BatchResult>) {
    let mut order: Option<(usize, Vec<usize>)> = None;
    while let Ok(k) = tickets.recv() {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let out = catch_unwind(AssertUnwindSafe(|| build_batch(shared, k, &mut order)))
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(LoaderError::WorkerPanicked(message))
            });
        if results.send((k, out)).is_err() {
            break;
        }
    }
}

/// The seeded shuffle of 0..len for one epoch.
fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed_from(&[
        seed,
        epoch as u64,
        0x5348_5546, // "SHUF": keeps this stream apart from the crop streams
    ])));
    order
}

/// The crop RNG of dataset item `index` in `epoch`: depends on nothing else.
fn sample_rng(seed: u64, epoch: usize, index: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed_from(&[seed, epoch as u64, index as u64, 0x4352_4F50]))
}

fn build_batch(
    shared: &Shared,
    k: u64,
    order_cache: &mut Option<(usize, Vec<usize>)>,
) -> Result<CropBatch, LoaderError> {
    let bpe = shared.batches_per_epoch.max(1) as u64;
    let (epoch, batch_index) = ((k / bpe) as usize, (k % bpe) as usize);
    if order_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
        *order_cache = Some((epoch, epoch_order(shared.dataset.len(), shared.seed, epoch)));
    }
    let order: &[usize] = order_cache.as_ref().map_or(&[], |(_, o)| o);
    let len = order.len();
    let b = shared.batch_size;
    let cfg = &shared.augment;
    let (g, l) = (
        cfg.global_crop_size_px as usize,
        cfg.local_crop_size_px as usize,
    );
    let n_local = shared.local_crops_number.load(Ordering::Relaxed);
    let mut globals = [
        Vec::with_capacity(b * 3 * g * g),
        Vec::with_capacity(b * 3 * g * g),
    ];
    let mut locals: Vec<Vec<f32>> = (0..n_local)
        .map(|_| Vec::with_capacity(b * 3 * l * l))
        .collect();
    let mut labels = Vec::with_capacity(b);
    let mut warnings = Vec::new();
    let max_attempts = MAX_CONSECUTIVE_FAILURES.min(len).max(1);

    for slot in 0..b {
        let position = batch_index * b + slot;
        let mut attempt = 0;
        // An unreadable image is replaced by the next one in the epoch order (wrapping).
        let (index, sample) = loop {
            if shared.stop.load(Ordering::Relaxed) {
                return Err(LoaderError::Disconnected);
            }
            let index = order
                .get((position + attempt) % len.max(1))
                .copied()
                .unwrap_or(0);
            match shared.dataset.get(index) {
                Ok(sample) => break (index, sample),
                Err(err) => {
                    tracing::warn!("skipped corrupt image: {err}");
                    warnings.push(format!("skipped corrupt image: {err}"));
                    attempt += 1;
                    if attempt >= max_attempts {
                        return Err(LoaderError::AllImagesFailed {
                            attempts: attempt,
                            last_error: err.to_string(),
                        });
                    }
                }
            }
        };
        let crops = multi_crop(
            &sample.image,
            cfg,
            n_local,
            &mut sample_rng(shared.seed, epoch, index),
        );
        let [g1, g2] = crops.globals;
        globals[0].extend_from_slice(&g1);
        globals[1].extend_from_slice(&g2);
        for (dst, src) in locals.iter_mut().zip(&crops.locals) {
            dst.extend_from_slice(src);
        }
        labels.push(sample.label);
    }
    Ok(CropBatch {
        batch_size: b,
        global_size_px: cfg.global_crop_size_px,
        local_size_px: cfg.local_crop_size_px,
        globals,
        locals,
        labels,
        epoch,
        batch_index,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{ImageFolder, SyntheticShapes};
    use std::time::{Duration, Instant};

    fn small_cfg() -> AugmentConfig {
        AugmentConfig {
            global_crop_size_px: 32,
            local_crop_size_px: 16,
            global_crops_scale: (0.4, 1.0),
            local_crops_scale: (0.05, 0.4),
            local_crops_number: 6,
        }
    }

    fn loader_cfg(batch_size: usize, workers: usize, prefetch_batches: usize) -> LoaderConfig {
        LoaderConfig {
            first_batch: 0,
            augment: small_cfg(),
            batch_size,
            workers,
            prefetch_batches,
            seed: 42,
        }
    }

    fn test_image() -> RgbImage {
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

    fn collect(loader: &CropLoader, n: usize) -> Vec<CropBatch> {
        (0..n).map(|_| loader.next_batch().unwrap()).collect()
    }

    #[test]
    fn loader_is_deterministic_across_worker_counts() {
        let ds: Arc<dyn Dataset> = Arc::new(SyntheticShapes::new(1, 40, 26));
        let n = Arc::new(AtomicUsize::new(3));
        let one = CropLoader::spawn(ds.clone(), loader_cfg(4, 1, 2), n.clone()).unwrap();
        let three = CropLoader::spawn(ds, loader_cfg(4, 3, 5), n).unwrap();
        assert_eq!(one.batches_per_epoch(), 6);
        let (a, b) = (collect(&one, 14), collect(&three, 14));
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!((x.epoch, x.batch_index), (k / 6, k % 6));
            assert_eq!((y.epoch, y.batch_index), (x.epoch, x.batch_index));
            assert_eq!(x.labels, y.labels);
            assert_eq!(x.globals, y.globals);
            assert_eq!(x.locals, y.locals);
            assert_eq!(x.globals[0].len(), 4 * 3 * 32 * 32);
            assert_eq!(x.locals.len(), 3);
            assert_eq!(x.locals[0].len(), 4 * 3 * 16 * 16);
            assert!(x.warnings.is_empty());
        }
        // Epochs are reshuffled, and crops of a sample differ between epochs.
        assert_ne!(a[0].globals[0], a[6].globals[0]);
        let labels: Vec<usize> = a[..6].iter().flat_map(|b| b.labels.clone()).collect();
        assert_ne!(labels, (0..24).map(|i| i % 6).collect::<Vec<_>>());
    }

    #[test]
    fn loader_honours_local_crops_changes() {
        let ds: Arc<dyn Dataset> = Arc::new(SyntheticShapes::new(2, 32, 64));
        let n = Arc::new(AtomicUsize::new(2));
        let loader = CropLoader::spawn(ds, loader_cfg(4, 2, 3), n.clone()).unwrap();
        assert_eq!(loader.next_batch().unwrap().locals.len(), 2);
        n.store(5, Ordering::Relaxed);
        // Already-built batches (at most max(prefetch, workers) = 3) keep the old count.
        let counts: Vec<usize> = collect(&loader, 6).iter().map(|b| b.locals.len()).collect();
        assert!(counts[3..].iter().all(|&c| c == 5), "{counts:?}");
        n.store(1, Ordering::Relaxed);
        assert_eq!(
            loader.next_batch().unwrap().locals.len(),
            1,
            "a decrease applies at once"
        );
        n.store(0, Ordering::Relaxed);
        assert!(loader.next_batch().unwrap().locals.is_empty());
    }

    #[test]
    fn loader_drop_joins_quickly() {
        let ds: Arc<dyn Dataset> = Arc::new(SyntheticShapes::new(2, 64, 512));
        for consumed in [0, 1] {
            let loader = CropLoader::spawn(
                ds.clone(),
                loader_cfg(16, 3, 2),
                Arc::new(AtomicUsize::new(6)),
            )
            .unwrap();
            collect(&loader, consumed);
            std::thread::sleep(Duration::from_millis(50)); // let the queue fill and workers block
            let t = Instant::now();
            drop(loader);
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
    }

    #[test]
    fn bad_loader_settings_are_errors() {
        let ds: Arc<dyn Dataset> = Arc::new(SyntheticShapes::new(2, 32, 10));
        let n = || Arc::new(AtomicUsize::new(2));
        let err = CropLoader::spawn(ds.clone(), loader_cfg(11, 1, 1), n())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("10 images") && err.contains("batch_size is 11"),
            "{err}"
        );
        assert!(err.contains("optim.batch_size_per_gpu"), "{err}");
        assert!(CropLoader::spawn(ds.clone(), loader_cfg(0, 1, 1), n()).is_err());
        assert!(CropLoader::spawn(ds.clone(), loader_cfg(2, 0, 1), n()).is_err());
        assert!(CropLoader::spawn(ds.clone(), loader_cfg(2, 1, 0), n()).is_err());
        let mut cfg = loader_cfg(2, 1, 1);
        cfg.augment.local_crops_scale = (0.5, 0.1);
        let err = CropLoader::spawn(ds, cfg, n()).err().unwrap().to_string();
        assert!(err.contains("dino.local_crops_scale"), "{err}");
    }

    fn folder_with_corrupt_file(root: &std::path::Path, good_per_class: u8) {
        for class in ["a", "b"] {
            std::fs::create_dir(root.join(class)).unwrap();
            for i in 0..good_per_class {
                let img = RgbImage::from_fn(24, 20, |x, y| {
                    image::Rgb([x as u8 * 9, y as u8 * 9, i * 60])
                });
                img.save(root.join(class).join(format!("{i}.png"))).unwrap();
            }
        }
        std::fs::write(
            root.join("a").join("x.jpg"),
            [0x13u8, 0x77, 0xfe, 0x01, 0x00, 0x42],
        )
        .unwrap();
    }

    #[test]
    fn loader_skips_corrupt_images_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        folder_with_corrupt_file(dir.path(), 3);
        let ds: Arc<dyn Dataset> = Arc::new(ImageFolder::open(dir.path()).unwrap());
        assert_eq!(ds.len(), 7);
        // batch_size = len: every position, the corrupt one included, is visited each epoch.
        let loader =
            CropLoader::spawn(ds, loader_cfg(7, 2, 2), Arc::new(AtomicUsize::new(2))).unwrap();
        for batch in collect(&loader, 3) {
            assert_eq!(batch.labels.len(), 7);
            assert_eq!(batch.globals[1].len(), 7 * 3 * 32 * 32);
            assert_eq!(batch.warnings.len(), 1, "{:?}", batch.warnings);
            assert!(batch.warnings[0].contains("x.jpg"), "{:?}", batch.warnings);
        }
    }

    #[test]
    fn loader_reports_an_unreadable_data_set() {
        let dir = tempfile::tempdir().unwrap();
        folder_with_corrupt_file(dir.path(), 0);
        let ds: Arc<dyn Dataset> = Arc::new(ImageFolder::open(dir.path()).unwrap());
        let loader =
            CropLoader::spawn(ds, loader_cfg(1, 1, 1), Arc::new(AtomicUsize::new(2))).unwrap();
        let err = loader.next_batch().err().unwrap();
        assert!(matches!(err, LoaderError::AllImagesFailed { .. }), "{err}");
        assert!(err.to_string().contains("x.jpg"), "{err}");
    }

    #[test]
    fn loader_throughput() {
        // Reference workload: 64-px images, 2 × 32-px globals + 6 × 16-px locals, one worker.
        let ds: Arc<dyn Dataset> = Arc::new(SyntheticShapes::new(0, 64, 4096));
        let loader = CropLoader::spawn(
            ds.clone(),
            loader_cfg(32, 1, 4),
            Arc::new(AtomicUsize::new(6)),
        )
        .unwrap();
        loader.next_batch().unwrap();
        let t = Instant::now();
        let batches = 20;
        collect(&loader, batches);
        let rate = (batches * 32) as f64 / t.elapsed().as_secs_f64();
        println!(
            "loader, 1 worker: {rate:.0} images/s ({:.0} crops/s)",
            rate * 8.0
        );

        let (img, cfg) = (test_image(), small_cfg());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let t = Instant::now();
        for _ in 0..300 {
            std::hint::black_box(multi_crop(&img, &cfg, 6, &mut rng));
        }
        let per_image_us = t.elapsed().as_secs_f64() * 1e6 / 300.0;
        println!("multi_crop alone: {per_image_us:.0} µs/image");
    }
}
