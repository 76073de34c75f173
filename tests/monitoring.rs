//! The monitoring kit stays true to the server: `promtool` checks and unit-tests the alerting
//! rules, every dashboard query parses as PromQL, and neither the dashboard nor the rules name a
//! metric `GET /metrics` does not export.
//!
//! `promtool` comes from the `prometheus` Debian package, which `scripts/test` installs. Without
//! it these tests fail (they never pass silently); `PROMTOOL=/path/to/promtool` overrides the
//! binary.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Every metric family the server exports. Keep in step with `src/metrics.rs`: a name here that
/// the server drops, or a dashboard query naming one missing here, is a broken panel or alert.
const METRICS: &[&str] = &[
    "sse_connections_active",
    "sse_streams_active",
    "sse_connections_max",
    "sse_connections_accepted_total",
    "sse_connections_rejected_total",
    "sse_disconnects_total",
    "sse_events_published_total",
    "sse_deliveries_total",
    "sse_bytes_written_total",
    "sse_frames_written_total",
    "sse_writes_total",
    "sse_events_dropped_total",
    "sse_gaps_reported_total",
    "sse_streams_token_expired_total",
    "sse_poll_truncated_total",
    "sse_poll_events_skipped_total",
    "sse_outbox_queued_bytes",
    "sse_connections_write_blocked",
    "sse_hub_queue_events",
    "sse_hub_queue_capacity",
    "sse_hub_intake_pauses_total",
    "sse_loop_behind_seconds",
    "sse_loop_saturation",
    "sse_delivery_lag_seconds",
    "sse_loop_iteration_seconds",
    "sse_loop_lag_seconds",
    "sse_loop_up",
    "sse_overload_mode",
    "sse_history_events",
    "sse_history_bytes",
    "sse_bus_connected",
    "sse_bus_publish_inflight",
    "sse_bus_publish_window",
    "sse_bus_reconnects_total",
    "sse_bus_gaps_total",
    "sse_bus_reader_lag_events",
    "sse_bus_stale_reconnects_total",
    "sse_bus_foreign_entries_total",
    "sse_bus_publish_seconds",
    "sse_config_reloads_total",
    "sse_config_info",
    "sse_config_last_reload_success_timestamp_seconds",
    "process_open_fds",
    "process_max_fds",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_start_time_seconds",
];

/// Histogram families among [`METRICS`]: their series are `_bucket`, `_sum` and `_count`.
const HISTOGRAMS: &[&str] =
    &["sse_delivery_lag_seconds", "sse_loop_iteration_seconds", "sse_bus_publish_seconds"];

const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring")
}

fn read(name: &str) -> String {
    let path = monitoring_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs promtool in `monitoring/`, asserts success and returns its output. Panics with a pointer
/// to `scripts/test` when promtool is not installed.
fn promtool(args: &[&str]) -> String {
    let bin = std::env::var_os("PROMTOOL").unwrap_or_else(|| "promtool".into());
    let out = match Command::new(&bin).args(args).current_dir(monitoring_dir()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "promtool is not installed ({bin:?} not found): run scripts/test, which installs the \
             `prometheus` Debian package that provides it (or `apt-get install prometheus`)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`promtool {}` failed ({}):\n{text}", args.join(" "), out.status);
    text
}

/// The `sse_*` and `process_*` identifiers in `text` (each starting at a word boundary).
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut names = BTreeSet::new();
    for start in 0..bytes.len() {
        let rest = &text[start..];
        let boundary = start == 0 || !is_name(bytes[start - 1]);
        if boundary && (rest.starts_with("sse_") || rest.starts_with("process_")) {
            let len = rest.bytes().take_while(|&b| is_name(b)).count();
            names.insert(rest[..len].to_string());
        }
    }
    names
}

/// Whether `name` is an exported metric or a series of an exported histogram.
fn is_exported(name: &str) -> bool {
    METRICS.contains(&name)
        || HISTOGRAM_SUFFIXES
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .any(|family| HISTOGRAMS.contains(&family))
}

/// The metric family a series name belongs to.
fn family(name: &str) -> &str {
    HISTOGRAM_SUFFIXES.iter().find_map(|suffix| name.strip_suffix(suffix)).unwrap_or(name)
}

