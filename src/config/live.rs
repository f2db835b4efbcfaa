//! The settings a run can change between two steps (the live ablation switches): one
//! [`LiveSettings`] used by the trainer, the app's controls and checkpoints; one [`Toggle`] per
//! change, parsed from `--toggle-at`; and the allowed range of each, used by config
//! validation, [`LiveSettings::apply`] and the sliders alike.

use super::Config;
use std::ops::RangeInclusive;

/// Where a live value may go, and the part of it a slider shows (the extremes are allowed in a
/// config but make the slider useless).
#[derive(Clone, Debug, PartialEq)]
pub struct LiveRange<T> {
    pub allowed: RangeInclusive<T>,
    pub slider: RangeInclusive<T>,
}

/// The teacher temperature (and its warm-up start).
pub const TEACHER_TEMP: LiveRange<f64> = LiveRange {
    allowed: 1e-4..=1.0,
    slider: 0.005..=0.2,
};
/// The teacher's base EMA momentum (0 = the teacher copies the student).
pub const MOMENTUM_TEACHER: LiveRange<f64> = LiveRange {
    allowed: 0.0..=1.0,
    slider: 0.0..=1.0,
};
/// Local crops per image (0 = no multi-crop).
pub const LOCAL_CROPS: LiveRange<usize> = LiveRange {
    allowed: 0..=16,
    slider: 0..=10,
};
/// The multiplier on the lr schedule.
pub const LR_SCALE: LiveRange<f64> = LiveRange {
    allowed: 0.0..=100.0,
    slider: 0.05..=20.0,
};

/// Settings the toggles change; the schedules read them every step.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LiveSettings {
    pub centering: bool,
    pub sharpening: bool,
    pub warmup_teacher_temp: f64,
    pub teacher_temp: f64,
    pub momentum_teacher: f64,
    pub local_crops: usize,
    pub lr_scale: f64,
}

/// A change applied between two steps.
#[derive(Clone, Debug, PartialEq)]
pub enum Toggle {
    Centering(bool),
    /// Off: the teacher uses the student temperature (0.1), i.e. no sharpening.
    Sharpening(bool),
    /// Replaces the teacher-temperature schedule with this constant.
    TeacherTemp(f64),
    /// Base EMA momentum (cosine to 1 from here); 0 = no momentum teacher.
    MomentumTeacher(f64),
    /// Local crops per image; 0 = no multi-crop.
    LocalCrops(usize),
    /// Multiplier on the lr schedule.
    LrScale(f64),
}

/// A toggle whose value is outside its [`LiveRange`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{what} = {value} is out of range; allowed {allowed}")]
pub struct OutOfRange {
    pub what: &'static str,
    pub value: String,
    pub allowed: String,
}

fn check_f64(what: &'static str, value: f64, range: &LiveRange<f64>) -> Result<(), OutOfRange> {
    if value.is_finite() && range.allowed.contains(&value) {
        Ok(())
    } else {
        Err(OutOfRange {
            what,
            value: value.to_string(),
            allowed: format!("{} ..= {}", range.allowed.start(), range.allowed.end()),
        })
    }
}

impl LiveSettings {
    /// The values a run starts with.
    pub fn from_config(config: &Config) -> Self {
        Self {
            centering: config.dino.centering,
            sharpening: config.dino.sharpening,
            warmup_teacher_temp: config.dino.warmup_teacher_temp,
            teacher_temp: config.dino.teacher_temp,
            momentum_teacher: config.dino.momentum_teacher,
            local_crops: config.dino.local_crops_number,
            lr_scale: config.optim.lr_scale,
        }
    }

    /// Writes these values into a config (what a resumed or restarted run needs).
    pub fn fold_into(&self, config: &mut Config) {
        config.dino.centering = self.centering;
        config.dino.sharpening = self.sharpening;
        config.dino.warmup_teacher_temp = self.warmup_teacher_temp;
        config.dino.teacher_temp = self.teacher_temp;
        config.dino.momentum_teacher = self.momentum_teacher;
        config.dino.local_crops_number = self.local_crops;
        config.optim.lr_scale = self.lr_scale;
    }

    /// One line for messages: `centering on, sharpening on, teacher temperature 0.02, …`.
    pub fn describe(&self) -> String {
        let on = |flag: bool| if flag { "on" } else { "off" };
        format!(
            "centering {}, sharpening {}, teacher temperature {}, momentum {}, local crops {}, lr scale {}",
            on(self.centering),
            on(self.sharpening),
            self.teacher_temp,
            self.momentum_teacher,
            self.local_crops,
            self.lr_scale
        )
    }

