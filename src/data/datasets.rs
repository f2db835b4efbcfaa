//! Real datasets in their official binary distributions — CIFAR-10 / CIFAR-100
//! (`cifar-10-batches-bin`, `cifar-100-binary`) and STL-10 (`stl10_binary`) — and the labelled
//! train/val splits the k-NN monitor embeds ([`open_labelled_splits`]).
//!
//! Nothing downloads: `data.path` points at the folder extracted from the official archive.

use crate::config::{Config, DataSource};
use crate::data::{DataError, Dataset, ImageFolder, Sample, SyntheticShapes};
use image::RgbImage;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Seed offset of the synthetic k-NN validation split: far from any seed a user would pick next.
pub const SYNTHETIC_VAL_SEED_OFFSET: u64 = 1_000_003;
/// The synthetic validation split is capped: it only has to rank k-NN accuracy, not measure it.
pub const SYNTHETIC_VAL_MAX_IMAGES: usize = 512;

// ---------------------------------------------------------------------------------------------
// CIFAR-10 / CIFAR-100
// ---------------------------------------------------------------------------------------------

const CIFAR_SIDE_PX: usize = 32;
/// R, G and B planes of 32×32, row-major.
const CIFAR_PIXEL_BYTES: usize = 3 * CIFAR_SIDE_PX * CIFAR_SIDE_PX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarKind {
    /// Records: label byte + 3072 pixel bytes.
    Cifar10,
    /// Records: coarse label byte + fine label byte + 3072 pixel bytes; the fine label is used.
    Cifar100,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl CifarKind {
    pub fn name(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "CIFAR-10",
            CifarKind::Cifar100 => "CIFAR-100",
        }
    }

    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }

    pub fn record_bytes(self) -> usize {
        self.label_bytes() + CIFAR_PIXEL_BYTES
    }

    /// Offset of the label used (CIFAR-100: the fine label, after the coarse one).
    fn label_offset(self) -> usize {
        self.label_bytes() - 1
    }

    pub fn num_classes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 10,
            CifarKind::Cifar100 => 100,
        }
    }

    pub fn split_files(self, split: Split) -> &'static [&'static str] {
        match (self, split) {
            (CifarKind::Cifar10, Split::Train) => &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            (CifarKind::Cifar10, Split::Test) => &["test_batch.bin"],
            (CifarKind::Cifar100, Split::Train) => &["train.bin"],
            (CifarKind::Cifar100, Split::Test) => &["test.bin"],
        }
    }

    pub fn class_names_file(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "batches.meta.txt",
            CifarKind::Cifar100 => "fine_label_names.txt",
        }
    }

    fn expected_files(self) -> String {
        let mut files: Vec<&str> = self.split_files(Split::Train).to_vec();
        files.extend(self.split_files(Split::Test));
        files.push(self.class_names_file());
        files.join(", ")
    }

    fn archive(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar-10-binary.tar.gz (the binary version from https://www.cs.toronto.edu/~kriz/cifar.html)",
            CifarKind::Cifar100 => "cifar-100-binary.tar.gz (the binary version from https://www.cs.toronto.edu/~kriz/cifar.html)",
        }
    }
}

/// One split of CIFAR-10 or CIFAR-100, read into memory once (50k train records = 150 MB).
pub struct Cifar {
    kind: CifarKind,
    split: Split,
    dir: PathBuf,
    class_names: Vec<String>,
    /// The split's files concatenated: whole records, labels included.
    records: Vec<u8>,
}

