//! Image files: `load_rgb` (any supported format to RGB8, with size limits), the
//! torchvision-style `ImageFolder` and the bundled sample photos.

use super::{DataError, Dataset, Sample};
use image::{ImageError, ImageReader, Limits, RgbImage};
use std::path::{Path, PathBuf};

/// Largest accepted width/height; bigger files are refused rather than risking memory.
const MAX_SIDE_PX: u32 = 16_384;
/// Decoder allocation cap per image (16-bit RGBA at 16k² would need 2 GiB).
const MAX_DECODE_BYTES: u64 = 1 << 30;
/// Decoded images are downscaled to this longer side: DINO crops are ≤ 224 px, so more
/// resolution only costs augmentation time.
const MAX_KEPT_SIDE_PX: u32 = 2048;
/// Sub-folders nested deeper than this inside a class folder are ignored (guards link loops).
const MAX_DEPTH: usize = 16;

/// A torchvision-style image folder: `root/<class_name>/**/*.{png,jpg,...}`. Classes are the
/// sorted sub-folder names; files are decoded lazily by `get`.
pub struct ImageFolder {
    root: PathBuf,
    class_names: Vec<String>,
    files: Vec<(PathBuf, usize)>,
}

/// Whether the `image` crate (with the features compiled in) can decode this extension.
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(image::ImageFormat::from_extension)
        .is_some_and(|format| format.reading_enabled())
}

fn supported_extensions() -> String {
    image::ImageFormat::all()
        .filter(|f| f.reading_enabled())
        .flat_map(|f| f.extensions_str().iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let read_err = |source| DataError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        entries.push(entry.map_err(read_err)?.path());
    }
    entries.sort();
    Ok(entries)
}

