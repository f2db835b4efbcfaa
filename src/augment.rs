//! DINO multi-crop augmentation (`DataAugmentationDINO`, reference §4) and the loader threads
//! that produce whole crop batches ahead of the train step.
//!
//! Determinism: the crops of image `i` in epoch `e` depend only on (seed, e, i); batches leave
//! the loader strictly in order whatever the number of worker threads.

use crate::data::Dataset;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use image::imageops::FilterType;
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Clone, Debug, PartialEq)]
pub struct AugmentConfig {
    pub global_crop_size_px: u32,
    pub local_crop_size_px: u32,
    pub global_crops_scale: (f32, f32),
    pub local_crops_scale: (f32, f32),
    pub local_crops_number: usize,
}

/// One image's crops, each CHW f32, normalised.
pub struct MultiCrop {
    pub globals: [Vec<f32>; 2],
    pub locals: Vec<Vec<f32>>,
}

/// Per-crop random choices (blur and solarize probabilities differ between crops).
struct CropRecipe {
    size_px: u32,
    scale: (f32, f32),
    blur_prob: f64,
    solarize_prob: f64,
}

/// The reference's 2 global + n local crops of one image.
pub fn multi_crop(
    image: &RgbImage,
    cfg: &AugmentConfig,
    local_crops_number: usize,
    rng: &mut impl Rng,
) -> MultiCrop {
    let global = |blur_prob, solarize_prob| CropRecipe {
        size_px: cfg.global_crop_size_px,
        scale: cfg.global_crops_scale,
        blur_prob,
        solarize_prob,
    };
    let global_1 = augment_crop(image, &global(1.0, 0.0), rng);
    let global_2 = augment_crop(image, &global(0.1, 0.2), rng);
    let local = CropRecipe {
        size_px: cfg.local_crop_size_px,
        scale: cfg.local_crops_scale,
        blur_prob: 0.5,
        solarize_prob: 0.0,
    };
    let locals = (0..local_crops_number)
        .map(|_| augment_crop(image, &local, rng))
        .collect();
    MultiCrop {
        globals: [global_1, global_2],
        locals,
    }
}

/// RandomResizedCrop → flip → colour jitter (p 0.8) → grayscale (p 0.2) → blur → solarize →
/// normalise, returning CHW floats.
fn augment_crop(image: &RgbImage, recipe: &CropRecipe, rng: &mut impl Rng) -> Vec<f32> {
    let crop = random_resized_crop(image, recipe.size_px, recipe.scale, rng);
    let (w, h) = crop.dimensions();
    // Work in f32 HWC in [0, 1].
    let mut pixels: Vec<f32> = crop.as_raw().iter().map(|v| *v as f32 / 255.0).collect();
    if rng.random_bool(0.5) {
        flip_horizontal(&mut pixels, w as usize, h as usize);
    }
    if rng.random_bool(0.8) {
        color_jitter(&mut pixels, rng);
    }
    if rng.random_bool(0.2) {
        grayscale(&mut pixels);
    }
    if rng.random::<f64>() < recipe.blur_prob {
        let sigma = rng.random_range(0.1..2.0);
        gaussian_blur(&mut pixels, w as usize, h as usize, sigma);
    }
    if rng.random::<f64>() < recipe.solarize_prob {
        // PIL solarize(threshold=128) on 8-bit values.
        for v in &mut pixels {
            if *v >= 128.0 / 255.0 {
                *v = 1.0 - *v;
            }
        }
    }
    normalize_chw(&pixels, w as usize, h as usize)
}

/// torchvision `RandomResizedCrop.get_params` (ratio 3/4–4/3, 10 attempts, centre fallback),
/// then a bicubic resize (Catmull-Rom = PIL's bicubic, a = −0.5).
pub fn random_resized_crop(
    image: &RgbImage,
    size_px: u32,
    scale: (f32, f32),
    rng: &mut impl Rng,
) -> RgbImage {
    let (width, height) = image.dimensions();
    let area = (width * height) as f32;
    let (log_lo, log_hi) = ((3.0f32 / 4.0).ln(), (4.0f32 / 3.0).ln());
    let mut window = None;
    for _ in 0..10 {
        let target_area = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let w = (target_area * aspect).sqrt().round() as u32;
        let h = (target_area / aspect).sqrt().round() as u32;
        if w > 0 && h > 0 && w <= width && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            window = Some((left, top, w, h));
            break;
        }
    }
    let (left, top, w, h) = window.unwrap_or_else(|| {
        let ratio = width as f32 / height as f32;
        let (w, h) = if ratio < 3.0 / 4.0 {
            (width, (width as f32 / (3.0 / 4.0)).round() as u32)
        } else if ratio > 4.0 / 3.0 {
            ((height as f32 * 4.0 / 3.0).round() as u32, height)
        } else {
            (width, height)
        };
        let (w, h) = (w.clamp(1, width), h.clamp(1, height));
        ((width - w) / 2, (height - h) / 2, w, h)
    });
    let cropped = image::imageops::crop_imm(image, left, top, w, h).to_image();
    image::imageops::resize(&cropped, size_px, size_px, FilterType::CatmullRom)
}

