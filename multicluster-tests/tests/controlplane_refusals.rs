//! What the controllers refuse, through the real binaries:
//!
//! - invalid resources posted to `POST /v1/apply` (unknown fields, bad
//!   names, wrong types, one bad document in a stream): 422 with field
//!   paths, and nothing stored;
//! - a sidecar asking for an SVID of another service account or another
//!   namespace than its join token names, and one with an expired join
//!   token: never gets an SVID (never ready), its log carries the refusal;
//! - a peering token redeemed a second time (409) and an expired one (410),
//!   with no link made.

use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, ensure, Context, Result};
use multicluster_tests::bins::binaries;
use multicluster_tests::controlplane::{AdminClient, ControlPlane, ControlPlaneOptions};
use multicluster_tests::process::{logs_on_error, Process, Spec};
use multicluster_tests::ready::{eventually, http_get, patience};
use multicluster_tests::standard::{A, B};
use multicluster_tests::{net, Topology, Workload};
use serde_json::{json, Value};

/// `expiresAt` is RFC 3339 in whole seconds (the controller truncates join
/// token expiries, so the real one may be up to 999 ms later): wait past it
/// by more than a second.
const EXPIRY_MARGIN: Duration = Duration::from_millis(1300);

fn single(t: &mut Topology, cluster: &str) -> Result<ControlPlane> {
    t.add_cluster(cluster)?;
    let ip = t.host(cluster)?;
    ControlPlane::start(
        t.dir(),
        cluster,
        &format!("{cluster}.mesh"),
        &[ip],
        Vec::new(),
        &ControlPlaneOptions::default(),
    )
}

#[test]
fn invalid_resources_are_refused_with_field_paths_and_nothing_is_stored() -> Result<()> {
    logs_on_error(|| {
        let mut t = Topology::new("cp-invalid")?;
        let cp = single(&mut t, A)?;
        let admin = cp.admin();
        let export = |meta: &str, extra: &str| {
            format!("apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {meta}\n{extra}")
        };
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "unknown field",
                export("{name: web, namespace: default}", "spec: {ports: []}\n"),
                "spec",
            ),
            (
                "unknown metadata field",
                export("{name: web, namespace: default, nmae: web}", ""),
                "metadata.nmae",
            ),
            (
                "bad name",
                export("{name: Web_1, namespace: default}", ""),
                "metadata.name",
            ),
            (
                "bad namespace",
                export("{name: web, namespace: -x-}", ""),
                "metadata.namespace",
            ),
            (
                "wrong type",
                export("{name: web, namespace: default, labels: {app: [web]}}", ""),
                "metadata.labels[app]",
            ),
            (
                "wrong type (workload port)",
                "apiVersion: isthmus.dev/v1alpha1\nkind: Workload\nmetadata: {name: web-1, namespace: default}\nspec:\n  service: web\n  serviceAccount: web\n  address: 127.0.0.1\n  ports: [{port: \"80\", targetPort: 8080, protocol: http}]\n".to_owned(),
                "spec.ports[0].port",
            ),
            (
                "one bad document in a stream",
                format!(
                    "{}---\n{}",
                    export("{name: good, namespace: default}", ""),
                    export("{name: bad, namespace: default}", "spce: 1\n")
                ),
                "spce",
            ),
        ];
        for (what, yaml, path) in &cases {
            let r = admin.apply_raw("application/yaml", yaml)?;
            ensure!(
                r.status == 422,
                "{what}: status {} (want 422): {}",
                r.status,
                r.body
            );
            let v = r.json()?;
            let errors: Vec<String> = v["errors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            ensure!(
                errors
                    .iter()
                    .any(|e| e.contains(&format!("{path}:")) || e.contains(&format!("{path} "))),
                "{what}: no error names the field path {path:?}: {v}"
            );
            println!("{what}: 422 {errors:?}");
        }
        // JSON too.
        let r = admin.apply_raw(
            "application/json",
            &json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
                    "metadata": {"name": "web", "namespace": "default", "labels": {"a": 1}}})
            .to_string(),
        )?;
        ensure!(r.status == 422, "JSON wrong type: {} {}", r.status, r.body);
        ensure!(
            r.body.contains("metadata.labels[a]"),
            "JSON: no field path: {}",
            r.body
        );

        for plural in ["serviceexports", "workloads", "serviceimports"] {
            let items = admin.list(plural, None)?;
            ensure!(
                items.is_empty(),
                "{plural}: refused applies stored {}",
                Value::Array(items)
            );
        }
        ensure!(
            admin.get("serviceexports", "default", "good")?.is_none(),
            "the valid document of the refused stream was stored"
        );
        // The same valid document alone is accepted (the refusals were the errors).
        admin.apply_yaml(&export("{name: good, namespace: default}", ""))?;
        ensure!(admin.get("serviceexports", "default", "good")?.is_some());
        Ok(())
    })
}

