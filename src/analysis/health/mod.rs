//! The run's diagnosis: which regime the recent rows are in ([`Regime`], the app's chip and
//! the `regime` column of `metrics.csv`), the one truth table that names it ([`classify`] in
//! `rules.rs`), the one window every front end builds it from ([`RegimeWindow`]) and what in
//! the settings causes it ([`findings`]), each with the toggle or config key that fixes it.
//! Pure logic on plain numbers, so the chip, the CLI's log, the CSV, the watcher and the tests
//! come from one source.

mod findings;
mod rules;
mod window;

pub use findings::{findings, group_thousands, LOSS_AT_LN_K_NATS, RANK_FALLING};
pub use rules::{
    classify, rank_is_valid, RecentLoss, DIMENSIONAL_DROP, DIVERSE_FRACTION, LEARNING_GRACE_STEPS,
    MIN_STEPS, MI_DROP, MI_FALL, NO_INFORMATION_FRACTION, ONE_HOT_FRACTION, RANK_ROWS_PER_DIM,
    UNIFORM_FRACTION, WINDOW_STEPS,
};
pub use window::{Cadence, HealthSample, RegimeWindow, RunShape};

use serde::{Deserialize, Serialize};

/// The regime of a run, from its recent rows (see the table in `rules.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Regime {
    /// Too few rows, unreadable numbers, or a teacher that has not yet learned anything.
    #[default]
    WarmingUp,
    /// The teacher's output depends on the image (I large), h(Pt) between the extremes, and
    /// (where validly measured) the features keep their directions.
    Healthy,
    /// Each image's target is one-hot but the batch spreads over many prototypes: a very low
    /// teacher temperature with centering on. Not a collapse.
    SharpDiverse,
    /// h(Pt) ≈ 0 and I ≈ 0: every image gets the same one-hot output (whatever the KL).
    #[serde(alias = "one-dimension")]
    OnePrototype,
    /// h(Pt) ≈ 0 and the batch uses only a few prototypes: one-hot targets, collapse under way.
    #[serde(rename = "one-hot")]
    OneHotTargets,
    /// I has fallen to near 0, or below half of its best: the teacher's output says less and
    /// less about the image.
    Collapsing,
    /// h(Pt) ≈ ln K: the teacher's output is uniform for every image, whatever the student does.
    Uniform,
    /// h(Pt) and I look healthy but the teacher's features span only a few directions:
    /// partial (dimensional) collapse, invisible in the loss.
    Dimensional,
}

impl Regime {
    pub const ALL: [Regime; 8] = [
        Regime::WarmingUp,
        Regime::Healthy,
        Regime::SharpDiverse,
        Regime::OnePrototype,
        Regime::OneHotTargets,
        Regime::Collapsing,
        Regime::Uniform,
        Regime::Dimensional,
    ];

