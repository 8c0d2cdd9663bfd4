//! Keeps the module map of `src/lib.rs` true: every `crate::` and `super::` path in the
//! library names a module of the same layer or a lower one, never a higher one, and no two
//! top-level modules import each other (no cycle). The layers are the ones `lib.rs` and
//! `docs/design.md` describe; a new module must be given one here, or this test fails.
//!
//! It reads the source as text (no dependency): `use` lines, and paths in code. Comments
//! and doc comments are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of the library and its layer, lowest first. Within a layer a later
/// name may import an earlier one, except among the stages, which follow [`STAGE_EDGES`].
const LAYERS: &[(&str, &[&str])] = &[
    // L0: leaves, pure; no crate import outside this layer.
    (
        "leaves",
        &[
            "json", "percent", "lock", "frame", "history", "sio", "token", "http", "tunnel",
        ],
    ),
    // L1: plumbing.
    ("plumbing", &["log", "config", "metrics", "executor"]),
    // L2: shared state; no sockets (only the backplane runs tasks).
    ("shared", &["auth", "admission", "hub", "backplane"]),
    // L3: sessions; they see a SessionCtx, never the gateway.
    ("session", &["session"]),
    // L4: the wiring every request stage takes.
    ("wiring", &["gateway"]),
    // L5: the stages that serve requests.
    ("stages", &["prelude", "routes", "upstream", "admin"]),
    // L6: the accept loop and the drain.
    ("server", &["server"]),
];

/// Within the stages: which may import which (the rest may not import each other).
const STAGE_EDGES: &[(&str, &str)] = &[("routes", "prelude"), ("upstream", "prelude")];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "bin") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/`: `src/session/live.rs` -> `["session", "live"]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// Code lines without comments or the test module (tests may reach anywhere).
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .filter(|l| !l.trim().is_empty())
}

/// The log macros are exported at the crate root but belong to `log`.
fn normalize(name: String) -> String {
    match name.as_str() {
        "info" | "warn" | "error" | "log_at" => "log".to_owned(),
        _ => name,
    }
}

/// The top-level modules a file names through `crate::x` or `super::` paths.
fn imports(path: &[String], text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code_lines(text) {
        for (i, _) in line.match_indices("crate::") {
            // `$crate::` in a macro is the crate too.
            let rest = &line[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(normalize(name));
            }
        }
        // `use crate::{a, b::c}` lists several.
        if let Some(i) = line.find("crate::{") {
            let inner = &line[i + "crate::{".len()..];
            for item in inner.split([',', '}']) {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(normalize(name));
                }
            }
        }
        // `super::` from a nested file climbs within its own top-level module, except from a
        // top-level file's child, which is still inside it; `super::super::` from depth 2 is
        // the same. Only a climb above the top-level module would leave it, which `lib.rs`
        // children cannot do.
        let climbs = line.matches("super::").count();
        if climbs > 0 && path.len() <= climbs && !line.contains("use super::*") {
            panic!(
                "{}: `super::` climbs out of its module: {line}",
                path.join("::")
            );
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let path = module_path(&src, &f);
        let Some(top) = path.first().cloned() else {
            continue; // lib.rs: the module list itself.
        };
        if top == "main" {
            continue; // the binary: it may use everything.
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let mut deps = imports(&path, &text);
        deps.remove(&top);
        g.entry(top).or_default().extend(deps);
    }
    g
}

#[test]
fn every_module_has_a_layer_and_imports_point_down() {
    let g = graph();
    let mut wrong = Vec::new();
    for (module, deps) in &g {
        let Some(from) = layer_of(module) else {
            wrong.push(format!("{module}: no layer in tests/layers.rs"));
            continue;
        };
        for dep in deps {
            let Some(to) = layer_of(dep) else {
                wrong.push(format!("{module} -> {dep}: {dep} has no layer"));
                continue;
            };
            let mods = LAYERS[from].1;
            let index = |m: &str| mods.iter().position(|x| *x == m);
            let sideways_ok = from == to
                && if LAYERS[from].0 == "stages" {
                    STAGE_EDGES.contains(&(module.as_str(), dep.as_str()))
                } else {
                    index(dep) < index(module)
                };
            if to > from || (to == from && !sideways_ok) {
                wrong.push(format!(
                    "{module} ({}) -> {dep} ({}): points up or sideways",
                    LAYERS[from].0, LAYERS[to].0
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "layer rule broken:\n{}", wrong.join("\n"));
}

#[test]
fn no_module_cycle() {
    let g = graph();
    // Depth-first search for a back edge.
    fn visit<'a>(
        g: &'a BTreeMap<String, BTreeSet<String>>,
        n: &'a str,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| *s == n) {
            let mut cycle: Vec<String> = stack[i..].iter().map(|s| s.to_string()).collect();
            cycle.push(n.to_owned());
            return Some(cycle);
        }
        if !done.insert(n) {
            return None;
        }
        stack.push(n);
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, d, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        let found = visit(&g, n, &mut Vec::new(), &mut done);
        assert!(
            found.is_none(),
            "module cycle: {}",
            found.unwrap().join(" -> ")
        );
    }
}

#[test]
fn the_checker_sees_edges_and_cycles() {
    // The reader finds both `use crate::a::b` and grouped imports, and skips comments.
    let path = ["x".to_owned()];
    let text = "use crate::hub::Hub;\nuse crate::{log, config::X};\n// crate::server\nfn f() { crate::info!(); }\n#[cfg(test)]\nuse crate::admin;";
    let got = imports(&path, text);
    let want: BTreeSet<String> = ["hub", "log", "config"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want);
    // Every module the library declares has a layer (a new one must be placed).
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(m) = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("mod "))
        {
            let m = m.trim_end_matches(';');
            assert!(
                layer_of(m).is_some(),
                "src/lib.rs declares {m}, which has no layer"
            );
        }
    }
}
