//! Reading one source file: tokens without comments or literals, then the module paths
//! it names (`crate::`, `super::`, `self::`, and the root's bare module names), outside
//! `#[cfg(test)]` items.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
    /// A literal or a lifetime: no path inside.
    Other,
}

/// Splits Rust source into tokens with their line numbers, dropping comments and the
/// contents of string and char literals.
fn lex(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        let start_line = line;
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if let Some(end) = string_end(&c, i) {
            line += c[i..end].iter().filter(|&&x| x == '\n').count();
            i = end;
            out.push((Tok::Other, start_line));
        } else if ch == '\'' || (ch == 'b' && at(i + 1) == '\'') {
            let q = if ch == 'b' { i + 1 } else { i };
            if at(q + 1) == '\\' {
                // An escaped char (`'\''`, `'\u{7b}'`): up to the closing quote.
                i = q + 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(q + 2) == '\'' {
                i = q + 3;
            } else {
                // A lifetime or a label.
                i = q + 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
            out.push((Tok::Other, start_line));
        } else if ch.is_alphabetic() || ch == '_' {
            // A raw identifier (`r#type`) is the identifier.
            if ch == 'r' && at(i + 1) == '#' && (at(i + 2).is_alphabetic() || at(i + 2) == '_') {
                i += 2;
            }
            let s = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(c[s..i].iter().collect()), start_line));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Other, start_line));
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Tok::Sep, start_line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), start_line));
            i += 1;
        }
    }
    out
}

/// If a string literal (`"…"`, `b"…"`, `r#"…"#`, `br"…"`) starts at `i`, the index after it.
fn string_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    let raw = c.get(j) == Some(&'r');
    if raw {
        j += 1;
    }
    let mut hashes = 0;
    while raw && c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if c.get(j) != Some(&'"') {
        return None;
    }
    // A string starting at `i` must not be the tail of an identifier (`xr"` is no raw string).
    if i > 0 && j > i && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if !raw && c[j] == '\\' {
            j += 2;
        } else if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
            return Some(j + 1 + hashes);
        } else {
            j += 1;
        }
    }
    Some(c.len())
}

/// What one file says: the module paths it names, the submodules it declares test-only, and
/// (for the root) what it re-exports.
#[derive(Default)]
pub struct Scan {
    /// (target module path, line) of every path, already resolved to absolute segments.
    pub paths: Vec<(Vec<String>, usize)>,
    /// Child modules declared `#[cfg(test)] mod name;` (their files are test code).
    pub test_children: Vec<Vec<String>>,
    /// `pub use module::{Name, ...}`: name → module (read from the root only).
    pub reexports: BTreeMap<String, String>,
}

fn ident(t: Option<&(Tok, usize)>) -> Option<&str> {
    match t {
        Some((Tok::Ident(s), _)) => Some(s),
        _ => None,
    }
}

fn punct(t: Option<&(Tok, usize)>, p: char) -> bool {
    matches!(t, Some((Tok::Punct(q), _)) if *q == p)
}

