//! The rows a watched checkpoint's representation readings are taken from. A rank over n rows
//! of d-wide features is at most min(n, d), so the decision probe (16 images, 32 global
//! crops) cannot read a ViT-S (d = 384): 352 directions would be zero by construction. This
//! probe gives the teacher [`RANK_ROWS_PER_DIM`] × d rows: two global crops of each probe
//! image, then of embedded shapes until there are enough, in chunks so memory stays that of
//! one chunk.

use crate::analysis::geometry::EmbeddingWindow;
use crate::analysis::health::RANK_ROWS_PER_DIM;
use crate::augment::AugmentConfig;
use crate::model::DinoModel;
use crate::train::probe::ProbeBatch;
use crate::train::representation::Reading;
use burn::prelude::*;

/// Images run through the teacher at once: 64 global crops, ~40 MB of 224-px crops.
const CHUNK_IMAGES: usize = 32;

/// Seed offset of the shapes that top the probe images up, so they differ from the probe's.
const SHAPES_SEED: u64 = 0x5eed_5a9e;

/// The images behind the readings and how they are cropped (the probe's own settings, so the
/// readings see what the decomposition sees).
#[derive(Clone, Debug)]
pub struct RankProbe {
    images: Vec<image::RgbImage>,
    augment: AugmentConfig,
    seed: u64,
}

impl RankProbe {
    pub fn new(images: Vec<image::RgbImage>, augment: AugmentConfig, seed: u64) -> Self {
        Self {
            images,
            augment,
            seed,
        }
    }

    /// The probe's images, then embedded shapes.
    fn image(&self, index: usize) -> image::RgbImage {
        if let Some(image) = self.images.get(index) {
            return image.clone();
        }
        // The generator renders any index; the count only matters for a dataset's length.
        let shapes = crate::data::SyntheticShapes::new(
            self.seed.wrapping_add(SHAPES_SEED),
            self.augment.global_crop_size_px.max(1),
            1,
        );
        shapes.sample_with_mask(index - self.images.len()).0.image
    }

    /// Rows a network of width `embed_dim` is read from.
    pub fn rows_for(embed_dim: usize) -> usize {
        (RANK_ROWS_PER_DIM * embed_dim).max(2)
    }

    /// The teacher's readings over [`RankProbe::rows_for`] rows of global crops (without local
    /// crops: the teacher never sees them); `None` when the network cannot take the crops.
    pub fn reading(
        &self,
        teacher: &DinoModel,
        embed_dim: usize,
        bottleneck_dim: usize,
        device: &Device,
    ) -> Option<Reading> {
        let rows = Self::rows_for(embed_dim);
        let images = rows.div_ceil(2);
        let augment = AugmentConfig {
            local_crops_number: 0,
            ..self.augment.clone()
        };
        let mut backbone = EmbeddingWindow::new(embed_dim, 2 * images);
        let mut head = EmbeddingWindow::new(bottleneck_dim, 2 * images);
        let mut start = 0;
        while start < images {
            let end = (start + CHUNK_IMAGES).min(images);
            let chunk: Vec<image::RgbImage> = (start..end).map(|i| self.image(i)).collect();
            // Each image keeps its own crop seed whatever the chunking.
            let batch =
                ProbeBatch::from_images(&chunk, &augment, self.seed.wrapping_add(start as u64));
            let (globals, _) = batch.tensors(device);
            let (features, bottleneck) = crate::device::on_compute_pool(|| {
                crate::train::probe::probe_features(teacher, globals)
            })?;
            backbone.push(&features);
            head.push(&bottleneck);
            start = end;
        }
        Some(Reading {
            backbone: backbone.geometry()?,
            head: head.geometry(),
        })
    }
}
