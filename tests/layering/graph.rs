//! The module graph of the library: one node per top-level module, its cycles, and the
//! documented layering it is checked against.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::source::{scan, Scan};

/// The node of the crate root (`src/lib.rs`).
pub const ROOT: &str = "crate";

/// One import of module `to` by module `from`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// `file:line`
    pub at: String,
}

/// The module path of a file under `src/` (`None` for the binary).
fn module_of(rel: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    match (parts.is_empty(), stem) {
        (true, "lib") => Some(Vec::new()),
        (true, "main") => None,
        (_, "mod") => Some(parts),
        _ => {
            parts.push(stem.to_string());
            Some(parts)
        }
    }
}

/// Every cross-module import of the given files (`(path under src/, text)`).
pub fn edges(files: &[(String, String)]) -> Vec<Edge> {
    let parsed: Vec<(String, Vec<String>, &str)> = files
        .iter()
        .filter_map(|(rel, text)| Some((rel.clone(), module_of(Path::new(rel))?, text.as_str())))
        .collect();
    let modules: BTreeSet<String> = parsed.iter().filter_map(|(_, m, _)| m.first().cloned()).collect();
    let scans: Vec<(String, Vec<String>, Scan)> =
        parsed.iter().map(|(rel, m, text)| (rel.clone(), m.clone(), scan(m, text, &modules))).collect();
    let test_only: Vec<Vec<String>> = scans.iter().flat_map(|(_, _, s)| s.test_children.clone()).collect();
    let reexports: BTreeMap<String, String> =
        scans.iter().filter(|(_, m, _)| m.is_empty()).flat_map(|(_, _, s)| s.reexports.clone()).collect();
    let node = |path: &[String]| -> String {
        match path.first() {
            Some(m) if path.len() > 1 || modules.contains(m) => m.clone(),
            Some(name) => reexports.get(name).cloned().unwrap_or_else(|| ROOT.to_string()),
            None => ROOT.to_string(),
        }
    };
    let mut out = Vec::new();
    for (rel, module, s) in &scans {
        if test_only.iter().any(|t| module.starts_with(t)) {
            continue;
        }
        let from = node(module);
        for (path, line) in &s.paths {
            // A path that is exactly a module name at the root (`crate::hub`) names that module;
            // a longer one (`crate::hub::Event`) names its first segment's module.
            let to = node(path);
            if to != from {
                out.push(Edge { from: from.clone(), to, at: format!("src/{rel}:{line}") });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Strongly connected components of more than one node (Tarjan).
pub fn cycles(edges: &[Edge]) -> Vec<BTreeSet<String>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        graph.entry(e.from.as_str()).or_default().insert(e.to.as_str());
        graph.entry(e.to.as_str()).or_default();
    }
    struct State<'a> {
        graph: &'a BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(v: &'a str, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        let graph = s.graph;
        for &w in &graph[v] {
            if !s.index.contains_key(w) {
                visit(w, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.stack.contains(&w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                comp.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for &v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(v, &mut s);
        }
    }
    s.out
}

/// A readable account of each cycle: its modules and the imports that tie them.
pub fn explain(edges: &[Edge], cycles: &[BTreeSet<String>]) -> String {
    let mut text = String::new();
    for comp in cycles {
        text += &format!("import cycle among {} modules: {:?}\n", comp.len(), comp);
        let mut pairs: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for e in edges.iter().filter(|e| comp.contains(&e.from) && comp.contains(&e.to)) {
            pairs.entry((&e.from, &e.to)).or_default().push(&e.at);
        }
        for ((from, to), at) in pairs {
            text += &format!("  {from} -> {to}   ({})\n", at.join(", "));
        }
    }
    text
}

/// The numbered layering list of `src/lib.rs`'s module doc: module → its line (1 = top).
pub fn documented_layers(lib_rs: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut current = None;
    for line in lib_rs.lines() {
        let Some(doc) = line.strip_prefix("//!") else { break };
        let item =
            doc.trim_start().split_once(". ").and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)));
        let text = match item {
            Some((n, rest)) if doc.starts_with(' ') && !doc.starts_with("  ") => {
                current = Some(n);
                rest
            }
            _ if current.is_some() && doc.starts_with("    ") => doc,
            _ => {
                current = None;
                continue;
            }
        };
        let Some(n) = current else { continue };
        for (k, word) in text.split('`').enumerate() {
            if k % 2 == 1 && word.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                out.insert(word.to_string(), n);
            }
        }
    }
    out
}

/// Imports that do not go down the documented list, and modules missing from it.
pub fn against_layers(edges: &[Edge], layers: &BTreeMap<String, usize>) -> Vec<String> {
    let level = |m: &str| if m == ROOT { Some(0) } else { layers.get(m).copied() };
    let mut wrong = BTreeSet::new();
    for e in edges {
        match (level(&e.from), level(&e.to)) {
            (Some(a), Some(b)) if a < b => {}
            (Some(a), Some(b)) => {
                wrong.insert(format!("{} (line {a}) uses {} (line {b}) at {}", e.from, e.to, e.at));
            }
            (None, _) => {
                wrong.insert(format!("module {} is not in the list", e.from));
            }
            (_, None) => {
                wrong.insert(format!("module {} is not in the list", e.to));
            }
        }
    }
    wrong.into_iter().collect()
}