    /// The one lower-case word of the `regime` column and the CLI's log.
    pub fn word(self) -> &'static str {
        match self {
            Regime::WarmingUp => "warming-up",
            Regime::Healthy => "healthy",
            Regime::SharpDiverse => "sharp-diverse",
            Regime::OnePrototype => "one-prototype",
            Regime::OneHotTargets => "one-hot",
            Regime::Collapsing => "collapsing",
            Regime::Uniform => "uniform",
            Regime::Dimensional => "dimensional",
        }
    }

    /// The chip's text.
    pub fn label(self) -> &'static str {
        match self {
            Regime::WarmingUp => "warming up",
            Regime::Healthy => "healthy",
            Regime::SharpDiverse => "sharp but diverse",
            Regime::OnePrototype => "collapsed: one prototype",
            Regime::OneHotTargets => "collapsing: few prototypes",
            Regime::Collapsing => "collapsing: losing the image",
            Regime::Uniform => "collapsed: uniform teacher",
            Regime::Dimensional => "dimensional collapse",
        }
    }

    /// Whether the run is collapsing in any way.
    pub fn is_collapse(self) -> bool {
        !matches!(
            self,
            Regime::WarmingUp | Regime::Healthy | Regime::SharpDiverse
        )
    }

    /// Two or three plain sentences a teacher can read out.
    pub fn explanation(self) -> &'static str {
        match self {
            Regime::WarmingUp => {
                "Not enough to say yet: too few steps, or the teacher's output does not yet \
                 depend on the image. Watch I, the information the teacher's output carries \
                 about the image (h(mean Pt) minus h(Pt)): it rises as the teacher learns."
            }
            Regime::Healthy => {
                "The teacher's output depends on the image (I is well above 0) and is neither \
                 uniform nor one-hot (h(Pt) sits between 0 and ln K). Centering and sharpening \
                 are balancing each other."
            }
            Regime::SharpDiverse => {
                "Not a collapse: each image's target is one-hot (h(Pt) near 0), but different \
                 images get different prototypes (I is large), so the targets still tell the \
                 images apart. A very low teacher temperature with centering on does this; the \
                 targets then act as hard cluster labels and carry at most ln B nats per batch. \
                 Raise the teacher temperature (0.04 to 0.07 in the paper) for softer targets."
            }
            Regime::OnePrototype => {
                "Collapsed: one prototype wins for every image. h(Pt) and h(mean Pt) are both \
                 near 0, so the target says nothing about the image (I = 0); the student copies \
                 that constant answer and KL falls to 0. Centering is what prevents this."
            }
            Regime::OneHotTargets => {
                "Every image's target is one-hot (h(Pt) near 0) and the whole batch uses only a \
                 few prototypes (h(mean Pt) is the log of how many), so the targets carry little \
                 about the image: collapse to one prototype is under way."
            }
            Regime::Collapsing => {
                "The teacher's output says less and less about which image it saw: I = h(mean \
                 Pt) - h(Pt) has fallen near 0 or below half of its best, although h(Pt) is \
                 neither 0 nor ln K yet. Every collapse drives I to 0; act before it gets there."
            }
            Regime::Uniform => {
                "Collapsed: the teacher says 'every prototype equally likely' for every image \
                 (h(Pt) at ln K), so its targets carry no information (I = 0), whatever the \
                 student does: a KL above 0 only means the student has not matched a target that \
                 teaches nothing. Sharpening (a low teacher temperature) and a momentum teacher \
                 normally prevent this."
            }
            Regime::Dimensional => {
                "h(Pt) and I look healthy, but the teacher's features span fewer and fewer \
                 directions: the effective rank has fallen below half of its best, a partial \
                 (dimensional) collapse the loss does not show. Keep the checkpoint of the best \
                 step (marked on the rank plot). Very sharp targets lead here: with a teacher \
                 temperature of 0.01 (collapse-dimensional) the rank halves, with tiny's 0.02 \
                 it holds; raising it mid-run to 0.04 tipped that run into uniform collapse \
                 instead, so change dino.teacher_temp for the next run rather than live."
            }
        }
    }

    /// The explanation with the numbers that led to it, and a fix that fits the settings.
    pub fn explain(self, recent: &RecentLoss) -> String {
        if self == Regime::WarmingUp {
            return self.explanation().to_string();
        }
        let mut text = format!("{} {}", self.explanation(), measured(recent));
        if let Some(fix) = self.fix(recent) {
            text.push(' ');
            text.push_str(fix);
        }
        text
    }

    /// What to do where [`findings`] (causes in the settings: centering or sharpening off, no
    /// momentum) have nothing to say: never "turn centering on" when it is on.
    fn fix(self, recent: &RecentLoss) -> Option<&'static str> {
        match self {
            Regime::OnePrototype | Regime::OneHotTargets if recent.centering => Some(
                "Centering is on, so the teacher is too sharp for it: raise the teacher \
                 temperature (slider, dino.teacher_temp).",
            ),
            _ => None,
        }
    }
}

/// The numbers behind a verdict, in the words of the panel.
fn measured(recent: &RecentLoss) -> String {
    let percent = |v: f64| 100.0 * v / recent.ln_k.max(f64::MIN_POSITIVE);
    let k = recent.ln_k.exp().round();
    let over = if recent.window <= 1 {
        "This checkpoint".to_string()
    } else {
        format!("Last {} steps", recent.window)
    };
    let mut text = format!(
        "{over}: h(Pt) = {:.2} nats ({:.0} % of ln K = {:.2}), KL = {:.2}, h(mean Pt) = {:.2} \
         (about {:.0} of {k:.0} prototypes in use), I = {:.2} nats of at most {:.2}",
        recent.teacher_entropy,
        percent(recent.teacher_entropy),
        recent.ln_k,
        recent.kl,
        recent.batch_mean_entropy,
        recent.batch_mean_entropy.exp(),
        recent.teacher_mi,
        recent.max_mi(),
    );
    if recent.best_mi > recent.teacher_mi + 0.005 {
        text.push_str(&format!(" (best {:.2})", recent.best_mi));
    }
    text.push('.');
    if let Some(rank) = recent.effective_rank {
        text.push(' ');
        text.push_str(&rank_words(rank, recent.rank_rows, recent.embed_dim));
        if !recent.rank_valid {
            text.push_str(&format!(
                ": too few rows to compare (the verdict uses it from {} rows)",
                RANK_ROWS_PER_DIM * recent.embed_dim
            ));
        } else if let Some(best) = recent.best_rank.filter(|b| *b > 0.0) {
            text.push_str(&format!(
                ", {:.0} % of the run's best {best:.1}",
                100.0 * rank / best
            ));
        }
        text.push('.');
    }
    text
}

