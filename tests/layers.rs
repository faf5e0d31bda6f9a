//! The crate's top-level modules form layers: each module may use only
//! modules of its own layer or below, and no two modules may depend on each
//! other, directly or through others. The layers are the table in
//! [`LAYERS`], which is also the architecture section of the crate docs
//! (`src/lib.rs`); a new top-level module must be placed in it.
//!
//! Dependencies are read from the source: every `crate::` path outside
//! comments (including `use crate::{a, b::c}` groups and `super::` chains
//! that climb to the crate root) names the top-level module it enters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. A module may import from its own layer (if that makes no
/// cycle) and from any layer below.
const LAYERS: &[&[&str]] = &[
    // leaves: pure or self-contained
    &["tls", "balance", "retry", "health", "http1"],
    // validated, immutable configuration
    &["config"],
    &["metrics", "error", "routing", "limits"],
    // pools and what writes their endpoint sets; the request path's state
    &["upstream", "discovery", "probe", "middleware", "snapshot"],
    // one request
    &["proxy"],
    // traffic listeners
    &["server"],
    // control plane
    &["reload", "admin"],
    &["app", "demo"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Removes `//` comments and string literals, so doc links and messages
/// do not count as dependencies.
fn strip(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    let (mut in_str, mut in_block) = (false, 0usize);
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_str => {
                chars.next();
            }
            '\'' if !in_str && in_block == 0 => {
                // A char literal of a quote or backslash (`'"'`, `'\\'`)
                // must not open a string; lifetimes pass through.
                let ahead: String = chars.clone().take(3).collect();
                let skip = ["\"'", "\\\"'", "\\\\'"]
                    .iter()
                    .find(|p| ahead.starts_with(**p))
                    .map_or(0, |p| p.len());
                for _ in 0..skip {
                    chars.next();
                }
            }
            '"' if in_block == 0 => in_str = !in_str,
            '/' if !in_str && in_block == 0 && chars.peek() == Some(&'/') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if !in_str && chars.peek() == Some(&'*') => {
                chars.next();
                in_block += 1;
            }
            '*' if !in_str && in_block > 0 && chars.peek() == Some(&'/') => {
                chars.next();
                in_block -= 1;
            }
            _ if in_str || in_block > 0 => {}
            _ => out.push(c),
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The names at the top level of a `{...}` group starting at `s[0] == '{'`.
fn group_heads(s: &str) -> Vec<String> {
    let (mut depth, mut heads, mut expect) = (0usize, Vec::new(), true);
    for (i, c) in s.char_indices() {
        match c {
            '{' => {
                depth += 1;
                expect = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect = true,
            c if expect && depth == 1 && (c.is_ascii_alphabetic() || c == '_') => {
                heads.push(ident_at(&s[i..]).to_owned());
                expect = false;
            }
            _ => {}
        }
    }
    heads
}

/// Top-level modules named by `crate::` paths in `src`.
fn crate_paths(src: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in src.match_indices("crate::") {
        let before = src[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::` or an identifier ending in `crate`
        }
        let rest = src[i + "crate::".len()..].trim_start();
        if rest.starts_with('{') {
            found.extend(group_heads(rest));
        } else {
            found.push(ident_at(rest).to_owned());
        }
    }
    found
}

/// Top-level modules reached by `super::` chains that climb out of the
/// file's own top-level module. `depth` is how many modules deep the
/// file's module is (1 for `src/x.rs` and `src/x/mod.rs`).
fn super_paths(src: &str, depth: usize) -> Vec<String> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(i) = src[at..].find("super::") {
        let start = at + i;
        let before = src[..start].chars().next_back();
        at = start + 1;
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue; // the rest of a chain already counted
        }
        let mut rest = &src[start..];
        let mut ups = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            ups += 1;
            rest = r;
        }
        if ups >= depth {
            let rest = rest.trim_start();
            if rest.starts_with('{') {
                found.extend(group_heads(rest));
            } else {
                found.push(ident_at(rest).to_owned());
            }
        }
    }
    found
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

/// (top-level module, depth of the file's module below the crate root).
fn module_of(src_dir: &Path, file: &Path) -> Option<(String, usize)> {
    let rel = file.strip_prefix(src_dir).unwrap();
    let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).collect();
    let top = parts[0].trim_end_matches(".rs").to_owned();
    if top == "lib" || top == "main" {
        return None;
    }
    let last = *parts.last().unwrap();
    let depth = parts.len() - usize::from(last == "mod.rs");
    Some((top, depth))
}

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// module → module it uses → files that use it.
fn dependency_graph() -> (BTreeSet<String>, Graph) {
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src_dir, &mut files);
    let mut modules = BTreeSet::new();
    let mut graph = Graph::new();
    for file in &files {
        let Some((top, depth)) = module_of(&src_dir, file) else {
            continue;
        };
        modules.insert(top.clone());
        let text = strip(&std::fs::read_to_string(file).unwrap());
        let rel = file.strip_prefix(&src_dir).unwrap().display().to_string();
        for dep in crate_paths(&text)
            .into_iter()
            .chain(super_paths(&text, depth))
        {
            if dep != top {
                let users = graph.entry(top.clone()).or_default();
                users.entry(dep).or_default().insert(rel.clone());
            }
        }
    }
    // Only top-level modules count (`crate::Config` re-exports do not).
    for deps in graph.values_mut() {
        deps.retain(|d, _| modules.contains(d));
    }
    (modules, graph)
}

/// A cycle through `start`, if one exists (depth-first search).
fn cycle_from(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &Graph,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flat_map(|d| d.keys()) {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    walk(graph, start, start, &mut path, &mut seen).then(|| {
        path.push(start.to_owned());
        path
    })
}

#[test]
fn every_module_has_a_layer() {
    let (modules, _) = dependency_graph();
    let unplaced: Vec<_> = modules.iter().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "modules missing from LAYERS in tests/layers.rs: {unplaced:?}"
    );
    for layer in LAYERS {
        for m in *layer {
            assert!(
                modules.contains(*m),
                "LAYERS names `{m}`, which is not a module of src/"
            );
        }
    }
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let (_, graph) = dependency_graph();
    let mut violations = Vec::new();
    for (module, deps) in &graph {
        let Some(own) = layer_of(module) else {
            continue;
        };
        for (dep, files) in deps {
            if layer_of(dep).is_some_and(|l| l > own) {
                violations.push(format!("{module} → {dep} (in {files:?})"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward dependencies:\n{}",
        violations.join("\n")
    );
}

#[test]
fn top_level_modules_form_no_cycle() {
    let (modules, graph) = dependency_graph();
    for m in &modules {
        if let Some(cycle) = cycle_from(&graph, m) {
            let edges: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} → {} (in {:?})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            panic!("module cycle {}:\n{}", cycle.join(" → "), edges.join("\n"));
        }
    }
}

#[test]
fn the_scanner_sees_paths_groups_and_super_chains() {
    let src = strip(
        "use crate::{a::{x, y}, b, c::z as w};\n\
         // crate::commented\n\
         let s = \"crate::in_string\";\n\
         fn f() -> crate::d::T { super::super::e::f() }\n\
         /* crate::blocked */ $crate::macro_path",
    );
    assert_eq!(crate_paths(&src), ["a", "b", "c", "d"]);
    assert_eq!(super_paths(&src, 2), ["e"]);
    assert!(super_paths(&src, 3).is_empty());
}

#[test]
fn a_cycle_is_found_and_named() {
    let mut graph = Graph::new();
    for (a, b) in [("x", "y"), ("y", "z"), ("z", "x"), ("z", "w")] {
        graph
            .entry(a.into())
            .or_default()
            .entry(b.into())
            .or_default();
    }
    assert_eq!(cycle_from(&graph, "x").unwrap(), ["x", "y", "z", "x"]);
    assert_eq!(cycle_from(&graph, "w"), None);
}