#[test]
fn join_tokens_only_sign_their_own_namespace_and_service_account_and_expire() -> Result<()> {
    logs_on_error(|| {
        let mut t = Topology::new("cp-join")?;
        t.use_control_plane(ControlPlaneOptions::default());
        t.add_cluster(A)?;
        t.add_workload(A, Workload::new("default", "frontend"))?;
        let spare: Vec<_> = (0..3).map(|_| t.host(A)).collect::<Result<_>>()?;
        let mut mesh = t.start()?;
        // The frontend (token for default/frontend) got its SVID: the
        // set-up works, so the refusals below are the scoping.
        let admin = mesh.admin(A)?;
        let base = mesh.topology().sidecar_config(A, "frontend")?;
        let dir = mesh.dir().join(A);

        let web_token = admin.join_token("default", "web", 600)?;
        let (expired, expires_at) = {
            let r = admin
                .call(
                    "POST",
                    "/v1/tokens/join",
                    Some("application/json"),
                    json!({"namespace": "default", "serviceAccount": "frontend", "ttlSeconds": 1})
                        .to_string()
                        .as_bytes(),
                )?
                .expect(200, "join token with a 1 s TTL")?;
            let token = r["token"]
                .as_str()
                .ok_or_else(|| anyhow!("no token"))?
                .to_owned();
            let at = r["expiresAt"].as_str().unwrap_or_default().to_owned();
            (token, at)
        };
        let expiry = time::OffsetDateTime::parse(
            &expires_at,
            &time::format_description::well_known::Rfc3339,
        )
        .with_context(|| format!("expiresAt {expires_at:?}"))?;
        eventually("the 1 s join token to expire", patience(), || {
            ensure!(time::OffsetDateTime::from(SystemTime::now()) > expiry + EXPIRY_MARGIN);
            Ok(())
        })?;

        let cases = [
            (
                "another service account",
                "spiffe://cluster-a.mesh/ns/default/sa/frontend",
                web_token.clone(),
                &["permission", "denied", "not allowed", "only"][..],
            ),
            (
                "another namespace",
                "spiffe://cluster-a.mesh/ns/other/sa/web",
                web_token,
                &["permission", "denied", "not allowed", "only"][..],
            ),
            (
                "an expired token",
                "spiffe://cluster-a.mesh/ns/default/sa/frontend",
                expired,
                &["expired"][..],
            ),
        ];
        let bins = binaries()?;
        for (i, (what, id, token, words)) in cases.iter().enumerate() {
            let name = format!("refused-{i}");
            let mut cfg = base.clone();
            cfg.identity.spiffe_id = (*id).to_owned();
            cfg.admin = net::tcp_addr(spare[i], 15000)?;
            cfg.outbound.clear();
            cfg.inbound.clear();
            let cp = cfg
                .control_plane
                .as_mut()
                .ok_or_else(|| anyhow!("no control_plane section"))?;
            cp.join_token_file = format!("{name}.token").into();
            cp.register = None;
            std::fs::write(dir.join(format!("{name}.token")), token)?;
            let path = dir.join(format!("{name}.yaml"));
            Topology::write_yaml(&path, &cfg)?;
            let mut p = Process::spawn(
                &format!("{A}/{name}"),
                Spec::new(&bins.sidecar)
                    .arg("--config")
                    .arg(&path)
                    .env("RUST_LOG", "info")
                    .env("NO_COLOR", "1"),
                &dir.join(format!("{name}.log")),
            )?;
            let line =
                wait_refusal(&mut p, words).with_context(|| format!("{what}: no refusal seen"))?;
            let ready = http_get(cfg.admin, "/readyz", Duration::from_secs(2))
                .map(|(s, _)| s)
                .unwrap_or(0);
            ensure!(
                ready != 200,
                "{what}: the sidecar is ready (it got an SVID)"
            );
            println!("{what}: refused: {line}");
        }
        mesh.assert_all_running()
    })
}

