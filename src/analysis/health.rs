//! The run's diagnosis: which regime the last few steps are in ([`Regime`], the app's chip and
//! the `regime` column of `metrics.csv`) and what in the settings causes it ([`findings`]),
//! each with the toggle or config key that fixes it. Pure logic on recent means, so the chip,
//! the CLI's log, the CSV and the tests come from one source.

use crate::config::CenteringMode;
use serde::{Deserialize, Serialize};

/// The regime of a run, from the last [`WINDOW_STEPS`] steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Regime {
    /// Too few steps to say.
    #[default]
    WarmingUp,
    /// h(Pt) strictly between 0 and ln K, KL(Pt || Ps) clearly positive and (when measured)
    /// the features spread over many directions.
    Healthy,
    /// h(Pt) → 0 and KL → 0: every image gets the same one-hot teacher output.
    #[serde(rename = "one-dimension")]
    OneDimension,
    /// h(Pt) near 0 while the student still differs (KL > 0): each image's target is one-hot
    /// and the batch spreads over a few prototypes (h(mean Pt) ≈ ln of their number). The
    /// collapse is under way; KL follows h down (centering off on `tiny`).
    #[serde(rename = "one-hot")]
    OneHotTargets,
    /// h(Pt) → ln K and KL → 0: the teacher output is uniform for every image.
    Uniform,
    /// h(Pt) and KL look healthy but the teacher's features span only a few directions:
    /// partial (dimensional) collapse, invisible in the loss.
    Dimensional,
}

/// Means over the chip's window, in nats, with the settings the steps ran under.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecentLoss {
    pub teacher_entropy: f64,
    pub kl: f64,
    pub batch_mean_entropy: f64,
    pub loss: f64,
    pub ln_k: f64,
    /// Steps seen so far in the run.
    pub steps: usize,
    /// Latest effective rank of the teacher's backbone features (`None`: not measured), the
    /// highest of the run so far, and the features' width d (the largest possible value).
    pub effective_rank: Option<f64>,
    pub best_rank: Option<f64>,
    pub embed_dim: usize,
    /// Settings of the latest step.
    pub teacher_temp: f64,
    pub student_temp: f64,
    pub teacher_momentum: f64,
    pub centering: bool,
    pub sharpening: bool,
    /// DINOv2's tools at the latest step: which centering, the KoLeo weight, the KoLeo value
    /// and the global-crop rows with a zero-distance neighbour (`None`: not measured).
    pub centering_mode: CenteringMode,
    pub koleo_weight: f64,
    pub koleo: Option<f64>,
    pub koleo_duplicates: Option<usize>,
}

/// Steps seen before a regime is named.
pub const MIN_STEPS: usize = 10;

/// Steps averaged for the verdict: short, so a collapse is named within a few steps of it
/// starting (the curves themselves show the longer trend).
pub const WINDOW_STEPS: usize = 5;

/// Effective rank below this fraction of the run's best so far, with h and KL healthy, is
/// dimensional collapse. Relative to the run's own best because what a healthy rank is
/// depends on the data and the model: on `tiny` (6 shape classes, d = 96) a healthy run
/// peaks at 13.7 and settles at 9.3 (68 %), while `collapse-dimensional` falls from 13.9 to
/// 6.1 (44 %) with h(Pt) at 63 % of ln K (measured, README).
pub const DIMENSIONAL_DROP: f64 = 0.5;

/// Thresholds as fractions of ln K, so they mean the same for K = 64 and K = 65536.
/// A one-dimension collapse has h below 5 % of ln K; a uniform one above 97 %; in both the
/// student has caught up with the teacher (KL under 2 % of ln K).
pub fn classify(recent: &RecentLoss) -> Regime {
    if recent.steps < MIN_STEPS || recent.ln_k <= 0.0 {
        return Regime::WarmingUp;
    }
    let h = recent.teacher_entropy / recent.ln_k;
    let kl = recent.kl / recent.ln_k;
    if h < 0.05 && kl < 0.05 {
        Regime::OneDimension
    } else if h < 0.05 {
        Regime::OneHotTargets
    } else if h > 0.97 && kl < 0.02 {
        Regime::Uniform
    } else if is_dimensional(recent) {
        Regime::Dimensional
    } else {
        Regime::Healthy
    }
}

