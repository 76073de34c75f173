//! Unit tests of the config file: precedence, errors naming file/line/key, masking.

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches, Parser};

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    file: FileArgs,
    #[command(flatten)]
    config: Config,
}

/// The binary's shape, with test-only environment variable names so tests running in
/// parallel (and `Config::default()` elsewhere) never see them.
fn command(tag: &str) -> Command {
    let name =
        |what: &str| -> &'static str { Box::leak(format!("SSE_EDGE_TEST_{tag}_{what}").into_boxed_str()) };
    Cli::command()
        .mut_arg("config", |a| a.env(name("CONFIG")))
        .mut_arg("max_streams_per_ip", |a| a.env(name("MSPI")))
        .mut_arg("heartbeat_ms", |a| a.env(name("HEARTBEAT")))
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("sse-edge-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn argv(args: &[&str]) -> Vec<OsString> {
    std::iter::once("sse-edge").chain(args.iter().copied()).map(OsString::from).collect()
}

fn resolved_config(resolved: &Resolved) -> Config {
    Cli::from_arg_matches(&resolved.matches).unwrap().config
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let path = temp_file(
        "precedence",
        "max_streams_per_ip = 10\nheartbeat_ms = 5_000\nretry_ms = 0x10\ncors_origin = [\"https://a\", \"https://b\"]\n",
    );
    // clap reads an option's variable when the command is built.
    std::env::set_var("SSE_EDGE_TEST_PRECEDENCE_HEARTBEAT", "7000");
    std::env::set_var("SSE_EDGE_TEST_PRECEDENCE_MSPI", "20");
    let cmd = command("PRECEDENCE");
    let file = path.to_str().unwrap();
    let r = resolve(&cmd, &argv(&["--config", file, "--max-streams-per-ip", "3"])).unwrap();
    let c = resolved_config(&r);
    assert_eq!((c.max_streams_per_ip, r.sources["max_streams_per_ip"]), (3, Source::Flag));
    assert_eq!((c.heartbeat_ms, r.sources["heartbeat_ms"]), (7_000, Source::Env));
    assert_eq!((c.retry_ms, r.sources["retry_ms"]), (16, Source::File));
    assert_eq!(c.cors_origin, ["https://a", "https://b"]);
    assert_eq!(r.sources["cors_origin"], Source::File);
    assert_eq!((c.backlog, r.sources["backlog"]), (4096, Source::Default));
    // Without the flag the environment wins; without both, the file.
    let r = resolve(&cmd, &argv(&["--config", file])).unwrap();
    assert_eq!((resolved_config(&r).max_streams_per_ip, r.sources["max_streams_per_ip"]), (20, Source::Env));
    std::env::remove_var("SSE_EDGE_TEST_PRECEDENCE_MSPI");
    std::env::remove_var("SSE_EDGE_TEST_PRECEDENCE_HEARTBEAT");
    let cmd = command("PRECEDENCE");
    let r = resolve(&cmd, &argv(&["--config", file])).unwrap();
    let c = resolved_config(&r);
    assert_eq!((c.max_streams_per_ip, c.heartbeat_ms), (10, 5_000));
    // No file: defaults.
    let r = resolve(&cmd, &argv(&[])).unwrap();
    assert_eq!(
        (resolved_config(&r).max_streams_per_ip, r.sources["max_streams_per_ip"]),
        (0, Source::Default)
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn the_config_path_comes_from_the_environment_too() {
    let path = temp_file("env-path", "max_streams_per_user = 9\n");
    std::env::set_var("SSE_EDGE_TEST_ENVPATH_CONFIG", &path);
    let r = resolve(&command("ENVPATH"), &argv(&[])).unwrap();
    std::env::remove_var("SSE_EDGE_TEST_ENVPATH_CONFIG");
    assert_eq!(resolved_config(&r).max_streams_per_user, 9);
    assert_eq!(r.file.as_deref(), Some(path.as_path()));
    std::fs::remove_file(path).unwrap();
}

fn file_error(name: &str, text: &str) -> FileError {
    let path = temp_file(name, text);
    let err = match resolve(&command("ERRORS"), &argv(&["--config", path.to_str().unwrap()])) {
        Err(ResolveError::File(e)) => e,
        other => panic!("{name}: expected a file error, got {other:?}"),
    };
    std::fs::remove_file(&path).unwrap();
    assert_eq!(err.path, path);
    err
}

#[test]
fn bad_files_name_the_file_the_line_and_the_key() {
    let e = file_error("unknown", "backlog = 10\n\nmax_stream_per_ip = 1\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("max_stream_per_ip")));
    assert!(e.message.contains("unknown key"), "{e}");
    assert!(e.to_string().contains(":3: key `max_stream_per_ip`: unknown key"), "{e}");

    let e = file_error("range", "# comment\nheartbeat_ms = 1\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("heartbeat_ms")));
    assert!(e.message.contains("10..=3600000"), "{e}");

    let e = file_error("type", "listen = 8080\npin_threads = \"maybe\"\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("listen")));

    let e = file_error("list", "max_streams_per_ip = [1, 2]\n");
    assert!(e.message.contains("not a list"), "{e}");

    let e = file_error("table", "[bus]\nurl = \"redis://x\"\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("bus")));

    let e = file_error("syntax", "backlog = 10\nretry_ms = = 3\n");
    assert_eq!((e.line, e.key), (Some(2), None));

    let e = file_error("flag-name", "max-streams-per-ip = 1\n");
    assert_eq!(e.key.as_deref(), Some("max-streams-per-ip"));
    let e = file_error("not-an-option", "print_config = true\n");
    assert!(e.message.contains("unknown key"), "{e}");
}

#[test]
fn print_config_masks_secrets_and_names_sources() {
    let path = temp_file(
        "render",
        "publish_token = [\"old-secret\", \"new-secret\"]\nsubscribe_key = \"key-secret\"\nbus = \"redis://u:pw-secret@h:6379/0\"\n",
    );
    let cmd = command("RENDER");
    let r = resolve(&cmd, &argv(&["--config", path.to_str().unwrap(), "--retry-ms", "100"])).unwrap();
    let c = resolved_config(&r);
    assert_eq!(c.publish_token, ["old-secret", "new-secret"]);
    let text = render(&cmd, &c, &r.sources, r.file.as_deref());
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("publish_token = [\"********\", \"********\"]  # file\n"), "{text}");
    assert!(text.contains("subscribe_key = [\"********\"]  # file\n"), "{text}");
    assert!(text.contains("bus = \"redis://***@h:6379/0\"  # file\n"), "{text}");
    assert!(text.contains("retry_ms = 100  # flag\n"), "{text}");
    assert!(text.contains("backlog = 4096  # default\n"), "{text}");
    assert!(text.contains("# threads = (unset)  # default\n"), "{text}");
    // What it prints (secrets aside) is a config file that reads back the same.
    let printed: String = text.lines().filter(|l| !l.contains("****")).map(|l| format!("{l}\n")).collect();
    let back = temp_file("render-back", &printed);
    let r2 = resolve(&cmd, &argv(&["--config", back.to_str().unwrap()])).unwrap();
    assert_eq!(resolved_config(&r2).retry_ms, 100);
    std::fs::remove_file(path).unwrap();
    std::fs::remove_file(back).unwrap();
}

#[test]
fn every_option_is_a_config_key_and_nothing_else_is() {
    let cmd = Cli::command();
    let json = serde_json::to_value(Config::default()).unwrap();
    let keys: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
    let mut options: Vec<String> = options(&cmd).into_iter().map(|(_, _, key)| key).collect();
    options.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, options);
}
