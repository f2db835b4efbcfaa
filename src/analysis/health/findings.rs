//! Causes the settings or the numbers point to, each naming the toggle or config key that
//! fixes it. Independent of the regime, so a cause shows before its collapse does (a teacher
//! temperature above the student's, say).

use super::rules::RecentLoss;

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
    // The settings come with the rows: before the first one (a watch still waiting for its
    // first checkpoint) there is nothing to judge, and the defaults would read as causes.
    if recent.steps == 0 {
        return found;
    }
    if recent.steps >= recent.min_steps.max(1)
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

    /// The shared window with h(mean Pt) = h(Pt): the findings do not read I.
    fn recent(h: f64, kl: f64) -> RecentLoss {
        crate::analysis::health::rules::tiny_window(h, h, kl)
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
    fn no_rows_no_causes() {
        // A watched run before its first checkpoint: momentum 0, sharpening and centering
        // off are defaults, not its settings.
        assert!(findings(&RecentLoss::default()).is_empty());
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(65536), "65 536");
        assert_eq!(group_thousands(1024), "1 024");
        assert_eq!(group_thousands(64), "64");
    }
}
