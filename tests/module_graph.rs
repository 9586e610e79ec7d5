#![allow(clippy::unwrap_used)] // a test: a failure to read src/ should fail it loudly

//! The modules of `src/` form a graph without cycles: no two modules import each other,
//! directly or through others. A module is a top-level file or folder of `src/`; an import
//! is any `crate::name` path (in `use` or inline) or a `use crate::{a, b}` group.
//! `lib.rs` declares the modules, `app.rs` wires the routes and `openapi/document.rs` (a
//! test) documents every route, so those three, which name every feature, are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

/// The top-level module a file belongs to: `src/auth/token.rs` -> `auth`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// Every module named after `crate::` in `text`, including `use crate::{a, b::c}` groups.
fn imports(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => top_level_items(group),
            None => vec![rest],
        };
        for name in names {
            let ident: String = name.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if modules.contains(&ident) {
                found.insert(ident);
            }
        }
    }
    found
}

/// The items of a `{a, b::{c, d}, e}` group (the text after its `{`), split at the commas
/// of its own level.
fn top_level_items(group: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(group[start..i].trim());
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(group[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(group[start..].trim());
    items
}

/// Lines of code only: comments may name other modules freely.
fn code_only(text: &str) -> String {
    text.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let wiring = [src.join("lib.rs"), src.join("app.rs"), src.join("openapi").join("document.rs")];
    for file in &files {
        let module = module_of(&src, file);
        if wiring.contains(file) {
            continue;
        }
        let text = code_only(&std::fs::read_to_string(file).unwrap());
        let targets = edges.entry(module.clone()).or_default();
        targets.extend(imports(&text, &modules).into_iter().filter(|m| *m != module && m != "lib" && m != "app"));
    }
    edges
}

/// A cycle through `start`, if there is one.
fn cycle_from(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn walk(
        node: &str,
        start: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in edges.get(node).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(next, start, edges, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(start, start, edges, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let edges = graph();
    assert!(edges.len() > 10, "the graph was read: {edges:?}");
    assert!(edges["generate"].contains("auth"), "imports are found: {:?}", edges["generate"]);
    let cycles: Vec<String> =
        edges.keys().filter_map(|module| cycle_from(module, &edges)).map(|cycle| cycle.join(" -> ")).collect();
    assert!(cycles.is_empty(), "import cycles between modules of src/:\n{}", cycles.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    edges.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycle_from("a", &edges), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    let modules = BTreeSet::from(["db".to_string(), "error".to_string(), "auth".to_string()]);
    assert_eq!(
        imports("use crate::{db::{self, Batch}, error::ApiError};\nlet x = crate::auth::bearer(y);", &modules),
        BTreeSet::from(["db".to_string(), "error".to_string(), "auth".to_string()])
    );
}
