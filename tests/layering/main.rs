//! Layering: the library's modules import each other without cycles, so each one can be read
//! (and changed) knowing only the modules below it. The intended order is the list in
//! `src/lib.rs`'s module doc.
//!
//! The check reads `src/**/*.rs` (not `main.rs`, the binary), resolves every `crate::`,
//! `super::` and `self::` path outside comments, string and char literals and `#[cfg(test)]`
//! items (test code may reach anywhere) to the top-level module it names, and fails listing
//! every strongly connected component of more than one module with the file and line of each
//! import inside it. A module's submodules count as the module (`worker::delivery` is
//! `worker`, `super::` inside one tree is no edge); a name the crate root re-exports
//! (`crate::Config`) counts as the module it comes from; anything else at the root is the
//! root itself (`crate`, which declares and starts every module).
//!
//! A second test checks each import against the numbered list of `src/lib.rs` (a module uses
//! only modules on lower lines) and names any module missing from the list, so the list stays
//! the truth. A new module gets a line there.

mod graph;
mod source;

use std::collections::BTreeMap;
use std::path::Path;

use graph::{against_layers, cycles, documented_layers, edges, explain, Edge, ROOT};

fn read_src(dir: &Path, rel: &Path, out: &mut Vec<(String, String)>) {
    let entries = std::fs::read_dir(dir.join(rel)).expect("src/ is readable");
    for entry in entries {
        let entry = entry.expect("directory entry");
        let rel = rel.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            read_src(dir, &rel, out);
        } else if rel.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(dir.join(&rel)).expect("source is UTF-8");
            out.push((rel.to_string_lossy().into_owned(), text));
        }
    }
}

#[test]
fn library_modules_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_src(&src, Path::new(""), &mut files);
    let edges = edges(&files);
    assert!(edges.len() > 20, "the scan found too few imports to be reading the sources: {edges:?}");
    let found = cycles(&edges);
    assert!(
        found.is_empty(),
        "modules must only use modules below them (see the layering in src/lib.rs); move the \
         shared item down into the lower module:\n{}",
        explain(&edges, &found)
    );
}

#[test]
fn library_modules_only_use_modules_below_them_in_the_documented_layering() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_src(&src, Path::new(""), &mut files);
    let lib_rs = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let layers = documented_layers(&lib_rs);
    assert!(layers.len() > 20, "the layering list of src/lib.rs was not found: {layers:?}");
    let wrong = against_layers(&edges(&files), &layers);
    assert!(
        wrong.is_empty(),
        "src/lib.rs's layering list says which modules may use which (lower lines only); \
         move the shared item down, or fix the list:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_layer_check_reads_the_list_and_finds_upward_imports() {
    let lib_rs = "//! Intro naming `worker` and `hub::*`.\n//!\n//! 1. `worker`, [`check`].\n\
                  //! 2. [`hub`]: the sequencer,\n//!    and `room` (continued).\n//!\n//! Not `sse`.\n";
    let layers = documented_layers(lib_rs);
    let want: BTreeMap<String, usize> = [("worker", 1), ("check", 1), ("hub", 2), ("room", 2)]
        .iter()
        .map(|(m, n)| (m.to_string(), *n))
        .collect();
    assert_eq!(layers, want);
    let edge = |from: &str, to: &str| Edge { from: from.into(), to: to.into(), at: "src/x.rs:1".into() };
    assert!(against_layers(&[edge("worker", "hub"), edge(ROOT, "worker")], &layers).is_empty());
    let wrong = against_layers(&[edge("hub", "worker"), edge("hub", "sse")], &layers);
    assert_eq!(wrong.len(), 2, "{wrong:?}");
    assert!(wrong[0].starts_with("hub (line 2) uses worker (line 1)"), "{wrong:?}");
    assert!(wrong[1].contains("sse is not in the list"), "{wrong:?}");
}

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect()
}

#[test]
fn the_check_finds_a_cycle_and_the_lines_that_close_it() {
    let f = files(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        ("a.rs", "use crate::b::X;\n"),
        ("b.rs", "pub struct X;\nfn f() {\n    crate::c::g();\n}\n"),
        ("c.rs", "use crate::{a::Y, b};\npub fn g() {}\n"),
    ]);
    let e = edges(&f);
    let found = cycles(&e);
    assert_eq!(found.len(), 1, "{e:?}");
    assert_eq!(found[0], ["a", "b", "c"].iter().map(|s| s.to_string()).collect());
    let text = explain(&e, &found);
    assert!(text.contains("b -> c   (src/b.rs:3)"), "{text}");
    assert!(text.contains("c -> a   (src/c.rs:1)"), "{text}");
}

#[test]
fn the_check_ignores_comments_literals_and_test_code() {
    let f = files(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::b::X;\n"),
        (
            "b.rs",
            r##"//! See [`crate::a::Y`].
/* crate::a::Y */
pub struct X;
const S: &str = "crate::a::Y";
const R: &str = r#"crate::a::"Y"#;
const C: char = '{';
fn f<'a>(x: &'a str) -> &'a str { x }
#[cfg(test)]
mod tests {
    use crate::a::Y;
}
#[cfg(test)]
mod more;
"##,
        ),
        ("b/more.rs", "use crate::a::Y;\n"),
    ]);
    let e = edges(&f);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(cycles(&e).is_empty());
}

#[test]
fn the_check_resolves_super_reexports_and_the_root() {
    let f = files(&[
        (
            "lib.rs",
            "mod hub;\nmod worker;\nmod config;\npub use config::{Config, Error};\nuse worker::Shared;\n",
        ),
        ("worker/mod.rs", "mod delivery;\npub struct Shared;\n"),
        // `super::Shared` stays in the worker tree; `super::super::hub` reaches the hub.
        ("worker/delivery.rs", "use super::Shared;\nuse super::super::hub::Event;\n"),
        ("config.rs", "pub struct Config;\n"),
        ("hub.rs", "pub struct Event;\nfn f(_: crate::Config) {}\nfn g(_: crate::Handle) {}\n"),
    ]);
    let e = edges(&f);
    let pairs: Vec<(&str, &str)> = e.iter().map(|e| (e.from.as_str(), e.to.as_str())).collect();
    assert!(pairs.contains(&("worker", "hub")), "{e:?}");
    assert!(pairs.contains(&("hub", "config")), "{e:?}");
    assert!(pairs.contains(&("hub", ROOT)), "{e:?}");
    assert!(pairs.contains(&(ROOT, "worker")), "{e:?}");
    assert!(!pairs.iter().any(|&(a, b)| a == "worker" && b == "worker"), "{e:?}");
    // crate -> worker -> hub -> crate
    let found = cycles(&e);
    assert_eq!(found.len(), 1, "{e:?}");
    assert!(found[0].contains(ROOT) && found[0].contains("hub") && found[0].contains("worker"));
}
