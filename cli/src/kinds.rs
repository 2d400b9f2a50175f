//! The resource kinds of the admin API, their plural, singular and short
//! names (as kubectl accepts them), and how `get` shows each as a table row.

use serde_json::Value;

use crate::output::age;

/// One kind the admin API serves under `/v1/resources/{plural}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kind {
    /// The URL segment, e.g. `serviceexports`.
    pub(crate) plural: &'static str,
    /// The `kind` of documents, e.g. `ServiceExport`.
    pub(crate) kind: &'static str,
    /// The API group, e.g. `multicluster.x-k8s.io`.
    pub(crate) group: &'static str,
    /// Other accepted names (singular, short).
    pub(crate) aliases: &'static [&'static str],
    /// Whether `delete` is allowed (derived kinds are read-only).
    pub(crate) deletable: bool,
    /// Listed across namespaces unless `-n` is given (peers are cluster-wide).
    pub(crate) cluster_wide: bool,
}

/// Every kind, in the order `meshctl get --help` lists them.
pub(crate) const KINDS: &[Kind] = &[
    Kind {
        plural: "serviceexports",
        kind: "ServiceExport",
        group: "multicluster.x-k8s.io",
        aliases: &["serviceexport", "svcex"],
        deletable: true,
        cluster_wide: false,
    },
    Kind {
        plural: "serviceimports",
        kind: "ServiceImport",
        group: "multicluster.x-k8s.io",
        aliases: &["serviceimport", "svcim"],
        deletable: false,
        cluster_wide: false,
    },
    Kind {
        plural: "workloads",
        kind: "Workload",
        group: "isthmus.dev",
        aliases: &["workload", "wl"],
        deletable: true,
        cluster_wide: false,
    },
    Kind {
        plural: "meshlinks",
        kind: "MeshLink",
        group: "isthmus.dev",
        aliases: &["meshlink", "links", "link", "ml"],
        deletable: false,
        cluster_wide: true,
    },
    Kind {
        plural: "failoverpolicies",
        kind: "FailoverPolicy",
        group: "isthmus.dev",
        aliases: &["failoverpolicy", "fp"],
        deletable: true,
        cluster_wide: false,
    },
    Kind {
        plural: "trafficpolicies",
        kind: "TrafficPolicy",
        group: "isthmus.dev",
        aliases: &["trafficpolicy", "tp"],
        deletable: true,
        cluster_wide: false,
    },
];

impl Kind {
    /// `serviceexport.multicluster.x-k8s.io`, the prefix of kubectl's
    /// `…/web created` lines.
    pub(crate) fn qualified(&self) -> String {
        format!("{}.{}", self.kind.to_ascii_lowercase(), self.group)
    }

    /// The table: headers (without `NAMESPACE`) and one row per item.
    pub(crate) fn columns(&self) -> &'static [&'static str] {
        match self.plural {
            "serviceexports" => &["NAME", "VALID", "CONFLICT", "AGE"],
            "serviceimports" => &["NAME", "TYPE", "PORTS", "CLUSTERS", "AGE"],
            "workloads" => &["NAME", "SERVICE", "ADDRESS", "PORTS", "LOCALITY", "AGE"],
            "meshlinks" => &["NAME", "PEER", "TRUST DOMAIN", "GATEWAYS", "AGE"],
            "trafficpolicies" => &["NAME", "SERVICE", "AGE"],
            _ => &["NAME", "SERVICE", "TARGETS", "AGE"],
        }
    }

    /// The cells of one item, matching [`Kind::columns`]; `now` for AGE
    /// (unix seconds). Missing fields show as `<none>`.
    pub(crate) fn row(&self, item: &Value, now: i64) -> Vec<String> {
        let name = text(item, "/metadata/name");
        let age = item
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| age(t, now))
            .unwrap_or_else(|| "<unknown>".to_owned());
        match self.plural {
            "serviceexports" => vec![
                name,
                condition(item, "Valid"),
                condition(item, "Conflict"),
                age,
            ],
            "serviceimports" => vec![
                name,
                text(item, "/spec/type"),
                join(item, "/spec/ports", |p| {
                    let port = p.get("port").map(Value::to_string)?;
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    Some(format!("{port}/{proto}"))
                }),
                join(item, "/status/clusters", |c| {
                    c.get("cluster").and_then(Value::as_str).map(str::to_owned)
                }),
                age,
            ],
            "workloads" => vec![
                name,
                text(item, "/spec/service"),
                text(item, "/spec/address"),
                join(item, "/spec/ports", |p| {
                    let port = p.get("port").map(Value::to_string)?;
                    Some(match p.get("protocol").and_then(Value::as_str) {
                        Some(proto) => format!("{port}/{proto}"),
                        None => port,
                    })
                }),
                locality(item),
                age,
            ],
            "meshlinks" => vec![
                name,
                text(item, "/spec/peerCluster"),
                text(item, "/spec/trustDomain"),
                join(item, "/spec/gatewayAddresses", |g| {
                    g.as_str().map(str::to_owned)
                }),
                age,
            ],
            "trafficpolicies" => vec![name, text(item, "/spec/service"), age],
            _ => vec![
                name,
                text(item, "/spec/service"),
                join(item, "/spec/targets", |t| {
                    let obj = t.as_object()?;
                    obj.iter()
                        .next()
                        .and_then(|(k, v)| v.as_str().map(|v| format!("{k}:{v}")))
                }),
                age,
            ],
        }
    }
}