/// Hidden entries (".ipynb_checkpoints", ".DS_Store") are never classes or images.
fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn collect_images(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for path in read_dir_sorted(dir)? {
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            if depth < MAX_DEPTH {
                collect_images(&path, depth + 1, out)?;
            }
        } else if is_image_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

impl ImageFolder {
    pub fn open(root: &Path) -> Result<Self, DataError> {
        if !root.exists() {
            return Err(DataError::RootMissing {
                path: root.to_path_buf(),
            });
        }
        if !root.is_dir() {
            return Err(DataError::RootNotADirectory {
                path: root.to_path_buf(),
            });
        }
        let class_dirs: Vec<PathBuf> = read_dir_sorted(root)?
            .into_iter()
            .filter(|p| p.is_dir() && !is_hidden(p))
            .collect();
        if class_dirs.is_empty() {
            return Err(DataError::NoClassFolders {
                path: root.to_path_buf(),
            });
        }
        let mut class_names = Vec::with_capacity(class_dirs.len());
        let mut files = Vec::new();
        for (label, dir) in class_dirs.iter().enumerate() {
            class_names.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            let mut class_files = Vec::new();
            collect_images(dir, 0, &mut class_files)?;
            if class_files.is_empty() {
                // Kept as a class so labels still match the sorted folder names.
                tracing::warn!("class folder {} holds no images", dir.display());
            }
            files.extend(class_files.into_iter().map(|p| (p, label)));
        }
        if files.is_empty() {
            return Err(DataError::EmptyFolder {
                path: root.to_path_buf(),
                extensions: supported_extensions(),
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            class_names,
            files,
        })
    }

    /// The file behind sample `index`, if any.
    pub fn path(&self, index: usize) -> Option<&Path> {
        self.files.get(index).map(|(p, _)| p.as_path())
    }
}

/// The bundled photos (assets/README.md has their sources and licences), embedded in the
/// binary so the attention view has real images on any machine.
const SAMPLE_PHOTOS: [(&str, &[u8]); 4] = [
    ("cat.jpg", include_bytes!("../../assets/cat.jpg")),
    ("coffee.jpg", include_bytes!("../../assets/coffee.jpg")),
    (
        "astronaut.jpg",
        include_bytes!("../../assets/astronaut.jpg"),
    ),
    ("rocket.jpg", include_bytes!("../../assets/rocket.jpg")),
];

/// The bundled photos, decoded (name, image).
pub fn sample_photos() -> Vec<(String, RgbImage)> {
    SAMPLE_PHOTOS
        .iter()
        // The bytes are ours and covered by a test; a failure would only drop one sample.
        .filter_map(|(name, bytes)| {
            let image = image::load_from_memory(bytes).ok()?;
            Some((name.to_string(), image.into_rgb8()))
        })
        .collect()
}

/// Decodes any supported format to RGB8 (alpha dropped, 16-bit and grey converted), refusing
/// oversized files and downscaling big ones.
pub fn load_rgb(path: &Path) -> Result<RgbImage, DataError> {
    let open_err = |source| DataError::Open {
        path: path.to_path_buf(),
        source,
    };
    // Sniff the content so a mislabelled file (a PNG named .jpg) still loads.
    let mut reader = ImageReader::open(path)
        .map_err(open_err)?
        .with_guessed_format()
        .map_err(open_err)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE_PX);
    limits.max_image_height = Some(MAX_SIDE_PX);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    // A decoder that panics on a hostile file is contained here and named like any other
    // undecodable file (the fuzz tests have not found one; this is the boundary if they do).
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.decode()))
        .unwrap_or_else(|_| {
            Err(ImageError::IoError(std::io::Error::other(
                "the image decoder panicked on this file",
            )))
        });
    let decoded = decoded.map_err(|source| match source {
        ImageError::Limits(_) => DataError::TooLarge {
            path: path.to_path_buf(),
            max_side_px: MAX_SIDE_PX,
            max_decode_mib: MAX_DECODE_BYTES >> 20,
            source,
        },
        _ => DataError::Decode {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let mut rgb = decoded.into_rgb8();
    let (w, h) = rgb.dimensions();
    if w.max(h) > MAX_KEPT_SIDE_PX {
        let scale = MAX_KEPT_SIDE_PX as f64 / w.max(h) as f64;
        let nw = ((w as f64 * scale).round() as u32).clamp(1, MAX_KEPT_SIDE_PX);
        let nh = ((h as f64 * scale).round() as u32).clamp(1, MAX_KEPT_SIDE_PX);
        rgb = image::imageops::resize(&rgb, nw, nh, image::imageops::FilterType::Triangle);
    }
    Ok(rgb)
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn get(&self, index: usize) -> Result<Sample, DataError> {
        let (path, label) = self.files.get(index).ok_or(DataError::IndexOutOfRange {
            index,
            len: self.files.len(),
        })?;
        Ok(Sample {
            image: load_rgb(path)?,
            label: *label,
        })
    }
    fn describe(&self) -> String {
        format!(
            "image folder {}: {} images, {} classes",
            self.root.display(),
            self.files.len(),
            self.class_names.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Rgb};

    #[test]
    fn any_pixel_format_loads_as_rgb8_and_huge_images_are_downscaled() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        // 16-bit RGB: the high byte is kept.
        image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(4, 3, image::Rgb([65535, 32768, 0]))
            .save(path("deep.png"))
            .unwrap();
        let rgb = load_rgb(&path("deep.png")).unwrap();
        assert_eq!(
            (rgb.dimensions(), rgb.get_pixel(0, 0).0),
            ((4, 3), [255, 128, 0])
        );
        // Grey, grey + alpha, RGBA, and a palette GIF.
        image::GrayImage::from_pixel(5, 5, image::Luma([77]))
            .save(path("grey.png"))
            .unwrap();
        assert_eq!(
            load_rgb(&path("grey.png")).unwrap().get_pixel(2, 2).0,
            [77, 77, 77]
        );
        image::RgbaImage::from_pixel(3, 3, image::Rgba([10, 20, 30, 0]))
            .save(path("alpha.png"))
            .unwrap();
        assert_eq!(
            load_rgb(&path("alpha.png")).unwrap().get_pixel(1, 1).0,
            [10, 20, 30]
        );
        image::RgbaImage::from_pixel(6, 4, image::Rgba([200, 0, 0, 255]))
            .save(path("palette.gif"))
            .unwrap();
        let gif = load_rgb(&path("palette.gif")).unwrap();
        assert_eq!(gif.dimensions(), (6, 4));
        // A panorama wider than the kept size is downscaled, aspect kept.
        RgbImage::from_pixel(5000, 100, image::Rgb([1, 2, 3]))
            .save(path("wide.png"))
            .unwrap();
        let wide = load_rgb(&path("wide.png")).unwrap();
        assert_eq!(wide.width(), MAX_KEPT_SIDE_PX);
        assert_eq!(wide.height(), 41);
        // A truncated file: an error naming it.
        let bytes = std::fs::read(path("wide.png")).unwrap();
        std::fs::write(path("cut.png"), &bytes[..bytes.len() / 2]).unwrap();
        let err = load_rgb(&path("cut.png")).unwrap_err().to_string();
        assert!(err.contains("cut.png"), "{err}");
        std::fs::write(path("notes.jpg"), "not an image").unwrap();
        assert!(load_rgb(&path("notes.jpg"))
            .unwrap_err()
            .to_string()
            .contains("notes.jpg"));
    }

    #[test]
    fn bundled_photos_decode() {
        let photos = sample_photos();
        let names: Vec<&str> = photos.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["cat.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg"]
        );
        assert_eq!(photos[0].1.dimensions(), (451, 300));
    }

    fn write_folder(root: &Path) {
        for class in ["cats", "dogs"] {
            std::fs::create_dir(root.join(class)).unwrap();
        }
        let rgb = RgbImage::from_fn(20, 12, |x, y| Rgb([x as u8 * 10, y as u8 * 20, 100]));
        rgb.save(root.join("cats").join("a_rgb.png")).unwrap();
        rgb.save(root.join("cats").join("b_rgb.JPG")).unwrap();
        let gray = GrayImage::from_fn(9, 9, |x, _| image::Luma([x as u8 * 25]));
        gray.save(root.join("dogs").join("c_gray.png")).unwrap();
        let rgba =
            image::RgbaImage::from_fn(8, 8, |x, y| image::Rgba([200, x as u8, y as u8, 128]));
        rgba.save(root.join("dogs").join("d_rgba.png")).unwrap();
        let deep = image::ImageBuffer::<Rgb<u16>, Vec<u16>>::from_fn(10, 6, |x, _| {
            Rgb([x as u16 * 6000, 65535, 0])
        });
        deep.save(root.join("dogs").join("e_16bit.png")).unwrap();
        std::fs::write(root.join("dogs").join("notes.txt"), "not an image").unwrap();
    }

    #[test]
    fn image_folder_loads_mixed_formats() {
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path());
        let ds = ImageFolder::open(dir.path()).unwrap();
        assert_eq!(ds.class_names(), &["cats".to_string(), "dogs".to_string()]);
        assert_eq!(ds.len(), 5);
        let labels: Vec<usize> = (0..5).map(|i| ds.get(i).unwrap().label).collect();
        assert_eq!(labels, [0, 0, 1, 1, 1]);
        assert_eq!(ds.get(0).unwrap().image.dimensions(), (20, 12));
        let gray = ds.get(2).unwrap().image;
        assert_eq!(gray.get_pixel(4, 0).0, [100, 100, 100]);
        let rgba = ds.get(3).unwrap().image;
        assert_eq!(rgba.get_pixel(1, 2).0, [200, 1, 2]);
        let deep = ds.get(4).unwrap().image;
        assert_eq!(deep.get_pixel(0, 0).0, [0, 255, 0]);
        assert!(
            ds.describe().contains("5 images, 2 classes"),
            "{}",
            ds.describe()
        );
        assert!(matches!(
            ds.get(5),
            Err(DataError::IndexOutOfRange { index: 5, len: 5 })
        ));
    }

    #[test]
    fn image_folder_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = ImageFolder::open(&missing).err().unwrap().to_string();
        assert!(
            err.contains("does not exist") && err.contains("nope"),
            "{err}"
        );

        let err = ImageFolder::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("no class sub-folders"), "{err}");

        std::fs::create_dir(dir.path().join("cats")).unwrap();
        std::fs::write(dir.path().join("cats").join("readme.md"), "x").unwrap();
        let err = ImageFolder::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("empty image folder") && err.contains("png"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path());
        std::fs::write(
            dir.path().join("cats").join("x.jpg"),
            [7u8, 1, 255, 0, 42, 9, 9],
        )
        .unwrap();
        let ds = ImageFolder::open(dir.path()).unwrap();
        let idx = (0..ds.len())
            .find(|&i| ds.path(i).is_some_and(|p| p.ends_with("x.jpg")))
            .unwrap();
        let err = ds.get(idx).err().unwrap();
        assert!(matches!(err, DataError::Decode { .. }), "{err}");
        assert!(err.to_string().contains("x.jpg"), "{err}");
    }

    #[test]
    fn oversized_images_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        RgbImage::new(MAX_SIDE_PX + 1, 1)
            .save(dir.path().join("a").join("huge.png"))
            .unwrap();
        let ds = ImageFolder::open(dir.path()).unwrap();
        let err = ds.get(0).err().unwrap();
        assert!(matches!(err, DataError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("huge.png"), "{err}");
    }

    #[test]
    fn big_images_are_downscaled() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        RgbImage::new(3000, 10)
            .save(dir.path().join("a").join("wide.png"))
            .unwrap();
        let ds = ImageFolder::open(dir.path()).unwrap();
        assert_eq!(ds.get(0).unwrap().image.dimensions(), (2048, 7));
    }
}
