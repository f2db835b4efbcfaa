//! The training set a config names ([`open_dataset`]) and the labelled train/val splits the
//! k-NN monitor embeds ([`open_labelled_splits`]). The official binary releases (`cifar.rs`,
//! `stl10.rs`) are re-exported here, where they have always been.
//!
//! Nothing downloads: `data.path` points at the folder extracted from the official archive.

pub use super::cifar::{Cifar, CifarKind, Split};
pub use super::stl10::{Stl10, StlSplit};

use crate::config::{Config, DataSource};
use crate::data::{DataError, Dataset, ImageFolder, Sample, SyntheticShapes};
use std::path::Path;
use std::sync::Arc;

/// Seed offset of the synthetic k-NN validation split: far from any seed a user would pick next.
pub const SYNTHETIC_VAL_SEED_OFFSET: u64 = 1_000_003;
/// The synthetic validation split is capped: it only has to rank k-NN accuracy, not measure it.
pub const SYNTHETIC_VAL_MAX_IMAGES: usize = 512;

/// A labelled train split (the k-NN memory bank) and a val split (the queries). Labels index
/// `train.class_names()` in both.
pub struct LabelledSplits {
    pub train: Arc<dyn Dataset>,
    pub val: Arc<dyn Dataset>,
}

/// The labelled splits for `config.data.source`, or `None` when it has none (an ImageFolder
/// without both `data.knn_train_path` and `data.knn_val_path`).
///
/// Synthetic: the training set and a second set with seed + 1 000 003 (at most 512 images);
/// CIFAR: train batches / test batch; STL-10: train / test.
pub fn open_labelled_splits(config: &Config) -> Result<Option<LabelledSplits>, DataError> {
    let data = &config.data;
    let dir = Path::new(&data.path);
    let cifar = |kind| -> Result<Option<LabelledSplits>, DataError> {
        Ok(Some(LabelledSplits {
            train: Arc::new(Cifar::open(kind, dir, Split::Train)?),
            val: Arc::new(Cifar::open(kind, dir, Split::Test)?),
        }))
    };
    match data.source {
        DataSource::Synthetic => Ok(Some(LabelledSplits {
            train: Arc::new(SyntheticShapes::new(
                config.seed,
                data.image_size,
                data.num_images,
            )),
            val: Arc::new(SyntheticShapes::new(
                config.seed.wrapping_add(SYNTHETIC_VAL_SEED_OFFSET),
                data.image_size,
                data.num_images.min(SYNTHETIC_VAL_MAX_IMAGES),
            )),
        })),
        DataSource::Cifar10 => cifar(CifarKind::Cifar10),
        DataSource::Cifar100 => cifar(CifarKind::Cifar100),
        DataSource::Stl10 => Ok(Some(LabelledSplits {
            train: Arc::new(Stl10::open(dir, StlSplit::Train)?),
            val: Arc::new(Stl10::open(dir, StlSplit::Test)?),
        })),
        DataSource::Folder => match (&data.knn_train_path, &data.knn_val_path) {
            (Some(train), Some(val)) => {
                open_folder_splits(Path::new(train), Path::new(val)).map(Some)
            }
            _ => Ok(None),
        },
    }
}

