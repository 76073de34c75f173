//! The Debian package's files, checked without building it (`scripts/test-deb` builds,
//! installs, runs and purges the package itself): the template unit `sse-edge@.service` is
//! `sse-edge.service` with an instance's paths and passes `systemd-analyze verify`; both run
//! as the package's fixed user; the example `systemd/sse-edge.toml` names every option, and
//! nothing else, under the flag's name; the `--help` text shipped in /usr/share/doc is the
//! binary's; every file `[package.metadata.deb]` packages exists, executable where it must be.

mod util;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use util::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_sse-edge");

/// `sse-edge --help` as shipped (`/usr/share/doc/sse-edge/sse-edge-help.txt`).
const HELP_TEXT: &str = "debian/sse-edge-help.txt";

fn kit_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `sse-edge --help` with no `SSE_EDGE_*` variable set (clap prints their values).
fn help() -> String {
    let out = Command::new(BIN)
        .arg("--help")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run sse-edge --help");
    assert!(out.status.success(), "sse-edge --help: {}", out.status);
    String::from_utf8(out.stdout).expect("--help is UTF-8")
}

/// Every `--long` option of `sse-edge --help` as a config key (`-` → `_`), without clap's own.
fn option_keys(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '=']).next())
        .filter(|name| !["help", "version"].contains(name))
        .map(|name| name.replace('-', "_"))
        .collect()
}

/// The unit from its `[Unit]` line on: the header comment above is its own.
fn from_unit_section(unit: &str) -> &str {
    &unit[unit.find("\n[Unit]\n").expect("a [Unit] section") + 1..]
}

#[test]
fn template_is_the_unit_with_instance_paths_and_the_same_fixed_user() {
    let unit = kit_file("systemd/sse-edge.service");
    let template = kit_file("systemd/sse-edge@.service");
    let expected = from_unit_section(&unit)
        .replace(
            "Description=sse-edge Server-Sent Events fan-out server\n",
            "Description=sse-edge Server-Sent Events fan-out server (instance %i)\n",
        )
        .replace("/etc/sse-edge/sse-edge.env", "/etc/sse-edge/%i.env")
        .replace("/etc/sse-edge/sse-edge.toml", "/etc/sse-edge/%i.toml");
    assert_eq!(
        from_unit_section(&template),
        expected,
        "systemd/sse-edge@.service must be systemd/sse-edge.service with %i's description and paths"
    );
    for line in [
        "ExecStart=/usr/bin/sse-edge --config /etc/sse-edge/%i.toml",
        "EnvironmentFile=-/etc/sse-edge/%i.env",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(template.lines().any(|l| l == line), "the template sets {line}");
    }
    // One fixed account: SO_REUSEPORT lets only sockets of one user share the port, and the
    // package makes the config file readable by that group.
    for file in [&unit, &template] {
        assert!(file.lines().any(|l| l == "User=sse-edge"));
        assert!(!file.lines().any(|l| l.starts_with("DynamicUser=")), "no DynamicUser=");
    }
    let sysusers = kit_file("debian/sse-edge.sysusers");
    assert!(sysusers.lines().any(|l| l.starts_with("u sse-edge ")), "sysusers.d creates sse-edge");
}

#[test]
fn template_instance_passes_systemd_analyze_verify() {
    let tool = require_binary("/usr/bin/systemd-analyze", "systemd");
    let template = kit_file("systemd/sse-edge@.service");
    // verify loads a template only as an instance.
    systemd_verify(&tool, &template, "sse-edge@test.service", BIN);
}

#[test]
fn example_config_file_names_every_option_by_its_flag() {
    let example = kit_file("systemd/sse-edge.toml");
    let mut keys = BTreeSet::new();
    for line in example.lines() {
        assert!(
            line.is_empty() || line.starts_with('#'),
            "every key of the example is commented out (the defaults apply): {line}"
        );
        let Some((key, _)) = line.strip_prefix("# ").and_then(|l| l.split_once(" = ")) else { continue };
        if key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            assert!(keys.insert(key.to_string()), "{key} is listed twice");
        }
    }
    let options = option_keys(&help());
    // The file cannot name itself; every other option has a line.
    let not_in_file: BTreeSet<String> = ["config", "print_config"].map(String::from).into();
    let missing: Vec<_> = options.difference(&keys).filter(|k| !not_in_file.contains(*k)).collect();
    let unknown: Vec<_> = keys.difference(&options).collect();
    assert!(missing.is_empty(), "options without a line in systemd/sse-edge.toml: {missing:?}");
    assert!(unknown.is_empty(), "keys in systemd/sse-edge.toml that are no option: {unknown:?}");
}

#[test]
fn shipped_help_text_is_the_binarys_help() {
    let help = help();
    if std::env::var_os("SSE_EDGE_BLESS").is_some() {
        std::fs::write(Path::new(ROOT).join(HELP_TEXT), &help).expect("write the help text");
    }
    assert!(
        kit_file(HELP_TEXT) == help,
        "{HELP_TEXT} (installed as /usr/share/doc/sse-edge/sse-edge-help.txt) differs from \
         `sse-edge --help`; regenerate it: SSE_EDGE_BLESS=1 cargo test --test package shipped_help_text"
    );
}

#[test]
fn every_packaged_file_exists() {
    let manifest = kit_file("Cargo.toml");
    let start = manifest.find("[package.metadata.deb]").expect("cargo-deb metadata in Cargo.toml");
    let section = &manifest[start..];
    let assets = &section[section.find("assets = [").expect("an assets list")..];
    let assets = &assets[..assets.find("\n]").expect("the end of the assets list")];
    let mut sources = Vec::new();
    for line in assets.lines().map(str::trim).filter(|l| l.starts_with("[\"")) {
        let fields: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        let [source, dest, mode] = fields[..] else { panic!("asset [source, dest, mode]: {line}") };
        sources.push(source);
        if source.starts_with("target/release/") {
            assert_eq!((dest, mode), ("usr/bin/", "755"), "{source}");
            continue;
        }
        let path = Path::new(ROOT).join(source);
        assert!(path.is_file(), "{source} is packaged but missing");
        if dest.starts_with("etc/") {
            // Conffiles may hold secrets: never world-readable.
            assert!(mode.ends_with('0'), "{dest} is mode {mode}");
        }
    }
    for binary in ["target/release/sse-edge", "target/release/sse-load"] {
        assert!(sources.contains(&binary), "{binary} is packaged");
    }
    for script in ["postinst", "prerm", "postrm"] {
        let path = Path::new(ROOT).join("debian").join(script);
        let mode =
            std::fs::metadata(&path).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
        assert!(matches!(mode, Ok(m) if m & 0o111 != 0), "debian/{script} is an executable: {mode:?}");
        let out = Command::new("sh").arg("-n").arg(&path).output().expect("run sh -n");
        assert!(out.status.success(), "debian/{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
