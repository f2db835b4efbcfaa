//! `CropLoader`: worker threads that turn a `Dataset` into batches of normalised crops behind
//! a bounded prefetch queue.
//!
//! Hand-written rather than a thread pool or a generic prefetching iterator because delivery
//! must be in order: batch k is a pure function of (seed, k) whatever the number of workers or
//! their timing, so a seed fixes every crop and a resumed run sees the crops it would have
//! seen. It also reads `local_crops_number` live and skips corrupt images with a warning.

use super::multi_crop::{multi_crop, AugmentConfig};
use crate::data::{seed_from, Dataset};
use crossbeam_channel::{Receiver, Sender};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Consecutive unreadable images after which the data set is declared unreadable.
const MAX_CONSECUTIVE_FAILURES: usize = 50;

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
    ///
    /// Long: the worker threads, the reorder buffer and the queue are set up together because they
    /// share one stop flag and one order.
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

/// Long: the crops of one batch, with the skip-and-retry of unreadable images inline so the
/// delivery order stays plain to see.
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
                    // Reported by the front end (once per run), not logged here too.
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
    use crate::augment::multi_crop::tests::{small_cfg, test_image};
    use crate::data::{ImageFolder, SyntheticShapes};
    use image::RgbImage;
    use std::time::{Duration, Instant};

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
