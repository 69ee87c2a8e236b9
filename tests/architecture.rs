//! The layers of ARCHITECTURE.md, enforced. The table "Allowed dependencies" gives each module a
//! layer (a depth) and the modules it may use. Every `crate::<module>` (or `ratingd::<module>`) a
//! file under `src/` names, in a path or in a `use crate::{...}` group over any number of lines,
//! must be an edge of its row; every edge of the table must go to a lower layer (so no cycle and
//! no edge upward can be written down); nothing under domain, rating, store, pipeline or
//! telemetry names tonic or a proto type; no service reaches the store's encodings; and a gRPC
//! status is made only at the service edge. The table and this test change together when the
//! design changes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One row of the table.
#[derive(Debug)]
struct Row {
    layer: u32,
    uses: BTreeSet<String>,
}

/// The table: module -> its layer and the modules it may use.
fn table() -> BTreeMap<String, Row> {
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
        // | 3 | `module` | `a`, `b` | why |
        if cells.len() < 5 || !cells[2].starts_with('`') {
            continue;
        }
        let layer = cells[1]
            .parse()
            .unwrap_or_else(|_| panic!("the layer of {} is not a number: {:?}", cells[2], cells[1]));
        let module = cells[2].trim_matches('`').to_string();
        let uses = cells[3]
            .split(',')
            .map(|c| c.trim().trim_matches('`').to_string())
            .filter(|c| !c.is_empty() && c != "—")
            .collect();
        assert!(
            table.insert(module.clone(), Row { layer, uses }).is_none(),
            "{module} has two rows"
        );
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

/// The code of a file, its comments (`//`, doc comments included) blanked out so that line
/// numbers stay where they were.
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.find("//").map_or(line, |i| &line[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The name at the start of `rest` (letters, digits, `_`).
fn name_at(rest: &str) -> String {
    rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// The top-level items of a `{...}` group that starts `group` (after its `{`): each item's first
/// name, nested groups skipped, over as many lines as the group takes.
fn group_items(group: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut at_item_start = true;
    let mut rest = group;
    while let Some(c) = rest.chars().next() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item_start = true,
            c if c.is_whitespace() => {}
            _ if at_item_start && depth == 0 => {
                let name = name_at(rest);
                if !name.is_empty() {
                    items.push(name);
                }
                at_item_start = false;
            }
            _ => {}
        }
        rest = &rest[c.len_utf8()..];
    }
    items
}

/// The crate modules code names, with the byte offset of each: `crate::x`, `ratingd::x` and the
/// items of `crate::{x, y::z, ...}` (over several lines too).
fn named_modules(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for prefix in ["crate::", "ratingd::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(prefix) {
            let at = from + i;
            from = at + prefix.len();
            // Not part of a longer path such as `foo_crate::`.
            if code[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
            {
                continue;
            }
            let rest = &code[from..];
            if let Some(group) = rest.strip_prefix('{') {
                out.extend(group_items(group).into_iter().map(|name| (at, name)));
            } else {
                let name = name_at(rest);
                if !name.is_empty() {
                    out.push((at, name));
                }
            }
        }
    }
    out
}

/// The line (from 1) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
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
        let text = code(&std::fs::read_to_string(&file).unwrap());
        for (at, used) in named_modules(&text) {
            if used != module {
                let place = format!(
                    "{}:{}",
                    file.strip_prefix(common::repo()).unwrap().display(),
                    line_of(&text, at)
                );
                out.push((module.clone(), used, place));
            }
        }
    }
    out
}

#[test]
fn every_module_edge_is_one_the_table_allows() {
    let table = table();
    let found = edges();
    assert!(
        found.len() > 100,
        "the scan found too few edges to be right: {}",
        found.len()
    );
    let forbidden: Vec<String> = found
        .iter()
        .filter(|(from, to, _)| !table.get(from).is_some_and(|row| row.uses.contains(to)))
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
fn every_allowed_edge_goes_down_a_layer() {
    let table = table();
    let mut upward = Vec::new();
    for (module, row) in &table {
        for used in &row.uses {
            match table.get(used) {
                None => upward.push(format!("{module} uses {used}, which has no row")),
                Some(lower) if lower.layer >= row.layer => upward.push(format!(
                    "{module} (layer {}) uses {used} (layer {}): a module uses only lower layers",
                    row.layer, lower.layer
                )),
                Some(_) => {}
            }
        }
    }
    assert!(upward.is_empty(), "{}", upward.join("\n"));
    // Each layer is used: the numbers are depths, not labels.
    let layers: BTreeSet<u32> = table.values().map(|r| r.layer).collect();
    let deepest = *layers.iter().max().unwrap();
    assert_eq!(
        layers.len() as u32,
        deepest + 1,
        "layers 0..={deepest} without gaps: {layers:?}"
    );
}

#[test]
fn the_core_names_no_tonic_and_no_proto_and_services_reach_no_encoding() {
    let src = common::repo().join("src");
    let mut offenders = Vec::new();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let Some(module) = module_of(&src, &file) else { continue };
        let text = code(&std::fs::read_to_string(&file).unwrap());
        let rel = file.strip_prefix(common::repo()).unwrap().display().to_string();
        for (n, line) in text.lines().enumerate() {
            let place = format!("{rel}:{}", n + 1);
            let core = ["domain", "rating", "store", "pipeline", "telemetry", "billing"].contains(&module.as_str());
            if core && (line.contains("tonic") || line.contains("proto::")) {
                offenders.push(format!("{place}: {module} names tonic or proto: {}", line.trim()));
            }
            // Security knows the listener's TLS settings, and no request or status.
            let tonic_beyond_tls = line.contains("tonic") && !line.contains("tonic::transport");
            if module == "security" && (tonic_beyond_tls || line.contains("proto::")) {
                offenders.push(format!(
                    "{place}: security names a request, a status or proto: {}",
                    line.trim()
                ));
            }
            let service = ["ingest", "query", "admin", "charging"].contains(&module.as_str());
            if service && line.contains("store::codec") {
                offenders.push(format!(
                    "{place}: {module} reaches the store's encodings: {}",
                    line.trim()
                ));
            }
            // The codec answers a message that does not decode before any service sees it.
            let makes_status = [
                "Status::new(",
                "Status::invalid_argument(",
                "Status::internal(",
                "Status::unavailable(",
            ]
            .iter()
            .any(|m| line.contains(m));
            // ratectl's sender makes the statuses of its own stream's failures.
            if makes_status && module != "edge" && !rel.ends_with("wire/codec.rs") && module != "client" {
                offenders.push(format!(
                    "{place}: a status made outside the service edge: {}",
                    line.trim()
                ));
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

#[test]
fn the_scanner_reads_paths_groups_over_lines_and_skips_comments() {
    let names = |code: &str| -> Vec<String> { named_modules(code).into_iter().map(|(_, n)| n).collect() };
    assert_eq!(names("use crate::wire::proto;"), ["wire"]);
    assert_eq!(names("use crate::{pipeline, store::codec};"), ["pipeline", "store"]);
    assert_eq!(
        names("use crate::{\n    pipeline::{Pipeline, shard},\n    store::codec,\n    edge::ApiError,\n};"),
        ["pipeline", "store", "edge"]
    );
    assert_eq!(names("let x = ratingd::client::output::Output { json };"), ["client"]);
    assert!(names(&code("let y = 1; // see crate::query")).is_empty());
    assert!(names("foo_crate::bar").is_empty());
    let text = "use std::sync::Arc;\nuse crate::{\n    domain::usage,\n};";
    let found = named_modules(text);
    assert_eq!(line_of(text, found[0].0), 2);
}
