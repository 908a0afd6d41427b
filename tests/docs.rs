//! The README's configuration table says what the code's table of vars says.

use d1_archiver::core::config::{Rule, VARS};

fn expected_rows() -> Vec<String> {
    let mut rows: Vec<String> = VARS
        .iter()
        .map(|v| {
            let default = if v.default.is_empty() {
                "(empty)".to_string()
            } else {
                format!("`{}`", v.default)
            };
            let range = match v.rule {
                Rule::Int { text, .. } => text.to_string(),
                Rule::Bool => "true/false".into(),
                Rule::Text => "text".into(),
            };
            format!("| `{}` | {} | {} | {} |", v.name, default, range, v.meaning)
        })
        .collect();
    rows.push("| `ADMIN_TOKEN` | — | secret | the admin API's bearer token: `.dev.vars` locally, `wrangler secret put ADMIN_TOKEN` in production |".into());
    rows
}

#[test]
fn readme_configuration_table_matches_the_vars() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n## Configuration")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README.md has a Configuration section");
    let rows: Vec<String> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(str::to_string)
        .collect();
    let want = expected_rows();
    assert!(
        rows == want,
        "README.md's configuration table differs from src/core/config.rs (VARS). It should read:\n\n| var | default | allowed | meaning |\n|---|---|---|---|\n{}\n",
        want.join("\n")
    );
}
