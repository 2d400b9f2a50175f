//! The network-namespace WAN carrying real traffic: curl in one namespace,
//! python3 `http.server` in another. Needs root, iproute2 and /dev/net/tun;
//! fails (never skips) when it cannot set up.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use multicluster_tests::netns::{cleanup, LinkConfig, Wan};
use multicluster_tests::process::{logs_on_error, Process};
use multicluster_tests::ready::{eventually, patience};

const PORT: u16 = 8080;
const MS: Duration = Duration::from_millis(1);

/// python3 `http.server` in `cluster`, serving `dir` on its WAN address.
fn serve(wan: &Wan, cluster: &str, dir: &Path) -> Result<Process> {
    serve_on(wan, cluster, wan.addr(cluster), dir)
}

/// python3 `http.server` in `cluster`, serving `dir` on `addr`.
fn serve_on(wan: &Wan, cluster: &str, addr: Ipv4Addr, dir: &Path) -> Result<Process> {
    let spec = wan
        .spec(cluster, "python3")
        .arg("-m")
        .arg("http.server")
        .arg(PORT.to_string())
        .arg("--bind")
        .arg(addr.to_string())
        .arg("--directory")
        .arg(dir);
    Process::spawn(
        &format!("http.server in {cluster} on {addr}"),
        spec,
        &dir.join(format!("server-{addr}.log")),
    )
}

/// `curl` in `from` for `path` on `to`'s server, with `extra` arguments.
fn curl(wan: &Wan, from: &str, to: &str, path: &str, extra: &[&str]) -> Result<Output> {
    wan.command(from, "curl")
        .args(["-sS", "-o", "/dev/null"])
        .args(extra)
        .arg(format!("http://{}:{PORT}/{path}", wan.addr(to)))
        .output()
        .context("running curl in the namespace")
}

