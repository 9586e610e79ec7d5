#![allow(clippy::unwrap_used)] // a test: a failure to read src/ should fail it loudly

//! The files of `src/` import each other without a loop: no file imports one that,
//! directly or through others, imports it back. The nodes are files (`src/generate/store.rs`),
//! so a loop inside a folder counts as much as one between folders. An import is a path
//! that starts `crate::` or `super::` (in `use`, in a `use` group, or inline), or, in a
//! `mod.rs` or `lib.rs`, `use child::...`; it lands on the deepest file its segments name
//! (`crate::generate::store::End` -> `src/generate/store.rs`, `crate::db::Batch` ->
//! `src/db.rs`). Unit-test modules (`#[cfg(test)] mod tests`, at the end of a file) are
//! left out, and so are the files that only wire things together: `lib.rs` declares the
//! modules, `app.rs` dispatches every route, `openapi/document.rs` (a test) documents
//! every type.

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

/// A file's module path: `src/generate/store.rs` -> [generate, store]; `src/auth/mod.rs`
/// -> [auth]; `src/lib.rs` -> [].
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> =
        relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The file of a module path, if there is one.
fn file_of(src: &Path, module: &[String]) -> Option<String> {
    if module.is_empty() {
        return Some("lib.rs".into());
    }
    let joined = module.join("/");
    [format!("{joined}.rs"), format!("{joined}/mod.rs")].into_iter().find(|candidate| src.join(candidate).is_file())
}

