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
/// The KoLeo weight (0 = off; DINOv2 uses 0.1).
pub const KOLEO_WEIGHT: LiveRange<f64> = LiveRange {
    allowed: 0.0..=10.0,
    slider: 0.0..=1.0,
};
/// Sinkhorn-Knopp iterations (a config key, not live).
pub const SINKHORN_ITERATIONS: RangeInclusive<usize> = 1..=100;

/// What keeps the teacher's outputs off a single prototype.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CenteringMode {
    /// DINO: subtract an EMA of the teacher's mean output before the softmax.
    #[default]
    Ema,
    /// DINOv2: the teacher's probabilities are the Sinkhorn-Knopp equipartition of
    /// exp(t/τt) over the batch (every prototype gets 1/K of the mass); no center.
    Sinkhorn,
    /// Neither: nothing stops one prototype from winning for every image.
    Off,
}

impl CenteringMode {
    pub const ALL: [CenteringMode; 3] = [
        CenteringMode::Ema,
        CenteringMode::Sinkhorn,
        CenteringMode::Off,
    ];

    /// The word of configs, `--toggle-at` and the `centering_mode` column.
    pub fn word(self) -> &'static str {
        match self {
            CenteringMode::Ema => "ema",
            CenteringMode::Sinkhorn => "sinkhorn",
            CenteringMode::Off => "off",
        }
    }

    /// Whether any centering is on (the `centering` column: 1 for ema and sinkhorn).
    pub fn is_on(self) -> bool {
        self != CenteringMode::Off
    }

    /// `ema`, `sinkhorn` (also `sinkhorn_knopp`, `sk`), `off`; `on`/`true`/`1` = ema and
    /// `false`/`0` = off, as the old switch read.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "ema" | "on" | "true" | "1" => Some(CenteringMode::Ema),
            "sinkhorn" | "sinkhorn_knopp" | "sinkhorn-knopp" | "sk" => {
                Some(CenteringMode::Sinkhorn)
            }
            "off" | "false" | "0" => Some(CenteringMode::Off),
            _ => None,
        }
    }
}

impl From<bool> for CenteringMode {
    /// The old switch: on = DINO's EMA center.
    fn from(on: bool) -> Self {
        if on {
            CenteringMode::Ema
        } else {
            CenteringMode::Off
        }
    }
}

impl serde::Serialize for CenteringMode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.word())
    }
}