impl Cifar {
    /// Reads `split` from the extracted binary folder `dir`, checking sizes and labels.
    pub fn open(kind: CifarKind, dir: &Path, split: Split) -> Result<Self, DataError> {
        let mut wanted: Vec<&str> = kind.split_files(split).to_vec();
        wanted.push(kind.class_names_file());
        require_files(
            kind.name(),
            dir,
            &wanted,
            kind.expected_files(),
            kind.archive(),
        )?;
        let class_names = read_class_names(
            &dir.join(kind.class_names_file()),
            kind.num_classes(),
            kind.archive(),
        )?;
        let record_bytes = kind.record_bytes();
        let mut records = Vec::new();
        for name in kind.split_files(split) {
            let path = dir.join(name);
            let start = records.len();
            let mut file = File::open(&path).map_err(|source| read_error(&path, source))?;
            if let Ok(meta) = file.metadata() {
                records.reserve(meta.len() as usize);
            }
            file.read_to_end(&mut records)
                .map_err(|source| read_error(&path, source))?;
            let file_records = check_record_size(
                kind.name(),
                &path,
                (records.len() - start) as u64,
                record_bytes,
                kind.archive(),
            )?;
            let max_label = (kind.num_classes() - 1) as u8;
            for record in 0..file_records {
                let label = records[start + record * record_bytes + kind.label_offset()];
                if label > max_label {
                    return Err(DataError::LabelOutOfRange {
                        dataset: kind.name(),
                        path,
                        record,
                        label,
                        min: 0,
                        max: max_label,
                        archive: kind.archive(),
                    });
                }
            }
        }
        Ok(Self {
            kind,
            split,
            dir: dir.to_path_buf(),
            class_names,
            records,
        })
    }
}

