//! The config file (`--config <path>`, env `SSE_EDGE_CONFIG`): TOML whose keys are the
//! options' long flag names with `-` turned into `_` (`max_streams_per_ip = 10`,
//! `cors_origin = ["https://a"]`, `bus = "redis://..."`, `bus_maxlen = 100000`).
//!
//! Contract: [`resolve`] parses a command line with the binary's clap command, then gives
//! every option that the command line and the environment left unset (or at its default) the
//! file's value, by parsing the command line again with the file's entries added as flags.
//! The list of options is the clap command itself, never repeated here, and the file's values
//! go through the same value parsers as flags, so types and ranges are checked the same way.
//!
//! Invariants:
//! 1. Precedence is flag > environment > file > default: a file value is used only for an
//!    option whose value source after the first parse is its default or nothing.
//! 2. An unknown key, a value of the wrong shape (a table, a date, a list for a single-valued
//!    option) or a value its option's parser refuses is a [`FileError`] naming the file, the
//!    line and the key, and no value of that file is used.
//! 3. [`render`] never prints a secret: publish tokens and subscribe keys are masked, and the
//!    bus URL loses its password.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, Command};
use toml::de::{DeTable, DeValue};

use crate::Config;

/// The options about the config file itself, flattened into the binary's command line.
#[derive(Debug, Clone, Args)]
pub struct FileArgs {
    /// TOML file with any of these options under their flag names with `-` turned into `_`
    /// (`max_streams_per_ip = 10`, `cors_origin = ["https://a"]`). Flags and environment
    /// override it. SIGHUP re-reads it and applies what can change live.
    #[arg(long = "config", env = "SSE_EDGE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (TOML, secrets masked) and where each value came
    /// from (flag, env, file, default), then exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Argument ids that are not server options (never file keys, never printed).
const NOT_OPTIONS: [&str; 4] = ["config", "print_config", "help", "version"];

/// Where an option's effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The command line.
    Flag,
    /// An `SSE_EDGE_*` environment variable.
    Env,
    /// The config file.
    File,
    /// The built-in default (or unset).
    Default,
}

impl Source {
    /// `flag`, `env`, `file` or `default`.
    pub fn label(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File => "file",
            Source::Default => "default",
        }
    }
}

/// A config file that cannot be used (invariant 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default(),
        key.as_ref().map(|k| format!(": key `{k}`")).unwrap_or_default())]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line of the offending key or syntax error, when known.
    pub line: Option<usize>,
    /// The offending key, when there is one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Why [`resolve`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The command line (or environment) itself is wrong; also `--help` and `--version`.
    #[error("{0}")]
    Cli(#[from] clap::Error),
    /// The config file is wrong.
    #[error("{0}")]
    File(#[from] FileError),
}

/// One file entry, validated.
#[derive(Debug, Clone)]
struct Entry {
    long: String,
    values: Vec<String>,
}

/// A command line resolved with its config file.
#[derive(Debug)]
pub struct Resolved {
    /// The final matches (flags, environment, file, defaults).
    pub matches: ArgMatches,
    /// Where each option's value came from, by key.
    pub sources: BTreeMap<String, Source>,
    /// The config file, when one was named.
    pub file: Option<PathBuf>,
}

/// The file key of an option's long name.
fn key_of(long: &str) -> String {
    long.replace('-', "_")
}

/// `(id, long, key)` of every server option of `cmd`, in declaration order.
fn options(cmd: &Command) -> Vec<(String, String, String)> {
    cmd.get_arguments()
        .filter(|a| !NOT_OPTIONS.contains(&a.get_id().as_str()))
        .filter_map(|a| a.get_long().map(|l| (a.get_id().to_string(), l.to_string(), key_of(l))))
        .collect()
}

/// Parses `argv` with `cmd`, then fills what flags and environment left at its default from
/// the file named by `--config` (invariant 1).
pub fn resolve(cmd: &Command, argv: &[OsString]) -> Result<Resolved, ResolveError> {
    let first = cmd.clone().try_get_matches_from(argv)?;
    let file = first.get_one::<PathBuf>("config").cloned();
    let entries = match &file {
        Some(path) => read(cmd, path)?,
        None => BTreeMap::new(),
    };
    let mut args: Vec<OsString> = argv.iter().take(1).cloned().collect();
    let mut sources = BTreeMap::new();
    for (id, _, key) in options(cmd) {
        let source = match first.value_source(&id) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env,
            _ if entries.contains_key(&key) => Source::File,
            _ => Source::Default,
        };
        if source == Source::File {
            let entry = &entries[&key];
            args.extend(entry.values.iter().map(|v| OsString::from(format!("--{}={v}", entry.long))));
        }
        sources.insert(key, source);
    }
    args.extend(argv.iter().skip(1).cloned());
    let matches = cmd.clone().try_get_matches_from(args)?;
    Ok(Resolved { matches, sources, file })
}

