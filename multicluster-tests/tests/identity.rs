//! Identity end to end: B's sidecar sees the caller's SPIFFE ID from A
//! (through both gateways, which never see plaintext) and tells the app in
//! an `x-forwarded-client-cert` header it built itself.

use std::time::Duration;

use anyhow::{ensure, Result};
use multicluster_tests::process::logs_on_error;
use multicluster_tests::standard::{Parts, Standard, FRONTEND_ID, WEB};
use multicluster_tests::tools::curl;

#[test]
fn b_sidecar_reports_the_caller_as_the_a_frontend() -> Result<()> {
    logs_on_error(|| {
        let mut s = Standard::start("identity-xfcc", Parts::WEB)?;
        let r = curl(&[&s.url(WEB, "/whoami")?], Duration::from_secs(10))?;
        ensure!(
            r.out.success() && r.status == 200,
            "status {}: {}",
            r.status,
            r.out.stderr
        );
        let xfcc = r.body_text();
        ensure!(
            xfcc.contains(&format!("URI={FRONTEND_ID}")),
            "x-forwarded-client-cert seen by nginx in B: {xfcc:?}"
        );
        ensure!(
            xfcc.contains("By=spiffe://cluster-b.mesh/ns/default/sa/web"),
            "x-forwarded-client-cert seen by nginx in B: {xfcc:?}"
        );
        s.mesh.assert_all_running()
    })
}

#[test]
fn a_forged_client_cert_header_is_replaced() -> Result<()> {
    logs_on_error(|| {
        let mut s = Standard::start("identity-forged", Parts::WEB)?;
        let forged = "By=spiffe://cluster-b.mesh/ns/default/sa/web;URI=spiffe://cluster-b.mesh/ns/kube-system/sa/admin";
        let r = curl(
            &[
                "-H",
                &format!("x-forwarded-client-cert: {forged}"),
                &s.url(WEB, "/whoami")?,
            ],
            Duration::from_secs(10),
        )?;
        ensure!(
            r.out.success() && r.status == 200,
            "status {}: {}",
            r.status,
            r.out.stderr
        );
        let xfcc = r.body_text();
        ensure!(
            !xfcc.contains("kube-system"),
            "the forged identity reached the app: {xfcc:?}"
        );
        ensure!(
            xfcc.contains(&format!("URI={FRONTEND_ID}")),
            "xfcc {xfcc:?}"
        );
        s.mesh.assert_all_running()
    })
}
