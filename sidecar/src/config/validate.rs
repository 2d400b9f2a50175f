//! Raw → typed validation. Each check names the key path it refers to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use trust_bundle::SpiffeId;

use super::raw::{
    RawConfig, RawControlPlane, RawFailover, RawGateway, RawInbound, RawOutbound, RawService,
};
use super::{
    first_duplicate, is_dns_label, AllowEntry, AllowList, AppProtocol, Config, ConfigError,
    ControlPlane, Endpoint, FailoverSettings, Gateway, Inbound, Locality, Outbound, Protocol,
    RegisteredPort, Registration, Remote, Service, ServiceKey, Timeouts,
};

pub(super) fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigError> {
    if !is_dns_label(&raw.cluster) {
        return Err(invalid(
            "cluster",
            format!("{:?} is not a DNS label", raw.cluster),
        ));
    }
    let own_id = spiffe_id("identity.spiffe_id", &raw.identity.spiffe_id)?;
    let admin = addr("admin", &raw.admin)?;
    let control_plane = match &raw.control_plane {
        None => None,
        Some(cp) => Some(control_plane(cp, &raw, &own_id)?),
    };
    let gateway = match &raw.gateway {
        None => None,
        Some(g) => Some(Gateway {
            address: gateway_replicas(g)?.0,
            replicas: gateway_replicas(g)?.1,
            spiffe_id: spiffe_id("gateway.spiffe_id", &g.spiffe_id)?,
            keep_alive: positive_ms(
                "gateway.keep_alive_ms",
                g.keep_alive_ms,
                super::DEFAULT_GATEWAY_KEEP_ALIVE_MS,
            )?,
            idle_timeout: positive_ms(
                "gateway.idle_timeout_ms",
                g.idle_timeout_ms,
                super::DEFAULT_GATEWAY_IDLE_TIMEOUT_MS,
            )?,
        }),
    };

    if control_plane.is_some() && !raw.services.is_empty() {
        return Err(invalid(
            "services",
            "not allowed with control_plane: the catalog comes from the controller (CDS+EDS)",
        ));
    }
    let mut services: Vec<Service> = Vec::with_capacity(raw.services.len());
    for (i, s) in raw.services.iter().enumerate() {
        let svc = service(i, s, &raw, gateway.is_some())?;
        if services
            .iter()
            .any(|o| o.service == svc.service && o.port == svc.port)
        {
            return Err(invalid(
                format!("services[{i}]"),
                format!("{}:{} is listed twice", svc.service, svc.port),
            ));
        }
        services.push(svc);
    }

    if control_plane.is_some() {
        // Every upstream starts empty and is filled from xDS; a `cluster`
        // pin is checked against the remote entries at request time.
        for o in &raw.outbound {
            let (Ok(key), Ok(port)) = (ServiceKey::parse(&o.service), u16::try_from(o.port)) else {
                continue;
            };
            if !services.iter().any(|s| s.service == key && s.port == port) {
                services.push(Service {
                    service: key,
                    port,
                    endpoints: Vec::new(),
                    remote: Vec::new(),
                    resilience: crate::resilience::Resilience::default(),
                    failover: FailoverSettings::default(),
                });
            }
        }
    }
    let mut outbound = Vec::with_capacity(raw.outbound.len());
    for (i, o) in raw.outbound.iter().enumerate() {
        outbound.push(outbound_entry(
            i,
            o,
            &services,
            &raw.cluster,
            control_plane.is_some(),
        )?);
    }
    let mut inbound = Vec::with_capacity(raw.inbound.len());
    for (i, e) in raw.inbound.iter().enumerate() {
        inbound.push(inbound_entry(i, e)?);
    }

    // Unique listen addresses across admin, outbound and inbound.
    let mut owners: HashMap<SocketAddr, String> = HashMap::new();
    owners.insert(admin, "admin".into());
    let named = outbound
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("outbound[{i}].listen"), o.listen))
        .chain(
            inbound
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("inbound[{i}].listen"), e.listen)),
        );
    for (key, a) in named {
        if let Some(prev) = owners.get(&a) {
            return Err(invalid(key, format!("{a} is already used by {prev}")));
        }
        owners.insert(a, key);
    }

    let t = &raw.timeouts;
    let timeouts = Timeouts {
        connect: positive_ms(
            "timeouts.connect_ms",
            t.connect_ms,
            super::DEFAULT_CONNECT_MS,
        )?,
        header_read: positive_ms(
            "timeouts.header_read_ms",
            t.header_read_ms,
            super::DEFAULT_HEADER_READ_MS,
        )?,
        tls_handshake: positive_ms(
            "timeouts.tls_handshake_ms",
            t.tls_handshake_ms,
            super::DEFAULT_TLS_HANDSHAKE_MS,
        )?,
        request: match t.request_ms {
            None | Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
        },
        drain: Duration::from_millis(t.drain_ms.unwrap_or(super::DEFAULT_DRAIN_MS)),
    };
    let max_header_bytes = match raw.max_header_bytes {
        None => super::DEFAULT_MAX_HEADER_BYTES,
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if !(super::MIN_MAX_HEADER_BYTES..=super::MAX_MAX_HEADER_BYTES).contains(&n) {
                return Err(invalid(
                    "max_header_bytes",
                    format!(
                        "{n} is outside {}..={}",
                        super::MIN_MAX_HEADER_BYTES,
                        super::MAX_MAX_HEADER_BYTES
                    ),
                ));
            }
            n
        }
    };

    let worker_threads = match raw.worker_threads {
        None => super::WorkerThreads::Fixed(
            std::num::NonZeroUsize::new(super::DEFAULT_WORKER_THREADS)
                .unwrap_or(std::num::NonZeroUsize::MIN),
        ),
        Some(0) => super::WorkerThreads::PerCpu,
        Some(n) if n <= super::MAX_WORKER_THREADS => super::WorkerThreads::Fixed(
            std::num::NonZeroUsize::new(n as usize).unwrap_or(std::num::NonZeroUsize::MIN),
        ),
        Some(n) => {
            return Err(invalid(
                "worker_threads",
                format!("{n} is above {}", super::MAX_WORKER_THREADS),
            ))
        }
    };

    Ok(Config {
        cluster: raw.cluster.clone(),
        spiffe_id: own_id,
        identity: raw.identity,
        base_dir: base_dir.to_path_buf(),
        admin,
        locality: raw.locality.as_ref().map(Locality::from_raw),
        gateway,
        outbound,
        inbound,
        services,
        timeouts,
        max_header_bytes,
        worker_threads,
        control_plane,
    })
}

