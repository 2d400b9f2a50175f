//! The WAN harness leaves nothing behind: not after a panic, not after
//! SIGTERM or SIGINT (the signal hook), and what a SIGKILLed run left is
//! swept by the next start. Needs root and iproute2; never skips.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use multicluster_tests::netns::{cleanup, LinkConfig, Wan};

const WAN_BIN: &str = env!("CARGO_BIN_EXE_isthmus-wan");

/// Starts `isthmus-wan a b` and returns it with the namespaces it printed.
fn start_bin() -> Result<(Child, Vec<String>)> {
    let mut child = Command::new(WAN_BIN)
        .args(["--delay-ms", "5", "a", "b"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting isthmus-wan")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut names = Vec::new();
    for _ in 0..2 {
        let line = lines
            .next()
            .context("isthmus-wan exited before printing")??;
        names.push(
            line.split_whitespace()
                .nth(1)
                .context("no netns")?
                .to_owned(),
        );
    }
    let live = cleanup::list()?;
    ensure!(
        names.iter().all(|n| live.contains(n)),
        "{names:?} not in {live:?}"
    );
    Ok((child, names))
}

fn wait(child: &mut Child) -> Result<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "isthmus-wan did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn left_over(names: &[String]) -> Result<Vec<String>> {
    let live = cleanup::list()?;
    Ok(names.iter().filter(|n| live.contains(n)).cloned().collect())
}

#[test]
fn a_panicking_test_leaves_no_namespace() -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let joined = std::thread::spawn(move || {
        let wan = Wan::start(&["a", "b", "c"], LinkConfig::default()).expect("WAN setup");
        tx.send(
            wan.clusters()
                .iter()
                .map(|c| c.netns.clone())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        panic!("test body fails while the WAN is up");
    })
    .join();
    ensure!(joined.is_err(), "the thread should have panicked");
    let names = rx.recv().context("the WAN never came up")?;
    ensure!(names.len() == 3);
    let left = left_over(&names)?;
    ensure!(left.is_empty(), "left after panic: {left:?}");
    Ok(())
}

#[test]
fn sigterm_and_sigint_delete_the_namespaces() -> Result<()> {
    for (sig, code) in [("TERM", 143), ("INT", 130)] {
        let (mut child, names) = start_bin()?;
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .status()?;
        ensure!(status.success());
        let exit = wait(&mut child)?;
        println!("SIG{sig}: isthmus-wan exited with {exit}");
        ensure!(
            exit.code() == Some(code),
            "SIG{sig}: exit {exit}, want {code}"
        );
        let left = left_over(&names)?;
        ensure!(left.is_empty(), "left after SIG{sig}: {left:?}");
    }
    Ok(())
}

#[test]
fn leftovers_of_a_sigkilled_run_are_swept_by_the_next_start() -> Result<()> {
    let (mut child, names) = start_bin()?;
    child.kill()?; // SIGKILL: no hook runs
    let exit = wait(&mut child)?;
    ensure!(exit.signal() == Some(9));
    ensure!(
        left_over(&names)? == names,
        "namespaces should outlive a SIGKILL"
    );
    let wan = Wan::start(&["sweeper"], LinkConfig::default()).context("WAN setup")?;
    let left = left_over(&names)?;
    drop(wan);
    ensure!(left.is_empty(), "not swept: {left:?}");
    Ok(())
}
