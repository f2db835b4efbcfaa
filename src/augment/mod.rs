//! DINO multi-crop augmentation (`DataAugmentationDINO`, reference §4) and a deterministic,
//! multi-threaded loader that turns a `Dataset` into batches of normalised crops.
//!
//! `multi_crop`: the crops of one image; `ops`: the pixel operations (colour jitter, grey,
//! blur, solarize, normalisation); `resample`: PIL's antialiased bicubic resize; `loader`: the
//! ordered `CropLoader` threads.

mod loader;
mod multi_crop;
mod ops;
mod resample;

pub use loader::{CropBatch, CropLoader, LoaderConfig, LoaderError};
pub use multi_crop::{multi_crop, AugmentConfig, MultiCrop};
pub use ops::{normalise_rgb8_chw, IMAGENET_MEAN, IMAGENET_STD};
