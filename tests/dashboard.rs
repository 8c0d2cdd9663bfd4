//! The Grafana dashboard (cross/grafana-dashboard.json) cannot go stale: every metric name in
//! its queries must be one a running gateway (with the Redis backplane on, so that every
//! family is there) exports on `/metrics`. The file must be JSON Grafana can import.
mod common;
use common::redis::Redis;
use common::{free_port, http_get, Gateway};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn dashboard() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cross/grafana-dashboard.json");
    std::fs::read_to_string(path).expect("cross/grafana-dashboard.json")
}

/// The PromQL of every `"expr"` in the dashboard.
fn queries(json: &str) -> Vec<String> {
    json.split("\"expr\": \"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

/// The `wsgate_*` metric names a query reads.
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = query;
    while let Some(i) = rest.find("wsgate_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        names.insert(name);
    }
    names
}

/// The names the dashboard uses that `exported` does not have.
fn missing(used: &BTreeSet<String>, exported: &BTreeSet<String>) -> Vec<String> {
    used.difference(exported).cloned().collect()
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let json = dashboard();
    // Valid JSON, with the import input Grafana asks for.
    let check = Command::new("python3")
        .args([
            "-c",
            "import json,sys; d=json.load(sys.stdin); assert d['panels'] and d['__inputs']",
        ])
        .stdin(
            std::fs::File::open(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("cross/grafana-dashboard.json"),
            )
            .unwrap(),
        )
        .status()
        .expect("python3");
    assert!(
        check.success(),
        "cross/grafana-dashboard.json is not an importable dashboard"
    );
    let qs = queries(&json);
    assert!(qs.len() >= 20, "{} queries", qs.len());
    let used: BTreeSet<String> = qs.iter().flat_map(|q| metric_names(q)).collect();

    let redis = Redis::start(free_port(), None);
    let gw = Gateway::start(&["--admin-listen", "127.0.0.1:0", "--redis", &redis.url()]);
    gw.wait_log(|l| l.contains(" backplane_up "));
    let (code, text) = http_get(gw.admin_addr(), "/metrics");
    assert_eq!(code, 200);
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    assert_eq!(
        missing(&used, &exported),
        Vec::<String>::new(),
        "the dashboard queries metrics the gateway does not export"
    );
    // And the check does catch a rename: without one exported name, it is reported.
    let mut renamed = exported.clone();
    renamed.remove("wsgate_slow_consumer_evictions_total");
    assert_eq!(
        missing(&used, &renamed),
        ["wsgate_slow_consumer_evictions_total"]
    );
    // Every panel the issue asks for is there.
    for must in [
        "wsgate_connections_open",
        "wsgate_socketio_polling_sessions",
        "wsgate_connections_refused_total",
        "wsgate_messages_in_total",
        "wsgate_messages_out_total",
        "wsgate_slow_consumer_evictions_total",
        "wsgate_pong_timeouts_total",
        "wsgate_backplane_up",
        "wsgate_backplane_dropped_total",
        "wsgate_upstream_tunnels_open",
        "wsgate_upstream_responses_total",
    ] {
        assert!(used.contains(must), "no panel reads {must}");
    }
}
