//! `kill -9` of a gateway in the middle of a transfer: the in-flight download
//! fails promptly (no hang past the QUIC idle timeout, 3000 ms in these
//! configs, plus a margin) and new requests succeed once the gateway is back.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use multicluster_tests::process::logs_on_error;
use multicluster_tests::ready::{eventually, patience};
use multicluster_tests::standard::{Parts, Standard, A, B, WEB};
use multicluster_tests::tools::{curl, random_file};

/// QUIC idle timeout in the test configs (`Tuning::fast`), ms.
const IDLE_TIMEOUT: Duration = Duration::from_millis(3000);
/// On top of the idle timeout: buffered bytes drain, resets propagate over
/// two more hops, debug builds on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(7000);

#[allow(clippy::print_stderr)] // reports the measured time to failure
fn kill_gateway_mid_transfer(test: &str, victim: &str) -> Result<()> {
    let mut s = Standard::start(test, Parts::WEB)?;
    let root = s.nginx()?.root().to_owned();
    random_file(&root.join("slow.bin"), 64 << 20)?;
    std::fs::write(root.join("after.txt"), "after\n")?;
    let url = s.url(WEB, "/slow.bin")?;
    let out = s.mesh.dir().join("partial.bin");
    let out_arg = out.to_str().unwrap().to_owned();
    // 64 MiB at 4 MiB/s: 16 s if nothing happens.
    let transfer = std::thread::spawn(move || {
        curl(
            &["--limit-rate", "4M", "-o", &out_arg, &url],
            Duration::from_secs(60),
        )
    });
    wait_for_bytes(&out, 1 << 20)?;

    s.mesh.process(victim, "gateway")?.kill9()?;
    let killed_at = Instant::now();
    let r = match transfer.join() {
        Ok(r) => r?,
        Err(_) => bail!("the curl thread panicked"),
    };
    let after_kill = killed_at.elapsed();
    ensure!(
        !r.out.success(),
        "the download succeeded although {victim}'s gateway died mid-transfer"
    );
    ensure!(
        after_kill <= IDLE_TIMEOUT + MARGIN,
        "the in-flight download took {after_kill:?} to fail after kill -9 (bound {:?}); curl: {}",
        IDLE_TIMEOUT + MARGIN,
        r.out.stderr
    );
    eprintln!(
        "{victim} gateway killed: download failed after {after_kill:?} ({})",
        r.out.stderr.trim()
    );

    s.mesh.restart(victim, "gateway")?;
    let url = s.url(WEB, "/after.txt")?;
    eventually(
        "a new request through the restarted gateway",
        patience(),
        || {
            let r = curl(&[&url], Duration::from_secs(5))?;
            if r.status == 200 && r.body_text() == "after\n" {
                Ok(())
            } else {
                bail!(
                    "status {} {:?} {}",
                    r.status,
                    r.header("x-isthmus-error"),
                    r.out.stderr
                )
            }
        },
    )?;
    s.mesh.assert_all_running()
}

fn wait_for_bytes(path: &Path, at_least: u64) -> Result<()> {
    eventually("the download to start", patience(), || {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        ensure!(len >= at_least, "{len} bytes so far");
        Ok(())
    })
}

#[test]
fn kill9_of_the_remote_gateway_fails_in_flight_streams_promptly_then_recovers() -> Result<()> {
    logs_on_error(|| kill_gateway_mid_transfer("kill-remote-gw", B))
}

#[test]
fn kill9_of_the_local_gateway_fails_in_flight_streams_promptly_then_recovers() -> Result<()> {
    logs_on_error(|| kill_gateway_mid_transfer("kill-local-gw", A))
}