impl Dataset for Cifar {
    fn len(&self) -> usize {
        self.records.len() / self.kind.record_bytes()
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn get(&self, index: usize) -> Result<Sample, DataError> {
        let record_bytes = self.kind.record_bytes();
        let record = self
            .records
            .get(index * record_bytes..(index + 1) * record_bytes)
            .ok_or(DataError::IndexOutOfRange {
                index,
                len: self.len(),
            })?;
        let planes = &record[self.kind.label_bytes()..];
        let plane_bytes = CIFAR_SIDE_PX * CIFAR_SIDE_PX;
        let image = RgbImage::from_fn(CIFAR_SIDE_PX as u32, CIFAR_SIDE_PX as u32, |x, y| {
            let i = y as usize * CIFAR_SIDE_PX + x as usize;
            image::Rgb([
                planes[i],
                planes[plane_bytes + i],
                planes[2 * plane_bytes + i],
            ])
        });
        Ok(Sample {
            image,
            label: record[self.kind.label_offset()] as usize,
        })
    }
    fn describe(&self) -> String {
        format!(
            "{} {} ({}): {} images of 32 px, {} classes",
            self.kind.name(),
            split_name(self.split),
            self.dir.display(),
            self.len(),
            self.class_names.len()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// STL-10
// ---------------------------------------------------------------------------------------------

const STL_SIDE_PX: usize = 96;
const STL_PLANE_BYTES: usize = STL_SIDE_PX * STL_SIDE_PX;
const STL_IMAGE_BYTES: usize = 3 * STL_PLANE_BYTES;
const STL_NUM_CLASSES: usize = 10;
const STL_NAME: &str = "STL-10";
// The messages say "re-extract {archive}" / "download {archive}": the name only.
const STL_ARCHIVE: &str =
    "stl10_binary.tar.gz (the binary version from https://cs.stanford.edu/~acoates/stl10/)";
const STL_EXPECTED: &str =
    "unlabeled_X.bin, train_X.bin, train_y.bin, test_X.bin, test_y.bin, class_names.txt";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StlSplit {
    /// 100k images without labels: what DINO trains on.
    Unlabeled,
    /// 5k labelled images.
    Train,
    /// 8k labelled images.
    Test,
}

impl StlSplit {
    fn files(self) -> (&'static str, Option<&'static str>) {
        match self {
            StlSplit::Unlabeled => ("unlabeled_X.bin", None),
            StlSplit::Train => ("train_X.bin", Some("train_y.bin")),
            StlSplit::Test => ("test_X.bin", Some("test_y.bin")),
        }
    }
}

/// One split of STL-10. Images are read on demand with a positioned read (the unlabelled split
/// is 2.7 GB), so loader threads share one file handle and nothing else is held but the labels.
pub struct Stl10 {
    split: StlSplit,
    images_path: PathBuf,
    file: File,
    len: usize,
    /// 0-based labels; `None` for the unlabelled split.
    labels: Option<Vec<u8>>,
    /// Empty for the unlabelled split: its samples carry label 0 and no class.
    class_names: Vec<String>,
}

impl Stl10 {
    pub fn open(dir: &Path, split: StlSplit) -> Result<Self, DataError> {
        let (images_name, labels_name) = split.files();
        let mut wanted = vec![images_name];
        if let Some(labels_name) = labels_name {
            wanted.extend([labels_name, "class_names.txt"]);
        }
        require_files(STL_NAME, dir, &wanted, STL_EXPECTED.into(), STL_ARCHIVE)?;

        let images_path = dir.join(images_name);
        let file = File::open(&images_path).map_err(|source| read_error(&images_path, source))?;
        let size_bytes = file
            .metadata()
            .map_err(|source| read_error(&images_path, source))?
            .len();
        let len = check_record_size(
            STL_NAME,
            &images_path,
            size_bytes,
            STL_IMAGE_BYTES,
            STL_ARCHIVE,
        )?;

        let (labels, class_names) = match labels_name {
            None => (None, Vec::new()),
            Some(labels_name) => {
                let labels_path = dir.join(labels_name);
                let raw = std::fs::read(&labels_path)
                    .map_err(|source| read_error(&labels_path, source))?;
                if raw.len() != len {
                    return Err(DataError::LabelCountMismatch {
                        labels_path,
                        labels: raw.len(),
                        images_path,
                        images: len,
                        archive: STL_ARCHIVE,
                    });
                }
                // Files store 1..=10.
                let mut labels = Vec::with_capacity(raw.len());
                for (record, &label) in raw.iter().enumerate() {
                    if !(1..=STL_NUM_CLASSES as u8).contains(&label) {
                        return Err(DataError::LabelOutOfRange {
                            dataset: STL_NAME,
                            path: labels_path,
                            record,
                            label,
                            min: 1,
                            max: STL_NUM_CLASSES as u8,
                            archive: STL_ARCHIVE,
                        });
                    }
                    labels.push(label - 1);
                }
                let class_names =
                    read_class_names(&dir.join("class_names.txt"), STL_NUM_CLASSES, STL_ARCHIVE)?;
                (Some(labels), class_names)
            }
        };
        Ok(Self {
            split,
            images_path,
            file,
            len,
            labels,
            class_names,
        })
    }
}

/// STL stores each channel column-major (the official readers transpose after reshaping to
/// (3, 96, 96)), so pixel (x, y) of channel c is byte c·96² + x·96 + y.
fn stl_image(bytes: &[u8]) -> RgbImage {
    RgbImage::from_fn(STL_SIDE_PX as u32, STL_SIDE_PX as u32, |x, y| {
        let i = x as usize * STL_SIDE_PX + y as usize;
        image::Rgb([
            bytes[i],
            bytes[STL_PLANE_BYTES + i],
            bytes[2 * STL_PLANE_BYTES + i],
        ])
    })
}

impl Dataset for Stl10 {
    fn len(&self) -> usize {
        self.len
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn get(&self, index: usize) -> Result<Sample, DataError> {
        if index >= self.len {
            return Err(DataError::IndexOutOfRange {
                index,
                len: self.len,
            });
        }
        let mut bytes = vec![0u8; STL_IMAGE_BYTES];
        read_exact_at(
            &self.file,
            &self.images_path,
            &mut bytes,
            (index * STL_IMAGE_BYTES) as u64,
        )
        .map_err(|source| read_error(&self.images_path, source))?;
        let label = self
            .labels
            .as_ref()
            .and_then(|labels| labels.get(index))
            .map_or(0, |&l| l as usize);
        Ok(Sample {
            image: stl_image(&bytes),
            label,
        })
    }
    fn describe(&self) -> String {
        let split = match self.split {
            StlSplit::Unlabeled => "unlabeled",
            StlSplit::Train => "train",
            StlSplit::Test => "test",
        };
        let classes = if self.labels.is_some() {
            format!("{} classes", self.class_names.len())
        } else {
            "no labels".into()
        };
        format!(
            "STL-10 {split} ({}): {} images of 96 px, {classes}",
            self.images_path.display(),
            self.len
        )
    }
}

/// Positioned read: concurrent `get`s from loader threads need no lock or seek.
#[cfg(unix)]
fn read_exact_at(
    file: &File,
    _path: &Path,
    buf: &mut [u8],
    offset_bytes: u64,
) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset_bytes)
}

/// Without a positioned read in std, a private handle per read keeps threads independent.
#[cfg(not(unix))]
fn read_exact_at(
    _file: &File,
    path: &Path,
    buf: &mut [u8],
    offset_bytes: u64,
) -> std::io::Result<()> {
    seek_read_exact(path, buf, offset_bytes)
}

#[cfg(any(not(unix), test))]
fn seek_read_exact(path: &Path, buf: &mut [u8], offset_bytes: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset_bytes))?;
    file.read_exact(buf)
}

// ---------------------------------------------------------------------------------------------
// Shared file checks
// ---------------------------------------------------------------------------------------------

fn read_error(path: &Path, source: std::io::Error) -> DataError {
    DataError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

/// Every missing file is named at once, so one look at the message fixes the folder.
fn require_files(
    dataset: &'static str,
    dir: &Path,
    wanted: &[&str],
    expected: String,
    archive: &'static str,
) -> Result<(), DataError> {
    if !dir.is_dir() {
        return Err(DataError::DatasetDirMissing {
            dataset,
            path: dir.to_path_buf(),
            expected,
            archive,
        });
    }
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DataError::DatasetFilesMissing {
            dataset,
            path: dir.to_path_buf(),
            missing: missing.join(", "),
            expected,
            archive,
        })
    }
}

