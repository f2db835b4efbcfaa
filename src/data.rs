//! Datasets: the embedded procedural shapes (the default, no download) and a torchvision-style
//! ImageFolder. Both hand out RGB8 images; augmentation happens in `augment`.

use image::{GrayImage, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

pub struct Sample {
    pub image: RgbImage,
    pub label: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("image folder {path} does not exist or is not a directory; set data.path to an ImageFolder root (one sub-folder per class)")]
    MissingRoot { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image folder {path} has no class sub-folders; expected root/<class>/<image files>")]
    NoClasses { path: PathBuf },
    #[error("image folder {path} is empty: its class folders hold no image files the `image` crate can decode (png, jpg, webp, bmp, tiff, gif, ...)")]
    Empty { path: PathBuf },
    #[error("cannot decode image {path}: {reason}")]
    Decode { path: PathBuf, reason: String },
}

pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn class_names(&self) -> &[String];
    /// Never panics; a file that cannot be decoded is an error naming it.
    fn get(&self, index: usize) -> Result<Sample, DataError>;
    fn describe(&self) -> String;
}

/// Images of six shape classes, each with its own hue family, at a random position, scale and
/// rotation over a textured, cluttered background. Deterministic in (seed, index), any size.
pub struct SyntheticShapes {
    seed: u64,
    image_size_px: u32,
    num_images: usize,
    class_names: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
    Cross,
    Ring,
}

const SHAPES: [Shape; 6] = [
    Shape::Circle,
    Shape::Square,
    Shape::Triangle,
    Shape::Star,
    Shape::Cross,
    Shape::Ring,
];

/// Hue (degrees) of each class; a class keeps its colour family so a tiny ViT has an easy cue
/// beside the outline.
const CLASS_HUES_DEG: [f32; 6] = [0.0, 220.0, 120.0, 50.0, 300.0, 180.0];

