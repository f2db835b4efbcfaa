//! `--set KEY=VALUE` overrides: each value is TOML (a bare word such as `vit_tiny` is a
//! string). An error names the one assignment at fault, its key and value, and the allowed
//! range where the key has one.

use super::{Config, ConfigError, OPTIONAL_KEYS};

impl Config {
    /// Applies `--set section.key=value` overrides in order and validates the result.
    pub fn with_overrides(self, assignments: &[String]) -> Result<Self, ConfigError> {
        if assignments.is_empty() {
            return Ok(self);
        }
        let mut table = toml::Table::try_from(&self).map_err(|err| ConfigError::Override {
            assignment: String::new(),
            message: format!("internal: {err}"),
        })?;
        let mut config = self;
        for assignment in assignments {
            let error = |message: String| ConfigError::Override {
                assignment: assignment.clone(),
                message,
            };
            let (key, raw) = assignment
                .split_once('=')
                .ok_or_else(|| error("expected KEY=VALUE, e.g. dino.teacher_temp=0.07".into()))?;
            let (key, raw) = (key.trim(), raw.trim());
            let before = table.clone();
            let value = parse_value(key, raw, lookup(&before, key)).map_err(error)?;
            insert(&mut table, key, value).map_err(error)?;
            // Checked after each assignment: the one that breaks the types is the one named.
            config = table.clone().try_into().map_err(|err: toml::de::Error| {
                let range = allowed_range(&before, key)
                    .map(|range| format!("; {range}"))
                    .unwrap_or_default();
                error(format!(
                    "`{key}` = {raw} is not a valid value: {}{range}",
                    one_line(err.message())
                ))
            })?;
        }
        config.validate().map_err(|invalid| {
            // Name the assignment that set the key; a key broken by another one (optim.epochs
            // lowered under optim.warmup_epochs) is named by the message itself.
            let origin = assignments
                .iter()
                .rev()
                .find(|a| {
                    a.split_once('=')
                        .is_some_and(|(k, _)| k.trim() == invalid.key)
                })
                .map_or_else(|| "--set".to_string(), |a| format!("--set {a}"));
            ConfigError::Invalid {
                origin,
                key: invalid.key,
                message: invalid.message,
            }
        })?;
        Ok(config)
    }
}

/// The value of dotted `key` in `table`, if set.
fn lookup<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let (sections, last) = key.rsplit_once('.').unwrap_or(("", key));
    let mut slot = table;
    for section in sections.split('.').filter(|s| !s.is_empty()) {
        slot = slot.get(section)?.as_table()?;
    }
    slot.get(last)
}

fn insert(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, sections) = parts.split_last().ok_or("empty key")?;
    let mut slot = table;
    for section in sections {
        slot = slot
            .get_mut(*section)
            .and_then(|v| v.as_table_mut())
            .ok_or_else(|| {
                format!("unknown section `{section}`; sections are model, dino, optim, data")
            })?;
    }
    if !slot.contains_key(*last) && !OPTIONAL_KEYS.contains(&key) {
        return Err(format!(
            "unknown key `{key}`; see the config reference in README.md"
        ));
    }
    slot.insert((*last).to_string(), value);
    Ok(())
}

/// A TOML value; a bare word (`vit_tiny`, `folder`, a path) is taken as a string. Text that
/// starts like an array, table or quoted string must be complete TOML: `[0.4,` is a typo, not
/// the string "[0.4,".
fn parse_value(key: &str, raw: &str, current: Option<&toml::Value>) -> Result<toml::Value, String> {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut table) => Ok(table
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into()))),
        Err(err) if raw.starts_with(['[', '{', '"', '\'']) => {
            let example = current.map_or_else(
                || format!("{key}=[1, 2] or {key}=\"text\""),
                |value| format!("{key}={value}"),
            );
            Err(format!(
                "`{key}` = {raw} is not valid TOML ({}); close it, e.g. {example}",
                one_line(err.message())
            ))
        }
        Err(_) => Ok(toml::Value::String(raw.to_string())),
    }
}

/// "allowed 1 ..= 4096": what `validate` says of `key` when it is set far out of range in an
/// otherwise valid `table`. None for keys without a numeric range.
fn allowed_range(table: &toml::Table, key: &str) -> Option<String> {
    // Above every range `validate` allows, and still a valid u32/usize; ±inf for floats.
    let probe = match lookup(table, key) {
        Some(toml::Value::Float(_)) => toml::Value::Float(f64::INFINITY),
        Some(toml::Value::Integer(_)) | None => toml::Value::Integer(i64::from(u32::MAX)),
        Some(_) => return None,
    };
    let mut probed = table.clone();
    insert(&mut probed, key, probe).ok()?;
    let config: Config = probed.try_into().ok()?;
    let invalid = config
        .validate()
        .err()
        .filter(|invalid| invalid.key == key)?;
    let at = invalid.message.find("allowed")?;
    Some(invalid.message[at..].to_string())
}

fn one_line(message: &str) -> String {
    message.trim().lines().collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_with(sets: &[&str]) -> String {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::preset("tiny")
            .unwrap()
            .with_overrides(&sets)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_type_error_names_only_its_assignment_key_value_and_range() {
        let err = tiny_with(&[
            "dino.teacher_temp=0.05",
            "optim.batch_size_per_gpu=-3",
            "model.depth=2",
        ]);
        assert!(
            err.starts_with("--set optim.batch_size_per_gpu=-3: `optim.batch_size_per_gpu` = -3"),
            "{err}"
        );
        assert!(err.contains("allowed 1 ..= 4096"), "{err}");
        assert!(
            !err.contains("teacher_temp") && !err.contains("model.depth"),
            "only the faulty --set: {err}"
        );
        let err = tiny_with(&["model.depth=2", "optim.lr=banana"]);
        assert!(
            err.starts_with("--set optim.lr=banana: `optim.lr` = banana")
                && err.contains("allowed 0 ..= 1")
                && !err.contains("model.depth"),
            "{err}"
        );
        // A string key has no range, only the type.
        let err = tiny_with(&["model.arch=3"]);
        assert!(
            err.contains("`model.arch` = 3") && !err.contains("allowed"),
            "{err}"
        );
    }

    #[test]
    fn a_range_error_names_its_assignment() {
        let err = tiny_with(&["model.depth=2", "optim.lr=5"]);
        assert!(
            err.starts_with("--set optim.lr=5: `optim.lr` = 5 is out of range; allowed 0 ..= 1"),
            "{err}"
        );
        assert!(!err.contains("model.depth"), "{err}");
    }

    #[test]
    fn an_unclosed_toml_value_is_called_invalid_toml() {
        let err = tiny_with(&["dino.global_crops_scale=[0.4,"]);
        assert!(
            err.contains("`dino.global_crops_scale` = [0.4, is not valid TOML")
                && err.contains("e.g. dino.global_crops_scale=[0.4, 1.0]"),
            "{err}"
        );
        assert!(!err.contains("invalid type"), "{err}");
        let err = tiny_with(&["data.path=\"/data/x"]);
        assert!(err.contains("not valid TOML"), "{err}");
        // Bare words stay strings.
        let config = Config::preset("tiny")
            .unwrap()
            .with_overrides(&["model.arch=vit_tiny".into()])
            .unwrap();
        assert_eq!(config.model.arch, "vit_tiny");
    }
}