/// The deepest file that `base` followed by `segments` names.
fn resolve(src: &Path, base: &[String], segments: &[&str]) -> Option<String> {
    let mut module = base.to_vec();
    let mut found = file_of(src, &module);
    for segment in segments {
        module.push(segment.to_string());
        match file_of(src, &module) {
            Some(file) => found = Some(file),
            None => break,
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

/// The `::`-separated identifiers at the start of `text` (`a::b::{c}` -> [a, b]).
fn leading_segments(text: &str) -> Vec<&str> {
    let mut segments = Vec::new();
    let mut rest = text;
    loop {
        let len = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        segments.push(&rest[..len]);
        match rest[len..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    segments
}

/// Every import path in `text` after `prefix` (`crate::` or `super::`), as segments;
/// `use prefix{a, b::c}` groups give one path per item.
fn paths_after<'t>(text: &'t str, prefix: &str) -> Vec<Vec<&'t str>> {
    let mut paths = Vec::new();
    let mut offset = 0;
    while let Some(found) = text[offset..].find(prefix) {
        let at = offset + found;
        let before = text[..at].chars().last();
        offset = at + prefix.len();
        let rest = &text[offset..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `super::super::`, or part of a longer path
        }
        match rest.strip_prefix('{') {
            Some(group) => paths.extend(top_level_items(group).into_iter().map(leading_segments)),
            None => paths.push(leading_segments(rest)),
        }
    }
    paths
}

/// Code only: comment lines go (they may name any module), and so does every test-only
/// inline module (`#[cfg(test)] mod tests { .. }`, whose `super::` is the file itself).
fn code_only(text: &str) -> String {
    let text: String = text.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        rest = &rest[at + "#[cfg(test)]".len()..];
        // Other attributes may stand between it and the item.
        let item = rest.trim_start();
        let item = item.trim_start_matches(|c: char| c != '\n' && item.starts_with("#[")).trim_start();
        let is_module = item.starts_with("mod ") || item.starts_with("pub mod ");
        let Some(open) = item.find('{').filter(|open| is_module && !item[..*open].contains(';')) else { continue };
        let mut depth = 0;
        let mut end = item.len();
        for (i, c) in item[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The files `file` imports.
fn imports_of(src: &Path, file: &Path, text: &str) -> BTreeSet<String> {
    let me = module_path(src, file);
    let is_parent = matches!(file.file_name().and_then(|n| n.to_str()), Some("mod.rs" | "lib.rs"));
    let parent = if is_parent { me[..me.len().saturating_sub(1)].to_vec() } else { me[..me.len() - 1].to_vec() };
    let mut found = BTreeSet::new();
    // Modules brought in by name (`use crate::{generate, db::{self, Batch}}`), whose later
    // `generate::maintenance::run(..)` lands deeper than the `use` line shows.
    let mut aliases: Vec<(String, Vec<String>)> = Vec::new();
    let mut follow = |base: Vec<String>, segments: Vec<&str>, found: &mut BTreeSet<String>| {
        found.extend(resolve(src, &base, &segments));
        let module: Vec<String> = base.into_iter().chain(segments.iter().map(|s| s.to_string())).collect();
        if let (Some(last), Some(_)) = (module.last(), file_of(src, &module)) {
            aliases.push((last.clone(), module.clone()));
        }
    };
    for segments in paths_after(text, "crate::") {
        follow(Vec::new(), segments, &mut found);
    }
    for mut segments in paths_after(text, "super::") {
        let mut base = parent.clone();
        while segments.first() == Some(&"super") {
            segments.remove(0);
            base.pop();
        }
        follow(base, segments, &mut found);
    }
    for (alias, module) in aliases {
        for segments in paths_after(text, &format!("{alias}::")) {
            found.extend(resolve(src, &module, &segments));
        }
    }
    if is_parent {
        // In a module's own file, a child module is named by its bare name (`token::verify`).
        let folder = file.parent().unwrap();
        for child in std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().path()) {
            let name = child.file_stem().unwrap().to_string_lossy().to_string();
            if child == file || name == "mod" {
                continue;
            }
            for segments in paths_after(text, &format!("{name}::")) {
                let path: Vec<&str> = std::iter::once(name.as_str()).chain(segments).collect();
                found.extend(resolve(src, &me, &path));
            }
        }
    }
    let own = file.strip_prefix(src).unwrap().to_string_lossy().to_string();
    found.remove(&own);
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let wiring = ["lib.rs", "app.rs", "openapi/document.rs"];
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let name = file.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        if wiring.contains(&name.as_str()) {
            continue;
        }
        let text = code_only(&std::fs::read_to_string(file).unwrap());
        let targets = imports_of(&src, file, &text);
        edges.insert(name, targets.into_iter().filter(|t| !wiring.contains(&t.as_str())).collect());
    }
    edges
}

/// A loop through `start`, if there is one.
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
fn no_file_imports_one_that_imports_it_back() {
    let edges = graph();
    assert!(edges.len() > 40, "every file was read: {:?}", edges.keys());
    // The reader resolves each kind of path: a sample of edges that exist today.
    for (from, to) in [
        ("generate/engine.rs", "generate/store.rs"), // super::store
        ("generate/routes.rs", "auth/mod.rs"),       // crate::auth::KeyMode
        ("generate/store.rs", "db.rs"),              // use crate::db::{self, Batch}
        ("generate/queue.rs", "generate/engine.rs"), // super::engine::Reserved
        ("auth/mod.rs", "auth/token.rs"),            // pub use / mod child
        ("cron.rs", "generate/maintenance.rs"),      // inline crate::generate::maintenance::...
    ] {
        assert!(edges[from].contains(to), "{from} -> {to} was not seen: {:?}", edges[from]);
    }
    let cycles: BTreeSet<String> =
        edges.keys().filter_map(|file| cycle_from(file, &edges)).map(|cycle| cycle.join(" -> ")).collect();
    assert!(
        cycles.is_empty(),
        "import loops between files of src/:\n{}",
        cycles.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_reader_sees_paths_groups_and_loops() {
    let mut edges = BTreeMap::new();
    edges.insert("a.rs".to_string(), BTreeSet::from(["b.rs".to_string()]));
    edges.insert("b.rs".to_string(), BTreeSet::from(["c.rs".to_string()]));
    edges.insert("c.rs".to_string(), BTreeSet::from(["a.rs".to_string()]));
    assert_eq!(cycle_from("a.rs", &edges), Some(vec!["a.rs".into(), "b.rs".into(), "c.rs".into(), "a.rs".into()]));
    edges.get_mut("c.rs").unwrap().clear();
    assert_eq!(cycle_from("a.rs", &edges), None);
    let text =
        "use crate::{db::{self, Batch}, error::ApiError};\nlet x = crate::auth::bearer(y);\nuse super::store::End;";
    assert_eq!(paths_after(text, "crate::"), vec![vec!["db"], vec!["error", "ApiError"], vec!["auth", "bearer"]]);
    assert_eq!(paths_after(text, "super::"), vec![vec!["store", "End"]]);
    assert_eq!(paths_after("use super::super::x;", "super::"), vec![vec!["super", "x"]]);
    assert!(code_only("use crate::a;\n// crate::b\n#[cfg(test)]\nmod tests {\n use crate::c;\n}").contains("crate::a"));
    let inline = "use crate::a;\n#[cfg(test)]\nmod doc {\n use super::X;\n fn f() { {} }\n}\nuse crate::d;\n#[cfg(test)]\n#[allow(x)]\nmod tests {\n use crate::c;\n}";
    let code = code_only(inline);
    assert!(code.contains("crate::a") && code.contains("crate::d"), "{code}");
    assert!(!code.contains("super::X") && !code.contains("crate::c"), "{code}");
}

/// A loop inside one folder is seen: the two files of generate/ that imported each
/// other before the re-layering would fail the test above.
#[test]
fn a_loop_inside_a_folder_is_a_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let engine = src.join("generate/engine.rs");
    let imports = imports_of(&src, &engine, "use super::queue::consume;");
    assert_eq!(imports, BTreeSet::from(["generate/queue.rs".to_string()]));
    let mut edges = graph();
    edges.get_mut("generate/engine.rs").unwrap().extend(imports);
    assert!(cycle_from("generate/engine.rs", &edges).is_some(), "queue -> engine -> queue must be a loop");
}
