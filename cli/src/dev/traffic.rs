//! The live traffic line: request rates and success per upstream, computed
//! from successive scrapes of the frontend app's `/stats` (per outbound
//! listener: the sidecar's request metrics are labelled by service only, and
//! both listeners lead to `default/backend`) and of the frontend sidecar's
//! `/metrics` (per service), plus gateway A's stream count.
//!
//! Parsing follows the Prometheus text exposition format (and the
//! OpenMetrics text that prometheus-client writes), only as far as counters
//! need: `name{label="value",...} value [timestamp]`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::output::{Traffic, UpstreamRate};

/// Outbound request counter of the sidecar.
pub(crate) const SIDECAR_REQUESTS: &str = "isthmus_sidecar_requests_total";
/// Tunnel stream counter of the gateway.
pub(crate) const GATEWAY_STREAMS: &str = "isthmus_gateway_streams_total";

/// Rates are averaged over this long, at most.
const DEFAULT_WINDOW: Duration = Duration::from_secs(5);

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// Metric name.
    pub(crate) name: String,
    /// Labels, sorted by name.
    pub(crate) labels: BTreeMap<String, String>,
    /// Value.
    pub(crate) value: f64,
}

/// Parses the samples of an exposition; comment and malformed lines are
/// skipped.
pub(crate) fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `a="x",b="y"}` and returns the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key, value);
        s = &s[end + 1..];
    }
}

/// Request totals per upstream: (all, successful).
pub(crate) type Counts = BTreeMap<String, (f64, f64)>;

/// Outbound request totals of a sidecar per service; a response is
/// successful unless its status is 5xx.
pub(crate) fn outbound_counts(samples: &[Sample]) -> Counts {
    let mut counts = Counts::new();
    for s in samples.iter().filter(|s| s.name == SIDECAR_REQUESTS) {
        if s.labels.get("direction").map(String::as_str) != Some("outbound") {
            continue;
        }
        let Some(key) = s.labels.get("service").cloned() else {
            continue;
        };
        let entry = counts.entry(key).or_default();
        entry.0 += s.value;
        if is_success(s.labels.get("status").map(String::as_str)) {
            entry.1 += s.value;
        }
    }
    counts
}

/// The frontend app's `/stats` JSON (`{"backend":{"requests":N,"ok":M}}`)
/// as counts; `None` if it is not that shape.
pub(crate) fn app_counts(json: &str) -> Option<Counts> {
    let stats: BTreeMap<String, crate::demo::UpstreamStats> = serde_json::from_str(json).ok()?;
    Some(
        stats
            .into_iter()
            .map(|(k, v)| (k, (v.requests as f64, v.ok as f64)))
            .collect(),
    )
}

fn is_success(status: Option<&str>) -> bool {
    match status {
        None => true,
        Some(s) => !s.starts_with('5'),
    }
}

/// Sum of a counter over all its label sets.
pub(crate) fn total(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// Turns successive totals into rates, averaged over a sliding window so
/// the integer counts of one-second scrapes do not make the rate jitter.
#[derive(Debug)]
pub(crate) struct Meter {
    window: Duration,
    history: VecDeque<(Instant, Counts)>,
}

impl Default for Meter {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW)
    }
}

impl Meter {
    /// Rates over (at most) the last `window`.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            history: VecDeque::new(),
        }
    }

    /// Feeds totals taken at `now`; `labels` maps keys to shown names and
    /// fixes their order (keys not in it follow, shown as they are). Rates
    /// are over the time since the oldest call within the window (0 on the
    /// first call).
    pub(crate) fn update(
        &mut self,
        now: Instant,
        counts: Counts,
        labels: &[(String, String)],
    ) -> Vec<UpstreamRate> {
        // The base is the newest entry at least a window old.
        while self
            .history
            .get(1)
            .is_some_and(|(t, _)| now.duration_since(*t) >= self.window)
        {
            self.history.pop_front();
        }
        let mut keys: Vec<&String> = labels.iter().map(|(k, _)| k).collect();
        keys.extend(
            counts
                .keys()
                .filter(|k| !labels.iter().any(|(l, _)| l == *k)),
        );
        let mut rates = Vec::new();
        for key in keys {
            let label = labels
                .iter()
                .find(|(k, _)| k == key)
                .map_or_else(|| key.clone(), |(_, l)| l.clone());
            let (rps, success) = match (self.history.front(), counts.get(key)) {
                (Some((then, before)), Some(&(all, ok))) => {
                    let secs = now.duration_since(*then).as_secs_f64();
                    let (all0, ok0) = before.get(key).copied().unwrap_or_default();
                    // A restarted process resets its counters: no negative rates.
                    let (d_all, d_ok) = ((all - all0).max(0.0), (ok - ok0).max(0.0));
                    let rps = if secs > 0.0 { d_all / secs } else { 0.0 };
                    let success = (d_all > 0.0).then(|| (d_ok / d_all).min(1.0));
                    (rps, success)
                }
                _ => (0.0, None),
            };
            rates.push(UpstreamRate {
                label,
                rps,
                success,
            });
        }
        self.history.push_back((now, counts));
        rates
    }
}

