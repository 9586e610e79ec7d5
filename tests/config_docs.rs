#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: unreadable files should fail it loudly

//! The configuration table of `docs/operations.md` is held to `src/config.rs` and to
//! wrangler.toml: every setting the code reads is documented and nothing else is; every
//! number's default and range in the table are the ones the code applies; every `[vars]`
//! entry of wrangler.toml is a documented setting, and a number there is its default (the
//! template deploys what the docs say).

use std::collections::BTreeMap;
use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// A number setting as the code reads it: `number(&get, "NAME", default, lo..=hi)`.
#[derive(Debug, PartialEq)]
struct NumberSetting {
    default: u64,
    low: u64,
    high: u64,
}

fn digits(text: &str) -> u64 {
    text.trim().replace('_', "").parse().unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

/// Every name the code reads (`get("NAME")`, `number(&get, "NAME", ..)`, `drill(&get, "NAME")`),
/// and the numbers among them.
fn code_settings(source: &str) -> (Vec<String>, BTreeMap<String, NumberSetting>) {
    let mut names = Vec::new();
    let mut numbers = BTreeMap::new();
    let markers = [("get(\"", false), ("number(&get, \"", true), ("drill(&get, \"", false), ("money(&get, \"", false)];
    for (marker, is_number) in markers {
        let mut rest = source;
        while let Some(at) = rest.find(marker) {
            rest = &rest[at + marker.len()..];
            let end = rest.find('"').unwrap();
            let name = rest[..end].to_string();
            if is_number {
                // , default, lo..=hi)
                let args = &rest[end + 1..rest.find(')').unwrap()];
                let parts: Vec<&str> = args.trim_start_matches(',').splitn(2, ',').collect();
                let (low, high) = parts[1].split_once("..=").unwrap();
                numbers.insert(
                    name.clone(),
                    NumberSetting { default: digits(parts[0]), low: digits(low), high: digits(high) },
                );
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    (names, numbers)
}

/// The rows of the docs' configuration table: name -> (kind, default, range).
fn documented(doc: &str) -> BTreeMap<String, (String, String, String)> {
    let start = doc.find("| name | kind | default | range | meaning |").expect("the configuration table");
    doc[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<String> =
                line.split(" | ").map(|c| c.trim_matches(|c| c == '|' || c == ' ').to_string()).collect();
            (cells[0].trim_matches('`').to_string(), (cells[1].clone(), cells[2].clone(), cells[3].clone()))
        })
        .collect()
}

/// `[vars]` of wrangler.toml: NAME -> value.
fn wrangler_vars(toml: &str) -> BTreeMap<String, String> {
    let start = toml.find("\n[vars]\n").expect("a [vars] table") + "\n[vars]\n".len();
    toml[start..]
        .lines()
        .take_while(|line| !line.starts_with('['))
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap();
            (name.trim().to_string(), value.trim().trim_matches('"').to_string())
        })
        .collect()
}

#[test]
fn the_docs_table_matches_the_code_and_wrangler_toml() {
    let (names, numbers) = code_settings(&read("src/config.rs"));
    assert!(names.len() > 30 && numbers.len() > 10, "the code's settings were read: {names:?}");
    let table = documented(&read("docs/operations.md"));
    for name in &names {
        assert!(table.contains_key(name), "{name} is read by src/config.rs but not in docs/operations.md");
    }
    for (name, (kind, default, range)) in &table {
        if kind.contains("binding") {
            continue;
        }
        assert!(names.contains(name), "{name} is documented but src/config.rs never reads it");
        if let Some(number) = numbers.get(name) {
            assert_eq!(default, &format!("`{}`", number.default), "{name}: documented default against the code's");
            assert_eq!(
                range,
                &format!("{} to {}", number.low, number.high),
                "{name}: documented range against the code's"
            );
        }
    }
    for (name, value) in wrangler_vars(&read("wrangler.toml")) {
        assert!(table.contains_key(&name), "wrangler.toml sets {name}, which docs/operations.md does not document");
        if let Some(number) = numbers.get(&name) {
            assert_eq!(digits(&value), number.default, "wrangler.toml's {name} is not the documented default");
        }
    }
}

#[test]
fn the_reader_of_the_code_sees_defaults_and_ranges() {
    let (names, numbers) = code_settings(
        r#"let a = get("A"); let b = number(&get, "B", 90_000, 100..=600_000)?; let c = drill(&get, "C")?;"#,
    );
    assert_eq!(names, vec!["A", "B", "C"]);
    assert_eq!(numbers["B"], NumberSetting { default: 90_000, low: 100, high: 600_000 });
    let doc = "x\n| name | kind | default | range | meaning |\n|---|---|---|---|---|\n| `B` | var | `90000` | 100 to 600000 | m |\n\nafter";
    assert_eq!(documented(doc)["B"], ("var".into(), "`90000`".into(), "100 to 600000".into()));
}
