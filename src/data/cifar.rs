//! CIFAR-10 / CIFAR-100 in their official binary release (`cifar-10-batches-bin`,
//! `cifar-100-binary`): fixed-size records, read into memory once.

use super::files::{check_record_size, read_class_names, read_error, require_files};
use crate::data::{DataError, Dataset, Sample};
use image::RgbImage;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

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

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::data::files::tests::{numbered, write_lines};

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

    /// Train: batch 1 holds records 0 and 1, batches 2–5 one each; test: one record.
    pub(crate) fn write_cifar10(dir: &Path) {
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
}