fn is_dimensional(recent: &RecentLoss) -> bool {
    match (recent.effective_rank, recent.best_rank) {
        (Some(rank), Some(best)) => rank < DIMENSIONAL_DROP * best,
        _ => false,
    }
}

impl Regime {
    pub const ALL: [Regime; 6] = [
        Regime::WarmingUp,
        Regime::Healthy,
        Regime::OneDimension,
        Regime::OneHotTargets,
        Regime::Uniform,
        Regime::Dimensional,
    ];

    /// The one lower-case word of the `regime` column and the CLI's log.
    pub fn word(self) -> &'static str {
        match self {
            Regime::WarmingUp => "warming-up",
            Regime::Healthy => "healthy",
            Regime::OneDimension => "one-dimension",
            Regime::OneHotTargets => "one-hot",
            Regime::Uniform => "uniform",
            Regime::Dimensional => "dimensional",
        }
    }

    /// The chip's text.
    pub fn label(self) -> &'static str {
        match self {
            Regime::WarmingUp => "warming up",
            Regime::Healthy => "healthy",
            Regime::OneDimension => "collapsing to one dimension",
            Regime::OneHotTargets => "collapsing: one-hot targets",
            Regime::Uniform => "collapsing to uniform",
            Regime::Dimensional => "dimensional collapse",
        }
    }

    /// Whether the run is collapsing in any way.
    pub fn is_collapse(self) -> bool {
        !matches!(self, Regime::WarmingUp | Regime::Healthy)
    }

    /// Two or three plain sentences a teacher can read out.
    pub fn explanation(self) -> &'static str {
        match self {
            Regime::WarmingUp => {
                "Not enough steps yet to tell. Watch h(Pt), the teacher's entropy, and KL(Pt || Ps), \
                 how far the student is from the teacher."
            }
            Regime::Healthy => {
                "The teacher's outputs are neither uniform nor one-hot (h(Pt) sits between 0 and \
                 ln K), and the student still has something to learn from them (KL > 0). \
                 Centering and sharpening are balancing each other."
            }
            Regime::OneDimension => {
                "One output dimension wins for every image: the teacher entropy h(Pt) has fallen \
                 to 0 and the student copies that constant answer, so KL falls to 0. Centering is what \
                 normally prevents this; turn it on to recover."
            }
            Regime::OneHotTargets => {
                "Every image's target is one-hot (h(Pt) near 0) and the batch uses only a few \
                 prototypes (h(mean Pt) is the log of how many). The student has not caught up \
                 yet, so KL is still above 0 and falling: collapse is under way. Centering \
                 normally prevents this; turn it on to recover."
            }
            Regime::Uniform => {
                "The teacher says 'every prototype equally likely' for every image: h(Pt) has \
                 risen to ln K and KL falls to 0 because a uniform target is trivial to match. \
                 Sharpening (a low teacher temperature) normally prevents this."
            }
            Regime::Dimensional => {
                "h(Pt) and KL look healthy, but the teacher's features span fewer and fewer \
                 directions: the effective rank has fallen below half of its best, a partial \
                 (dimensional) collapse the loss does not show. Keep the checkpoint of the best \
                 step (marked on the rank plot). Very sharp targets lead here: with a teacher \
                 temperature of 0.01 (collapse-dimensional) the rank halves, with tiny's 0.02 \
                 it holds; raising it mid-run to 0.04 tipped that run into uniform collapse \
                 instead, so change dino.teacher_temp for the next run rather than live."
            }
        }
    }

    /// The explanation with the numbers that led to it, for the explanation panel.
    pub fn explain(self, recent: &RecentLoss) -> String {
        let percent = |v: f64| 100.0 * v / recent.ln_k.max(f64::MIN_POSITIVE);
        let k = recent.ln_k.exp().round();
        let mut measured = format!(
            "Last {WINDOW_STEPS} steps: h(Pt) = {:.2} nats ({:.0} % of ln K = {:.2}), \
             KL = {:.2}, h(mean Pt) = {:.2}: about {:.0} of {k:.0} prototypes in use.",
            recent.teacher_entropy,
            percent(recent.teacher_entropy),
            recent.ln_k,
            recent.kl,
            recent.batch_mean_entropy,
            recent.batch_mean_entropy.exp()
        );
        if let (Some(rank), true) = (recent.effective_rank, recent.embed_dim > 0) {
            measured.push_str(&format!(
                " Effective rank {rank:.1} of d = {}",
                recent.embed_dim
            ));
            if let Some(best) = recent.best_rank.filter(|b| *b > 0.0) {
                measured.push_str(&format!(
                    ", {:.0} % of the run's best {best:.1}",
                    100.0 * rank / best
                ));
            }
            measured.push('.');
        }
        match self {
            Regime::WarmingUp => self.explanation().to_string(),
            _ => format!("{} {measured}", self.explanation()),
        }
    }
}

