//! Datasets: an embedded procedural one (`SyntheticShapes`) and a torchvision-style
//! `ImageFolder` (root/class_name/*.png).

pub mod datasets;

use image::{GrayImage, ImageError, ImageReader, Limits, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

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

// ---------------------------------------------------------------------------------------------
// Synthetic shapes
// ---------------------------------------------------------------------------------------------

/// Procedural shapes on a cluttered, textured background: learnable by a tiny ViT in minutes
/// and needing no download. Every image is a pure function of (seed, index, size).
pub struct SyntheticShapes {
    seed: u64,
    image_size_px: u32,
    num_images: usize,
    class_names: Vec<String>,
}

/// Background distractor: small and muted so it never competes with the class shape.
enum Distractor {
    Blob {
        centre: [f32; 2],
        radii: [f32; 2],
        cos_sin: [f32; 2],
        colour: [f32; 3],
    },
    Line {
        from: [f32; 2],
        to: [f32; 2],
        half_width: f32,
        colour: [f32; 3],
    },
}

/// Everything random about one image, drawn in size-independent units (fractions of the side),
/// so the same (seed, index) gives the same scene at any resolution.
struct Scene {
    class: usize,
    /// Background base colour and smooth-noise grids (value offsets) at two octaves.
    bg_colour: [f32; 3],
    bg_gradient: [f32; 3],
    noise_coarse: [[f32; 5]; 5],
    noise_fine: [[f32; 9]; 9],
    distractors: Vec<Distractor>,
    centre: [f32; 2],
    radius: f32,
    cos_sin: [f32; 2],
    colour: [f32; 3],
    /// Direction and strength of a soft shading ramp across the shape.
    shade: [f32; 3],
}

impl SyntheticShapes {
    pub const CLASS_NAMES: [&'static str; 6] =
        ["circle", "square", "triangle", "star", "cross", "ring"];

    pub fn new(seed: u64, image_size_px: u32, num_images: usize) -> Self {
        Self {
            seed,
            image_size_px,
            num_images,
            class_names: Self::CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The image, its label and the ground-truth mask of the main shape (255 = foreground).
    /// Indices past `len()` still render (the generator is defined for every index).
    pub fn sample_with_mask(&self, index: usize) -> (Sample, GrayImage) {
        let scene = self.scene(index);
        let (image, mask) = render(&scene, self.image_size_px);
        (
            Sample {
                image,
                label: scene.class,
            },
            mask,
        )
    }

    fn scene(&self, index: usize) -> Scene {
        let mut rng = ChaCha8Rng::seed_from_u64(seed_from(&[self.seed, index as u64, 0x5A9E]));
        // Index-derived class keeps the classes balanced for any num_images.
        let class = index % Self::CLASS_NAMES.len();

        let bg_hue = rng.random::<f32>();
        let bg_colour = hsv_to_rgb(
            bg_hue,
            rng.random_range(0.05..0.3),
            rng.random_range(0.3..0.7),
        );
        let mut bg_gradient = [0.0; 3];
        let angle = rng.random_range(0.0..std::f32::consts::TAU);
        let strength = rng.random_range(0.0..0.25);
        bg_gradient[0] = angle.cos() * strength;
        bg_gradient[1] = angle.sin() * strength;
        bg_gradient[2] = rng.random_range(-0.05..0.05);
        let mut noise_coarse = [[0.0; 5]; 5];
        for v in noise_coarse.iter_mut().flatten() {
            *v = rng.random_range(-0.15..0.15);
        }
        let mut noise_fine = [[0.0; 9]; 9];
        for v in noise_fine.iter_mut().flatten() {
            *v = rng.random_range(-0.07..0.07);
        }

        let n_blobs = rng.random_range(2..=5);
        let n_lines = rng.random_range(1..=3);
        let mut distractors = Vec::with_capacity(n_blobs + n_lines);
        for _ in 0..n_blobs {
            let a = rng.random_range(0.0..std::f32::consts::PI);
            distractors.push(Distractor::Blob {
                centre: [rng.random(), rng.random()],
                radii: [rng.random_range(0.02..0.08), rng.random_range(0.02..0.06)],
                cos_sin: [a.cos(), a.sin()],
                colour: muted_colour(&mut rng),
            });
        }
        for _ in 0..n_lines {
            distractors.push(Distractor::Line {
                from: [rng.random(), rng.random()],
                to: [rng.random(), rng.random()],
                half_width: rng.random_range(0.004..0.012),
                colour: muted_colour(&mut rng),
            });
        }

        // Diameter 35–70 % of the side; the centre keeps the shape (mostly) inside the image.
        let radius = rng.random_range(0.175..0.35);
        let centre = [
            rng.random_range(radius..=1.0 - radius),
            rng.random_range(radius..=1.0 - radius),
        ];
        let rot = rng.random_range(0.0..std::f32::consts::TAU);
        // Six hue families 60° apart, ±10° within a class.
        let hue = (class as f32 / 6.0 + rng.random_range(-0.028..0.028)).rem_euclid(1.0);
        let colour = hsv_to_rgb(
            hue,
            rng.random_range(0.6..0.95),
            rng.random_range(0.75..1.0),
        );
        let shade_angle = rng.random_range(0.0..std::f32::consts::TAU);
        let shade_strength = rng.random_range(0.0..0.25);
        Scene {
            class,
            bg_colour,
            bg_gradient,
            noise_coarse,
            noise_fine,
            distractors,
            centre,
            radius,
            cos_sin: [rot.cos(), rot.sin()],
            colour,
            shade: [shade_angle.cos(), shade_angle.sin(), shade_strength],
        }
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
            Self::CLASS_NAMES.len()
        )
    }
}

fn muted_colour(rng: &mut ChaCha8Rng) -> [f32; 3] {
    hsv_to_rgb(
        rng.random(),
        rng.random_range(0.05..0.3),
        rng.random_range(0.25..0.75),
    )
}

/// `h`, `s`, `v` in [0, 1].
pub(crate) fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = h.rem_euclid(1.0) * 6.0;
    let sector = h6.floor();
    let f = h6 - sector;
    let p = v * (1.0 - s);
    let q = v * (1.0 - s * f);
    let t = v * (1.0 - s * (1.0 - f));
    match sector as u32 % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// Smooth (smoothstep-interpolated) value noise from an (N+1)×(N+1) grid over the unit square.
fn value_noise<const N1: usize>(grid: &[[f32; N1]; N1], u: f32, v: f32) -> f32 {
    let cells = (N1 - 1) as f32;
    let (gx, gy) = ((u * cells).clamp(0.0, cells), (v * cells).clamp(0.0, cells));
    let (x0, y0) = ((gx as usize).min(N1 - 2), (gy as usize).min(N1 - 2));
    let (fx, fy) = (gx - x0 as f32, gy - y0 as f32);
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let top = grid[y0][x0] + (grid[y0][x0 + 1] - grid[y0][x0]) * sx;
    let bottom = grid[y0 + 1][x0] + (grid[y0 + 1][x0 + 1] - grid[y0 + 1][x0]) * sx;
    top + (bottom - top) * sy
}

fn length(x: f32, y: f32) -> f32 {
    (x * x + y * y).sqrt()
}

fn sd_box(x: f32, y: f32, half_w: f32, half_h: f32) -> f32 {
    let (dx, dy) = (x.abs() - half_w, y.abs() - half_h);
    length(dx.max(0.0), dy.max(0.0)) + dx.max(dy).min(0.0)
}

/// Equilateral triangle with circumradius `r` (Inigo Quilez's exact SDF).
fn sd_triangle(x: f32, y: f32, r: f32) -> f32 {
    const K: f32 = 1.732_050_8;
    let half_side = r * K / 2.0;
    let mut px = x.abs() - half_side;
    let mut py = -y + half_side / K;
    if px + K * py > 0.0 {
        (px, py) = ((px - K * py) / 2.0, (-K * px - py) / 2.0);
    }
    px -= px.clamp(-2.0 * half_side, 0.0);
    -length(px, py) * py.signum()
}

/// Five-pointed star, outer radius `r`, inner/outer ratio `rf` (Inigo Quilez's SDF).
fn sd_star5(x: f32, y: f32, r: f32, rf: f32) -> f32 {
    const K1: [f32; 2] = [0.809_017, -0.587_785_24];
    const K2: [f32; 2] = [-K1[0], K1[1]];
    let (mut px, mut py) = (x.abs(), -y);
    let d1 = 2.0 * (K1[0] * px + K1[1] * py).max(0.0);
    px -= d1 * K1[0];
    py -= d1 * K1[1];
    let d2 = 2.0 * (K2[0] * px + K2[1] * py).max(0.0);
    px -= d2 * K2[0];
    py -= d2 * K2[1];
    px = px.abs();
    py -= r;
    let (bax, bay) = (rf * -K1[1], rf * K1[0] - 1.0);
    let h = ((px * bax + py * bay) / (bax * bax + bay * bay)).clamp(0.0, r);
    length(px - bax * h, py - bay * h) * (py * bax - px * bay).signum()
}

/// Signed distance (fractions of the side; negative inside) of the main shape at local `(x, y)`.
fn shape_sd(class: usize, x: f32, y: f32, r: f32, min_width: f32) -> f32 {
    match class {
        0 => length(x, y) - r,
        1 => sd_box(x, y, 0.8 * r, 0.8 * r),
        2 => sd_triangle(x, y, r),
        3 => sd_star5(x, y, r, 0.45),
        4 => {
            let half_w = (0.28 * r).max(min_width);
            sd_box(x, y, 0.9 * r, half_w).min(sd_box(x, y, half_w, 0.9 * r))
        }
        _ => {
            let half_t = (0.17 * r).max(min_width);
            (length(x, y) - (r - half_t)).abs() - half_t
        }
    }
}

fn blend(dst: &mut [f32; 3], src: [f32; 3], alpha: f32) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += (s - *d) * alpha;
    }
}

/// Renders with analytic anti-aliasing: a pixel's coverage is 0.5 − signed distance (in px),
/// which is exact for straight edges and close enough for these curvatures.
fn render(scene: &Scene, size_px: u32) -> (RgbImage, GrayImage) {
    let size = size_px as f32;
    let px = 1.0 / size.max(1.0);
    let mut image = RgbImage::new(size_px, size_px);
    let mut mask = GrayImage::new(size_px, size_px);
    let [cos, sin] = scene.cos_sin;
    // Thin parts stay at least ~1.5 px wide so tiny renders still have a visible, non-empty mask.
    let min_half_width = 0.75 * px;
    for y in 0..size_px {
        let v = (y as f32 + 0.5) * px;
        for x in 0..size_px {
            let u = (x as f32 + 0.5) * px;
            let texture = value_noise(&scene.noise_coarse, u, v)
                + value_noise(&scene.noise_fine, u, v)
                + scene.bg_gradient[0] * (u - 0.5)
                + scene.bg_gradient[1] * (v - 0.5);
            let mut c = scene.bg_colour.map(|ch| ch + texture);
            c[2] += scene.bg_gradient[2];

            for d in &scene.distractors {
                match d {
                    Distractor::Blob {
                        centre,
                        radii,
                        cos_sin,
                        colour,
                    } => {
                        let (dx, dy) = (u - centre[0], v - centre[1]);
                        if dx.abs() > radii[0] + px || dy.abs() > radii[0] + px {
                            continue;
                        }
                        let lx = dx * cos_sin[0] + dy * cos_sin[1];
                        let ly = -dx * cos_sin[1] + dy * cos_sin[0];
                        // Approximate ellipse distance: scaled unit-circle distance.
                        let k = length(lx / radii[0], ly / radii[1]);
                        let sd = (k - 1.0) * radii[1];
                        let alpha = (0.5 - sd / px).clamp(0.0, 1.0);
                        if alpha > 0.0 {
                            blend(&mut c, *colour, alpha);
                        }
                    }
                    Distractor::Line {
                        from,
                        to,
                        half_width,
                        colour,
                    } => {
                        let (ax, ay) = (u - from[0], v - from[1]);
                        let (bx, by) = (to[0] - from[0], to[1] - from[1]);
                        let t =
                            ((ax * bx + ay * by) / (bx * bx + by * by).max(1e-9)).clamp(0.0, 1.0);
                        let sd = length(ax - bx * t, ay - by * t) - half_width.max(0.5 * px);
                        let alpha = (0.5 - sd / px).clamp(0.0, 1.0);
                        if alpha > 0.0 {
                            blend(&mut c, *colour, alpha);
                        }
                    }
                }
            }

            let (dx, dy) = (u - scene.centre[0], v - scene.centre[1]);
            let (lx, ly) = (dx * cos + dy * sin, -dx * sin + dy * cos);
            let sd = shape_sd(scene.class, lx, ly, scene.radius, min_half_width);
            let alpha = (0.5 - sd / px).clamp(0.0, 1.0);
            if alpha > 0.0 {
                let ramp = 1.0
                    + scene.shade[2] * (dx * scene.shade[0] + dy * scene.shade[1]) / scene.radius;
                blend(&mut c, scene.colour.map(|ch| ch * ramp), alpha);
            }
            if sd <= 0.0 {
                mask.put_pixel(x, y, image::Luma([255]));
            }
            image.put_pixel(
                x,
                y,
                Rgb(c.map(|ch| (ch * 255.0 + 0.5).clamp(0.0, 255.0) as u8)),
            );
        }
    }
    (image, mask)
}

// ---------------------------------------------------------------------------------------------
// ImageFolder
// ---------------------------------------------------------------------------------------------

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
fn is_image_file(path: &Path) -> bool {
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
    let decoded = reader.decode().map_err(|source| match source {
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

    #[test]
    fn synthetic_is_deterministic_and_varied() {
        let ds = SyntheticShapes::new(7, 48, 100);
        let (a, ma) = ds.sample_with_mask(13);
        let (b, mb) = ds.sample_with_mask(13);
        assert_eq!(a.image.as_raw(), b.image.as_raw());
        assert_eq!(ma.as_raw(), mb.as_raw());
        assert_eq!(a.label, b.label);
        let (c, _) = ds.sample_with_mask(14);
        assert_ne!(a.image.as_raw(), c.image.as_raw());
        let other_seed = SyntheticShapes::new(8, 48, 100);
        assert_ne!(
            a.image.as_raw(),
            other_seed.sample_with_mask(13).0.image.as_raw()
        );
        // `get` agrees with `sample_with_mask`.
        let g = ds.get(13).unwrap();
        assert_eq!(g.image.as_raw(), a.image.as_raw());
    }

    #[test]
    fn synthetic_labels_are_balanced() {
        let ds = SyntheticShapes::new(1, 16, 600);
        let mut counts = [0usize; 6];
        for i in 0..ds.len() {
            counts[ds.get(i).unwrap().label] += 1;
        }
        assert_eq!(counts, [100; 6]);
        assert_eq!(ds.class_names().len(), 6);
        assert_eq!(
            ds.describe(),
            "synthetic shapes: 600 images of 16 px, 6 classes"
        );
    }

    #[test]
    fn synthetic_masks_are_partial_at_all_sizes() {
        for size in [16u32, 32, 64, 224] {
            let ds = SyntheticShapes::new(3, size, 60);
            for i in 0..60 {
                let (s, mask) = ds.sample_with_mask(i);
                assert_eq!(s.image.dimensions(), (size, size));
                assert_eq!(mask.dimensions(), (size, size));
                let fg = mask.pixels().filter(|p| p.0[0] == 255).count();
                let total = (size * size) as usize;
                assert!(fg > 0, "size {size} index {i}: empty mask");
                assert!(fg < total, "size {size} index {i}: full mask");
                // 35–70 % diameter shapes cover a sizeable but partial area.
                let frac = fg as f32 / total as f32;
                assert!((0.01..0.6).contains(&frac), "size {size} index {i}: {frac}");
            }
        }
    }

    #[test]
    fn synthetic_shape_colour_follows_class_hue() {
        // Mean foreground colour of the same class is closer than across classes.
        let ds = SyntheticShapes::new(5, 64, 12);
        let mean_fg = |i: usize| {
            let (s, m) = ds.sample_with_mask(i);
            let mut acc = [0f32; 3];
            let mut n = 0f32;
            for (p, q) in s.image.pixels().zip(m.pixels()) {
                if q.0[0] == 255 {
                    for (a, &v) in acc.iter_mut().zip(&p.0) {
                        *a += v as f32;
                    }
                    n += 1.0;
                }
            }
            acc.map(|a| a / n)
        };
        let dist =
            |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>();
        let (c0a, c0b, c3) = (mean_fg(0), mean_fg(6), mean_fg(3));
        assert!(dist(c0a, c0b) < dist(c0a, c3), "{c0a:?} {c0b:?} {c3:?}");
    }

    #[test]
    fn synthetic_is_fast() {
        let ds = SyntheticShapes::new(0, 64, 1000);
        let t = std::time::Instant::now();
        for i in 0..500 {
            std::hint::black_box(ds.get(i).unwrap());
        }
        let per_image_us = t.elapsed().as_secs_f64() * 1e6 / 500.0;
        println!("synthetic 64 px: {per_image_us:.1} µs/image");
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
