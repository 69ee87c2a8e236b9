//! The module edges of ARCHITECTURE.md, enforced: every `crate::<module>` (or `ratingd::<module>`)
//! a file under `src/` names must be an edge the table "Allowed dependencies" allows; the table
//! must have no cycle; nothing under domain, rating, store, pipeline or telemetry names tonic or
//! a proto type; and no service reaches the store's encodings. The table and this test change
//! together when the design changes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The table: module -> the modules it may use.
fn allowed() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(common::repo().join("ARCHITECTURE.md")).unwrap();
    let start = text
        .find("## Allowed dependencies")
        .expect("ARCHITECTURE.md has an \"Allowed dependencies\" section");
    let mut table = BTreeMap::new();
    for line in text[start..].lines().skip(1) {
        if line.starts_with("## ") {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `module` | `a`, `b` | why |
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let module = cells[1].trim_matches('`').to_string();
        let uses = cells[2]
            .split(',')
            .map(|c| c.trim().trim_matches('`').to_string())
            .filter(|c| !c.is_empty() && c != "—")
            .collect();
        table.insert(module, uses);
    }
    assert!(table.len() > 10, "the table was not read: {table:?}");
    table
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file belongs to: its first path component under `src/` (`bin/ratectl` for the
/// client binary, `main` for the daemon's); `None` for `lib.rs`, which only declares them.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    match parts.as_slice() {
        [only] if only == "lib.rs" => None,
        [first, second, ..] if first == "bin" => Some(format!("bin/{}", second.trim_end_matches(".rs"))),
        [first, ..] => Some(first.trim_end_matches(".rs").to_string()),
        [] => None,
    }
}

/// The code of a line, without its `//` comment (doc comments included).
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

/// The crate modules a line names: `crate::x`, `ratingd::x` and `crate::{x, y::z}`.
fn named_modules(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in ["crate::", "ratingd::"] {
        let mut rest = line;
        while let Some(i) = rest.find(prefix) {
            // Not part of a longer path such as `foo_crate::`.
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.push(name);
                    }
                }
            } else {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// Every (module, named module, place) edge under `src/`.
fn edges() -> Vec<(String, String, String)> {
    let src = common::repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for used in named_modules(code(line)) {
                if used != module {
                    let place = format!("{}:{}", file.strip_prefix(common::repo()).unwrap().display(), n + 1);
                    out.push((module.clone(), used, place));
                }
            }
        }
    }
    out
}

#[test]
fn every_module_edge_is_one_the_table_allows() {
    let table = allowed();
    let found = edges();
    assert!(
        found.len() > 100,
        "the scan found too few edges to be right: {}",
        found.len()
    );
    let forbidden: Vec<String> = found
        .iter()
        .filter(|(from, to, _)| !table.get(from).is_some_and(|allowed| allowed.contains(to)))
        .map(|(from, to, place)| format!("{place}: {from} -> {to}"))
        .collect();
    assert!(
        forbidden.is_empty(),
        "edges ARCHITECTURE.md does not allow (change the design, or the table and this test together):\n{}",
        forbidden.join("\n")
    );
    // Every module of the crate is in the table.
    let modules: BTreeSet<&String> = found.iter().map(|(from, _, _)| from).collect();
    for m in modules {
        assert!(table.contains_key(m), "module {m} is missing from the table");
    }
}

#[test]
fn the_allowed_edges_have_no_cycle() {
    let table = allowed();
    // Depth-first search for a back edge.
    fn visit(m: &str, table: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>, done: &mut BTreeSet<String>) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("a cycle in the table: {} -> {m}", path[i..].join(" -> "));
        }
        path.push(m.to_string());
        for next in table.get(m).into_iter().flatten() {
            visit(next, table, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in table.keys() {
        visit(m, &table, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_core_names_no_tonic_and_no_proto_and_services_reach_no_encoding() {
    let src = common::repo().join("src");
    let mut offenders = Vec::new();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let Some(module) = module_of(&src, &file) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let line = code(line);
            let place = format!("{}:{}", file.display(), n + 1);
            let core = ["domain", "rating", "store", "pipeline", "telemetry"].contains(&module.as_str());
            if core && (line.contains("tonic") || line.contains("proto::")) {
                offenders.push(format!("{place}: {module} names tonic or proto: {}", line.trim()));
            }
            let service = ["ingest", "query", "admin"].contains(&module.as_str());
            if service && line.contains("store::codec") {
                offenders.push(format!(
                    "{place}: {module} reaches the store's encodings: {}",
                    line.trim()
                ));
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

#[test]
fn the_scanner_reads_paths_groups_and_skips_comments() {
    assert_eq!(named_modules("use crate::wire::proto;"), ["wire"]);
    assert_eq!(
        named_modules("use crate::{pipeline, store::codec};"),
        ["pipeline", "store"]
    );
    assert_eq!(
        named_modules("let x = ratingd::client::output::Output { json };"),
        ["client"]
    );
    assert_eq!(
        named_modules(code("let y = 1; // see crate::query")),
        Vec::<String>::new()
    );
    assert!(named_modules("foo_crate::bar").is_empty());
}
