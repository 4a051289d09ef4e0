//! The layering rules of ARCHITECTURE.md hold in the code: each module imports only the
//! modules its row of the `layers` table names, and no two modules (nor two files of one
//! module) import each other, directly or round a cycle. Read from the sources as text: every
//! `crate::` and `super::` path outside comments and test modules counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::common::repo;

/// Module path ("net::session") -> the module paths it refers to.
fn references() -> BTreeMap<String, BTreeSet<String>> {
    let src = repo().join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut out = BTreeMap::new();
    for f in &files {
        let me = module_of(&src, f);
        if me == "main" || me == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests may reach further than the module does; they come last in a file.
        let code = text.split("#[cfg(test)]").next().unwrap();
        let mut refs = BTreeSet::new();
        for line in code.lines() {
            let line = line.split("//").next().unwrap();
            for (prefix, base) in [("crate::", String::new()), ("super::", parent(&me, f))] {
                let mut rest = line;
                while let Some(i) = rest.find(prefix) {
                    let path: String = rest[i + prefix.len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                    let full = if base.is_empty() { path.clone() } else { format!("{base}::{path}") };
                    if let Some(target) = longest_module(&modules, &full) {
                        if target != me {
                            refs.insert(target);
                        }
                    }
                    rest = &rest[i + prefix.len()..];
                }
            }
        }
        out.entry(me).or_insert_with(BTreeSet::new).extend(refs);
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/net/session.rs` -> `net::session`; `src/net/mod.rs` -> `net`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The module `super::` names from module `me`: its parent (the crate root for a top module).
fn parent(me: &str, _file: &Path) -> String {
    me.rsplit_once("::").map(|(p, _)| p.to_string()).unwrap_or_default()
}

fn longest_module(modules: &BTreeSet<String>, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|m| modules.contains(m))
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap()
}

/// The `layers` table: module -> modules it may import.
fn rules() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    let start = doc.find("<!-- layers -->").expect("ARCHITECTURE.md has a `layers` table");
    let body = &doc[start..];
    let body = &body[..body.find("<!-- end -->").unwrap()];
    let names = |cell: &str| -> BTreeSet<String> { cell.split('`').skip(1).step_by(2).map(str::to_string).collect() };
    body.lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').collect();
            (names(cells[0]).into_iter().next().unwrap(), names(cells[1]))
        })
        .collect()
}

/// A cycle in `graph`, if it has one (as the list of nodes round it).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(n: &str, g: &BTreeMap<String, BTreeSet<String>>, state: &mut BTreeMap<String, u8>, stack: &mut Vec<String>) -> Option<Vec<String>> {
        match state.get(n) {
            Some(1) => return Some(stack[stack.iter().position(|s| s == n).unwrap()..].to_vec()),
            Some(2) => return None,
            _ => {}
        }
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    graph.keys().find_map(|n| visit(n, graph, &mut state, &mut Vec::new()))
}

#[test]
fn modules_import_only_what_the_layers_table_allows() {
    let rules = rules();
    let refs = references();
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, targets) in &refs {
        let entry = tops.entry(top(m).to_string()).or_default();
        entry.extend(targets.iter().map(|t| top(t).to_string()).filter(|t| t != top(m)));
    }
    let mut broken = Vec::new();
    for (m, targets) in &tops {
        let Some(allowed) = rules.get(m) else {
            broken.push(format!("module `{m}` has no row in the layers table"));
            continue;
        };
        for t in targets.difference(allowed) {
            broken.push(format!("`{m}` imports `{t}`, which its row does not allow"));
        }
    }
    for m in rules.keys() {
        if !tops.contains_key(m) {
            broken.push(format!("the layers table names `{m}`, which is not a module"));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    assert_eq!(cycle(&rules), None, "the layers table itself has a cycle");
    assert_eq!(cycle(&tops), None, "modules import each other round a cycle");
}

#[test]
fn no_two_files_of_a_module_import_each_other() {
    let refs = references();
    // Within each top-level module, the graph of its files.
    let mut inner: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, targets) in &refs {
        inner.entry(m.clone()).or_default().extend(targets.iter().filter(|t| top(t) == top(m) && !m.starts_with(&format!("{t}::"))).cloned());
    }
    assert_eq!(cycle(&inner), None);
    // The checker sees what it should: the session uses the message layer, services the net.
    assert!(refs["net::session"].contains("net::dimse::message") || refs["net::session"].contains("net::dimse"));
    assert!(refs["services::store"].contains("net") || refs["services::store"].iter().any(|t| t.starts_with("net")));
}

/// Every error says its cause once: a variant whose message quotes its cause (`{0}`, `{cause}`,
/// `{source}`) does not also expose it as its source (`#[from]`, `#[source]`, a field named
/// `source`), so a printer of the chain (the CLI's `error_text`) never repeats a cause.
#[test]
fn every_error_says_its_cause_once() {
    let mut files = Vec::new();
    walk(&repo().join("src"), &mut files);
    let mut both = Vec::new();
    let mut checked = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(message) = line.trim().strip_prefix("#[error(\"") else { continue };
            checked += 1;
            let quotes_cause = message.contains("{0}") || message.contains("{cause}") || message.contains("{source}");
            let variant = lines.get(i + 1).copied().unwrap_or_default();
            let exposes = variant.contains("#[from]") || variant.contains("#[source]") || variant.contains("source:") || variant.contains(" source }");
            if quotes_cause && exposes {
                both.push(format!("{}:{}: {}", f.display(), i + 1, variant.trim()));
            }
        }
    }
    assert!(checked > 100, "only {checked} error messages found");
    assert!(both.is_empty(), "errors that quote their cause and expose it as their source:\n{}", both.join("\n"));
}