fn flip_horizontal(pixels: &mut [f32], w: usize, h: usize) {
    for y in 0..h {
        let row = &mut pixels[y * w * 3..(y + 1) * w * 3];
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
}

fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// ColorJitter(0.4, 0.4, 0.2, 0.1) with torchvision's formulas, the four in a random order.
fn color_jitter(pixels: &mut [f32], rng: &mut impl Rng) {
    let brightness = rng.random_range(0.6f32..=1.4);
    let contrast = rng.random_range(0.6f32..=1.4);
    let saturation = rng.random_range(0.8f32..=1.2);
    let hue = rng.random_range(-0.1f32..=0.1);
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    for op in order {
        match op {
            0 => pixels
                .iter_mut()
                .for_each(|v| *v = (*v * brightness).clamp(0.0, 1.0)),
            1 => {
                let n = (pixels.len() / 3).max(1) as f32;
                let mean = pixels
                    .chunks_exact(3)
                    .map(|p| luma(p[0], p[1], p[2]))
                    .sum::<f32>()
                    / n;
                pixels
                    .iter_mut()
                    .for_each(|v| *v = (contrast * *v + (1.0 - contrast) * mean).clamp(0.0, 1.0));
            }
            2 => {
                for p in pixels.chunks_exact_mut(3) {
                    let gray = luma(p[0], p[1], p[2]);
                    for v in p.iter_mut() {
                        *v = (saturation * *v + (1.0 - saturation) * gray).clamp(0.0, 1.0);
                    }
                }
            }
            _ => {
                for p in pixels.chunks_exact_mut(3) {
                    let (h, s, v) = rgb_to_hsv(p[0], p[1], p[2]);
                    let (r, g, b) = hsv_to_rgb((h + hue).rem_euclid(1.0), s, v);
                    p[0] = r;
                    p[1] = g;
                    p[2] = b;
                }
            }
        }
    }
}

fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    let s = if max > 0.0 { delta / max } else { 0.0 };
    let h = if delta <= 0.0 {
        0.0
    } else if max == r {
        ((g - b) / delta).rem_euclid(6.0) / 6.0
    } else if max == g {
        ((b - r) / delta + 2.0) / 6.0
    } else {
        ((r - g) / delta + 4.0) / 6.0
    };
    (h, s, max)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

fn grayscale(pixels: &mut [f32]) {
    for p in pixels.chunks_exact_mut(3) {
        let l = luma(p[0], p[1], p[2]);
        p.fill(l);
    }
}

/// Separable Gaussian with standard deviation `sigma` px (PIL's GaussianBlur radius), edges
/// clamped; the kernel is cut at 3σ and at the image size.
fn gaussian_blur(pixels: &mut [f32], w: usize, h: usize, sigma: f32) {
    let radius = ((3.0 * sigma).ceil() as usize).clamp(1, w.max(h));
    let kernel: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let d = i as f32 - radius as f32;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let mut tmp = vec![0f32; pixels.len()];
    let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (k, weight) in kernel.iter().enumerate() {
                let sx = clamp(x as isize + k as isize - radius as isize, w);
                let src = (y * w + sx) * 3;
                for c in 0..3 {
                    acc[c] += weight * pixels[src + c];
                }
            }
            tmp[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&acc);
        }
    }
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (k, weight) in kernel.iter().enumerate() {
                let sy = clamp(y as isize + k as isize - radius as isize, h);
                let src = (sy * w + x) * 3;
                for c in 0..3 {
                    acc[c] += weight * tmp[src + c];
                }
            }
            pixels[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&acc);
        }
    }
}

