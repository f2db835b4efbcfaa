//! Every plotted quantity: its name, what it means, its fixed colour and how to read it from
//! a metrics row. One table for the app's plots, its Export CSV and the figures
//! (`store::figure`).

use crate::store::rows::MetricsRow;

/// Every plotted quantity, with one fixed colour each across all plots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quantity {
    Loss,
    TeacherEntropy,
    Kl,
    BatchMeanEntropy,
    TeacherMi,
    Lr,
    WeightDecay,
    TeacherMomentum,
    TeacherTemp,
    ImagesPerSec,
    EffectiveRank,
    EffectiveRankHead,
    StdNormalized,
    Koleo,
}

impl Quantity {
    pub const ALL: [Quantity; 14] = [
        Quantity::Loss,
        Quantity::TeacherEntropy,
        Quantity::Kl,
        Quantity::BatchMeanEntropy,
        Quantity::TeacherMi,
        Quantity::Lr,
        Quantity::WeightDecay,
        Quantity::TeacherMomentum,
        Quantity::TeacherTemp,
        Quantity::ImagesPerSec,
        Quantity::EffectiveRank,
        Quantity::EffectiveRankHead,
        Quantity::StdNormalized,
        Quantity::Koleo,
    ];
    pub const DECOMPOSITION: [Quantity; 5] = [
        Quantity::Loss,
        Quantity::TeacherEntropy,
        Quantity::Kl,
        Quantity::BatchMeanEntropy,
        Quantity::TeacherMi,
    ];
    pub const SCHEDULES: [Quantity; 4] = [
        Quantity::Lr,
        Quantity::WeightDecay,
        Quantity::TeacherMomentum,
        Quantity::TeacherTemp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Quantity::Loss => "loss H(Pt,Ps)",
            Quantity::TeacherEntropy => "h(Pt)",
            Quantity::Kl => "KL(Pt || Ps)",
            Quantity::BatchMeanEntropy => "h(mean Pt)",
            Quantity::TeacherMi => "I = h(mean Pt) - h(Pt)",
            Quantity::Lr => "learning rate",
            Quantity::WeightDecay => "weight decay",
            Quantity::TeacherMomentum => "teacher momentum",
            Quantity::TeacherTemp => "teacher temperature",
            Quantity::ImagesPerSec => "images / s",
            Quantity::EffectiveRank => "effective rank (backbone)",
            Quantity::EffectiveRankHead => "effective rank (head bottleneck)",
            Quantity::StdNormalized => "std of normalised features",
            Quantity::Koleo => "KoLeo",
        }
    }

    /// What the curve means, for hover tooltips and the explanation panel.
    pub fn explanation(self) -> &'static str {
        match self {
            Quantity::Loss => "The DINO loss: cross-entropy between teacher and student outputs. It equals h(Pt) + KL(Pt || Ps).",
            Quantity::TeacherEntropy => "Entropy of the teacher's output per image. 0 = one-hot (one dimension wins), ln K = uniform.",
            Quantity::Kl => "How far the student is from the teacher. It falls to 0 in both collapse modes: the target carries no information.",
            Quantity::BatchMeanEntropy => "Entropy of the teacher output averaged over the batch. High if images use different prototypes; 0 only if all use the same one.",
            Quantity::TeacherMi => "What the teacher's output tells about which image it saw: h(mean Pt) minus h(Pt), the mutual information between the image and the prototype. 0 in every collapse (one prototype for all, or uniform for all); at most ln B, the line where every image of the batch gets its own prototype. The verdict reads it first.",
            Quantity::Lr => "Learning rate: linear warm-up, then cosine decay (times the lr scale).",
            Quantity::WeightDecay => "Weight decay: cosine from 0.04 to 0.4.",
            Quantity::TeacherMomentum => "EMA momentum of the teacher: cosine towards 1. 0 = the teacher is a copy of the student.",
            Quantity::TeacherTemp => "Teacher temperature actually used. Low = sharp targets; equal to the student's 0.1 when sharpening is off.",
            Quantity::ImagesPerSec => "Training throughput.",
            Quantity::EffectiveRank => "RankMe: how many directions the teacher's CLS features really use, over the last 2048 rows. At most d (the width); it falls towards 1 in any collapse, and alone when the collapse is dimensional (h and KL look fine). The highest value is the best checkpoint without labels.",
            Quantity::EffectiveRankHead => "RankMe of the head's normalised bottleneck (the input of the last layer), over the same rows.",
            Quantity::StdNormalized => "Std of the L2-normalised backbone features per dimension, averaged. About 1/sqrt(d) when they spread out, 0 when every image maps to the same direction.",
            Quantity::Koleo => "KoLeo (DINOv2): minus the mean log distance from each of the student's normalised CLS features to its nearest neighbour in the batch, per global crop. Lower = spread out over the sphere; measured at every weight, added to the loss times its weight. It jumps by about 16/B for each row with a duplicate (zero-distance) neighbour.",
        }
    }

    pub fn rgb(self) -> [u8; 3] {
        match self {
            Quantity::Loss => [90, 140, 230],
            Quantity::TeacherEntropy => [230, 120, 40],
            Quantity::Kl => [60, 180, 90],
            Quantity::BatchMeanEntropy => [170, 100, 210],
            Quantity::TeacherMi => [235, 200, 60],
            Quantity::Lr => [90, 140, 230],
            Quantity::WeightDecay => [200, 90, 120],
            Quantity::TeacherMomentum => [60, 170, 170],
            Quantity::TeacherTemp => [230, 120, 40],
            Quantity::ImagesPerSec => [120, 120, 220],
            Quantity::EffectiveRank => [80, 170, 220],
            Quantity::EffectiveRankHead => [150, 200, 120],
            Quantity::StdNormalized => [220, 110, 170],
            Quantity::Koleo => [200, 160, 60],
        }
    }

    /// The row's value; `None` for a representation reading the step did not take.
    pub fn of(self, m: &MetricsRow) -> Option<f64> {
        Some(match self {
            Quantity::Loss => m.loss,
            Quantity::TeacherEntropy => m.teacher_entropy,
            Quantity::Kl => m.kl,
            Quantity::BatchMeanEntropy => m.batch_mean_entropy,
            Quantity::TeacherMi => m.teacher_mi(),
            Quantity::Lr => m.lr,
            Quantity::WeightDecay => m.weight_decay,
            Quantity::TeacherMomentum => m.teacher_momentum,
            Quantity::TeacherTemp => m.teacher_temp,
            Quantity::ImagesPerSec => m.images_per_sec,
            Quantity::EffectiveRank => m.effective_rank?,
            Quantity::EffectiveRankHead => m.effective_rank_head?,
            Quantity::StdNormalized => m.std_normalized?,
            Quantity::Koleo => m.koleo?,
        })
    }
}