impl SyntheticShapes {
    pub const CLASS_NAMES: [&'static str; 6] =
        ["circle", "square", "triangle", "star", "cross", "ring"];

    pub fn new(seed: u64, image_size_px: u32, num_images: usize) -> Self {
        Self {
            seed,
            image_size_px: image_size_px.max(4),
            num_images,
            class_names: Self::CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The image, its label and the ground-truth foreground mask (255 = the main shape).
    pub fn sample_with_mask(&self, index: usize) -> (Sample, GrayImage) {
        let size = self.image_size_px;
        let label = index % SHAPES.len();
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, index as u64));
        let mut image = background(size, &mut rng);
        let mut mask = GrayImage::new(size, size);
        let s = size as f32;

        // A few small muted distractors (blobs and bars), never the class shapes.
        let distractors = rng.random_range(2..5);
        for _ in 0..distractors {
            let colour = hsv_to_rgb(
                rng.random_range(0.0..360.0),
                rng.random_range(0.05..0.3),
                rng.random_range(0.3..0.8),
            );
            let cx = rng.random_range(0.0..s);
            let cy = rng.random_range(0.0..s);
            let blob = rng.random_bool(0.5);
            let r = rng.random_range(0.04..0.1) * s;
            let angle: f32 = rng.random_range(0.0..std::f32::consts::PI);
            let (sin, cos) = angle.sin_cos();
            paint(&mut image, None, colour, |x, y| {
                let (dx, dy) = (x - cx, y - cy);
                if blob {
                    (dx * dx + dy * dy).sqrt() - r
                } else {
                    let u = dx * cos + dy * sin;
                    let v = -dx * sin + dy * cos;
                    sd_box(u, v, r * 2.0, r * 0.25)
                }
            });
        }

        // The main shape.
        let shape = SHAPES[label];
        let hue = CLASS_HUES_DEG[label] + rng.random_range(-15.0..15.0);
        let colour = hsv_to_rgb(
            hue.rem_euclid(360.0),
            rng.random_range(0.6..0.95),
            rng.random_range(0.7..1.0),
        );
        let radius = rng.random_range(0.35..0.7) * s / 2.0;
        let margin = radius.min(s / 2.0);
        let cx = rng.random_range(margin..=(s - margin).max(margin));
        let cy = rng.random_range(margin..=(s - margin).max(margin));
        let angle: f32 = rng.random_range(0.0..std::f32::consts::TAU);
        let (sin, cos) = angle.sin_cos();
        paint(&mut image, Some(&mut mask), colour, |x, y| {
            let (dx, dy) = (x - cx, y - cy);
            let u = (dx * cos + dy * sin) / radius;
            let v = (-dx * sin + dy * cos) / radius;
            shape_sdf(shape, u, v) * radius
        });
        (Sample { image, label }, mask)
    }
}

impl Dataset for SyntheticShapes {
    fn len(&self) -> usize {
        self.num_images
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn get(&self, index: usize) -> Result<Sample, DataError> {
        Ok(self.sample_with_mask(index).0)
    }

    fn describe(&self) -> String {
        format!(
            "synthetic shapes: {} images of {} px, {} classes",
            self.num_images,
            self.image_size_px,
            SHAPES.len()
        )
    }
}

/// splitmix64 of (seed, index): decorrelated per-image streams.
fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x6A09_E667_F3BC_C909);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Smooth value-noise texture in two muted colours plus a soft gradient.
fn background(size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    const GRID: usize = 5;
    let lattice: Vec<f32> = (0..GRID * GRID).map(|_| rng.random::<f32>()).collect();
    let base_hue = rng.random_range(0.0..360.0);
    let a = hsv_to_rgb(
        base_hue,
        rng.random_range(0.05..0.25),
        rng.random_range(0.25..0.55),
    );
    let b = hsv_to_rgb(
        (base_hue + rng.random_range(60.0..180.0)) % 360.0,
        rng.random_range(0.05..0.25),
        rng.random_range(0.45..0.8),
    );
    let fine: f32 = rng.random_range(0.03..0.08);
    let cell = (size as f32 - 1.0).max(1.0) / (GRID - 1) as f32;
    RgbImage::from_fn(size, size, |x, y| {
        let (gx, gy) = (x as f32 / cell, y as f32 / cell);
        let (ix, iy) = ((gx as usize).min(GRID - 2), (gy as usize).min(GRID - 2));
        let (tx, ty) = (smooth(gx - ix as f32), smooth(gy - iy as f32));
        let at = |i: usize, j: usize| lattice[j * GRID + i];
        let top = at(ix, iy) * (1.0 - tx) + at(ix + 1, iy) * tx;
        let bottom = at(ix, iy + 1) * (1.0 - tx) + at(ix + 1, iy + 1) * tx;
        let noise = top * (1.0 - ty) + bottom * ty;
        // A fine deterministic grain so the background is textured, not flat.
        let grain = (((x * 7919 + y * 104_729) % 97) as f32 / 97.0 - 0.5) * fine;
        let t = (noise + grain).clamp(0.0, 1.0);
        Rgb(std::array::from_fn(|c| {
            (a[c] * (1.0 - t) + b[c] * t).clamp(0.0, 255.0) as u8
        }))
    })
}

fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

/// Blends `colour` over the pixels where the signed distance (pixels) is negative, with a
/// one-pixel anti-aliased edge; marks the mask where coverage ≥ ½.
fn paint(
    image: &mut RgbImage,
    mut mask: Option<&mut GrayImage>,
    colour: [f32; 3],
    sdf: impl Fn(f32, f32) -> f32,
) {
    let (w, h) = image.dimensions();
    for y in 0..h {
        for x in 0..w {
            let distance = sdf(x as f32 + 0.5, y as f32 + 0.5);
            let coverage = (0.5 - distance).clamp(0.0, 1.0);
            if coverage <= 0.0 {
                continue;
            }
            let pixel = image.get_pixel_mut(x, y);
            for c in 0..3 {
                pixel.0[c] =
                    (pixel.0[c] as f32 * (1.0 - coverage) + colour[c] * coverage).round() as u8;
            }
            if let Some(mask) = mask.as_deref_mut() {
                if coverage >= 0.5 {
                    mask.put_pixel(x, y, image::Luma([255]));
                }
            }
        }
    }
}

fn sd_box(u: f32, v: f32, half_w: f32, half_h: f32) -> f32 {
    let (qx, qy) = (u.abs() - half_w, v.abs() - half_h);
    let outside = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt();
    outside + qx.max(qy).min(0.0)
}

/// Signed distance in units of the shape radius (negative inside).
fn shape_sdf(shape: Shape, u: f32, v: f32) -> f32 {
    match shape {
        Shape::Circle => (u * u + v * v).sqrt() - 1.0,
        Shape::Square => sd_box(u, v, 0.75, 0.75),
        Shape::Triangle => sd_regular_star(u, v, 3, 1.0, 1.0),
        Shape::Star => sd_regular_star(u, v, 5, 1.0, 0.45),
        Shape::Cross => sd_box(u, v, 0.95, 0.3).min(sd_box(u, v, 0.3, 0.95)),
        Shape::Ring => ((u * u + v * v).sqrt() - 0.75).abs() - 0.25,
    }
}

/// Polygon with `points` outer vertices at radius `outer` alternating with inner vertices at
/// `inner` (inner = outer gives a regular polygon's vertices at the same radius).
fn sd_regular_star(u: f32, v: f32, points: usize, outer: f32, inner: f32) -> f32 {
    let n = if inner == outer { points } else { points * 2 };
    let vertex = |i: usize| {
        let angle = std::f32::consts::TAU * i as f32 / n as f32 - std::f32::consts::FRAC_PI_2;
        let r = if inner == outer || i % 2 == 0 {
            outer
        } else {
            inner
        };
        (r * angle.cos(), r * angle.sin())
    };
    // Inigo Quilez's exact polygon SDF.
    let mut d = f32::MAX;
    let mut sign = 1.0;
    let mut j = n - 1;
    for i in 0..n {
        let (vi, vj) = (vertex(i), vertex(j));
        let (ex, ey) = (vj.0 - vi.0, vj.1 - vi.1);
        let (wx, wy) = (u - vi.0, v - vi.1);
        let t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0);
        let (bx, by) = (wx - ex * t, wy - ey * t);
        d = d.min(bx * bx + by * by);
        let c1 = v >= vi.1;
        let c2 = v < vj.1;
        let c3 = ex * wy > ey * wx;
        if (c1 && c2 && c3) || (!c1 && !c2 && !c3) {
            sign = -sign;
        }
        j = i;
    }
    sign * d.sqrt()
}