fn control_plane(
    cp: &RawControlPlane,
    raw: &RawConfig,
    own_id: &SpiffeId,
) -> Result<ControlPlane, ConfigError> {
    if raw.identity.ca.is_some() {
        return Err(invalid(
            "identity.ca",
            "not allowed with control_plane: the SVID comes from the controller",
        ));
    }
    if raw.identity.svid.is_some() {
        return Err(invalid(
            "identity.svid",
            "not allowed with control_plane: the SVID comes from the controller",
        ));
    }
    if raw.identity.svid_ttl_ms.is_some() {
        return Err(invalid(
            "identity.svid_ttl_ms",
            "not allowed with control_plane: the controller sets SVID lifetimes",
        ));
    }
    match cp.address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
        _ => {
            return Err(invalid(
                "control_plane.address",
                format!("{:?} is not host:port", cp.address),
            ))
        }
    }
    let spiffe_id = match &cp.spiffe_id {
        Some(s) => spiffe_id("control_plane.spiffe_id", s)?,
        None => spiffe_id(
            "control_plane.spiffe_id",
            &format!(
                "spiffe://{}/ns/isthmus-system/sa/controller",
                own_id.trust_domain_str()
            ),
        )?,
    };
    if cp.join_token_file.is_empty() {
        return Err(invalid(
            "control_plane.join_token_file",
            "must not be empty",
        ));
    }
    let register = match &cp.register {
        None => None,
        Some(r) => {
            for (key, v) in [
                ("control_plane.register.name", &r.name),
                ("control_plane.register.service", &r.service),
            ] {
                if !is_dns_label(v) {
                    return Err(invalid(key, format!("{v:?} is not a DNS label")));
                }
            }
            if r.ports.is_empty() {
                return Err(invalid("control_plane.register.ports", "must not be empty"));
            }
            let mut ports = Vec::with_capacity(r.ports.len());
            for (i, p) in r.ports.iter().enumerate() {
                let k = format!("control_plane.register.ports[{i}]");
                if !matches!(p.protocol.as_str(), "http" | "grpc" | "tcp") {
                    return Err(invalid(
                        format!("{k}.protocol"),
                        format!("{:?} is not http, grpc or tcp", p.protocol),
                    ));
                }
                ports.push(RegisteredPort {
                    port: port(&format!("{k}.port"), p.port)?,
                    target_port: port(&format!("{k}.target_port"), p.target_port)?,
                    protocol: p.protocol.clone(),
                });
            }
            if let Some(dup) = first_duplicate(ports.iter().map(|p| &p.port)) {
                return Err(invalid(
                    "control_plane.register.ports",
                    format!("port {dup} is listed twice"),
                ));
            }
            Some(Registration {
                name: r.name.clone(),
                service: r.service.clone(),
                ports,
                lease_seconds: r.lease_seconds.unwrap_or(0),
            })
        }
    };
    let initial_backoff = positive_ms(
        "control_plane.initial_backoff_ms",
        cp.initial_backoff_ms,
        super::DEFAULT_CONTROL_PLANE_INITIAL_BACKOFF_MS,
    )?;
    let max_backoff = positive_ms(
        "control_plane.max_backoff_ms",
        cp.max_backoff_ms,
        super::DEFAULT_CONTROL_PLANE_MAX_BACKOFF_MS,
    )?;
    if max_backoff < initial_backoff {
        return Err(invalid(
            "control_plane.max_backoff_ms",
            "must be at least initial_backoff_ms",
        ));
    }
    Ok(ControlPlane {
        address: cp.address.clone(),
        spiffe_id,
        join_token_file: cp.join_token_file.clone().into(),
        register,
        danger_plaintext: cp.danger_plaintext.unwrap_or(false),
        initial_backoff,
        max_backoff,
    })
}

