//! The loss and its decomposition on a fixed probe batch, for networks that were not trained
//! here (an official checkpoint being watched): what the run's own trainer would have reported
//! for those crops, with the checkpoint's center and teacher temperature. The batch itself
//! ([`ProbeBatch`]) and its default images live here too.

use crate::augment::AugmentConfig;
use crate::model::DinoModel;
use crate::train::loss::{dino_loss, LossOptions, LossStats};
use burn::prelude::*;

/// Images in the default probe batch: the bundled photos, then the embedded shapes.
pub const DEFAULT_PROBE_IMAGES: usize = 16;

/// The default probe: the bundled photos and embedded shapes up to [`DEFAULT_PROBE_IMAGES`]
/// (enough rows for the representation readings), the same for every checkpoint.
pub fn default_probe_images() -> Vec<image::RgbImage> {
    use crate::data::{Dataset, SyntheticShapes};
    let mut images: Vec<image::RgbImage> = crate::data::sample_photos()
        .into_iter()
        .map(|(_, image)| image)
        .collect();
    let shapes = SyntheticShapes::new(0, 224, DEFAULT_PROBE_IMAGES);
    let missing = DEFAULT_PROBE_IMAGES.saturating_sub(images.len());
    images.extend((0..missing).filter_map(|i| shapes.get(i).ok().map(|s| s.image)));
    images
}

/// Fixed crops every checkpoint is evaluated on: `globals` `[2·B, 3, g, g]` and `locals`
/// `[L·B, 3, l, l]`, crop-major, as host floats.
#[derive(Clone, Debug)]
pub struct ProbeBatch {
    pub globals: (Vec<f32>, [usize; 4]),
    pub locals: Option<(Vec<f32>, [usize; 4])>,
}

impl ProbeBatch {
    /// DINO's multi-crop views of `images` with a fixed seed (the run's crop sizes).
    pub fn from_images(images: &[image::RgbImage], augment: &AugmentConfig, seed: u64) -> Self {
        use rand::SeedableRng;
        let crops: Vec<crate::augment::MultiCrop> = images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(i as u64));
                crate::augment::multi_crop(image, augment, augment.local_crops_number, &mut rng)
            })
            .collect();
        let b = crops.len();
        let (g, l) = (
            augment.global_crop_size_px as usize,
            augment.local_crop_size_px as usize,
        );
        let globals: Vec<f32> = (0..2)
            .flat_map(|v| crops.iter().flat_map(move |c| c.globals[v].iter().copied()))
            .collect();
        let n_local = augment.local_crops_number;
        let locals: Vec<f32> = (0..n_local)
            .flat_map(|v| crops.iter().flat_map(move |c| c.locals[v].iter().copied()))
            .collect();
        Self {
            globals: (globals, [2 * b, 3, g, g]),
            locals: (n_local > 0).then_some((locals, [n_local * b, 3, l, l])),
        }
    }

    pub(crate) fn tensors(&self, device: &Device) -> (Tensor<4>, Option<Tensor<4>>) {
        let tensor = |(values, shape): &(Vec<f32>, [usize; 4])| {
            Tensor::<4>::from_data(TensorData::new(values.clone(), *shape), device)
        };
        (tensor(&self.globals), self.locals.as_ref().map(tensor))
    }
}

/// Teacher on the two global crops (`globals`: `[2·B, 3, H, W]`, crop-major), student on all
/// crops (one backbone pass per resolution, as `MultiCropWrapper`), the official DINO loss with
/// `center` (`[K]`). No drop path: both networks as evaluated, not as trained.
pub fn probe_decomposition(
    student: &DinoModel,
    teacher: &DinoModel,
    globals: Tensor<4>,
    locals: Option<Tensor<4>>,
    center: &[f32],
    options: LossOptions,
) -> Option<LossStats> {
    let [global_rows, ..] = globals.dims();
    let batch = global_rows / 2;
    if batch == 0 || global_rows % 2 != 0 {
        return None;
    }
    let local_rows = locals.as_ref().map_or(0, |l| l.dims()[0]);
    if !local_rows.is_multiple_of(batch) {
        return None;
    }
    let n_crops = 2 + local_rows / batch;
    let device = globals.device();
    let teacher_logits = teacher
        .forward_multi_crop(vec![globals.clone()], None)
        .logits;
    let mut groups = vec![globals];
    groups.extend(locals);
    let student_logits = student.forward_multi_crop(groups, None).logits;
    let center =
        Tensor::<2>::from_data(TensorData::new(center.to_vec(), [1, center.len()]), &device);
    let out = dino_loss(student_logits, teacher_logits, center, n_crops, options);
    let values = out.stats.into_data_as::<f32>();
    LossStats::from_values(values.as_slice::<f32>().ok()?)
}

/// The teacher's CLS features and ℓ2-normalised bottleneck of the global crops, as host rows
/// (`[rows, embed_dim]`, `[rows, bottleneck_dim]`): the representation readings of a
/// checkpoint that was not trained here.
pub fn probe_features(teacher: &DinoModel, globals: Tensor<4>) -> Option<(Vec<f32>, Vec<f32>)> {
    let out = teacher.forward_multi_crop_with_features(vec![globals], None);
    let features = out.features?.into_data_as::<f32>();
    let bottleneck = out.bottleneck?.into_data_as::<f32>();
    Some((
        features.as_slice::<f32>().ok()?.to_vec(),
        bottleneck.as_slice::<f32>().ok()?.to_vec(),
    ))
}
