//! Names what the curves show, for the status chip and the explanation panel. Pure logic on
//! recent metric means, so the chip's wording and the tests come from one source.

/// The regime the run is in, from the last few steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollapseState {
    /// Too few steps to say.
    WarmingUp,
    /// h(Pt) strictly between 0 and ln K and KL(Pt || Ps) clearly positive.
    Healthy,
    /// h(Pt) → 0 and KL → 0: every image gets the same one-hot teacher output.
    OneDimension,
    /// h(Pt) → ln K and KL → 0: the teacher output is uniform for every image.
    Uniform,
}

/// Recent means of the decomposition, in nats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecentLoss {
    pub teacher_entropy: f64,
    pub kl: f64,
    pub batch_mean_entropy: f64,
    pub ln_k: f64,
    pub steps: usize,
}

/// Steps averaged before the chip names a regime.
pub const MIN_STEPS: usize = 10;

/// Thresholds as fractions of ln K, so they mean the same for K = 64 and K = 65536.
/// A one-dimension collapse has h below 5 % of ln K; a uniform one above 97 %; in both the
/// student has caught up with the teacher (KL under 2 % of ln K).
pub fn classify(recent: &RecentLoss) -> CollapseState {
    if recent.steps < MIN_STEPS || recent.ln_k <= 0.0 {
        return CollapseState::WarmingUp;
    }
    let h = recent.teacher_entropy / recent.ln_k;
    let kl = recent.kl / recent.ln_k;
    if h < 0.05 && kl < 0.05 {
        CollapseState::OneDimension
    } else if h > 0.97 && kl < 0.02 {
        CollapseState::Uniform
    } else {
        CollapseState::Healthy
    }
}

impl CollapseState {
    /// The chip's text.
    pub fn label(self) -> &'static str {
        match self {
            CollapseState::WarmingUp => "warming up",
            CollapseState::Healthy => "healthy",
            CollapseState::OneDimension => "collapsing to one dimension",
            CollapseState::Uniform => "collapsing to uniform",
        }
    }

    /// Two or three plain sentences a teacher can read out.
    pub fn explanation(self) -> &'static str {
        match self {
            CollapseState::WarmingUp => {
                "Not enough steps yet to tell. Watch h(Pt), the teacher's entropy, and KL(Pt || Ps), \
                 how far the student is from the teacher."
            }
            CollapseState::Healthy => {
                "The teacher's outputs are neither uniform nor one-hot (h(Pt) sits between 0 and \
                 ln K), and the student still has something to learn from them (KL > 0). \
                 Centering and sharpening are balancing each other."
            }
            CollapseState::OneDimension => {
                "One output dimension wins for every image: the teacher entropy h(Pt) has fallen \
                 to 0 and the student copies that constant answer, so KL falls to 0. Centering is what \
                 normally prevents this; turn it on to recover."
            }
            CollapseState::Uniform => {
                "The teacher says 'every prototype equally likely' for every image: h(Pt) has \
                 risen to ln K and KL falls to 0 because a uniform target is trivial to match. \
                 Sharpening (a low teacher temperature) normally prevents this."
            }
        }
    }

    /// Chip colour as RGB.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            CollapseState::WarmingUp => [140, 140, 140],
            CollapseState::Healthy => [60, 170, 90],
            CollapseState::OneDimension => [220, 80, 60],
            CollapseState::Uniform => [225, 160, 40],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recent(h: f64, kl: f64) -> RecentLoss {
        RecentLoss {
            teacher_entropy: h,
            kl,
            batch_mean_entropy: h,
            ln_k: 1024f64.ln(),
            steps: 50,
        }
    }

    #[test]
    fn names_the_three_regimes_from_measured_runs() {
        // Values measured at the end of the three presets (README, configs/).
        assert_eq!(classify(&recent(4.26, 0.95)), CollapseState::Healthy);
        assert_eq!(
            classify(&recent(0.0002, 0.004)),
            CollapseState::OneDimension
        );
        assert_eq!(classify(&recent(6.907, 0.019)), CollapseState::Uniform);
        // Near ln K but the student is still learning: not (yet) collapsed.
        assert_eq!(classify(&recent(6.8, 0.3)), CollapseState::Healthy);
        let mut early = recent(0.0, 0.0);
        early.steps = 3;
        assert_eq!(classify(&early), CollapseState::WarmingUp);
    }
}
