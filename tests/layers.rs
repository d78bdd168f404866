//! The import rules of docs/architecture.md, checked on the source: layers point one way.
//!
//! - The relay and the wire protocol (src/relay/, src/protocol.rs, src/sys.rs) never import
//!   the harness crate: a relay is not built on its test harness.
//! - relay-trace (trace/) is a leaf: it depends on no crate of this workspace.
//! - Within a crate, the top-level modules import each other without a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every .rs file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if d.is_file() {
            out.push(d);
            continue;
        }
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() || p.extension().is_some_and(|x| x == "rs") {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without its `#[cfg(test)]` module (tests may reach anywhere).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The identifiers that follow `prefix` in `text` (`crate::` gives the modules it names).
fn names_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// Top-level module -> the top-level modules it names through `crate::`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(src) {
        let rel = file.strip_prefix(src).unwrap();
        let top = rel.iter().next().unwrap().to_str().unwrap();
        let top = top.strip_suffix(".rs").unwrap_or(top).to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = code(&file);
        assert!(
            !text.contains("crate::{"),
            "{}: name each module in its own `use crate::...` (this check reads them one by one)",
            file.display()
        );
        let deps = graph.entry(top.clone()).or_default();
        for m in names_after(&text, "crate::") {
            if m != top {
                deps.insert(m.to_string());
            }
        }
    }
    graph
}

/// A cycle in `graph`, if there is one (depth-first search, three colours).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        v: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == v) {
            let mut cycle = path[i..].to_vec();
            cycle.push(v.to_string());
            return Some(cycle);
        }
        if done.contains(v) {
            return None;
        }
        path.push(v.to_string());
        for w in g.get(v).into_iter().flatten() {
            if let Some(c) = visit(g, w, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(v.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|v| visit(graph, v, &mut Vec::new(), &mut done))
}

#[test]
fn the_relay_and_the_protocol_do_not_import_the_harness() {
    let r = root().join("src");
    let files = [
        sources(&r.join("relay")),
        vec![r.join("protocol.rs"), r.join("sys.rs")],
    ]
    .concat();
    assert!(files.len() > 5, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("relay_harness"),
            "{} imports the harness crate; the relay may use relay_trace, never relay_harness",
            f.display()
        );
    }
}

#[test]
fn the_trace_crate_is_a_leaf() {
    let manifest = std::fs::read_to_string(root().join("trace/Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("path ="),
        "trace/Cargo.toml:\n{manifest}"
    );
    let text = std::fs::read_to_string(root().join("trace/src/lib.rs")).unwrap();
    let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
    for line in code {
        assert!(
            !line.contains("relay_"),
            "trace/src/lib.rs uses a crate of ours: {line}"
        );
    }
}

#[test]
fn no_module_imports_itself_through_others() {
    for src in [root().join("src"), root().join("harness/src")] {
        let graph = module_graph(&src);
        assert!(graph.len() > 5, "{}: {graph:?}", src.display());
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{}: import cycle {}", src.display(), cycle.join(" -> "));
        }
    }
}

/// The checker itself: it sees a cycle when there is one.
#[test]
fn the_cycle_check_finds_a_cycle() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    let names = names_after("use crate::payload::{mix}; crate::scenario::x", "crate::");
    assert_eq!(names, ["payload", "scenario"]);
}