/// Everything on the line: the app's view per listener, the sidecar's per
/// service, and gateway A's stream total.
pub(crate) fn line(
    app: Vec<UpstreamRate>,
    sidecar: Vec<UpstreamRate>,
    gateway_streams: Option<f64>,
) -> Traffic {
    Traffic {
        upstreams: app.into_iter().chain(sidecar).collect(),
        // Counters are integral; the f64 only comes from the text format.
        gateway_streams: gateway_streams.map(|v| v.max(0.0) as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP isthmus_sidecar_requests Requests.
# TYPE isthmus_sidecar_requests counter
isthmus_sidecar_requests_total{direction="outbound",service="default/backend",listener="backend",status="200"} 10
isthmus_sidecar_requests_total{direction="outbound",service="default/backend",listener="backend-b",status="200"} 8
isthmus_sidecar_requests_total{direction="outbound",service="default/backend",listener="backend-b",status="503"} 2
isthmus_sidecar_requests_total{direction="inbound",service="default/frontend",status="200"} 99
isthmus_gateway_streams_total{direction="outbound",result="accepted"} 7 1700000000
isthmus_gateway_streams_total{direction="inbound",result="rejected"} 1
odd_metric{a="x\"y\\z",b="1"} 3.5
# EOF
"#;

    #[test]
    fn parses_labels_values_and_escapes() {
        let samples = parse(SCRAPE);
        assert_eq!(samples.len(), 7);
        let odd = samples.iter().find(|s| s.name == "odd_metric").unwrap();
        assert_eq!(odd.labels["a"], "x\"y\\z");
        assert_eq!(odd.labels["b"], "1");
        assert!((odd.value - 3.5).abs() < 1e-9);
        assert_eq!(total(&samples, GATEWAY_STREAMS), 8.0);
        assert!(parse("no_value_here\nbroken{a=\"x\" 1\n").is_empty());
        assert_eq!(parse("plain 2\n")[0].value, 2.0);
    }

    #[test]
    fn counts_outbound_requests_per_service() {
        let counts = outbound_counts(&parse(SCRAPE));
        assert_eq!(counts.len(), 1);
        assert_eq!(counts["default/backend"], (20.0, 18.0));
    }

    #[test]
    fn app_stats_become_counts() {
        let counts =
            app_counts(r#"{"backend":{"requests":4,"ok":3},"backend-b":{"requests":2,"ok":2}}"#)
                .unwrap();
        assert_eq!(counts["backend"], (4.0, 3.0));
        assert_eq!(counts["backend-b"], (2.0, 2.0));
        assert!(app_counts("not json").is_none());
    }

    fn counts(entries: &[(&str, f64, f64)]) -> Counts {
        entries
            .iter()
            .map(|(k, a, o)| ((*k).to_owned(), (*a, *o)))
            .collect()
    }

    #[test]
    fn meter_gives_rates_between_scrapes() {
        let labels = vec![
            ("backend".to_owned(), "backend(local)".to_owned()),
            ("backend-b".to_owned(), "backend(cluster-b)".to_owned()),
        ];
        let mut meter = Meter::default();
        let t0 = Instant::now();
        let first = meter.update(
            t0,
            counts(&[("backend", 10.0, 10.0), ("backend-b", 10.0, 8.0)]),
            &labels,
        );
        assert_eq!(first[0].label, "backend(local)");
        assert_eq!(first[0].rps, 0.0);
        assert_eq!(first[0].success, None);

        let later = counts(&[
            ("backend", 20.0, 20.0),
            ("backend-b", 20.0, 17.0),
            ("other", 1.0, 1.0),
        ]);
        let second = meter.update(t0 + Duration::from_secs(2), later, &labels);
        assert_eq!(second.len(), 3);
        assert_eq!(second[0].rps, 5.0);
        assert_eq!(second[0].success, Some(1.0));
        assert_eq!(second[1].label, "backend(cluster-b)");
        assert_eq!(second[1].rps, 5.0);
        assert_eq!(second[1].success, Some(0.9));
        assert_eq!(second[2].label, "other");
    }

    #[test]
    fn rates_are_averaged_over_the_window() {
        let mut meter = Meter::new(Duration::from_secs(3));
        let t0 = Instant::now();
        // 4, 6, 4, 6 … requests per second average to 5.
        let mut total = 0.0;
        let mut last = Vec::new();
        for (i, step) in [0.0, 4.0, 6.0, 4.0, 6.0, 4.0, 6.0].into_iter().enumerate() {
            total += step;
            last = meter.update(
                t0 + Duration::from_secs(i as u64),
                counts(&[("x", total, total)]),
                &[],
            );
        }
        // Base at t=3 (total 14), now t=6 (total 30): 16 / 3 s.
        assert!((last[0].rps - 16.0 / 3.0).abs() < 1e-9, "{last:?}");
        assert!(meter.history.len() <= 4, "{}", meter.history.len());
    }

    #[test]
    fn counter_reset_gives_no_negative_rate() {
        let mut meter = Meter::default();
        let t0 = Instant::now();
        meter.update(t0, counts(&[("x", 100.0, 100.0)]), &[]);
        let reset = meter.update(t0 + Duration::from_secs(1), counts(&[("x", 3.0, 3.0)]), &[]);
        assert_eq!(reset[0].rps, 0.0);
        assert_eq!(reset[0].success, None);
    }

    #[test]
    fn line_joins_app_and_sidecar_views() {
        let up = |l: &str| UpstreamRate {
            label: l.into(),
            rps: 1.0,
            success: Some(1.0),
        };
        let t = line(vec![up("a")], vec![up("sidecar")], Some(3.0));
        assert_eq!(t.upstreams.len(), 2);
        assert_eq!(t.upstreams[1].label, "sidecar");
        assert_eq!(t.gateway_streams, Some(3));
    }
}
