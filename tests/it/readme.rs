//! The README's config reference says what `configs/tiny.toml` holds: every key in its table
//! exists, and the "default (`tiny`)" column equals the preset's value.

use dinoscope::config::Config;

/// Splits `a, [b, c], d` at the commas outside brackets.
fn split_top_level(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0;
    for c in text.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().unwrap().push(c);
    }
    parts.into_iter().map(|p| p.trim().to_string()).collect()
}

/// A README cell as a TOML value (`vit_micro` in backticks is a string); `unset` is `None`.
fn cell_value(cell: &str) -> Option<toml::Value> {
    let cell = cell.trim();
    if cell == "unset" {
        return None;
    }
    if let Some(word) = cell.strip_prefix('`').and_then(|c| c.strip_suffix('`')) {
        return Some(toml::Value::String(word.to_string()));
    }
    let table: toml::Table = format!("v = {cell}").parse().unwrap_or_else(|e| {
        panic!("README default `{cell}` is not a TOML value: {e}");
    });
    table.get("v").cloned()
}

/// Numbers compare as numbers (the README writes `1` for `1.0`).
fn same(a: &toml::Value, b: &toml::Value) -> bool {
    match (a, b) {
        (toml::Value::Array(x), toml::Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        _ => match (
            a.as_float().or(a.as_integer().map(|i| i as f64)),
            b.as_float().or(b.as_integer().map(|i| i as f64)),
        ) {
            (Some(p), Some(q)) => (p - q).abs() <= 1e-12 * p.abs().max(1.0),
            _ => a == b,
        },
    }
}

#[test]
fn readme_config_table_matches_the_tiny_preset() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let preset: toml::Table = Config::preset("tiny").unwrap().to_toml().parse().unwrap();
    let lookup = |key: &str| -> Option<toml::Value> {
        let mut value = toml::Value::Table(preset.clone());
        for part in key.split('.') {
            value = value.as_table()?.get(part)?.clone();
        }
        Some(value)
    };
    let mut checked = 0;
    let mut wrong = Vec::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split(" | ").collect();
        let Some(keys) = cells.first().and_then(|c| c.strip_prefix("| `")) else {
            continue;
        };
        if cells.len() < 3 || !keys.contains('`') {
            continue;
        }
        let keys: Vec<String> = keys
            .split(", ")
            .map(|k| k.trim_matches('`').to_string())
            .collect();
        // Only the config table: its keys are `seed` or dotted section keys.
        if !keys.iter().all(|k| k == "seed" || k.contains('.')) {
            continue;
        }
        let mut defaults = split_top_level(cells[1]);
        // One "unset" covers every key of its row.
        if defaults == ["unset"] {
            defaults = vec!["unset".to_string(); keys.len()];
        }
        assert_eq!(
            defaults.len(),
            keys.len(),
            "README row `{line}` has {} keys but {} defaults",
            keys.len(),
            defaults.len()
        );
        for (key, default) in keys.iter().zip(&defaults) {
            let want = cell_value(default);
            let have = lookup(key);
            let matches = match (&want, &have) {
                (Some(w), Some(h)) => same(w, h),
                (None, None) => true,
                // An empty path is how the preset writes "unset".
                (None, Some(toml::Value::String(text))) => text.is_empty(),
                _ => false,
            };
            if !matches {
                wrong.push(format!(
                    "{key}: README says {default}, tiny.toml has {have:?}"
                ));
            }
            checked += 1;
        }
    }
    assert!(
        checked > 40,
        "only {checked} keys found in the README table"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