    /// Applies a toggle after checking its range; nothing changes when it is out of range.
    pub fn apply(&mut self, toggle: &Toggle) -> Result<(), OutOfRange> {
        toggle.check()?;
        match *toggle {
            Toggle::Centering(on) => self.centering = on,
            Toggle::Sharpening(on) => self.sharpening = on,
            Toggle::TeacherTemp(t) => {
                // A constant temperature: the warm-up starts where it ends.
                self.warmup_teacher_temp = t;
                self.teacher_temp = t;
            }
            Toggle::MomentumTeacher(m) => self.momentum_teacher = m,
            Toggle::LocalCrops(n) => self.local_crops = n,
            Toggle::LrScale(s) => self.lr_scale = s,
        }
        Ok(())
    }
}

impl Toggle {
    /// Whether the value is within its live range.
    pub fn check(&self) -> Result<(), OutOfRange> {
        match *self {
            Toggle::Centering(_) | Toggle::Sharpening(_) => Ok(()),
            Toggle::TeacherTemp(t) => check_f64("teacher temperature", t, &TEACHER_TEMP),
            Toggle::MomentumTeacher(m) => check_f64("teacher momentum", m, &MOMENTUM_TEACHER),
            Toggle::LocalCrops(n) if LOCAL_CROPS.allowed.contains(&n) => Ok(()),
            Toggle::LocalCrops(n) => Err(OutOfRange {
                what: "local crops",
                value: n.to_string(),
                allowed: format!(
                    "{} ..= {}",
                    LOCAL_CROPS.allowed.start(),
                    LOCAL_CROPS.allowed.end()
                ),
            }),
            Toggle::LrScale(s) => check_f64("lr scale", s, &LR_SCALE),
        }
    }

    /// A short label for plot markers: "centering off", "τt = 0.070".
    pub fn label(&self) -> String {
        let on_off = |on: bool| if on { "on" } else { "off" };
        match self {
            Toggle::Centering(on) => format!("centering {}", on_off(*on)),
            Toggle::Sharpening(on) => format!("sharpening {}", on_off(*on)),
            Toggle::TeacherTemp(t) => format!("τt = {t:.3}"),
            Toggle::MomentumTeacher(m) => format!("momentum = {m:.4}"),
            Toggle::LocalCrops(n) => format!("local crops = {n}"),
            Toggle::LrScale(s) => format!("lr scale = {s:.2}"),
        }
    }
}

impl std::str::FromStr for Toggle {
    type Err = String;

    /// Parses `centering=off`, `sharpening=on`, `teacher_temp=0.07`, `momentum=0`,
    /// `local_crops=0`, `lr_scale=2` (for scripted demos); values outside their live range
    /// are refused here, before any step runs.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}`: expected KEY=VALUE, e.g. centering=off"))?;
        let value = value.trim();
        let switch = || match value {
            "on" | "true" | "1" => Ok(true),
            "off" | "false" | "0" => Ok(false),
            _ => Err(format!("`{text}`: use on or off")),
        };
        let number = || {
            value
                .parse::<f64>()
                .map_err(|_| format!("`{text}`: `{value}` is not a number"))
        };
        let toggle = match key.trim() {
            "centering" => Toggle::Centering(switch()?),
            "sharpening" => Toggle::Sharpening(switch()?),
            "teacher_temp" => Toggle::TeacherTemp(number()?),
            "momentum" | "momentum_teacher" => Toggle::MomentumTeacher(number()?),
            "local_crops" => value
                .parse()
                .map(Toggle::LocalCrops)
                .map_err(|_| format!("`{text}`: `{value}` is not a whole number"))?,
            "lr_scale" => Toggle::LrScale(number()?),
            other => {
                return Err(format!(
                    "`{other}` is not a toggle; use centering, sharpening, teacher_temp, momentum, local_crops or lr_scale"
                ))
            }
        };
        toggle.check().map_err(|err| format!("`{text}`: {err}"))?;
        Ok(toggle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toggles_out_of_range_are_refused_when_parsed_and_applied() {
        let err = "teacher_temp=5".parse::<Toggle>().unwrap_err();
        assert!(err.contains("teacher temperature = 5"), "{err}");
        assert!(err.contains("0.0001 ..= 1"), "{err}");
        assert!("local_crops=17".parse::<Toggle>().is_err());
        assert_eq!(
            "lr_scale=2".parse::<Toggle>().unwrap(),
            Toggle::LrScale(2.0)
        );
        let mut live = LiveSettings::from_config(&Config::default());
        let before = live.clone();
        assert!(live.apply(&Toggle::MomentumTeacher(1.5)).is_err());
        assert_eq!(live, before, "a refused toggle changes nothing");
        live.apply(&Toggle::TeacherTemp(0.07)).unwrap();
        assert_eq!((live.warmup_teacher_temp, live.teacher_temp), (0.07, 0.07));
    }

    #[test]
    fn sliders_stay_inside_the_allowed_ranges() {
        for range in [&TEACHER_TEMP, &MOMENTUM_TEACHER, &LR_SCALE] {
            assert!(range.allowed.contains(range.slider.start()));
            assert!(range.allowed.contains(range.slider.end()));
        }
        assert!(LOCAL_CROPS.allowed.contains(LOCAL_CROPS.slider.end()));
    }
}