/// TCP connect time (curl's `time_connect`) from `from` to `to`, seconds.
fn connect_time(wan: &Wan, from: &str, to: &str) -> Result<f64> {
    let out = curl(
        wan,
        from,
        to,
        "small",
        &["--max-time", "5", "-w", "%{http_code} %{time_connect}"],
    )?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut it = text.split_whitespace();
    ensure!(
        out.status.success() && it.next() == Some("200"),
        "curl {from} -> {to} failed ({}): {text} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(it.next().context("no time_connect")?.parse()?)
}

fn wait_reachable(wan: &Wan, from: &str, to: &str) -> Result<()> {
    eventually(&format!("curl {from} -> {to}"), patience(), || {
        connect_time(wan, from, to).map(drop)
    })
}

/// `count` deterministic pseudo-random bytes.
fn bytes(count: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn assert_gone(names: &[String]) -> Result<()> {
    let live = cleanup::list()?;
    let left: Vec<_> = names.iter().filter(|n| live.contains(n)).collect();
    ensure!(left.is_empty(), "namespaces left after drop: {left:?}");
    Ok(())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[test]
fn rtt_of_30ms_then_partition_fails_and_heal_recovers() -> Result<()> {
    logs_on_error(|| {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("small"), b"hello across the WAN\n")?;
        let wan = Wan::start(&["a", "b"], LinkConfig::delay(15 * MS))
            .context("setting up the WAN (needs root, ip, /dev/net/tun)")?;
        let names: Vec<String> = wan.clusters().iter().map(|c| c.netns.clone()).collect();
        let live = cleanup::list()?;
        ensure!(
            names.iter().all(|n| live.contains(n)),
            "namespaces missing: {live:?}"
        );
        ensure!(wan.addr("a").to_string() == "198.18.1.1");
        ensure!(wan.addr("b").to_string() == "198.18.2.1");
        let server = serve(&wan, "b", dir.path())?;
        wait_reachable(&wan, "a", "b")?;

        let rtts = (0..10)
            .map(|_| connect_time(&wan, "a", "b"))
            .collect::<Result<Vec<_>>>()?;
        let (min, med) = (
            rtts.iter().copied().fold(f64::MAX, f64::min),
            median(rtts.clone()),
        );
        println!(
            "configured RTT 30 ms: time_connect min {:.1} ms, median {:.1} ms over 10",
            min * 1e3,
            med * 1e3
        );
        // The minimum is what the WAN adds (a loaded machine only adds to
        // it): at least 30 ms, and below 60 ms (a doubled delay fails). The
        // median only has to stay within a generous slack.
        ensure!(min >= 0.030, "RTT {min} s is below the configured 30 ms");
        ensure!(
            min < 0.060,
            "minimum RTT {min} s: the WAN adds far more than 30 ms"
        );
        ensure!(med < 0.030 + 0.120, "median RTT {med} s is far above 30 ms");

        wan.partition("a", "b");
        let out = curl(&wan, "a", "b", "small", &["--connect-timeout", "2"])?;
        ensure!(!out.status.success(), "curl succeeded across a partition");
        println!(
            "partitioned: curl failed with {} ({})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let s = wan.stats("a", "b");
        ensure!(s.dropped_partition > 0, "no partition drops counted: {s:?}");

        wan.heal("a", "b");
        wait_reachable(&wan, "a", "b")?;
        let after = connect_time(&wan, "a", "b")?;
        println!("healed: time_connect {:.1} ms", after * 1e3);
        ensure!(after >= 0.030);

        // Reconfigured at run time: 25 ms each way, 50 ms RTT.
        wan.set_link("a", "b", LinkConfig::delay(25 * MS));
        let slower = (0..5)
            .map(|_| connect_time(&wan, "a", "b"))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .fold(f64::MAX, f64::min);
        println!(
            "reconfigured to 50 ms RTT: time_connect min {:.1} ms",
            slower * 1e3
        );
        ensure!(
            (0.050..0.080).contains(&slower),
            "RTT {slower} s after setting 50 ms"
        );

        drop(server);
        drop(wan);
        assert_gone(&names)
    })
}

#[test]
fn one_percent_loss_still_completes_an_http_transfer() -> Result<()> {
    logs_on_error(|| {
        let dir = tempfile::tempdir()?;
        let body = bytes(4 << 20);
        std::fs::write(dir.path().join("big"), &body)?;
        std::fs::write(dir.path().join("small"), b"ok\n")?;
        let link = LinkConfig::delay(5 * MS).with_loss(0.01);
        let wan = Wan::start(&["a", "b"], link).context("setting up the WAN")?;
        let names: Vec<String> = wan.clusters().iter().map(|c| c.netns.clone()).collect();
        let server = serve(&wan, "b", dir.path())?;
        wait_reachable(&wan, "a", "b")?;

        let got = dir.path().join("got");
        let got_arg = got.to_string_lossy().to_string();
        let out = wan
            .command("a", "curl")
            .args([
                "-sS",
                "--max-time",
                "120",
                "-o",
                &got_arg,
                "-w",
                "%{speed_download}",
            ])
            .arg(format!("http://{}:{PORT}/big", wan.addr("b")))
            .output()?;
        ensure!(
            out.status.success(),
            "download failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(std::fs::read(&got)? == body, "downloaded body differs");
        let s = wan.stats("b", "a");
        let rate = s.dropped_loss as f64 / s.offered as f64;
        println!(
            "1% loss: 4 MiB intact at {} B/s; b->a lost {} of {} packets ({:.2}%)",
            String::from_utf8_lossy(&out.stdout),
            s.dropped_loss,
            s.offered,
            rate * 100.0
        );
        ensure!(s.dropped_loss > 0, "no loss was applied: {s:?}");
        ensure!(rate < 0.05, "loss rate {rate} far above 1%");
        drop(server);
        drop(wan);
        assert_gone(&names)
    })
}

#[test]
fn a_rate_limited_link_caps_the_transfer_rate() -> Result<()> {
    logs_on_error(|| {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("big"), bytes(3 << 20))?;
        std::fs::write(dir.path().join("small"), b"ok\n")?;
        let wan =
            Wan::start(&["a", "b"], LinkConfig::delay(2 * MS)).context("setting up the WAN")?;
        let rate = 1_000_000u64;
        wan.set_path("b", "a", LinkConfig::delay(2 * MS).with_rate(rate));
        let server = serve(&wan, "b", dir.path())?;
        wait_reachable(&wan, "a", "b")?;

        let out = curl(
            &wan,
            "a",
            "b",
            "big",
            &["--max-time", "60", "-w", "%{speed_download}"],
        )?;
        ensure!(
            out.status.success(),
            "download failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let speed: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        println!("rate 1 000 000 B/s b->a: curl measured {speed:.0} B/s of payload");
        // Payload is a little less than IP bytes (headers, ACK-clocking).
        if !(speed <= rate as f64 * 1.05 && speed >= rate as f64 * 0.6) {
            bail!("download ran at {speed:.0} B/s with a {rate} B/s link");
        }
        let names: Vec<String> = wan.clusters().iter().map(|c| c.netns.clone()).collect();
        drop(server);
        drop(wan);
        assert_gone(&names)
    })
}

#[test]
fn three_clusters_route_by_prefix_and_extra_addresses_are_reachable() -> Result<()> {
    logs_on_error(|| {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("small"), b"ok\n")?;
        let wan =
            Wan::start(&["a", "b", "c"], LinkConfig::default()).context("setting up the WAN")?;
        wan.set_all_links(LinkConfig::delay(10 * MS));
        wan.set_link("a", "c", LinkConfig::delay(25 * MS));
        let second = wan.add_addr("c", 7)?;
        ensure!(second.to_string() == "198.18.3.7");
        let main = serve(&wan, "c", dir.path())?;
        let extra = serve_on(&wan, "c", second, dir.path())?;
        wait_reachable(&wan, "a", "c")?;
        wait_reachable(&wan, "b", "c")?;
        let via_b = connect_time(&wan, "b", "c")?;
        let via_a = connect_time(&wan, "a", "c")?;
        println!(
            "b->c (20 ms RTT) {:.1} ms, a->c (50 ms RTT) {:.1} ms",
            via_b * 1e3,
            via_a * 1e3
        );
        ensure!((0.020..0.020 + 0.120).contains(&via_b), "b->c RTT {via_b}");
        ensure!((0.050..0.050 + 0.120).contains(&via_a), "a->c RTT {via_a}");
        eventually("curl a -> 198.18.3.7", patience(), || {
            let out = wan
                .command("a", "curl")
                .args(["-sS", "-o", "/dev/null", "--max-time", "5"])
                .arg(format!("http://{second}:{PORT}/small"))
                .output()?;
            ensure!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        })?;
        // b and c talk while a is cut off from both.
        wan.partition("a", "b");
        wan.partition("a", "c");
        ensure!(!curl(&wan, "a", "c", "small", &["--connect-timeout", "1"])?
            .status
            .success());
        connect_time(&wan, "b", "c")?;
        let names: Vec<String> = wan.clusters().iter().map(|c| c.netns.clone()).collect();
        drop((main, extra));
        drop(wan);
        assert_gone(&names)
    })
}

/// A UDP echo in python3: what the QUIC tunnel between gateways needs.
const UDP_ECHO: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
s.bind((sys.argv[1],int(sys.argv[2])))
while True:
    d,a=s.recvfrom(65535)
    s.sendto(d,a)
";

/// Sends `count` datagrams from `a` to the echo in `b`, one at a time, and
/// returns how many came back.
const UDP_CLIENT: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
s.settimeout(0.5)
ok=0
for i in range(int(sys.argv[3])):
    m=b'%d' % i + b'x'*1200
    s.sendto(m,(sys.argv[1],int(sys.argv[2])))
    try:
        d,_=s.recvfrom(65535)
        ok+= d==m
    except socket.timeout:
        pass
print(ok)
";

#[test]
fn udp_datagrams_cross_the_wan_and_a_partition_stops_them() -> Result<()> {
    logs_on_error(|| {
        let dir = tempfile::tempdir()?;
        let wan =
            Wan::start(&["a", "b"], LinkConfig::delay(5 * MS)).context("setting up the WAN")?;
        let b = wan.addr("b").to_string();
        let echo = Process::spawn(
            "udp echo in b",
            wan.spec("b", "python3")
                .arg("-c")
                .arg(UDP_ECHO)
                .arg(&b)
                .arg("9000"),
            &dir.path().join("echo.log"),
        )?;
        let send = |count: &str| -> Result<u32> {
            let out = wan
                .command("a", "python3")
                .args(["-c", UDP_CLIENT, &b, "9000", count])
                .output()?;
            ensure!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
        };
        eventually("udp echo a -> b", patience(), || {
            ensure!(send("1")? == 1, "no echo yet");
            Ok(())
        })?;
        let echoed = send("50")?;
        println!("UDP: {echoed} of 50 datagrams of 1200 B echoed");
        ensure!(
            echoed == 50,
            "only {echoed} of 50 echoed on a lossless link"
        );
        wan.partition("a", "b");
        ensure!(send("5")? == 0, "datagrams crossed a partition");
        let names: Vec<String> = wan.clusters().iter().map(|c| c.netns.clone()).collect();
        drop(echo);
        drop(wan);
        assert_gone(&names)
    })
}
