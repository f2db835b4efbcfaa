//! The loss and its decomposition on a fixed probe batch, for networks that were not trained
//! here (an official checkpoint being watched): what the run's own trainer would have reported
//! for those crops, with the checkpoint's center and teacher temperature.

use crate::model::DinoModel;
use crate::train::loss::{dino_loss, LossOptions, LossStats};
use burn::prelude::*;

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