/// HWC [0,1] → CHW normalised with the ImageNet mean and std.
pub fn normalize_chw(pixels: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0f32; 3 * w * h];
    for (i, p) in pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * w * h + i] = (p[c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    out
}

/// A batch of crops, sample-major inside each crop (NCHW).
pub struct CropBatch {
    pub batch_size: usize,
    pub global_size_px: u32,
    pub local_size_px: u32,
    /// Each `batch_size · 3 · G · G`.
    pub globals: [Vec<f32>; 2],
    /// One entry per local crop, each `batch_size · 3 · L · L`.
    pub locals: Vec<Vec<f32>>,
    pub labels: Vec<usize>,
    pub epoch: usize,
    pub batch_index: usize,
    /// e.g. "skipped corrupt image /x/y.jpg: <reason>".
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub augment: AugmentConfig,
    pub batch_size: usize,
    pub workers: usize,
    pub prefetch_batches: usize,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum LoaderError {
    #[error("the data has {images} images but the batch size is {batch_size}; lower optim.batch_size_per_gpu or add images (data.num_images for the synthetic set)")]
    BatchTooLarge { images: usize, batch_size: usize },
    #[error("{failures} images in a row could not be decoded (last: {last}); check the dataset")]
    AllFailed { failures: usize, last: String },
    #[error("cannot start data-loader threads: {0}")]
    Spawn(String),
    #[error("the data-loader threads stopped unexpectedly")]
    Disconnected,
}

/// Consecutive decode failures after which the loader gives up instead of looping forever.
const MAX_CONSECUTIVE_FAILURES: usize = 50;

/// Worker threads building whole batches ahead of the consumer, delivered in order.
pub struct CropLoader {
    batches: Receiver<(usize, Result<CropBatch, LoaderError>)>,
    /// Tickets bound the batches in flight (made or being made) to `prefetch_batches`.
    tickets: Option<Sender<()>>,
    reorder: Mutex<(usize, BTreeMap<usize, Result<CropBatch, LoaderError>>)>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    batches_per_epoch: usize,
}

impl CropLoader {
    /// Spawns `workers` threads. `local_crops_number` is read when each batch is started, so
    /// a change applies within `prefetch_batches` batches.
    pub fn spawn(
        dataset: Arc<dyn Dataset>,
        cfg: LoaderConfig,
        local_crops_number: Arc<AtomicUsize>,
    ) -> Result<Self, LoaderError> {
        let batch_size = cfg.batch_size.max(1);
        if dataset.len() < batch_size {
            return Err(LoaderError::BatchTooLarge {
                images: dataset.len(),
                batch_size,
            });
        }
        let batches_per_epoch = dataset.len() / batch_size;
        let prefetch = cfg.prefetch_batches.max(1);
        let (batch_tx, batch_rx) = bounded(prefetch);
        let (ticket_tx, ticket_rx) = bounded(prefetch);
        for _ in 0..prefetch {
            let _ = ticket_tx.send(());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let next_index = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for worker in 0..cfg.workers.max(1) {
            let job = LoaderJob {
                dataset: dataset.clone(),
                cfg: cfg.clone(),
                batch_size,
                batches_per_epoch,
                local_crops_number: local_crops_number.clone(),
                next_index: next_index.clone(),
                stop: stop.clone(),
                tickets: ticket_rx.clone(),
                out: batch_tx.clone(),
                permutation: None,
            };
            let handle = std::thread::Builder::new()
                .name(format!("dinoscope-loader-{worker}"))
                .spawn(move || job.run())
                .map_err(|err| LoaderError::Spawn(err.to_string()))?;
            threads.push(handle);
        }
        Ok(Self {
            batches: batch_rx,
            tickets: Some(ticket_tx),
            reorder: Mutex::new((0, BTreeMap::new())),
            stop,
            threads,
            batches_per_epoch,
        })
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.batches_per_epoch
    }

    /// The next batch in order; blocks until it is ready.
    pub fn next_batch(&self) -> Result<CropBatch, LoaderError> {
        let mut guard = self.reorder.lock().map_err(|_| LoaderError::Disconnected)?;
        let (expected, pending) = &mut *guard;
        let result = loop {
            if let Some(ready) = pending.remove(expected) {
                break ready;
            }
            match self.batches.recv() {
                Ok((index, batch)) => {
                    pending.insert(index, batch);
                }
                Err(_) => return Err(LoaderError::Disconnected),
            }
        };
        *expected += 1;
        if let Some(tickets) = &self.tickets {
            let _ = tickets.send(());
        }
        result
    }
}

impl Drop for CropLoader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Closing the ticket queue wakes workers waiting for a ticket.
        self.tickets = None;
        // Drain so no worker stays blocked on a full output queue.
        while self.batches.try_recv().is_ok() {}
        for thread in self.threads.drain(..) {
            while !thread.is_finished() {
                while self.batches.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = thread.join();
        }
    }
}

struct LoaderJob {
    dataset: Arc<dyn Dataset>,
    cfg: LoaderConfig,
    batch_size: usize,
    batches_per_epoch: usize,
    local_crops_number: Arc<AtomicUsize>,
    next_index: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tickets: Receiver<()>,
    out: Sender<(usize, Result<CropBatch, LoaderError>)>,
    /// (epoch, shuffled image order) of the last epoch this worker served.
    permutation: Option<(usize, Vec<usize>)>,
}

impl LoaderJob {
    fn run(mut self) {
        loop {
            match self.tickets.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if self.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let index = self.next_index.fetch_add(1, Ordering::SeqCst);
            let batch = self.build(index);
            if self.out.send((index, batch)).is_err() {
                return;
            }
        }
    }

    fn epoch_order(&mut self, epoch: usize) -> &[usize] {
        let stale = self.permutation.as_ref().is_none_or(|(e, _)| *e != epoch);
        if stale {
            let mut order: Vec<usize> = (0..self.dataset.len()).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(
                self.cfg.seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407),
            );
            order.shuffle(&mut rng);
            self.permutation = Some((epoch, order));
        }
        self.permutation
            .as_ref()
            .map(|(_, order)| order.as_slice())
            .unwrap_or(&[])
    }

    fn build(&mut self, index: usize) -> Result<CropBatch, LoaderError> {
        let epoch = index / self.batches_per_epoch;
        let batch_index = index % self.batches_per_epoch;
        let batch_size = self.batch_size;
        let local_crops = self.local_crops_number.load(Ordering::Relaxed);
        let (g, l) = (
            self.cfg.augment.global_crop_size_px as usize,
            self.cfg.augment.local_crop_size_px as usize,
        );
        let order = self.epoch_order(epoch).to_vec();
        let n = order.len();
        let mut globals = [
            Vec::with_capacity(batch_size * 3 * g * g),
            Vec::with_capacity(batch_size * 3 * g * g),
        ];
        let mut locals = vec![Vec::with_capacity(batch_size * 3 * l * l); local_crops];
        let mut labels = Vec::with_capacity(batch_size);
        let mut warnings = Vec::new();
        let mut cursor = batch_index * batch_size;
        let mut failures = 0;
        while labels.len() < batch_size {
            if self.stop.load(Ordering::SeqCst) {
                return Err(LoaderError::Disconnected);
            }
            // A failed image is replaced by the next one in this epoch's order (wrapping).
            let image_index = order[cursor % n];
            cursor += 1;
            let sample = match self.dataset.get(image_index) {
                Ok(sample) => sample,
                Err(err) => {
                    failures += 1;
                    let message = format!("skipped corrupt image: {err}");
                    tracing::warn!("{message}");
                    if failures >= MAX_CONSECUTIVE_FAILURES.min(n) {
                        return Err(LoaderError::AllFailed {
                            failures,
                            last: err.to_string(),
                        });
                    }
                    warnings.push(message);
                    continue;
                }
            };
            failures = 0;
            let mut rng = ChaCha8Rng::seed_from_u64(sample_seed(self.cfg.seed, epoch, image_index));
            let crops = multi_crop(&sample.image, &self.cfg.augment, local_crops, &mut rng);
            let [g1, g2] = crops.globals;
            globals[0].extend_from_slice(&g1);
            globals[1].extend_from_slice(&g2);
            for (dst, src) in locals.iter_mut().zip(&crops.locals) {
                dst.extend_from_slice(src);
            }
            labels.push(sample.label);
        }
        Ok(CropBatch {
            batch_size,
            global_size_px: g as u32,
            local_size_px: l as u32,
            globals,
            locals,
            labels,
            epoch,
            batch_index,
            warnings,
        })
    }
}

fn sample_seed(seed: u64, epoch: usize, image_index: usize) -> u64 {
    let mut z = seed
        ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (image_index as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    z ^ (z >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::SyntheticShapes;

    fn cfg(locals: usize) -> AugmentConfig {
        AugmentConfig {
            global_crop_size_px: 32,
            local_crop_size_px: 16,
            global_crops_scale: (0.4, 1.0),
            local_crops_scale: (0.05, 0.4),
            local_crops_number: locals,
        }
    }

    #[test]
    fn multi_crop_shapes_ranges_and_determinism() {
        let image = SyntheticShapes::new(0, 64, 4).get(1).unwrap().image;
        let crop = |seed| multi_crop(&image, &cfg(3), 3, &mut ChaCha8Rng::seed_from_u64(seed));
        let a = crop(5);
        assert_eq!(a.globals[0].len(), 3 * 32 * 32);
        assert_eq!(a.locals.len(), 3);
        assert_eq!(a.locals[0].len(), 3 * 16 * 16);
        let (lo, hi) = (-0.485 / 0.229 - 1e-4, (1.0 - 0.406) / 0.225 + 1e-4);
        assert!(a.globals.iter().flatten().all(|v| *v >= lo && *v <= hi));
        let b = crop(5);
        assert_eq!(a.globals, b.globals);
        assert_eq!(a.locals, b.locals);
        assert_ne!(crop(6).globals, a.globals);
    }

    #[test]
    fn blur_smooths_and_solarize_inverts() {
        let (w, h) = (8, 8);
        let mut pixels: Vec<f32> = (0..w * h * 3).map(|i| ((i / 3) % 2) as f32).collect();
        let before: f32 = pixels.windows(6).map(|p| (p[0] - p[3]).abs()).sum();
        gaussian_blur(&mut pixels, w, h, 1.5);
        let after: f32 = pixels.windows(6).map(|p| (p[0] - p[3]).abs()).sum();
        assert!(after < before * 0.2, "{after} vs {before}");
        let image = RgbImage::from_pixel(40, 40, image::Rgb([250, 250, 250]));
        let recipe = CropRecipe {
            size_px: 16,
            scale: (0.5, 1.0),
            blur_prob: 0.0,
            solarize_prob: 1.0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // Bright pixels become dark after solarize (whatever the jitter did, unless jitter
        // darkened them below the threshold first; try several seeds and expect most dark).
        let dark = (0..20)
            .filter(|_| augment_crop(&image, &recipe, &mut rng)[0] < 0.0)
            .count();
        assert!(dark >= 12, "{dark}");
    }

    #[test]
    fn random_resized_crop_respects_size() {
        let image = RgbImage::new(50, 30);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..50 {
            assert_eq!(
                random_resized_crop(&image, 24, (0.05, 0.4), &mut rng).dimensions(),
                (24, 24)
            );
        }
    }

    fn loader(workers: usize, locals: Arc<AtomicUsize>) -> CropLoader {
        let data: Arc<dyn Dataset> = Arc::new(SyntheticShapes::new(0, 48, 40));
        CropLoader::spawn(
            data,
            LoaderConfig {
                augment: cfg(2),
                batch_size: 8,
                workers,
                prefetch_batches: 3,
                seed: 9,
            },
            locals,
        )
        .unwrap()
    }

    #[test]
    fn loader_is_deterministic_whatever_the_worker_count() {
        let one = loader(1, Arc::new(AtomicUsize::new(2)));
        let three = loader(3, Arc::new(AtomicUsize::new(2)));
        assert_eq!(one.batches_per_epoch(), 5);
        for i in 0..7 {
            let (a, b) = (one.next_batch().unwrap(), three.next_batch().unwrap());
            assert_eq!((a.epoch, a.batch_index), (i / 5, i % 5));
            assert_eq!(a.labels, b.labels);
            assert_eq!(a.globals, b.globals);
            assert_eq!(a.locals, b.locals);
        }
    }

    #[test]
    fn loader_honours_local_crop_changes_and_drops_quickly() {
        let locals = Arc::new(AtomicUsize::new(2));
        let l = loader(2, locals.clone());
        assert_eq!(l.next_batch().unwrap().locals.len(), 2);
        locals.store(0, Ordering::Relaxed);
        let counts: Vec<usize> = (0..6)
            .map(|_| l.next_batch().unwrap().locals.len())
            .collect();
        assert_eq!(*counts.last().unwrap(), 0, "{counts:?}");
        let started = std::time::Instant::now();
        drop(l);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn loader_rejects_a_batch_larger_than_the_data() {
        let data: Arc<dyn Dataset> = Arc::new(SyntheticShapes::new(0, 16, 4));
        let err = CropLoader::spawn(
            data,
            LoaderConfig {
                augment: cfg(0),
                batch_size: 8,
                workers: 1,
                prefetch_batches: 1,
                seed: 0,
            },
            Arc::new(AtomicUsize::new(0)),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("4 images") && err.contains("8"), "{err}");
    }
}
