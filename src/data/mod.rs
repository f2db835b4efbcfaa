//! Images in: the `Dataset` trait every source implements, `SyntheticShapes` (embedded,
//! procedural), `ImageFolder` with `load_rgb` and the bundled photos, the official CIFAR and
//! STL-10 binary releases, and `datasets` (the training set a config names and the k-NN
//! monitor's labelled splits).

mod cifar;
pub mod datasets;
mod files;
mod folder;
mod stl10;
mod synthetic;

pub use folder::{is_image_file, load_rgb, sample_photos, ImageFolder};
pub(crate) use synthetic::hsv_to_rgb;
pub use synthetic::SyntheticShapes;

use image::{ImageError, RgbImage};
use std::path::PathBuf;

/// One decoded image and its class index.
#[derive(Clone, Debug)]
pub struct Sample {
    pub image: RgbImage,
    pub label: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("image folder {path} does not exist; set data.path to an ImageFolder root (one sub-folder per class)")]
    RootMissing { path: PathBuf },
    #[error("image folder {path} is not a directory; set data.path to an ImageFolder root (one sub-folder per class)")]
    RootNotADirectory { path: PathBuf },
    #[error("cannot list folder {path}: {source}; check that it exists and is readable")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "image folder {path} has no class sub-folders; put the images in {path}/<class_name>/"
    )]
    NoClassFolders { path: PathBuf },
    #[error("empty image folder {path}: none of its class sub-folders holds a file with an image extension ({extensions})")]
    EmptyFolder { path: PathBuf, extensions: String },
    #[error("cannot open image {path}: {source}; check that the file is readable")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot decode image {path}: {source}; delete or replace the file")]
    Decode { path: PathBuf, source: ImageError },
    #[error("image {path} is too large to load ({source}; limits: {max_side_px} px per side, {max_decode_mib} MiB decoded); downscale the file")]
    TooLarge {
        path: PathBuf,
        max_side_px: u32,
        max_decode_mib: u64,
        source: ImageError,
    },
    #[error("sample index {index} is out of range for a dataset of {len} images")]
    IndexOutOfRange { index: usize, len: usize },
    #[error("{dataset} folder {path} does not exist or is not a directory; download {archive}, extract it and set data.path to the extracted folder, which holds {expected}; nothing is downloaded automatically")]
    DatasetDirMissing {
        dataset: &'static str,
        path: PathBuf,
        expected: String,
        archive: &'static str,
    },
    #[error(
        "{dataset} folder {path} lacks {missing}; it should hold {expected}; re-extract {archive}"
    )]
    DatasetFilesMissing {
        dataset: &'static str,
        path: PathBuf,
        missing: String,
        expected: String,
        archive: &'static str,
    },
    #[error("cannot read {path}: {source}; check that the file is readable")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is empty; re-extract {archive}")]
    EmptyDataFile {
        path: PathBuf,
        archive: &'static str,
    },
    #[error("{path} is {size_bytes} bytes, not a multiple of the {record_bytes}-byte {dataset} record; re-extract {archive}")]
    RecordSize {
        dataset: &'static str,
        path: PathBuf,
        size_bytes: u64,
        record_bytes: usize,
        archive: &'static str,
    },
    #[error("{path}: record {record} has label {label}, outside the {dataset} range {min}..={max}; is data.source the right dataset? Otherwise re-extract {archive}")]
    LabelOutOfRange {
        dataset: &'static str,
        path: PathBuf,
        record: usize,
        label: u8,
        min: u8,
        max: u8,
        archive: &'static str,
    },
    #[error("{labels_path} holds {labels} labels but {images_path} holds {images} images; re-extract {archive}")]
    LabelCountMismatch {
        labels_path: PathBuf,
        labels: usize,
        images_path: PathBuf,
        images: usize,
        archive: &'static str,
    },
    #[error("{path} lists {found} class names, expected {expected} (one per line); re-extract {archive}")]
    ClassNames {
        path: PathBuf,
        found: usize,
        expected: usize,
        archive: &'static str,
    },
    #[error("k-NN validation folder {val} has classes missing from the k-NN training folder {train}: {missing}; give data.knn_val_path only class sub-folders that data.knn_train_path also has")]
    KnnClassesMissing {
        train: PathBuf,
        val: PathBuf,
        missing: String,
    },
}

/// A random-access image dataset shared by the loader threads.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn class_names(&self) -> &[String];
    /// Decodes sample `index`; a corrupt file gives an error naming the file.
    fn get(&self, index: usize) -> Result<Sample, DataError>;
    /// One line for logs and the UI, e.g. "synthetic shapes: 2048 images of 64 px, 6 classes".
    fn describe(&self) -> String;
}

/// SplitMix64 finaliser: a cheap, well-mixed hash used to derive independent per-item seeds.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a sequence of words into one seed; order matters, so (a, b) ≠ (b, a).
pub(crate) fn seed_from(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(0x0DD1_5C0F_u64, |acc, &w| mix64(acc ^ mix64(w)))
}