/// The index after the item starting at `i` (up to its `;` or its balanced `{…}`).
fn skip_item(toks: &[(Tok, usize)], mut i: usize) -> usize {
    let mut depth = 0i32;
    while i < toks.len() {
        match toks[i].0 {
            Tok::Punct('(' | '[') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct(';') if depth == 0 => return i + 1,
            Tok::Punct('{') if depth == 0 => {
                let mut braces = 0;
                while i < toks.len() {
                    match toks[i].0 {
                        Tok::Punct('{') => braces += 1,
                        Tok::Punct('}') => {
                            braces -= 1;
                            if braces == 0 {
                                return i + 1;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Reads one file of module `module` (`[]` for the root).
pub fn scan(module: &[String], src: &str, modules: &BTreeSet<String>) -> Scan {
    let toks = lex(src);
    let mut out = Scan::default();
    // Inline `mod name {` blocks: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Punct('#') if punct(toks.get(i + 1), '[') => {
                let is_test = ident(toks.get(i + 2)) == Some("cfg")
                    && punct(toks.get(i + 3), '(')
                    && ident(toks.get(i + 4)) == Some("test")
                    && punct(toks.get(i + 5), ')')
                    && punct(toks.get(i + 6), ']');
                if is_test {
                    let mut j = i + 7;
                    // Further attributes, visibility, then the item.
                    while punct(toks.get(j), '#') {
                        j = skip_item_brackets(&toks, j + 1);
                    }
                    if let (Some("mod"), Some(name)) = (ident(toks.get(j)), ident(toks.get(j + 1))) {
                        if punct(toks.get(j + 2), ';') {
                            let mut child = here(module, &inline);
                            child.push(name.to_string());
                            out.test_children.push(child);
                        }
                    }
                    i = skip_item(&toks, j);
                    continue;
                }
            }
            Tok::Ident(m) if m == "mod" => {
                if let (Some(name), true) = (ident(toks.get(i + 1)), punct(toks.get(i + 2), '{')) {
                    inline.push((name.to_string(), depth + 1));
                }
            }
            Tok::Ident(p) if module.is_empty() && p == "pub" => {
                // `pub use module::...;` at the root: every name in it comes from `module`.
                if let (Some("use"), Some(m)) = (ident(toks.get(i + 1)), ident(toks.get(i + 2))) {
                    if modules.contains(m) && toks.get(i + 3).map(|t| &t.0) == Some(&Tok::Sep) {
                        let end = skip_item(&toks, i);
                        for (t, _) in &toks[i + 4..end] {
                            if let Tok::Ident(name) = t {
                                out.reexports.insert(name.clone(), m.to_string());
                            }
                        }
                    }
                }
            }
            Tok::Ident(w)
                if matches!(w.as_str(), "crate" | "super" | "self")
                    && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Sep)
                    && toks.get(i.wrapping_sub(1)).map(|t| &t.0) != Some(&Tok::Sep) =>
            {
                let line = toks[i].1;
                let mut base = here(module, &inline);
                let mut j = i;
                loop {
                    match ident(toks.get(j)) {
                        Some("crate") => base.clear(),
                        Some("super") => {
                            base.pop();
                        }
                        Some("self") => {}
                        _ => break,
                    }
                    if toks.get(j + 1).map(|t| &t.0) != Some(&Tok::Sep) {
                        break;
                    }
                    j += 2;
                }
                for first in first_segments(&toks, j) {
                    let mut path = base.clone();
                    path.push(first);
                    out.paths.push((path, line));
                }
                i = j;
                continue;
            }
            Tok::Ident(m)
                if module.is_empty()
                    && inline.is_empty()
                    && modules.contains(m)
                    && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Sep)
                    && toks.get(i.wrapping_sub(1)).map(|t| &t.0) != Some(&Tok::Sep) =>
            {
                // The root names its modules without `crate::`.
                out.paths.push((vec![m.clone()], toks[i].1));
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The module path at a point of a file of `module` inside the `inline` blocks.
fn here(module: &[String], inline: &[(String, usize)]) -> Vec<String> {
    module.iter().cloned().chain(inline.iter().map(|(n, _)| n.clone())).collect()
}

/// The index after the `[…]` starting at `i`.
fn skip_item_brackets(toks: &[(Tok, usize)], mut i: usize) -> usize {
    let mut depth = 0;
    while i < toks.len() {
        match toks[i].0 {
            Tok::Punct('[') => depth += 1,
            Tok::Punct(']') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The first segment after a path prefix ending before `i`: one name, every top-level name of
/// a `{…}` group, or `*`.
fn first_segments(toks: &[(Tok, usize)], i: usize) -> Vec<String> {
    match toks.get(i).map(|t| &t.0) {
        Some(Tok::Ident(s)) => vec![s.clone()],
        Some(Tok::Punct('*')) => vec!["*".to_string()],
        Some(Tok::Punct('{')) => {
            let (mut out, mut depth, mut expect) = (Vec::new(), 0, true);
            for (t, _) in &toks[i..] {
                match t {
                    Tok::Punct('{') => depth += 1,
                    Tok::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Punct(',') if depth == 1 => expect = true,
                    Tok::Ident(s) if depth == 1 && expect => {
                        out.push(s.clone());
                        expect = false;
                    }
                    _ => {}
                }
            }
            out
        }
        _ => Vec::new(),
    }
}