/// The kind called `name` (plural, singular, short name, `kind` or
/// `plural.group`, case-insensitive).
pub(crate) fn lookup(name: &str) -> Option<&'static Kind> {
    let name = name.to_ascii_lowercase();
    KINDS.iter().find(|k| {
        k.plural == name
            || k.aliases.contains(&name.as_str())
            || k.kind.to_ascii_lowercase() == name
            || format!("{}.{}", k.plural, k.group) == name
    })
}

/// The kind whose documents have `kind: <kind>` (exact).
pub(crate) fn by_kind(kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// All accepted names, for error messages.
pub(crate) fn names() -> String {
    KINDS
        .iter()
        .map(|k| format!("{} ({})", k.plural, k.aliases.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn text(item: &Value, pointer: &str) -> String {
    match item.pointer(pointer) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Null) | None => "<none>".to_owned(),
        Some(Value::String(_)) => "<none>".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn join(item: &Value, pointer: &str, cell: impl Fn(&Value) -> Option<String>) -> String {
    let parts: Vec<String> = item
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(&cell).collect())
        .unwrap_or_default();
    if parts.is_empty() {
        "<none>".to_owned()
    } else {
        parts.join(",")
    }
}

/// The `status` of condition `type_` (`True`, `False`, `Unknown`).
fn condition(item: &Value, type_: &str) -> String {
    item.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|conds| {
            conds
                .iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        })
        .and_then(|c| c.get("status").and_then(Value::as_str))
        .unwrap_or("<none>")
        .to_owned()
}

fn locality(item: &Value) -> String {
    let region = item
        .pointer("/spec/locality/region")
        .and_then(Value::as_str);
    let zone = item.pointer("/spec/locality/zone").and_then(Value::as_str);
    match (region, zone) {
        (Some(r), Some(z)) => format!("{r}/{z}"),
        (Some(r), None) => r.to_owned(),
        (None, Some(z)) => format!("/{z}"),
        (None, None) => "<none>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_short_names() {
        for (name, plural) in [
            ("serviceexports", "serviceexports"),
            ("svcex", "serviceexports"),
            ("ServiceExport", "serviceexports"),
            ("serviceexports.multicluster.x-k8s.io", "serviceexports"),
            ("svcim", "serviceimports"),
            ("wl", "workloads"),
            ("links", "meshlinks"),
            ("fp", "failoverpolicies"),
            ("failoverpolicy", "failoverpolicies"),
            ("tp", "trafficpolicies"),
        ] {
            assert_eq!(lookup(name).map(|k| k.plural), Some(plural), "{name}");
        }
        assert_eq!(lookup("pods"), None);
        assert_eq!(
            by_kind("ServiceExport").unwrap().qualified(),
            "serviceexport.multicluster.x-k8s.io"
        );
    }

    #[test]
    fn rows_match_columns() {
        let now = 1_700_000_000;
        let export = json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2023-11-14T22:12:20Z"},
            "status": {"conditions": [
                {"type": "Valid", "status": "True"},
                {"type": "Conflict", "status": "False"}
            ]}
        });
        let kind = lookup("svcex").unwrap();
        assert_eq!(kind.row(&export, now), vec!["web", "True", "False", "1m"]);
        let import = json!({
            "metadata": {"name": "web"},
            "spec": {"type": "ClusterSetIP", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 81}]},
            "status": {"clusters": [{"cluster": "cluster-a"}, {"cluster": "cluster-b"}]}
        });
        let kind = lookup("svcim").unwrap();
        let row = kind.row(&import, now);
        assert_eq!(row.len(), kind.columns().len());
        assert_eq!(
            row,
            vec![
                "web",
                "ClusterSetIP",
                "80/TCP,81/TCP",
                "cluster-a,cluster-b",
                "<unknown>"
            ]
        );
        for kind in KINDS {
            assert_eq!(
                kind.row(&json!({}), now).len(),
                kind.columns().len(),
                "{}",
                kind.plural
            );
        }
    }
}