/// HSV (degrees, 0–1, 0–1) to RGB in 0–255.
fn hsv_to_rgb(hue_deg: f32, saturation: f32, value: f32) -> [f32; 3] {
    let c = value * saturation;
    let h = (hue_deg.rem_euclid(360.0)) / 60.0;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = value - c;
    [(r + m) * 255.0, (g + m) * 255.0, (b + m) * 255.0]
}

/// torchvision `ImageFolder`: `root/<class>/<image>`; classes and files sorted by name.
pub struct ImageFolder {
    root: PathBuf,
    class_names: Vec<String>,
    files: Vec<(PathBuf, usize)>,
}

/// Largest image side decoded; bigger images are refused rather than allocated.
pub const MAX_DECODE_SIDE_PX: u32 = 16_384;
/// Decoded images are downscaled so their longer side is at most this (crops are far smaller).
pub const MAX_KEPT_SIDE_PX: u32 = 2048;

impl ImageFolder {
    pub fn open(root: &Path) -> Result<Self, DataError> {
        if !root.is_dir() {
            return Err(DataError::MissingRoot {
                path: root.to_path_buf(),
            });
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DataError::Io { path, source }
        };
        let mut class_dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(io(root))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.is_dir())
            .collect();
        class_dirs.sort();
        if class_dirs.is_empty() {
            return Err(DataError::NoClasses {
                path: root.to_path_buf(),
            });
        }
        let mut class_names = Vec::new();
        let mut files = Vec::new();
        for (label, dir) in class_dirs.iter().enumerate() {
            class_names.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            let mut images: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(io(dir))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| path.is_file() && is_image_file(path))
                .collect();
            images.sort();
            files.extend(images.into_iter().map(|path| (path, label)));
        }
        if files.is_empty() {
            return Err(DataError::Empty {
                path: root.to_path_buf(),
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            class_names,
            files,
        })
    }
}

