//! An ablation study: one base config and named variants of it (each a list of `--set`
//! overrides), trained with the same seed, data order and step budget. By default the paper's:
//! full DINO, no centering, no sharpening, no momentum teacher, no multi-crop.
//!
//! A study file is TOML:
//!
//! ```toml
//! name = "paper-table7"
//! preset = "tiny"                      # or config = "base.toml" (relative to this file)
//! set = ["optim.epochs=4"]             # applied to the base, before each variant's own
//! steps = 128                          # per variant (default: the base's epochs)
//!
//! [[variant]]
//! name = "no-centering"
//! set = ["dino.centering=false"]
//! ```
//!
//! Without `[[variant]]` tables the study runs the paper's five.

use super::{Config, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The studies shipped in `configs/studies/`, embedded so the app needs no file system.
pub const STUDIES: [(&str, &str); 2] = [
    (
        "paper-table7",
        include_str!("../../configs/studies/paper-table7.toml"),
    ),
    (
        "dinov2-recipe",
        include_str!("../../configs/studies/dinov2-recipe.toml"),
    ),
];

/// One arm of a study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Also the name of its run directory inside the study folder.
    pub name: String,
    /// `KEY=VALUE` overrides on top of the base (as `--set`).
    #[serde(default)]
    pub set: Vec<String>,
    /// What the variant is, for the table and the app.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// The paper's reference for a variant: DINO ViT-S/16, 300 epochs on ImageNet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaperReference {
    /// k-NN top-1 (%) where the paper reports it.
    pub knn_top1: Option<f64>,
    /// Where it comes from and what the paper says happens.
    pub source: &'static str,
}

/// The paper's five variants, in the order of the table.
pub fn paper_variants() -> Vec<Variant> {
    let variant = |name: &str, set: &[&str], description: &str| Variant {
        name: name.into(),
        set: set.iter().map(|s| s.to_string()).collect(),
        description: description.into(),
    };
    vec![
        variant(
            "full",
            &[],
            "momentum teacher, centering, sharpening, multi-crop",
        ),
        variant(
            "no-centering",
            &["dino.centering=false"],
            "sharpening only: expect one-hot collapse (h(Pt) -> 0)",
        ),
        variant(
            "no-sharpening",
            &["dino.sharpening=false"],
            "teacher temperature = student's (0.1): expect uniform collapse (h(Pt) -> ln K)",
        ),
        variant(
            "no-momentum",
            &["dino.momentum_teacher=0"],
            "the teacher is the student, copied every step: expect collapse (Table 7 row 2)",
        ),
        variant(
            "no-multicrop",
            // main_dino.py's help: without local crops, use global_crops_scale (0.14, 1).
            &[
                "dino.local_crops_number=0",
                "dino.global_crops_scale=[0.14, 1.0]",
            ],
            "2 global crops only, scale (0.14, 1) as main_dino.py advises (Table 7 row 4)",
        ),
    ]
}

/// What the paper reports for the default variants (Table 7 and Fig. 7).
pub fn paper_reference(variant: &str) -> Option<PaperReference> {
    let reference = |knn_top1, source| Some(PaperReference { knn_top1, source });
    match variant {
        "full" => reference(Some(72.8), "Table 7 row 1"),
        "no-momentum" => reference(Some(0.1), "Table 7 row 2"),
        "no-multicrop" => reference(Some(67.9), "Table 7 row 4"),
        "no-centering" => reference(None, "Fig. 7: collapses, h(Pt) -> 0"),
        "no-sharpening" => reference(None, "Fig. 7: collapses, h(Pt) -> ln K"),
        _ => None,
    }
}

/// A study file, or one made on the command line or in the app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySpec {
    pub name: String,
    /// The base: a built-in preset...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// ...or a config file, relative to the study file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    /// Overrides applied to the base before each variant's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
    /// Steps per variant (default: the base's epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(default, rename = "variant")]
    pub variants: Vec<Variant>,
}

impl StudySpec {
    /// The paper's five variants on a preset.
    pub fn paper(preset: &str) -> Self {
        Self {
            name: format!("{preset}-ablation"),
            preset: Some(preset.into()),
            config: None,
            set: Vec::new(),
            steps: None,
            variants: paper_variants(),
        }
    }