/// "Effective rank 24.1 of at most 32 (rows)": a rank over n rows of d-wide features is
/// bounded by min(n, d), and the bound says which.
pub fn rank_words(rank: f64, rows: Option<usize>, embed_dim: usize) -> String {
    match (rows, embed_dim) {
        (Some(n), d) if d == 0 || n < d => format!("Effective rank {rank:.1} of at most {n} rows"),
        (_, d) if d > 0 => format!("Effective rank {rank:.1} of d = {d}"),
        _ => format!("Effective rank {rank:.1}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recent(h: f64, mean_h: f64, kl: f64) -> RecentLoss {
        rules::tiny_window(h, mean_h, kl)
    }

    #[test]
    fn explanations_carry_the_numbers_and_a_fix_that_fits() {
        // Centering off on `tiny`, 13 steps after the untick (issue 15).
        let mut one_hot = recent(0.09, 0.78, 0.9);
        one_hot.centering = false;
        let text = Regime::OneHotTargets.explain(&one_hot);
        assert!(text.contains("about 2 of 1024 prototypes"), "{text}");
        assert!(text.contains("h(Pt) = 0.09 nats (1 % of ln K"), "{text}");
        assert!(text.contains("I = 0.69 nats of at most 3.47"), "{text}");
        // Centering off: the finding names the fix (tick it), the verdict adds nothing.
        assert!(!text.contains("raise the teacher temperature"), "{text}");
        assert!(findings(&one_hot).join(" ").contains("under 'centering'"));
        // With centering on, the fix is never "turn centering on".
        one_hot.centering = true;
        let text = Regime::OneHotTargets.explain(&one_hot);
        assert!(text.contains("Centering is on"), "{text}");
        assert!(text.contains("raise the teacher temperature"), "{text}");
        assert!(findings(&one_hot).is_empty());
        // A watched checkpoint speaks of itself, not of steps.
        let mut watched = recent(1024f64.ln(), 1024f64.ln(), 1.38);
        watched.window = 1;
        let text = Regime::Uniform.explain(&watched);
        assert!(text.starts_with("Collapsed: the teacher says"), "{text}");
        assert!(text.contains("This checkpoint: h(Pt) = 6.93"), "{text}");
    }

    #[test]
    fn a_rank_over_few_rows_says_its_bound() {
        let mut run = recent(4.69, 6.4, 0.8);
        run.embed_dim = 384;
        run.effective_rank = Some(24.1);
        run.rank_rows = Some(32);
        run.rank_valid = false;
        let text = Regime::Healthy.explain(&run);
        assert!(
            text.contains("Effective rank 24.1 of at most 32 rows: too few rows to compare (the verdict uses it from 768 rows)."),
            "{text}"
        );
        run.embed_dim = 96;
        run.rank_rows = Some(2048);
        run.rank_valid = true;
        run.effective_rank = Some(6.1);
        run.best_rank = Some(13.9);
        let text = Regime::Dimensional.explain(&run);
        assert!(
            text.contains("Effective rank 6.1 of d = 96, 44 % of the run's best 13.9."),
            "{text}"
        );
    }

    #[test]
    fn words_round_trip_through_serde_and_old_words_still_read() {
        for regime in Regime::ALL {
            assert_eq!(word_through_csv(regime.word()), regime);
        }
        // Runs written before the table was rewritten.
        assert_eq!(word_through_csv("one-dimension"), Regime::OnePrototype);
    }

    /// Reads a word back as the `regime` column of a CSV.
    fn word_through_csv(word: &str) -> Regime {
        let text = format!("regime\n{word}\n");
        #[derive(Deserialize)]
        struct Row {
            regime: Regime,
        }
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let row: Row = reader.deserialize().next().unwrap().unwrap();
        row.regime
    }
}