fn service(
    i: usize,
    s: &RawService,
    raw: &RawConfig,
    has_gateway: bool,
) -> Result<Service, ConfigError> {
    let own_cluster = raw.cluster.as_str();
    let key =
        ServiceKey::parse(&s.service).map_err(|p| invalid(format!("services[{i}].service"), p))?;
    let port = port(&format!("services[{i}].port"), s.port)?;
    let mut endpoints = Vec::with_capacity(s.endpoints.len());
    for (j, e) in s.endpoints.iter().enumerate() {
        let k = format!("services[{i}].endpoints[{j}]");
        endpoints.push(Endpoint {
            address: addr(&format!("{k}.address"), &e.address)?,
            spiffe_id: spiffe_id(&format!("{k}.spiffe_id"), &e.spiffe_id)?,
            locality: e.locality.as_ref().map(Locality::from_raw),
            priority: 0,
            weight: weight(&format!("{k}.weight"), e.weight)?,
            healthy: true,
        });
    }
    let next_priority = static_priorities(&mut endpoints, raw);
    if let Some(dup) = first_duplicate(endpoints.iter().map(|e| &e.address)) {
        return Err(invalid(
            format!("services[{i}].endpoints"),
            format!("{dup} is listed twice"),
        ));
    }
    let mut remote = Vec::with_capacity(s.remote.len());
    for (k, r) in s.remote.iter().enumerate() {
        let key_path = format!("services[{i}].remote[{k}]");
        if !is_dns_label(&r.cluster) {
            return Err(invalid(
                format!("{key_path}.cluster"),
                format!("{:?} is not a DNS label", r.cluster),
            ));
        }
        if r.cluster == own_cluster {
            return Err(invalid(
                format!("{key_path}.cluster"),
                format!(
                    "{} is our own cluster; list its endpoints instead",
                    r.cluster
                ),
            ));
        }
        if !has_gateway {
            return Err(invalid(
                key_path.clone(),
                "remote clusters are reached through the gateway, but there is no `gateway` section".to_owned(),
            ));
        }
        remote.push(Remote {
            cluster: r.cluster.clone(),
            spiffe_id: spiffe_id(&format!("{key_path}.spiffe_id"), &r.spiffe_id)?,
            // One level each, after the local ones, in config order.
            priority: next_priority.saturating_add(u32::try_from(k).unwrap_or(u32::MAX)),
            weight: weight(&format!("{key_path}.weight"), r.weight)?,
            health: mesh_failover::Health {
                healthy: 1,
                total: 1,
            },
        });
    }
    if let Some(dup) = first_duplicate(remote.iter().map(|r| &r.cluster)) {
        return Err(invalid(
            format!("services[{i}].remote"),
            format!("cluster {dup} is listed twice"),
        ));
    }
    let resilience = super::resilience::resilience(
        &format!("services[{i}].resilience"),
        s.resilience.as_ref(),
        &raw.timeouts,
    )?;
    let failover = failover(
        &format!("services[{i}].failover"),
        s.failover.as_ref().unwrap_or(&RawFailover::default()),
    )?;
    Ok(Service {
        service: key,
        port,
        endpoints,
        remote,
        resilience,
        failover,
    })
}