/// The number of whole records in a file of `size_bytes`; empty or ragged files are errors.
fn check_record_size(
    dataset: &'static str,
    path: &Path,
    size_bytes: u64,
    record_bytes: usize,
    archive: &'static str,
) -> Result<usize, DataError> {
    if size_bytes == 0 {
        return Err(DataError::EmptyDataFile {
            path: path.to_path_buf(),
            archive,
        });
    }
    if size_bytes % record_bytes as u64 != 0 {
        return Err(DataError::RecordSize {
            dataset,
            path: path.to_path_buf(),
            size_bytes,
            record_bytes,
            archive,
        });
    }
    Ok((size_bytes / record_bytes as u64) as usize)
}

/// One name per line; blank lines (the official files end with some) are skipped.
fn read_class_names(
    path: &Path,
    expected: usize,
    archive: &'static str,
) -> Result<Vec<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| read_error(path, source))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect();
    if names.len() != expected {
        return Err(DataError::ClassNames {
            path: path.to_path_buf(),
            found: names.len(),
            expected,
            archive,
        });
    }
    Ok(names)
}

// ---------------------------------------------------------------------------------------------
// Labelled splits for the k-NN monitor
// ---------------------------------------------------------------------------------------------

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

    /// A CIFAR record whose pixels encode (record id, channel, position) so any mix-up shows.
    fn cifar_record(kind: CifarKind, id: u8, coarse: u8, label: u8) -> Vec<u8> {
        let mut record = Vec::with_capacity(kind.record_bytes());
        if kind == CifarKind::Cifar100 {
            record.push(coarse);
        }
        record.push(label);
        for c in 0..3u8 {
            for i in 0..1024usize {
                record.push(
                    id.wrapping_mul(50)
                        .wrapping_add(c * 80)
                        .wrapping_add(i as u8),
                );
            }
        }
        record
    }

    fn write_lines(path: &Path, names: &[String]) {
        // Trailing blank lines as in the official batches.meta.txt.
        std::fs::write(path, format!("{}\n\n", names.join("\n"))).unwrap();
    }

    fn numbered(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    /// Train: batch 1 holds records 0 and 1, batches 2–5 one each; test: one record.
    fn write_cifar10(dir: &Path) {
        let records: [&[(u8, u8)]; 5] = [
            &[(0, 3), (1, 9)],
            &[(2, 0)],
            &[(3, 1)],
            &[(4, 2)],
            &[(5, 4)],
        ];
        for (batch, recs) in records.iter().enumerate() {
            let bytes: Vec<u8> = recs
                .iter()
                .flat_map(|&(id, label)| cifar_record(CifarKind::Cifar10, id, 0, label))
                .collect();
            std::fs::write(dir.join(format!("data_batch_{}.bin", batch + 1)), bytes).unwrap();
        }
        std::fs::write(
            dir.join("test_batch.bin"),
            cifar_record(CifarKind::Cifar10, 9, 0, 7),
        )
        .unwrap();
        let mut names = numbered("class", 10);
        names[3] = "cat".into();
        write_lines(&dir.join("batches.meta.txt"), &names);
    }

    #[test]
    fn cifar10_reads_records_labels_names_and_pixels() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path());
        let train = Cifar::open(CifarKind::Cifar10, dir.path(), Split::Train).unwrap();
        assert_eq!(train.len(), 6);
        let labels: Vec<usize> = (0..6).map(|i| train.get(i).unwrap().label).collect();
        assert_eq!(labels, [3, 9, 0, 1, 2, 4]);
        assert_eq!(train.class_names().len(), 10);
        assert_eq!(train.class_names()[3], "cat");
        let sample = train.get(1).unwrap();
        assert_eq!(sample.image.dimensions(), (32, 32));
        // Record 1: R plane starts at 50; pixel (x=2, y=1) is plane index 34.
        assert_eq!(sample.image.get_pixel(0, 0).0, [50, 130, 210]);
        assert_eq!(sample.image.get_pixel(2, 1).0, [84, 164, 244]);
        // Record 2 comes from the second file.
        assert_eq!(train.get(2).unwrap().image.get_pixel(0, 0).0, [100, 180, 4]);
        assert!(matches!(
            train.get(6),
            Err(DataError::IndexOutOfRange { index: 6, len: 6 })
        ));
        assert!(
            train.describe().contains("6 images"),
            "{}",
            train.describe()
        );

        let test = Cifar::open(CifarKind::Cifar10, dir.path(), Split::Test).unwrap();
        assert_eq!(test.len(), 1);
        assert_eq!(test.get(0).unwrap().label, 7);
    }

    #[test]
    fn cifar100_uses_the_fine_label() {
        let dir = tempfile::tempdir().unwrap();
        let train: Vec<u8> = [(0u8, 4u8, 42u8), (1, 19, 99)]
            .iter()
            .flat_map(|&(id, coarse, fine)| cifar_record(CifarKind::Cifar100, id, coarse, fine))
            .collect();
        std::fs::write(dir.path().join("train.bin"), train).unwrap();
        std::fs::write(
            dir.path().join("test.bin"),
            cifar_record(CifarKind::Cifar100, 2, 0, 5),
        )
        .unwrap();
        write_lines(
            &dir.path().join("fine_label_names.txt"),
            &numbered("fine", 100),
        );
        let ds = Cifar::open(CifarKind::Cifar100, dir.path(), Split::Train).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.get(0).unwrap().label, 42);
        assert_eq!(ds.get(1).unwrap().label, 99);
        assert_eq!(ds.class_names()[99], "fine99");
        assert_eq!(ds.get(1).unwrap().image.get_pixel(1, 0).0, [51, 131, 211]);
        let test = Cifar::open(CifarKind::Cifar100, dir.path(), Split::Test).unwrap();
        assert_eq!(test.get(0).unwrap().label, 5);
    }

    #[test]
    fn cifar_wrong_size_file_is_named_with_record_size_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path());
        std::fs::write(dir.path().join("data_batch_3.bin"), vec![0u8; 1000]).unwrap();
        let err = Cifar::open(CifarKind::Cifar10, dir.path(), Split::Train)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("data_batch_3.bin is 1000 bytes")
                && err.contains("3073-byte CIFAR-10 record")
                && err.contains("re-extract cifar-10-binary.tar.gz"),
            "{err}"
        );

        std::fs::write(dir.path().join("data_batch_3.bin"), []).unwrap();
        let err = Cifar::open(CifarKind::Cifar10, dir.path(), Split::Train)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("data_batch_3.bin is empty"), "{err}");
    }

    #[test]
    fn cifar_label_out_of_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path());
        std::fs::write(
            dir.path().join("test_batch.bin"),
            cifar_record(CifarKind::Cifar10, 0, 0, 10),
        )
        .unwrap();
        let err = Cifar::open(CifarKind::Cifar10, dir.path(), Split::Test)
            .err()
            .unwrap();
        assert!(
            matches!(err, DataError::LabelOutOfRange { label: 10, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("test_batch.bin"), "{err}");
    }

    #[test]
    fn cifar_missing_dir_and_files_name_what_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("cifar-10-batches-bin");
        let err = Cifar::open(CifarKind::Cifar10, &missing, Split::Train)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("cifar-10-batches-bin")
                && err.contains("does not exist")
                && err.contains("data_batch_1.bin")
                && err.contains("batches.meta.txt"),
            "{err}"
        );

        write_cifar10(dir.path());
        std::fs::remove_file(dir.path().join("data_batch_4.bin")).unwrap();
        std::fs::remove_file(dir.path().join("batches.meta.txt")).unwrap();
        let err = Cifar::open(CifarKind::Cifar10, dir.path(), Split::Train)
            .err()
            .unwrap();
        assert!(
            matches!(&err, DataError::DatasetFilesMissing { missing, .. }
                if missing == "data_batch_4.bin, batches.meta.txt"),
            "{err}"
        );
        // The test split needs only its own file (and the names).
        write_lines(&dir.path().join("batches.meta.txt"), &numbered("c", 10));
        assert!(Cifar::open(CifarKind::Cifar10, dir.path(), Split::Test).is_ok());

        write_lines(&dir.path().join("batches.meta.txt"), &numbered("c", 9));
        let err = Cifar::open(CifarKind::Cifar10, dir.path(), Split::Test)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("lists 9 class names, expected 10"), "{err}");
    }

    /// STL image `id`: channel c, column-major position i holds (id·7 + c·60 + i) mod 256.
    fn stl_bytes(id: u8) -> Vec<u8> {
        (0..STL_IMAGE_BYTES)
            .map(|j| {
                let (c, i) = (j / STL_PLANE_BYTES, j % STL_PLANE_BYTES);
                (id as usize * 7 + c * 60 + i) as u8
            })
            .collect()
    }

    fn write_stl(dir: &Path) {
        let two: Vec<u8> = [stl_bytes(0), stl_bytes(1)].concat();
        std::fs::write(dir.join("unlabeled_X.bin"), &two).unwrap();
        std::fs::write(dir.join("train_X.bin"), &two).unwrap();
        std::fs::write(dir.join("train_y.bin"), [1u8, 10]).unwrap();
        std::fs::write(dir.join("test_X.bin"), stl_bytes(2)).unwrap();
        std::fs::write(dir.join("test_y.bin"), [4u8]).unwrap();
        let names: Vec<String> = [
            "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
        ]
        .map(String::from)
        .to_vec();
        write_lines(&dir.join("class_names.txt"), &names);
    }

    #[test]
    fn stl10_transposes_channels_and_shifts_labels() {
        let dir = tempfile::tempdir().unwrap();
        write_stl(dir.path());
        let train = Stl10::open(dir.path(), StlSplit::Train).unwrap();
        assert_eq!(train.len(), 2);
        assert_eq!(train.class_names()[3], "cat");
        assert_eq!(train.get(0).unwrap().label, 0);
        assert_eq!(train.get(1).unwrap().label, 9);
        let image = train.get(1).unwrap().image;
        assert_eq!(image.dimensions(), (96, 96));
        // Pixel (x=1, y=0) of R is byte 96 of the R plane (column-major), not byte 1.
        assert_eq!(image.get_pixel(1, 0).0[0], (7 + 96) as u8);
        assert_eq!(image.get_pixel(0, 1).0[0], 7 + 1);
        // Pixel (x=2, y=3): byte 2·96 + 3 of each plane.
        let i = 2 * 96 + 3;
        assert_eq!(
            image.get_pixel(2, 3).0,
            [(7 + i) as u8, (7 + 60 + i) as u8, (7 + 120 + i) as u8]
        );
        assert!(matches!(
            train.get(2),
            Err(DataError::IndexOutOfRange { index: 2, len: 2 })
        ));

        let test = Stl10::open(dir.path(), StlSplit::Test).unwrap();
        assert_eq!((test.len(), test.get(0).unwrap().label), (1, 3));

        let unlabeled = Stl10::open(dir.path(), StlSplit::Unlabeled).unwrap();
        assert_eq!(unlabeled.len(), 2);
        assert!(unlabeled.class_names().is_empty());
        let sample = unlabeled.get(1).unwrap();
        assert_eq!(sample.label, 0);
        assert_eq!(sample.image.as_raw(), image.as_raw());
        assert!(
            unlabeled.describe().contains("no labels"),
            "{}",
            unlabeled.describe()
        );
    }

    #[test]
    fn stl10_unlabeled_needs_only_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("unlabeled_X.bin"), stl_bytes(5)).unwrap();
        assert_eq!(
            Stl10::open(dir.path(), StlSplit::Unlabeled).unwrap().len(),
            1
        );
        let err = Stl10::open(dir.path(), StlSplit::Train)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("lacks train_X.bin, train_y.bin, class_names.txt")
                && err.contains("cs.stanford.edu/~acoates/stl10"),
            "{err}"
        );
    }

    #[test]
    fn stl10_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write_stl(dir.path());
        std::fs::write(dir.path().join("train_y.bin"), [1u8]).unwrap();
        let err = Stl10::open(dir.path(), StlSplit::Train)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("train_y.bin holds 1 labels")
                && err.contains("train_X.bin holds 2 images"),
            "{err}"
        );
        std::fs::write(dir.path().join("train_y.bin"), [0u8, 3]).unwrap();
        let err = Stl10::open(dir.path(), StlSplit::Train)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("train_y.bin: record 0 has label 0"), "{err}");
        std::fs::write(dir.path().join("unlabeled_X.bin"), vec![0u8; 27_649]).unwrap();
        let err = Stl10::open(dir.path(), StlSplit::Unlabeled)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("unlabeled_X.bin is 27649 bytes")
                && err.contains("27648-byte STL-10 record"),
            "{err}"
        );
    }

    #[test]
    fn seek_read_matches_positioned_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        std::fs::write(&path, (0..=255u8).collect::<Vec<_>>()).unwrap();
        let file = File::open(&path).unwrap();
        let (mut a, mut b) = ([0u8; 5], [0u8; 5]);
        read_exact_at(&file, &path, &mut a, 100).unwrap();
        seek_read_exact(&path, &mut b, 100).unwrap();
        assert_eq!(
            (a, b),
            ([100, 101, 102, 103, 104], [100, 101, 102, 103, 104])
        );
        assert!(read_exact_at(&file, &path, &mut a, 254).is_err());
    }

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