/// Loss within this many nats of ln K means the targets carry nothing (dino#246, dinov2#407).
pub const LOSS_AT_LN_K_NATS: f64 = 0.05;

/// An effective rank under this fraction of the run's best, with KoLeo off, is named as a
/// cause before the rank halves (the `dimensional` regime).
pub const RANK_FALLING: f64 = 0.75;

/// Causes the settings or the numbers point to, each naming the toggle or key that fixes it;
/// empty when nothing stands out. Independent of the regime, so a cause shows before its
/// collapse does (e.g. a teacher temperature above the student's).
pub fn findings(recent: &RecentLoss) -> Vec<String> {
    let mut found = Vec::new();
    if recent.steps >= MIN_STEPS
        && recent.ln_k > 0.0
        && (recent.loss - recent.ln_k).abs() < LOSS_AT_LN_K_NATS
    {
        found.push(format!(
            "The loss sits at ln K = {:.2} for K = {}: uniform collapse (the teacher's targets \
             carry no information). Lower the teacher temperature (slider, dino.teacher_temp) \
             and keep sharpening on.",
            recent.ln_k,
            group_thousands(recent.ln_k.exp().round() as u64)
        ));
    }
    if recent.teacher_momentum < 1e-6 {
        found.push(
            "Teacher momentum is 0: the teacher is a copy of the student, and the paper's run \
             without a momentum teacher collapsed. Raise the momentum slider \
             (dino.momentum_teacher, reference 0.996)."
                .to_string(),
        );
    }
    if recent.student_temp > 0.0 && recent.teacher_temp > recent.student_temp + 1e-9 {
        found.push(format!(
            "The teacher temperature {:.3} is above the student's {:.3}: the targets are flatter \
             than the predictions, which drives towards uniform collapse. Lower it (slider, \
             dino.teacher_temp; the paper uses 0.04 to 0.07).",
            recent.teacher_temp, recent.student_temp
        ));
    } else if !recent.sharpening {
        found.push(
            "Sharpening is off: the teacher uses the student's temperature, so nothing keeps its \
             targets peaked. Tick 'sharpening' (dino.sharpening = true)."
                .to_string(),
        );
    }
    if !recent.centering {
        found.push(
            "Centering is off: nothing stops one prototype from winning for every image. Pick \
             'ema' (DINO) or 'sinkhorn' (DINOv2) under 'centering' (dino.centering = true, or \
             \"sinkhorn\")."
                .to_string(),
        );
    }
    found.extend(recipe_findings(recent));
    found
}

