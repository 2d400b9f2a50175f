//! Export policy: a service cluster-b has not exported is refused at B's
//! gateway; the caller gets a 503 with the reason, fast.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use multicluster_tests::process::logs_on_error;
use multicluster_tests::standard::{Parts, Standard, SECRET, WEB};
use multicluster_tests::tools::curl;

#[test]
fn an_unexported_service_is_refused_with_503_and_the_reason_within_1s() -> Result<()> {
    logs_on_error(|| {
        let mut s = Standard::start(
            "exports",
            Parts {
                web: true,
                db: false,
                secret: true,
            },
        )?;
        std::fs::write(s.nginx()?.root().join("ok.txt"), "ok\n")?;
        // The exported neighbour works (so the refusal below is the policy).
        let r = curl(&[&s.url(WEB, "/ok.txt")?], Duration::from_secs(10))?;
        ensure!(
            r.status == 200,
            "exported web: status {} {}",
            r.status,
            r.out.stderr
        );

        let start = Instant::now();
        let r = curl(&[&s.url(SECRET, "/secret-probe")?], Duration::from_secs(10))?;
        let took = start.elapsed();
        ensure!(
            r.status == 503,
            "status {} (want 503): {:?} {}",
            r.status,
            r.headers,
            r.out.stderr
        );
        let reason = r
            .header("x-isthmus-error")
            .unwrap_or_default()
            .to_ascii_lowercase();
        ensure!(
            reason.contains("export") || reason.contains("unknown service"),
            "x-isthmus-error {reason:?} does not give the reason"
        );
        ensure!(
            took < Duration::from_secs(1),
            "the refusal took {took:?} (bound 1 s)"
        );
        ensure!(
            !s.nginx()?.access_log().contains("/secret-probe"),
            "the refused request reached nginx"
        );
        s.mesh.assert_all_running()
    })
}