impl<'de> serde::Deserialize<'de> for CenteringMode {
    /// A word, or the old `true`/`false` (also 1/0 in a CSV).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CenteringMode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("ema, sinkhorn or off (true = ema, false = off)")
            }
            fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<CenteringMode, E> {
                Ok(on.into())
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<CenteringMode, E> {
                match value {
                    0 | 1 => Ok((value == 1).into()),
                    _ => Err(E::custom(format!(
                        "centering `{value}`: use ema, sinkhorn or off"
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<CenteringMode, E> {
                self.visit_u64(u64::try_from(value).unwrap_or(u64::MAX))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<CenteringMode, E> {
                CenteringMode::parse(text).ok_or_else(|| {
                    E::custom(format!(
                        "centering `{text}`: use ema, sinkhorn or off (true = ema, false = off)"
                    ))
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Writes ema and off as the old `true` / `false` (configs stay readable as before), sinkhorn
/// as its word.
pub(crate) fn serialize_centering_compat<S: serde::Serializer>(
    mode: &CenteringMode,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match mode {
        CenteringMode::Sinkhorn => serializer.serialize_str(mode.word()),
        other => serializer.serialize_bool(other.is_on()),
    }
}

/// Settings the toggles change; the schedules read them every step.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LiveSettings {
    pub centering: CenteringMode,
    pub sharpening: bool,
    pub warmup_teacher_temp: f64,
    pub teacher_temp: f64,
    pub momentum_teacher: f64,
    pub local_crops: usize,
    pub lr_scale: f64,
    /// KoLeo weight on the student's global-crop CLS features (0 = off).
    #[serde(default)]
    pub koleo_weight: f64,
}

/// A change applied between two steps.
#[derive(Clone, Debug, PartialEq)]
pub enum Toggle {
    /// EMA center, Sinkhorn-Knopp, or neither (`From<bool>`: the old switch).
    Centering(CenteringMode),
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
    /// KoLeo weight; 0 = off.
    KoleoWeight(f64),
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
            koleo_weight: config.dino.koleo_weight,
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
        config.dino.koleo_weight = self.koleo_weight;
    }

    /// One line for messages: `centering ema, sharpening on, teacher temperature 0.02, …`.
    pub fn describe(&self) -> String {
        let on = |flag: bool| if flag { "on" } else { "off" };
        format!(
            "centering {}, sharpening {}, teacher temperature {}, momentum {}, local crops {}, lr scale {}, KoLeo {}",
            self.centering.word(),
            on(self.sharpening),
            self.teacher_temp,
            self.momentum_teacher,
            self.local_crops,
            self.lr_scale,
            self.koleo_weight
        )
    }

    /// Applies a toggle after checking its range; nothing changes when it is out of range.
    pub fn apply(&mut self, toggle: &Toggle) -> Result<(), OutOfRange> {
        toggle.check()?;
        match *toggle {
            Toggle::Centering(mode) => self.centering = mode,
            Toggle::Sharpening(on) => self.sharpening = on,
            Toggle::TeacherTemp(t) => {
                // A constant temperature: the warm-up starts where it ends.
                self.warmup_teacher_temp = t;
                self.teacher_temp = t;
            }
            Toggle::MomentumTeacher(m) => self.momentum_teacher = m,
            Toggle::LocalCrops(n) => self.local_crops = n,
            Toggle::LrScale(s) => self.lr_scale = s,
            Toggle::KoleoWeight(w) => self.koleo_weight = w,
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
            Toggle::KoleoWeight(w) => check_f64("KoLeo weight", w, &KOLEO_WEIGHT),
        }
    }

    /// A short label for plot markers: "centering off", "τt = 0.070".
    pub fn label(&self) -> String {
        let on_off = |on: bool| if on { "on" } else { "off" };
        match self {
            Toggle::Centering(mode) => format!("centering {}", mode.word()),
            Toggle::Sharpening(on) => format!("sharpening {}", on_off(*on)),
            Toggle::TeacherTemp(t) => format!("τt = {t:.3}"),
            Toggle::MomentumTeacher(m) => format!("momentum = {m:.4}"),
            Toggle::LocalCrops(n) => format!("local crops = {n}"),
            Toggle::LrScale(s) => format!("lr scale = {s:.2}"),
            Toggle::KoleoWeight(w) => format!("KoLeo = {w:.2}"),
        }
    }
}

impl std::str::FromStr for Toggle {
    type Err = String;

    /// Parses `centering=off` (or `ema`, `sinkhorn`; `on` = `ema`), `sharpening=on`,
    /// `teacher_temp=0.07`, `momentum=0`, `local_crops=0`, `lr_scale=2`, `koleo=0.1` (for
    /// scripted demos); values outside their live range are refused here, before any step runs.
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
            "centering" => Toggle::Centering(CenteringMode::parse(value).ok_or_else(|| {
                format!("`{text}`: use ema, sinkhorn or off (on = ema)")
            })?),
            "sharpening" => Toggle::Sharpening(switch()?),
            "teacher_temp" => Toggle::TeacherTemp(number()?),
            "momentum" | "momentum_teacher" => Toggle::MomentumTeacher(number()?),
            "local_crops" => value
                .parse()
                .map(Toggle::LocalCrops)
                .map_err(|_| format!("`{text}`: `{value}` is not a whole number"))?,
            "lr_scale" => Toggle::LrScale(number()?),
            "koleo" | "koleo_weight" => Toggle::KoleoWeight(number()?),
            other => {
                return Err(format!(
                    "`{other}` is not a toggle; use centering, sharpening, teacher_temp, momentum, local_crops, lr_scale or koleo"
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
        for range in [&TEACHER_TEMP, &MOMENTUM_TEACHER, &LR_SCALE, &KOLEO_WEIGHT] {
            assert!(range.allowed.contains(range.slider.start()));
            assert!(range.allowed.contains(range.slider.end()));
        }
        assert!(LOCAL_CROPS.allowed.contains(LOCAL_CROPS.slider.end()));
    }

    #[test]
    fn centering_reads_the_old_switch_and_the_three_modes() {
        for (text, mode) in [
            ("centering=off", CenteringMode::Off),
            ("centering=on", CenteringMode::Ema),
            ("centering=ema", CenteringMode::Ema),
            ("centering=sinkhorn", CenteringMode::Sinkhorn),
        ] {
            assert_eq!(text.parse::<Toggle>().unwrap(), Toggle::Centering(mode));
        }
        assert!("centering=maybe"
            .parse::<Toggle>()
            .unwrap_err()
            .contains("ema, sinkhorn or off"));
        assert_eq!(Toggle::Centering(false.into()).label(), "centering off");
        assert_eq!(
            "koleo=0.1".parse::<Toggle>().unwrap(),
            Toggle::KoleoWeight(0.1)
        );
        assert!("koleo=-1".parse::<Toggle>().is_err());
        // Config files: the old booleans, the words; written back as before for ema and off.
        for (line, mode) in [
            ("centering = true", CenteringMode::Ema),
            ("centering = false", CenteringMode::Off),
            ("centering = \"sinkhorn\"", CenteringMode::Sinkhorn),
            ("centering = \"ema\"", CenteringMode::Ema),
        ] {
            let config = Config::from_toml_str(&format!("[dino]\n{line}\n"), "test.toml").unwrap();
            assert_eq!(config.dino.centering, mode, "{line}");
            let back = Config::from_toml_str(&config.to_toml(), "again.toml").unwrap();
            assert_eq!(back.dino.centering, mode, "{line}");
        }
        assert!(Config::default().to_toml().contains("centering = true"));
        let err = Config::from_toml_str("[dino]\ncentering = \"maybe\"\n", "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.toml:2") && err.contains("ema, sinkhorn or off"),
            "{err}"
        );
        // A checkpoint's settings written before the modes existed.
        let old: LiveSettings = toml::from_str(
            "centering = false\nsharpening = true\nwarmup_teacher_temp = 0.04\nteacher_temp = 0.04\nmomentum_teacher = 0.996\nlocal_crops = 8\nlr_scale = 1.0\n",
        )
        .unwrap();
        assert_eq!((old.centering, old.koleo_weight), (CenteringMode::Off, 0.0));
    }
}