/// The findings about DINOv2's tools: KoLeo while the rank falls, and a KoLeo blown up by
/// zero-distance neighbours.
fn recipe_findings(recent: &RecentLoss) -> Vec<String> {
    let mut found = Vec::new();
    // Only while the targets look sound: with centering off or h(Pt) near 0 the rank falls
    // because the whole output collapses, and the other findings name that cause.
    let targets_sound = recent.centering && recent.teacher_entropy > 0.05 * recent.ln_k;
    let falling = match (recent.effective_rank, recent.best_rank) {
        (Some(rank), Some(best))
            if targets_sound
                && recent.koleo_weight <= 0.0
                && best > 0.0
                && rank < RANK_FALLING * best =>
        {
            Some((rank, best))
        }
        _ => None,
    };
    if let Some((rank, best)) = falling {
        found.push(format!(
            "KoLeo is off while the effective rank falls ({rank:.1}, {:.0} % of the run's \
             best {best:.1}): nothing pushes the features apart. Try a KoLeo weight of 0.1 \
             (slider, dino.koleo_weight; DINOv2's value).",
            100.0 * rank / best
        ));
    }
    let duplicates = recent
        .koleo_duplicates
        .filter(|rows| *rows > 0 && recent.koleo_weight > 0.0);
    if let Some(rows) = duplicates {
        let value = recent
            .koleo
            .map(|v| format!(" reads {v:.2}:"))
            .unwrap_or_default();
        found.push(format!(
            "KoLeo{value} {rows} global-crop {} a neighbour at zero distance, and each adds \
             about 16 / B to it (-ln of 1e-8·(1 + √d), dinov2 #143): the same image twice in a \
             batch, a batch of one, or features collapsed together. Remove duplicate images, use \
             a batch above 1, or lower the KoLeo weight (dino.koleo_weight).",
            if rows == 1 { "row has" } else { "rows have" }
        ));
    }
    found
}