/// Polls `p`'s log until a line names the refusal (one of `words`,
/// case-insensitive, on a line that also mentions the SVID/token/identity
/// call); fails if the process became ready in between.
fn wait_refusal(p: &mut Process, words: &[&str]) -> Result<String> {
    eventually("a refusal in the log", patience(), || {
        let log = p.log_text();
        for line in log.lines() {
            let l = line.to_ascii_lowercase();
            if words.iter().any(|w| l.contains(w))
                && (l.contains("svid") || l.contains("token") || l.contains("identity"))
            {
                return Ok(line.to_owned());
            }
        }
        bail!("not yet; log tail:\n{}", p.log_tail())
    })
}

#[test]
fn a_reused_or_expired_peering_token_is_refused_and_links_nothing() -> Result<()> {
    logs_on_error(|| {
        let mut t = Topology::new("cp-peering")?;
        let a = single(&mut t, A)?;
        let b = single(&mut t, B)?;
        let c = single(&mut t, "cluster-c")?;
        let (a, b, c) = (a.admin(), b.admin(), c.admin());

        let token = a.peering_token(600)?;
        let r = b.redeem(&token)?;
        ensure!(r.status == 200, "first redeem: {} {}", r.status, r.body);
        let r = c.redeem(&token)?;
        ensure!(
            r.status == 409,
            "reused token: {} (want 409): {}",
            r.status,
            r.body
        );
        println!("reused peering token: 409 {}", r.body.trim());

        let r = a
            .call(
                "POST",
                "/v1/peering/tokens",
                Some("application/json"),
                json!({"ttlSeconds": 1}).to_string().as_bytes(),
            )?
            .expect(200, "peering token with a 1 s TTL")?;
        let short = r["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no token in {r}"))?
            .to_owned();
        let at = r["expiresAt"].as_str().unwrap_or_default().to_owned();
        let expiry =
            time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("expiresAt {at:?}"))?;
        eventually("the 1 s peering token to expire", patience(), || {
            ensure!(time::OffsetDateTime::from(SystemTime::now()) > expiry + EXPIRY_MARGIN);
            Ok(())
        })?;
        let r = c.redeem(&short)?;
        ensure!(
            r.status == 410,
            "expired token: {} (want 410): {}",
            r.status,
            r.body
        );
        println!("expired peering token: 410 {}", r.body.trim());

        ensure!(
            peers(&c)?.is_empty(),
            "C is linked after refused redeems: {:?}",
            peers(&c)?
        );
        ensure!(peers(&a)?.iter().all(|p| p != "cluster-c"), "A knows C");
        ensure!(
            peers(&a)? == vec![B.to_owned()],
            "A's peers {:?}",
            peers(&a)?
        );
        Ok(())
    })
}

fn peers(admin: &AdminClient) -> Result<Vec<String>> {
    let s = admin.status()?;
    Ok(s["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["cluster"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}