/// Reads, parses and validates the config file: every key an option of `cmd`, every value
/// accepted by that option's parser (invariant 2).
fn read(cmd: &Command, path: &Path) -> Result<BTreeMap<String, Entry>, FileError> {
    let fail = |line, key: Option<&str>, message: String| FileError {
        path: path.to_path_buf(),
        line,
        key: key.map(str::to_string),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(None, None, format!("cannot read: {e}")))?;
    parse(cmd, &text).map_err(|(line, key, message)| fail(line, key.as_deref(), message))
}

/// A parse failure: line, key, message.
type Failure = (Option<usize>, Option<String>, String);

fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

fn parse(cmd: &Command, text: &str) -> Result<BTreeMap<String, Entry>, Failure> {
    let table = DeTable::parse(text).map_err(|e| {
        let message = e.message().trim().to_string();
        (e.span().map(|s| line_at(text, s.start)), None, message)
    })?;
    let by_key: BTreeMap<String, &clap::Arg> = cmd
        .get_arguments()
        .filter(|a| !NOT_OPTIONS.contains(&a.get_id().as_str()))
        .filter_map(|a| a.get_long().map(|l| (key_of(l), a)))
        .collect();
    // Values are checked by the options' own parsers, without the environment in the way.
    let mut checker = Command::new("sse-edge").no_binary_name(true);
    for arg in by_key.values() {
        checker = checker.arg((*arg).clone().env(None::<&'static str>).global(false));
    }
    let mut entries = BTreeMap::new();
    for (key, value) in table.get_ref().iter() {
        let (key, line) = (key.get_ref().to_string(), line_at(text, key.span().start));
        let failure = |message: String| (Some(line), Some(key.clone()), message);
        let Some(arg) = by_key.get(&key) else {
            return Err(failure("unknown key (keys are the option names of --help, `-` written `_`)".into()));
        };
        let many = matches!(arg.get_action(), ArgAction::Append);
        let values = match value.get_ref() {
            DeValue::Array(items) if many => {
                items.iter().map(|v| scalar(v.get_ref())).collect::<Result<Vec<_>, _>>().map_err(failure)?
            }
            DeValue::Array(_) => return Err(failure("takes one value, not a list".into())),
            other => vec![scalar(other).map_err(failure)?],
        };
        let long = arg.get_long().unwrap_or_default().to_string();
        let argv = values.iter().map(|v| format!("--{long}={v}"));
        if let Err(e) = checker.try_get_matches_from_mut(argv) {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or_default().trim_start_matches("error: ");
            return Err(failure(first.to_string()));
        }
        entries.insert(key, Entry { long, values });
    }
    Ok(entries)
}

/// A TOML scalar as the text a flag would carry.
fn scalar(value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
            .map(|n| n.to_string())
            .map_err(|e| format!("bad integer: {e}")),
        DeValue::Float(f) => Ok(f.as_str().to_string()),
        DeValue::Boolean(b) => Ok(b.to_string()),
        DeValue::Datetime(_) => Err("a date is not a value of any option".into()),
        DeValue::Array(_) => Err("a list inside a list is not a value of any option".into()),
        DeValue::Table(_) => Err("a table is not a value of any option (options are top-level keys)".into()),
    }
}

/// The effective configuration as TOML with each value's source in a comment, secrets
/// masked (invariant 3); unset options are commented out.
pub fn render(
    cmd: &Command,
    config: &Config,
    sources: &BTreeMap<String, Source>,
    file: Option<&Path>,
) -> String {
    let json = serde_json::to_value(config).unwrap_or_default();
    let mut out =
        String::from("# sse-edge effective configuration: value  # source (flag > env > file > default)\n");
    if let Some(path) = file {
        out.push_str(&format!("# config file: {}\n", path.display()));
    }
    out.push_str(&format!("# hash: {}\n", crate::live::config_hash(config)));
    for (_, _, key) in options(cmd) {
        let source = sources.get(&key).copied().unwrap_or(Source::Default).label();
        match json.get(&key).map(|v| crate::live::masked(&key, v)) {
            None | Some(serde_json::Value::Null) => out.push_str(&format!("# {key} = (unset)  # {source}\n")),
            Some(v) => out.push_str(&format!("{key} = {}  # {source}\n", toml_text(&v))),
        }
    }
    out
}

/// A JSON scalar or array as a TOML value (JSON string escapes are valid TOML).
fn toml_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Array(items) => {
            format!("[{}]", items.iter().map(toml_text).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