/// By extension, as torchvision does: the formats the `image` crate knows.
fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| image::ImageFormat::from_extension(ext))
        .is_some()
}

/// Decodes any format/bit depth/colour type to RGB8 with bounded memory.
pub fn load_rgb(path: &Path) -> Result<RgbImage, DataError> {
    let decode_error = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = image::ImageReader::open(path)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|err| decode_error(err.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DECODE_SIDE_PX);
    limits.max_image_height = Some(MAX_DECODE_SIDE_PX);
    limits.max_alloc = Some(1 << 30);
    reader.limits(limits);
    let decoded = reader
        .decode()
        .map_err(|err| decode_error(err.to_string()))?;
    let decoded = if decoded.width().max(decoded.height()) > MAX_KEPT_SIDE_PX {
        decoded.resize(
            MAX_KEPT_SIDE_PX,
            MAX_KEPT_SIDE_PX,
            image::imageops::FilterType::Triangle,
        )
    } else {
        decoded
    };
    Ok(decoded.to_rgb8())
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn get(&self, index: usize) -> Result<Sample, DataError> {
        let (path, label) = &self.files[index % self.files.len().max(1)];
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

    #[test]
    fn synthetic_is_deterministic_balanced_and_masked() {
        let data = SyntheticShapes::new(3, 64, 60);
        let (a, mask_a) = data.sample_with_mask(7);
        let (b, mask_b) = data.sample_with_mask(7);
        assert_eq!(a.image, b.image);
        assert_eq!(mask_a, mask_b);
        assert_ne!(data.sample_with_mask(8).0.image, a.image);
        assert_ne!(
            SyntheticShapes::new(4, 64, 60).get(7).unwrap().image,
            a.image
        );
        let mut counts = [0; 6];
        for i in 0..60 {
            counts[data.get(i).unwrap().label] += 1;
        }
        assert_eq!(counts, [10; 6]);
        for size in [16, 32, 64, 224] {
            let data = SyntheticShapes::new(0, size, 12);
            for i in 0..12 {
                let (sample, mask) = data.sample_with_mask(i);
                assert_eq!(sample.image.dimensions(), (size, size));
                let fg = mask.pixels().filter(|p| p.0[0] == 255).count();
                let total = (size * size) as usize;
                assert!(
                    fg > total / 50 && fg < total * 9 / 10,
                    "size {size} index {i}: {fg}/{total}"
                );
            }
        }
    }

    #[test]
    fn image_folder_reads_many_formats_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        image::RgbImage::from_pixel(20, 10, Rgb([1, 2, 3]))
            .save(a.join("rgb.png"))
            .unwrap();
        image::GrayImage::from_pixel(8, 8, image::Luma([9]))
            .save(a.join("gray.jpg"))
            .unwrap();
        image::RgbaImage::from_pixel(8, 8, image::Rgba([1, 2, 3, 4]))
            .save(b.join("rgba.png"))
            .unwrap();
        image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(8, 8, Rgb([60000, 0, 0]))
            .save(b.join("deep.png"))
            .unwrap();
        std::fs::write(b.join("notes.txt"), "not an image").unwrap();
        std::fs::write(b.join("zz_broken.jpg"), b"garbage").unwrap();
        let folder = ImageFolder::open(dir.path()).unwrap();
        assert_eq!(folder.len(), 5);
        assert_eq!(folder.class_names(), ["a", "b"]);
        for i in 0..4 {
            assert!(folder.get(i).is_ok(), "{i}");
        }
        // Sorted: a/gray.jpg, a/rgb.png, b/deep.png (16-bit), b/rgba.png, b/zz_broken.jpg.
        assert_eq!(folder.get(2).unwrap().image.get_pixel(0, 0).0[0], 233);
        let err = folder.get(4).err().unwrap().to_string();
        assert!(err.contains("zz_broken.jpg"), "{err}");

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            ImageFolder::open(empty.path()),
            Err(DataError::NoClasses { .. })
        ));
        std::fs::create_dir(empty.path().join("c")).unwrap();
        assert!(matches!(
            ImageFolder::open(empty.path()),
            Err(DataError::Empty { .. })
        ));
    }
}