fn assert_only_exported(what: &str, text: &str) {
    let unknown: Vec<String> = metric_names(text).into_iter().filter(|n| !is_exported(n)).collect();
    assert!(unknown.is_empty(), "{what} names metrics the server does not export: {unknown:?}");
}

/// Every panel of the dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&read("dashboard.json")).expect("monitoring/dashboard.json is not valid JSON")
}

/// `(panel title, expr)` for every query target, plus the template variables' queries.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {title:?} data source");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "panel {title:?} has a target without expr");
            queries.push((title.clone(), expr.to_string()));
        }
    }
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(query) = var["query"]["query"].as_str().or(var["query"].as_str()) {
            queries.push((format!("variable {}", var["name"]), query.to_string()));
        }
    }
    queries
}

#[test]
fn alert_rules_pass_promtool_check() {
    let out = promtool(&["check", "rules", "alerts.yml"]);
    assert!(out.contains("SUCCESS"), "unexpected promtool output:\n{out}");
    println!("{out}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let out = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(out.contains("SUCCESS") && !out.contains("FAILED"), "unexpected promtool output:\n{out}");
    println!("{out}");
}

#[test]
fn every_alert_has_a_unit_test() {
    let rules = read("alerts.yml");
    let tests = read("alerts_test.yml");
    let alerts: Vec<&str> =
        rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(str::trim).collect();
    assert!(alerts.len() >= 13, "expected the 13 sse-edge alerts, found {alerts:?}");
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "alert {alert} has no case in alerts_test.yml"
        );
    }
}

#[test]
fn alert_rules_and_tests_name_only_exported_metrics() {
    assert_only_exported("monitoring/alerts.yml", &read("alerts.yml"));
    assert_only_exported("monitoring/alerts_test.yml", &read("alerts_test.yml"));
}

#[test]
fn dashboard_names_only_exported_metrics_and_shows_them_all() {
    let dashboard = dashboard();
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let vars: Vec<&Value> = dashboard["templating"]["list"].as_array().into_iter().flatten().collect();
    assert!(vars.iter().any(|v| v["name"] == "instance"), "no `instance` template variable");

    let mut used = BTreeSet::new();
    for (title, expr) in dashboard_queries(&dashboard) {
        let names = metric_names(&expr);
        let unknown: Vec<&String> = names.iter().filter(|n| !is_exported(n)).collect();
        assert!(
            unknown.is_empty(),
            "panel {title:?} queries metrics the server does not export: {unknown:?}\n{expr}"
        );
        if title.starts_with("variable") {
            continue;
        }
        assert!(expr.contains(r#"instance=~"$instance""#), "panel {title:?} ignores $instance: {expr}");
        used.extend(names.iter().map(|n| family(n).to_string()));
    }
    let missing: Vec<&&str> = METRICS.iter().filter(|m| !used.contains(**m)).collect();
    assert!(missing.is_empty(), "exported metrics with no dashboard panel: {missing:?}");
}

#[test]
fn dashboard_queries_parse_as_promql() {
    // promtool checks PromQL only inside rule files: wrap each query in a recording rule, with
    // Grafana's variables replaced by values a dashboard would send.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in dashboard_queries(&dashboard()).into_iter().enumerate() {
        if title.starts_with("variable") {
            continue; // label_values() is Grafana syntax, not PromQL
        }
        let expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*");
        assert!(!expr.contains('$'), "panel {title:?} uses an unknown variable: {expr}");
        let quoted = serde_json::to_string(&expr).unwrap(); // a JSON string is a YAML scalar
        rules.push_str(&format!("      - record: dashboard:query_{i}\n        expr: {quoted}\n"));
    }
    let path = std::env::temp_dir().join(format!("sse-edge-dashboard-rules-{}.yml", std::process::id()));
    std::fs::write(&path, rules).unwrap();
    let result = std::panic::catch_unwind(|| promtool(&["check", "rules", path.to_str().unwrap()]));
    let _ = std::fs::remove_file(&path);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn metric_name_scanner() {
    let names = metric_names(r#"rate(sse_a_total{job="sse-edge"}[5m]) / x_sse_b + process_c:d"#);
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["process_c:d", "sse_a_total"]);
    assert!(is_exported("sse_delivery_lag_seconds_bucket"));
    assert!(!is_exported("sse_deliveries_total_count"), "only histograms have _count series");
    assert!(!is_exported("sse_delivery_lag"));
}
