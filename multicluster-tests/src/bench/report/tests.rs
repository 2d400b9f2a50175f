use super::*;

fn h(rps: f64) -> Option<H2loadResult> {
    Some(H2loadResult {
        rps,
        succeeded: 1000,
        failed: 0,
        status_2xx: 1000,
        mean_ms: 1.0,
        max_ms: 5.0,
    })
}

fn added(p99_ms: f64) -> Option<Percentiles> {
    Some(Percentiles {
        p50_ms: p99_ms / 3.0,
        p90_ms: p99_ms / 2.0,
        p99_ms,
        p999_ms: p99_ms * 2.0,
        max_ms: p99_ms * 3.0,
    })
}

fn topo(name: &str) -> TopologyResult {
    TopologyResult {
        name: name.into(),
        ..TopologyResult::default()
    }
}

fn sidecar(name: &str, rss: f64) -> ProxyResult {
    ProxyResult {
        name: name.into(),
        rss_fixed_rate_mib: Some(rss),
        ..ProxyResult::default()
    }
}

fn sample() -> Vec<TopologyResult> {
    let mut isthmus = topo("isthmus");
    isthmus.h1 = h(50_000.0);
    isthmus.added_latency = added(0.10);
    isthmus.cpu_per_1k_req_cpu_s = Some(0.03);
    isthmus.proxies = vec![
        sidecar("sidecar-client", 6.5),
        sidecar("sidecar-server", 11.0),
    ];
    isthmus.bulk_1_stream_gbps = Some(7.0);
    let mut envoy = topo("envoy");
    envoy.h1 = h(21_400.0);
    envoy.added_latency = added(0.30);
    envoy.cpu_per_1k_req_cpu_s = Some(0.072);
    envoy.bulk_1_stream_gbps = Some(6.0);
    let mut haproxy = topo("haproxy");
    haproxy.h1 = h(52_000.0);
    let mut xc = topo("isthmus-xc");
    xc.reused_conn_added_p50_ms = Some(0.12);
    xc.new_conn_added_p50_ms = Some(1.5);
    xc.bulk_16_streams_gbps = Some(9.0);
    let mut base = topo("baseline-xc");
    base.errors = vec!["start: no TCP+TLS transport".into()];
    vec![topo("direct"), isthmus, envoy, haproxy, xc, base]
}

fn find<'a>(checks: &'a [TargetCheck], prefix: &str) -> &'a TargetCheck {
    checks
        .iter()
        .find(|c| c.target.starts_with(prefix))
        .unwrap_or_else(|| panic!("no target {prefix}"))
}

#[test]
fn every_target_is_evaluated_with_both_numbers_and_the_ratio() {
    let checks = evaluate(&sample());
    assert_eq!(checks.len(), 9);

    let c = find(&checks, "Isthmus max HTTP/1.1 rps ≥ 2×");
    assert_eq!(c.met, Some(true));
    assert_eq!((c.isthmus, c.reference), (Some(50_000.0), Some(21_400.0)));
    assert!((c.ratio.unwrap() - 50_000.0 / 21_400.0).abs() < 1e-12);

    let c = find(&checks, "Isthmus max HTTP/1.1 rps ≥ HAProxy");
    assert_eq!(c.met, Some(false));
    assert_eq!(c.reference_name, "haproxy");

    // 0.10 ≤ 0.30 / 2.
    let c = find(&checks, "Isthmus added p99");
    assert_eq!(c.met, Some(true));

    // 0.03 ≤ 0.036.
    let c = find(&checks, "Isthmus CPU");
    assert_eq!(c.met, Some(true));

    // The larger sidecar (11 MiB) decides.
    let c = find(&checks, "RSS per Isthmus sidecar");
    assert_eq!(c.isthmus, Some(11.0));
    assert_eq!(c.met, Some(false));

    // 7.0 < 1.2 × 6.0 = 7.2.
    let c = find(&checks, "One-stream bulk");
    assert_eq!(c.met, Some(false));

    let c = find(&checks, "Cross-cluster reused");
    assert_eq!(
        (c.isthmus, c.reference, c.met),
        (Some(0.12), Some(0.13), Some(true))
    );

    let c = find(&checks, "Cross-cluster new");
    assert_eq!(c.met, Some(false));

    // A baseline that did not start is no data, not a pass or a failure.
    let c = find(&checks, "Cross-cluster 16-stream");
    assert_eq!(c.met, None);
    assert_eq!(c.reference, None);
    assert_eq!(c.isthmus, Some(9.0));
}

#[test]
fn boundaries_count_as_met() {
    let mut isthmus = topo("isthmus");
    isthmus.h1 = h(2000.0);
    isthmus.added_latency = added(0.15);
    let mut envoy = topo("envoy");
    envoy.h1 = h(1000.0);
    envoy.added_latency = added(0.30);
    let checks = evaluate(&[isthmus, envoy]);
    assert_eq!(
        find(&checks, "Isthmus max HTTP/1.1 rps ≥ 2×").met,
        Some(true)
    );
    assert_eq!(find(&checks, "Isthmus added p99").met, Some(true));
    assert_eq!(
        find(&checks, "Isthmus max HTTP/1.1 rps ≥ HAProxy").met,
        None
    );
}

#[test]
fn the_report_has_every_table_and_marks_targets() {
    let mut r = Results {
        topologies: sample(),
        ..Results::default()
    };
    r.targets = evaluate(&r.topologies);
    let md = markdown(&r);
    for heading in [
        "### Max request rate",
        "### Latency at a fixed 1,000 rps",
        "### CPU and memory per proxy",
        "### Bulk TCP",
        "### Targets",
    ] {
        assert!(md.contains(heading), "{heading} missing:\n{md}");
    }
    assert!(md.contains("✔ met"));
    assert!(md.contains("✘ not met"));
    assert!(md.contains("? no data"));
    assert!(md.contains("| isthmus "));
    assert!(md.contains("50,000"));
    assert!(md.contains("baseline-xc: error: start: no TCP+TLS transport"));
    // Every table line of a table has the same width.
    for table in md.split("\n\n").filter(|b| b.starts_with('|')) {
        let widths: Vec<usize> = table.lines().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{table}");
    }
}

#[test]
fn thousands_separators() {
    assert_eq!(thousands(21402.3), "21,402");
    assert_eq!(thousands(999.0), "999");
    assert_eq!(thousands(1_000_000.0), "1,000,000");
    assert_eq!(thousands(0.0), "0");
}
