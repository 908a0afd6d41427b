//! What the docs and the layout promise, checked: the README's configuration table says what
//! the code's table of vars says; the core imports nothing above it; the engine and the shell
//! keep their functions short (issue 9's rules).

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

/// The `.rs` files under `src/<dir>`, with their text.
fn sources(dir: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src")).join(dir)];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out
}

#[test]
fn the_core_imports_nothing_above_it() {
    let above = [
        "crate::ports",
        "crate::engine",
        "crate::api",
        "crate::shell",
        "worker::",
    ];
    for (path, text) in sources("core") {
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for a in above {
                assert!(!code.contains(a), "{path}:{}: the core uses `{a}`: {line}", n + 1);
            }
        }
    }
}

/// Each `fn` with a body in `text`: its name and its length in lines, from its signature to
/// its closing brace (braces counted outside strings, chars and comments).
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let braces = |line: &str| -> i64 {
        let (mut depth, mut in_str, mut prev) = (0, false, ' ');
        let code = line.split("//").next().unwrap_or("");
        let mut chars = code.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if prev != '\\' => in_str = !in_str,
                '\'' if !in_str && chars.peek().is_some_and(|&n| n == '{' || n == '}') => {
                    chars.next();
                }
                '{' if !in_str => depth += 1,
                '}' if !in_str => depth -= 1,
                _ => {}
            }
            prev = if prev == '\\' && c == '\\' { ' ' } else { c };
        }
        depth
    };
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let Some(at) = code.find("fn ").filter(|&at| {
            let head = &code[..at];
            head.is_empty() || head.ends_with(' ') && !head.contains("//") && !head.contains('"')
        }) else {
            continue;
        };
        let name: String = code[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut opened) = (0, false);
        for (j, l) in lines.iter().enumerate().skip(i) {
            if !opened && l.trim_end().ends_with(';') {
                break;
            }
            depth += braces(l);
            opened |= l.contains('{');
            if opened && depth <= 0 {
                out.push((name.clone(), j - i + 1));
                break;
            }
        }
    }
    out
}

#[test]
fn no_function_in_the_engine_or_the_shell_is_longer_than_60_lines() {
    let mut long = Vec::new();
    for dir in ["engine", "shell"] {
        for (path, text) in sources(dir) {
            for (name, len) in function_lengths(&text) {
                if len > 60 {
                    long.push(format!("{path}: fn {name}, {len} lines"));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these (issue 9: at most 60 lines):\n{}",
        long.join("\n")
    );
    // The counter itself sees a long function.
    let long_fn = format!("fn f() {{\n{}}}\n", "    let x = \"{{\";\n".repeat(70));
    assert_eq!(function_lengths(&long_fn), vec![("f".to_string(), 72)]);
}
