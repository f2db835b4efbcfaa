//! `SyntheticShapes`: the embedded procedural data set (six shape classes on a cluttered,
//! textured background) and its renderer, signed distances and colours included.

use super::{seed_from, DataError, Dataset, Sample};
use image::{GrayImage, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
///
/// Long: every pixel of the scene in one pass, with the signed distance of each shape kind
/// inline so the coverage rule above reads in one place.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
