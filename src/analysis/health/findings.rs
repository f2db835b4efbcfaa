//! Causes the settings or the numbers point to, each naming the toggle or config key that
//! fixes it. Independent of the regime, so a cause shows before its collapse does (a teacher
//! temperature above the student's, say).

use super::rules::RecentLoss;

/// Loss within this many nats of ln K means the targets carry nothing (dino#246, dinov2#407).
pub const LOSS_AT_LN_K_NATS: f64 = 0.05;

/// Causes the settings or the numbers point to, each naming the toggle or key that fixes it;
/// empty when nothing stands out. Independent of the regime, so a cause shows before its
/// collapse does (e.g. a teacher temperature above the student's).
pub fn findings(recent: &RecentLoss) -> Vec<String> {
    let mut found = Vec::new();
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
            "Centering is off: nothing stops one prototype from winning for every image. Tick \
             'centering' (dino.centering = true)."
                .to_string(),
        );
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
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(65536), "65 536");
        assert_eq!(group_thousands(1024), "1 024");
        assert_eq!(group_thousands(64), "64");
    }
}
