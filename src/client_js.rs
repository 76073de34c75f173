//! The JS client library (`clients/js/src`), built into the binary so the status page can
//! read its own feed through it (`GET /client/<file>.js`, operator endpoints).
//!
//! Invariant: only the files listed here are served, by exact name; nothing is read from disk
//! at run time.

/// Every file of the library: its name under `/client/` and its text.
pub const FILES: [(&str, &str); 6] = [
    ("index.js", include_str!("../clients/js/src/index.js")),
    ("common.js", include_str!("../clients/js/src/common.js")),
    ("page.js", include_str!("../clients/js/src/page.js")),
    ("parser.js", include_str!("../clients/js/src/parser.js")),
    ("polling.js", include_str!("../clients/js/src/polling.js")),
    ("shared.js", include_str!("../clients/js/src/shared.js")),
];

/// The index of the file called `name`.
pub fn find(name: &str) -> Option<usize> {
    FILES.iter().position(|(n, _)| *n == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_library_imports_is_served() {
        for (name, text) in FILES {
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(from) = line.split("from \"./").nth(1) else { continue };
                let file = from.trim_end_matches("\";");
                assert!(find(file).is_some(), "{name} imports {file}, which is not served");
            }
        }
        assert_eq!(find("../Cargo.toml"), None);
    }
}