    /// Reads a study file; relative `config` paths are resolved against its folder. Without
    /// variants it gets the paper's five. Errors name the file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut spec = Self::from_toml_str(&text, &path.display().to_string())?;
        if let Some(config) = &spec.config {
            if config.is_relative() {
                let folder = path.parent().unwrap_or(Path::new("."));
                spec.config = Some(folder.join(config));
            }
        }
        Ok(spec)
    }

    /// A study file's text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut spec: Self = toml::from_str(text).map_err(|err| ConfigError::Parse {
            origin: origin.to_string(),
            message: err.message().to_string(),
        })?;
        if spec.variants.is_empty() {
            spec.variants = paper_variants();
        }
        spec.check(origin)?;
        Ok(spec)
    }

    /// A study shipped in `configs/studies/` by name (`paper-table7`).
    pub fn builtin(name: &str) -> Option<Self> {
        let (_, text) = STUDIES.iter().find(|(study, _)| *study == name)?;
        Self::from_toml_str(text, &format!("study `{name}`")).ok()
    }

    /// `--study`: a file, or the name of a built-in study when no such file exists.
    pub fn from_file_or_builtin(path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            if let Some(spec) = path.to_str().and_then(Self::builtin) {
                return Ok(spec);
            }
            // Not "omit --config": the flag was --study.
            return Err(ConfigError::Parse {
                origin: format!("--study {}", path.display()),
                message: format!(
                    "no such study file, and not a built-in study ({}); give a study TOML such as configs/studies/paper-table7.toml",
                    STUDIES.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        Self::from_file(path)
    }

    /// The study as TOML (written into the study folder, so it can be run again).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Names unique and usable as folder names; a base named once; at least one variant.
    pub fn check(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            message,
        };
        if self.preset.is_some() && self.config.is_some() {
            return Err(invalid(
                "config",
                "and `preset` are both set; keep one of them as the base".into(),
            ));
        }
        if self.variants.is_empty() {
            return Err(invalid("variant", "needs at least one variant".into()));
        }
        if self.steps == Some(0) {
            return Err(invalid("steps", "must be at least 1".into()));
        }
        for (i, variant) in self.variants.iter().enumerate() {
            check_name(&variant.name).map_err(|message| invalid("variant.name", message))?;
            if self.variants[..i].iter().any(|v| v.name == variant.name) {
                return Err(invalid(
                    "variant.name",
                    format!(
                        "`{}` is used twice; give each variant its own name",
                        variant.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The base config: the named preset or file (default: tiny) with the study's `set`.
    pub fn base_config(&self) -> Result<Config, ConfigError> {
        let base = match (&self.config, &self.preset) {
            (Some(path), _) => Config::from_file(path)?,
            (None, Some(preset)) => Config::preset(preset)?,
            (None, None) => Config::preset("tiny")?,
        };
        base.with_overrides(&self.set)
    }

    /// Each variant's config: the base with the variant's overrides. An error names the
    /// variant and the assignment at fault.
    pub fn variant_configs(&self) -> Result<Vec<(Variant, Config)>, ConfigError> {
        let base = self.base_config()?;
        self.variants
            .iter()
            .map(|variant| {
                let config = base.clone().with_overrides(&variant.set).map_err(|err| {
                    ConfigError::Parse {
                        origin: format!("variant `{}`", variant.name),
                        message: err.to_string(),
                    }
                })?;
                Ok((variant.clone(), config))
            })
            .collect()
    }
}

/// A variant name becomes a folder name: letters, digits, `-`, `_` and `.`, not empty.
/// The files a study writes beside its arms' folders (`store::study`): a variant named like
/// one would have its run folder and that file collide after every arm has trained.
pub const STUDY_OUTPUT_NAMES: [&str; 8] = [
    "study.csv",
    "study.md",
    "study.toml",
    "attention.png",
    "collapse.png",
    "collapse.svg",
    "knn.png",
    "geometry.png",
];

fn check_name(name: &str) -> Result<(), String> {
    if STUDY_OUTPUT_NAMES
        .iter()
        .any(|output| output.eq_ignore_ascii_case(name))
    {
        return Err(format!(
            "`{name}` is the name of a file the study writes beside its variants' folders; rename the variant"
        ));
    }
    let usable = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if usable {
        Ok(())
    } else {
        Err(format!(
            "`{name}` cannot name a run folder; use letters, digits, `-`, `_` and `.`"
        ))
    }
}

/// Parses `NAME:KEY=VALUE,KEY=VALUE` (`--variant`); commas inside `[...]` or quotes belong to
/// the value, so `lr-low:optim.lr=1e-4,dino.global_crops_scale=[0.3, 1.0]` is two overrides.
pub fn parse_variant(spec: &str) -> Result<Variant, String> {
    let (name, assignments) = spec.split_once(':').unwrap_or((spec, ""));
    let name = name.trim();
    check_name(name)?;
    let mut set = Vec::new();
    let (mut depth, mut quoted, mut current) = (0i32, false, String::new());
    for c in assignments.chars() {
        match c {
            '"' | '\'' => quoted = !quoted,
            '[' if !quoted => depth += 1,
            ']' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                set.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    set.push(current);
    let set: Vec<String> = set
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = set.iter().find(|s| !s.contains('=')) {
        return Err(format!(
            "`{bad}` is not KEY=VALUE; write NAME:KEY=VALUE,KEY=VALUE, e.g. warm:dino.teacher_temp=0.04"
        ));
    }
    Ok(Variant {
        name: name.to_string(),
        set,
        description: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_variants_change_one_component_each() {
        let spec = StudySpec::paper("tiny");
        let configs = spec.variant_configs().unwrap();
        let names: Vec<&str> = configs.iter().map(|(v, _)| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "full",
                "no-centering",
                "no-sharpening",
                "no-momentum",
                "no-multicrop"
            ]
        );
        let full = &configs[0].1;
        assert_eq!(full, &Config::preset("tiny").unwrap());
        assert!(!configs[1].1.dino.centering.is_on() && configs[1].1.dino.sharpening);
        assert!(configs[2].1.dino.centering.is_on() && !configs[2].1.dino.sharpening);
        assert_eq!(configs[3].1.dino.momentum_teacher, 0.0);
        assert_eq!(configs[4].1.dino.local_crops_number, 0);
        assert_eq!(configs[4].1.dino.global_crops_scale, [0.14, 1.0]);
        for (_, config) in &configs {
            assert_eq!(config.seed, full.seed, "same seed for every arm");
        }
        assert_eq!(paper_reference("full").unwrap().knn_top1, Some(72.8));
        assert!(paper_reference("mine").is_none());
    }

    #[test]
    fn the_shipped_study_is_the_paper_five_on_a_short_tiny() {
        let spec = StudySpec::builtin("paper-table7").unwrap();
        let names: Vec<_> = spec.variants.iter().map(|v| v.name.clone()).collect();
        let paper: Vec<_> = paper_variants().into_iter().map(|v| v.name).collect();
        assert_eq!(names, paper);
        for (shipped, default) in spec.variants.iter().zip(paper_variants()) {
            assert_eq!(shipped.set, default.set, "{}", shipped.name);
        }
        let base = spec.base_config().unwrap();
        assert_eq!((base.optim.epochs, base.optim.lr), (60, 0.008));
        assert_eq!(base.model.embed_dim, Some(32));
        assert!(StudySpec::builtin("nope").is_none());
        let named = StudySpec::from_file_or_builtin(Path::new("paper-table7")).unwrap();
        assert_eq!(named, spec);
    }

    #[test]
    fn variant_spec_keeps_commas_inside_values() {
        let v = parse_variant("wide:dino.global_crops_scale=[0.3, 1.0], optim.lr=1e-4").unwrap();
        assert_eq!(v.name, "wide");
        assert_eq!(
            v.set,
            ["dino.global_crops_scale=[0.3, 1.0]", "optim.lr=1e-4"]
        );
        assert_eq!(parse_variant("base").unwrap().set, Vec::<String>::new());
        assert!(parse_variant("../x:optim.lr=1")
            .unwrap_err()
            .contains("run folder"));
        assert!(parse_variant("a:optim.lr")
            .unwrap_err()
            .contains("KEY=VALUE"));
    }

    #[test]
    fn study_file_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "name = \"s\"\npreset = \"tiny\"\n").unwrap();
        let spec = StudySpec::from_file(&path).unwrap();
        assert_eq!(spec.variants.len(), 5, "no variants: the paper's five");
        std::fs::write(
            &path,
            "name = \"s\"\n[[variant]]\nname = \"a\"\n[[variant]]\nname = \"a\"\n",
        )
        .unwrap();
        let err = StudySpec::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("used twice") && err.contains("s.toml"),
            "{err}"
        );
        std::fs::write(
            &path,
            "name = \"s\"\n[[variant]]\nname = \"hot\"\nset = [\"dino.teacher_temp=9\"]\n",
        )
        .unwrap();
        let err = StudySpec::from_file(&path)
            .unwrap()
            .variant_configs()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("variant `hot`") && err.contains("teacher_temp"),
            "{err}"
        );
        std::fs::write(&path, "name = \"s\"\nsteps = \"many\"\n").unwrap();
        assert!(StudySpec::from_file(&path).is_err());
    }
}