/// 65536 → "65 536" (a thin space would not survive every terminal).
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recent(h: f64, kl: f64) -> RecentLoss {
        RecentLoss {
            teacher_entropy: h,
            kl,
            batch_mean_entropy: h,
            loss: h + kl,
            ln_k: 1024f64.ln(),
            steps: 50,
            teacher_temp: 0.04,
            student_temp: 0.1,
            teacher_momentum: 0.996,
            centering: true,
            sharpening: true,
            ..RecentLoss::default()
        }
    }

    #[test]
    fn names_the_three_regimes_from_measured_runs() {
        // Values measured at the end of the three presets (README, configs/).
        assert_eq!(classify(&recent(4.26, 0.95)), Regime::Healthy);
        assert_eq!(classify(&recent(0.0002, 0.004)), Regime::OneDimension);
        assert_eq!(classify(&recent(6.907, 0.019)), Regime::Uniform);
        // Near ln K but the student is still learning: not (yet) collapsed.
        assert_eq!(classify(&recent(6.8, 0.3)), Regime::Healthy);
        // Centering off on `tiny` (K = 1024), measured 13 steps after the untick: one-hot
        // targets over ~2 prototypes while KL is still well above 0 (issue 15).
        let mut one_hot = recent(0.09, 0.9);
        one_hot.batch_mean_entropy = 0.69;
        assert_eq!(classify(&one_hot), Regime::OneHotTargets);
        let text = Regime::OneHotTargets.explain(&one_hot);
        assert!(text.contains("about 2 of 1024 prototypes"), "{text}");
        assert!(text.contains("h(Pt) = 0.09 nats (1 % of ln K"), "{text}");
        let mut early = recent(0.0, 0.0);
        early.steps = 3;
        assert_eq!(classify(&early), Regime::WarmingUp);
    }

    #[test]
    fn low_effective_rank_with_healthy_loss_is_dimensional_collapse() {
        // `tiny` at its end (healthy) and `collapse-dimensional` (measured, README).
        let mut run = recent(4.69, 0.80);
        run.embed_dim = 96;
        run.best_rank = Some(13.7);
        run.effective_rank = Some(9.3);
        assert_eq!(classify(&run), Regime::Healthy);
        run.best_rank = Some(13.9);
        run.effective_rank = Some(6.1);
        assert_eq!(classify(&run), Regime::Dimensional);
        let text = Regime::Dimensional.explain(&run);
        assert!(
            text.contains("Effective rank 6.1 of d = 96, 44 % of the run's best 13.9."),
            "{text}"
        );
        // No reading yet: never dimensional.
        run.effective_rank = None;
        assert_eq!(classify(&run), Regime::Healthy);
        // The loss-based collapses are named first: they are the louder signal.
        let mut one_dim = recent(0.0002, 0.004);
        one_dim.embed_dim = 96;
        one_dim.effective_rank = Some(1.0);
        one_dim.best_rank = Some(14.0);
        assert_eq!(classify(&one_dim), Regime::OneDimension);
    }

    #[test]
    fn findings_name_the_cause_and_the_key() {
        assert!(findings(&recent(4.26, 0.95)).is_empty());
        // Loss stuck at ln K with K = 65536 (dino#246): the number users do not recognise.
        let mut stuck = recent(11.08, 0.0);
        stuck.ln_k = 65536f64.ln();
        let text = findings(&stuck).join(" ");
        assert!(
            text.contains("ln K = 11.09 for K = 65 536: uniform collapse"),
            "{text}"
        );
        let mut copy = recent(4.0, 0.5);
        copy.teacher_momentum = 0.0;
        assert!(findings(&copy)[0].contains("dino.momentum_teacher"));
        let mut hot = recent(4.0, 0.5);
        hot.teacher_temp = 0.2;
        assert!(findings(&hot)[0].contains("teacher temperature 0.200 is above the student's"));
        let mut off = recent(4.0, 0.5);
        off.centering = false;
        off.sharpening = false;
        let text = findings(&off).join(" ");
        assert!(text.contains("dino.sharpening = true") && text.contains("dino.centering = true"));
    }

    #[test]
    fn findings_name_dinov2s_tools() {
        // `collapse-dimensional` without KoLeo: the rank at 44 % of its best (README).
        let mut falling = recent(4.4, 0.9);
        falling.best_rank = Some(13.9);
        falling.effective_rank = Some(6.1);
        let text = findings(&falling).join(" ");
        assert!(
            text.contains(
                "KoLeo is off while the effective rank falls (6.1, 44 % of the run's best 13.9)"
            ) && text.contains("weight of 0.1"),
            "{text}"
        );
        // With KoLeo on, or the rank near its best, nothing is said.
        falling.koleo_weight = 0.1;
        assert!(findings(&falling).is_empty());
        falling.koleo_weight = 0.0;
        falling.effective_rank = Some(12.0);
        assert!(findings(&falling).is_empty());
        // In a one-dimension collapse the cause is elsewhere (centering), not KoLeo.
        let mut collapsed = recent(0.0002, 0.004);
        collapsed.best_rank = Some(14.0);
        collapsed.effective_rank = Some(1.0);
        assert!(!findings(&collapsed).join(" ").contains("KoLeo"));
        // Zero-distance neighbours blow KoLeo up; named only while its weight is on.
        let mut duplicates = recent(4.0, 0.9);
        duplicates.koleo = Some(3.1);
        duplicates.koleo_duplicates = Some(2);
        assert!(findings(&duplicates).is_empty());
        duplicates.koleo_weight = 0.1;
        let text = findings(&duplicates).join(" ");
        assert!(
            text.contains("KoLeo reads 3.10: 2 global-crop rows have a neighbour at zero distance")
                && text.contains("dinov2 #143"),
            "{text}"
        );
    }

    #[test]
    fn words_round_trip_through_serde() {
        for regime in Regime::ALL {
            let json = format!("\"{}\"", regime.word());
            let back: Regime = word_through_csv(&json);
            assert_eq!(back, regime);
        }
        assert_eq!(group_thousands(65536), "65 536");
        assert_eq!(group_thousands(1024), "1 024");
        assert_eq!(group_thousands(64), "64");
    }

    /// Reads a word back as the `regime` column of a CSV.
    fn word_through_csv(quoted: &str) -> Regime {
        let text = format!("regime\n{}\n", quoted.trim_matches('"'));
        #[derive(Deserialize)]
        struct Row {
            regime: Regime,
        }
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let row: Row = reader.deserialize().next().unwrap().unwrap();
        row.regime
    }
}