/// Two ImageFolders whose val classes must all exist in train; val labels are remapped to
/// train's indices because each folder numbers its own sorted sub-folders.
fn open_folder_splits(train_root: &Path, val_root: &Path) -> Result<LabelledSplits, DataError> {
    let train = ImageFolder::open(train_root)?;
    let val = ImageFolder::open(val_root)?;
    let mut to_train = Vec::with_capacity(val.class_names().len());
    let mut missing = Vec::new();
    for name in val.class_names() {
        match train.class_names().iter().position(|t| t == name) {
            Some(index) => to_train.push(index),
            None => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        return Err(DataError::KnnClassesMissing {
            train: train_root.to_path_buf(),
            val: val_root.to_path_buf(),
            missing: missing.join(", "),
        });
    }
    let val = Relabelled {
        class_names: train.class_names().to_vec(),
        inner: val,
        to_train,
    };
    Ok(LabelledSplits {
        train: Arc::new(train),
        val: Arc::new(val),
    })
}

/// A dataset whose labels are re-indexed into another dataset's class list.
struct Relabelled<D> {
    inner: D,
    /// inner label → index into `class_names`.
    to_train: Vec<usize>,
    class_names: Vec<String>,
}

impl<D: Dataset> Dataset for Relabelled<D> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn get(&self, index: usize) -> Result<Sample, DataError> {
        let mut sample = self.inner.get(index)?;
        // `open_folder_splits` maps every inner class, so the lookup cannot miss.
        sample.label = self
            .to_train
            .get(sample.label)
            .copied()
            .unwrap_or(sample.label);
        Ok(sample)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Opens the training dataset named by `data.source`.
pub fn open_dataset(config: &Config) -> Result<Arc<dyn Dataset>, DataError> {
    let path = Path::new(&config.data.path);
    Ok(match config.data.source {
        DataSource::Synthetic => Arc::new(SyntheticShapes::new(
            config.seed,
            config.data.image_size,
            config.data.num_images,
        )),
        DataSource::Folder => Arc::new(ImageFolder::open(path)?),
        DataSource::Cifar10 => Arc::new(Cifar::open(CifarKind::Cifar10, path, Split::Train)?),
        DataSource::Cifar100 => Arc::new(Cifar::open(CifarKind::Cifar100, path, Split::Train)?),
        // DINO trains on the 100k unlabelled images; train/test are for the k-NN monitor.
        DataSource::Stl10 => Arc::new(Stl10::open(path, StlSplit::Unlabeled)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cifar::tests::write_cifar10;
    use crate::data::stl10::tests::write_stl;
    use image::RgbImage;

    #[test]
    fn synthetic_splits_use_different_seeds() {
        let mut config = Config::preset("tiny").unwrap();
        config.data.num_images = 1024;
        let splits = open_labelled_splits(&config).unwrap().unwrap();
        assert_eq!(splits.train.len(), 1024);
        assert_eq!(splits.val.len(), 512);
        let names: Vec<&str> = SyntheticShapes::CLASS_NAMES.to_vec();
        assert_eq!(splits.train.class_names(), names);
        assert_eq!(splits.val.class_names(), names);
        let (t, v) = (splits.train.get(0).unwrap(), splits.val.get(0).unwrap());
        assert_eq!(t.label, v.label);
        assert_ne!(t.image.as_raw(), v.image.as_raw());
        // The train split is the training set itself.
        let training = open_dataset(&config).unwrap();
        assert_eq!(
            training.get(5).unwrap().image.as_raw(),
            splits.train.get(5).unwrap().image.as_raw()
        );
    }

    #[test]
    fn cifar_and_stl_splits_are_train_and_test() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path());
        let mut config = Config::preset("cifar10").unwrap();
        config.data.path = dir.path().display().to_string();
        let splits = open_labelled_splits(&config).unwrap().unwrap();
        assert_eq!((splits.train.len(), splits.val.len()), (6, 1));
        assert_eq!(open_dataset(&config).unwrap().len(), 6);

        let dir = tempfile::tempdir().unwrap();
        write_stl(dir.path());
        let mut config = Config::preset("stl10").unwrap();
        config.data.path = dir.path().display().to_string();
        let splits = open_labelled_splits(&config).unwrap().unwrap();
        assert_eq!((splits.train.len(), splits.val.len()), (2, 1));
        assert_eq!(splits.train.class_names(), splits.val.class_names());
        // Training reads the unlabelled split.
        let training = open_dataset(&config).unwrap();
        assert!(
            training.describe().contains("unlabeled"),
            "{}",
            training.describe()
        );
    }

    #[test]
    fn cifar10_preset_without_data_is_a_clear_error() {
        let mut config = Config::preset("cifar10").unwrap();
        config.data.path = "/no/such/cifar-10-batches-bin".into();
        let err = open_dataset(&config).err().unwrap().to_string();
        assert!(
            err.contains("/no/such/cifar-10-batches-bin")
                && err.contains("data_batch_1.bin")
                && err.contains("cs.toronto.edu/~kriz/cifar.html"),
            "{err}"
        );
    }

    fn image_folder(root: &Path, classes: &[&str]) {
        for class in classes {
            std::fs::create_dir_all(root.join(class)).unwrap();
            RgbImage::new(4, 4)
                .save(root.join(class).join("a.png"))
                .unwrap();
        }
    }

    #[test]
    fn folder_splits_need_both_paths_and_remap_val_labels() {
        let dir = tempfile::tempdir().unwrap();
        let (train, val) = (dir.path().join("train"), dir.path().join("val"));
        image_folder(&train, &["ant", "bee", "cow"]);
        image_folder(&val, &["ant", "cow"]);
        let mut config = Config::preset("tiny").unwrap();
        config.data.source = DataSource::Folder;
        config.data.path = train.display().to_string();
        assert!(open_labelled_splits(&config).unwrap().is_none());

        config.data.knn_train_path = Some(train.display().to_string());
        config.data.knn_val_path = Some(val.display().to_string());
        let splits = open_labelled_splits(&config).unwrap().unwrap();
        assert_eq!(splits.val.class_names(), splits.train.class_names());
        let labels: Vec<usize> = (0..2).map(|i| splits.val.get(i).unwrap().label).collect();
        assert_eq!(labels, [0, 2], "cow is class 2 in train");

        image_folder(&val, &["dog", "eel"]);
        let err = open_labelled_splits(&config).err().unwrap().to_string();
        assert!(
            err.contains("dog, eel") && err.contains(&val.display().to_string()),
            "{err}"
        );
    }
}