// ---- failover (H2; issue 6) ----

/// Static priorities of local endpoints: `assign_priorities` as seen from
/// the sidecar's `locality` (cluster = ours; no policy targets). Returns
/// the first level after them (where `remote` entries start).
fn static_priorities(endpoints: &mut [Endpoint], raw: &RawConfig) -> u32 {
    let locality = |l: Option<&Locality>| mesh_failover::Locality {
        region: l.and_then(|l| l.region.clone()).unwrap_or_default(),
        zone: l.and_then(|l| l.zone.clone()).unwrap_or_default(),
        cluster: raw.cluster.clone(),
    };
    let own = raw.locality.as_ref().map(Locality::from_raw);
    let client = locality(own.as_ref());
    let localities: Vec<_> = endpoints
        .iter()
        .map(|e| locality(e.locality.as_ref()))
        .collect();
    let priorities = mesh_failover::assign_priorities(&client, &[], &localities);
    for (e, p) in endpoints.iter_mut().zip(priorities) {
        e.priority = p;
    }
    endpoints
        .iter()
        .map(|e| e.priority.saturating_add(1))
        .max()
        .unwrap_or(0)
}

/// A locality weight: ≥ 1, default 1.
fn weight(key: &str, w: Option<u32>) -> Result<u32, ConfigError> {
    match w {
        None => Ok(1),
        Some(0) => Err(invalid(key, "must be at least 1")),
        Some(w) => Ok(w),
    }
}

