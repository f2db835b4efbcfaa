//! STL-10 in its official binary release (`stl10_binary`): 96 px images read on demand with a
//! positioned read; labels and class names held in memory.

use super::files::{check_record_size, read_class_names, read_error, require_files};
use crate::data::{DataError, Dataset, Sample};
use image::RgbImage;
use std::fs::File;
use std::path::{Path, PathBuf};

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
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset_bytes))?;
    file.read_exact(buf)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::data::files::tests::write_lines;

    /// STL image `id`: channel c, column-major position i holds (id·7 + c·60 + i) mod 256.
    fn stl_bytes(id: u8) -> Vec<u8> {
        (0..STL_IMAGE_BYTES)
            .map(|j| {
                let (c, i) = (j / STL_PLANE_BYTES, j % STL_PLANE_BYTES);
                (id as usize * 7 + c * 60 + i) as u8
            })
            .collect()
    }

    pub(crate) fn write_stl(dir: &Path) {
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
}
