// TEMPORARY STUB (replaced by the real module).
use crate::data::Dataset;
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};
#[derive(Clone, Debug)]
pub struct AugmentConfig {
    pub global_crop_size_px: u32,
    pub local_crop_size_px: u32,
    pub global_crops_scale: (f32, f32),
    pub local_crops_scale: (f32, f32),
    pub local_crops_number: usize,
}
pub struct CropBatch {
    pub batch_size: usize,
    pub global_size_px: u32,
    pub local_size_px: u32,
    pub globals: [Vec<f32>; 2],
    pub locals: Vec<Vec<f32>>,
    pub labels: Vec<usize>,
    pub epoch: usize,
    pub batch_index: usize,
    pub warnings: Vec<String>,
}
pub struct LoaderConfig {
    pub augment: AugmentConfig,
    pub batch_size: usize,
    pub workers: usize,
    pub prefetch_batches: usize,
    pub seed: u64,
}
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("x {0}")]
    X(String),
}
pub struct CropLoader {
    ds: Arc<dyn Dataset>,
    cfg: LoaderConfig,
    n: Arc<AtomicUsize>,
    k: Mutex<u64>,
}
impl CropLoader {
    pub fn spawn(
        ds: Arc<dyn Dataset>,
        cfg: LoaderConfig,
        n: Arc<AtomicUsize>,
    ) -> Result<Self, LoaderError> {
        Ok(Self {
            ds,
            cfg,
            n,
            k: Mutex::new(0),
        })
    }
    pub fn batches_per_epoch(&self) -> usize {
        self.ds.len() / self.cfg.batch_size
    }
    pub fn next_batch(&self) -> Result<CropBatch, LoaderError> {
        let b = self.cfg.batch_size;
        let g = self.cfg.augment.global_crop_size_px as usize;
        let l = self.cfg.augment.local_crop_size_px as usize;
        let mut k = self.k.lock().map_err(|_| LoaderError::X("p".into()))?;
        *k += 1;
        let v = |n: usize, s: u64| -> Vec<f32> {
            (0..n)
                .map(|i| (((i as u64 * 2654435761 + s * 97) % 1000) as f32) / 500.0 - 1.0)
                .collect()
        };
        let nl = self.n.load(Ordering::Relaxed);
        Ok(CropBatch {
            batch_size: b,
            global_size_px: g as u32,
            local_size_px: l as u32,
            globals: [v(b * 3 * g * g, *k), v(b * 3 * g * g, *k + 1)],
            locals: (0..nl)
                .map(|j| v(b * 3 * l * l, *k + 2 + j as u64))
                .collect(),
            labels: vec![0; b],
            epoch: 0,
            batch_index: 0,
            warnings: vec![],
        })
    }
}