/// `services[i].failover`, defaults filled in.
fn failover(key: &str, f: &RawFailover) -> Result<FailoverSettings, ConfigError> {
    let d = FailoverSettings::default();
    let overprovisioning_factor = match f.overprovisioning_factor {
        None => d.overprovisioning_factor,
        Some(0) => {
            return Err(invalid(
                format!("{key}.overprovisioning_factor"),
                "must be greater than 0",
            ))
        }
        Some(v) => v,
    };
    let panic_threshold_percent = match f.panic_threshold_percent {
        None => d.panic_threshold_percent,
        Some(v) if v <= 100 => v,
        Some(v) => {
            return Err(invalid(
                format!("{key}.panic_threshold_percent"),
                format!("{v} is above 100"),
            ))
        }
    };
    let mut outlier = d.outlier;
    if let Some(o) = &f.outlier_detection {
        let k = format!("{key}.outlier_detection");
        if let Some(v) = o.consecutive_5xx {
            outlier.consecutive_5xx = v;
        }
        if let Some(v) = o.consecutive_gateway_errors {
            outlier.consecutive_gateway_failure = v;
        }
        outlier.interval = positive_ms(
            &format!("{k}.interval_ms"),
            o.interval_ms,
            millis(outlier.interval),
        )?;
        outlier.base_ejection_time = positive_ms(
            &format!("{k}.base_ejection_time_ms"),
            o.base_ejection_time_ms,
            millis(outlier.base_ejection_time),
        )?;
        outlier.max_ejection_time = positive_ms(
            &format!("{k}.max_ejection_time_ms"),
            o.max_ejection_time_ms,
            millis(outlier.max_ejection_time).max(millis(outlier.base_ejection_time)),
        )?;
        if outlier.max_ejection_time < outlier.base_ejection_time {
            return Err(invalid(
                format!("{k}.max_ejection_time_ms"),
                "must be at least base_ejection_time_ms",
            ));
        }
        if let Some(v) = o.max_ejection_percent {
            if v > 100 {
                return Err(invalid(
                    format!("{k}.max_ejection_percent"),
                    format!("{v} is above 100"),
                ));
            }
            outlier.max_ejection_percent = v;
        }
    }
    Ok(FailoverSettings {
        overprovisioning_factor,
        panic_threshold_percent,
        outlier,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---- end failover ----

fn outbound_entry(
    i: usize,
    o: &RawOutbound,
    services: &[Service],
    own_cluster: &str,
    dynamic: bool,
) -> Result<Outbound, ConfigError> {
    let k = format!("outbound[{i}]");
    let listen = addr(&format!("{k}.listen"), &o.listen)?;
    let key = ServiceKey::parse(&o.service).map_err(|p| invalid(format!("{k}.service"), p))?;
    let port = port(&format!("{k}.port"), o.port)?;
    let protocol = protocol(&format!("{k}.protocol"), &o.protocol)?;
    let Some(svc) = services.iter().find(|s| s.service == key && s.port == port) else {
        return Err(if services.iter().any(|s| s.service == key) {
            invalid(
                format!("{k}.port"),
                format!("{key} has no port {port} in services"),
            )
        } else {
            invalid(format!("{k}.service"), format!("{key} is not in services"))
        });
    };
    if let Some(c) = &o.cluster {
        if !is_dns_label(c) {
            return Err(invalid(
                format!("{k}.cluster"),
                format!("{c:?} is not a DNS label"),
            ));
        }
        if !dynamic && c != own_cluster && !svc.remote.iter().any(|r| &r.cluster == c) {
            return Err(invalid(
                format!("{k}.cluster"),
                format!("{key}:{port} has no remote entry for cluster {c}"),
            ));
        }
    }
    Ok(Outbound {
        listen,
        service: key,
        port,
        protocol,
        cluster: o.cluster.clone(),
    })
}

fn inbound_entry(i: usize, e: &RawInbound) -> Result<Inbound, ConfigError> {
    let k = format!("inbound[{i}]");
    let listen = addr(&format!("{k}.listen"), &e.listen)?;
    let protocol = protocol(&format!("{k}.protocol"), &e.protocol)?;
    let app = addr(&format!("{k}.app"), &e.app)?;
    let app_protocol = match (protocol, e.app_protocol.as_deref()) {
        (Protocol::Http, None | Some("http1")) => AppProtocol::Http1,
        (Protocol::Http, Some("h2c")) => AppProtocol::H2c,
        (Protocol::Http, Some(other)) => {
            return Err(invalid(
                format!("{k}.app_protocol"),
                format!("{other:?} is not http1 or h2c"),
            ))
        }
        (Protocol::Tcp, None) => AppProtocol::Http1,
        (Protocol::Tcp, Some(_)) => {
            return Err(invalid(
                format!("{k}.app_protocol"),
                "only valid with protocol http".to_owned(),
            ))
        }
    };
    // An empty list is valid and refuses every caller.
    let mut allow = Vec::with_capacity(e.allow.len());
    for (j, a) in e.allow.iter().enumerate() {
        allow.push(AllowEntry::parse(a).map_err(|p| invalid(format!("{k}.allow[{j}]"), p))?);
    }
    Ok(Inbound {
        listen,
        protocol,
        app,
        app_protocol,
        allow: AllowList::new(allow),
    })
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// `gateway.address` and `gateway.addresses`: at least one; without
/// `addresses`, `address` is the only replica; with both, `address` must be
/// one of `addresses`. Returns the address and every replica, no
/// duplicates.
fn gateway_replicas(g: &RawGateway) -> Result<(SocketAddr, Vec<SocketAddr>), ConfigError> {
    let mut replicas = Vec::with_capacity(g.addresses.len());
    for (i, a) in g.addresses.iter().enumerate() {
        let key = format!("gateway.addresses[{i}]");
        let a = addr(&key, a)?;
        if replicas.contains(&a) {
            return Err(invalid(key, "duplicate replica address"));
        }
        replicas.push(a);
    }
    if g.address.is_empty() {
        return match replicas.first() {
            Some(first) => Ok((*first, replicas)),
            None => Err(invalid(
                "gateway.address",
                "required (or gateway.addresses)",
            )),
        };
    }
    let address = addr("gateway.address", &g.address)?;
    if replicas.is_empty() {
        return Ok((address, vec![address]));
    }
    if !replicas.contains(&address) {
        return Err(invalid(
            "gateway.address",
            "must be one of gateway.addresses when both are given",
        ));
    }
    Ok((address, replicas))
}

fn addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(key, format!("{s:?} is not ip:port")))
}

fn spiffe_id(key: &str, s: &str) -> Result<SpiffeId, ConfigError> {
    SpiffeId::parse(s).map_err(|e| invalid(key, format!("{s:?}: {e}")))
}

fn port(key: &str, p: u32) -> Result<u16, ConfigError> {
    match u16::try_from(p) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(invalid(key, format!("{p} is not a port (1-65535)"))),
    }
}

fn protocol(key: &str, s: &str) -> Result<Protocol, ConfigError> {
    match s {
        "http" => Ok(Protocol::Http),
        "tcp" => Ok(Protocol::Tcp),
        other => Err(invalid(key, format!("{other:?} is not http or tcp"))),
    }
}

fn positive_ms(key: &str, v: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match v.unwrap_or(default) {
        0 => Err(invalid(key, "must be greater than 0")),
        ms => Ok(Duration::from_millis(ms)),
    }
}
