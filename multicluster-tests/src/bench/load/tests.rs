use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

#[test]
fn nearest_rank_percentiles() {
    let v: Vec<u64> = (1..=1000).collect();
    assert_eq!(percentile(&v, 0.5), Some(500));
    assert_eq!(percentile(&v, 0.9), Some(900));
    assert_eq!(percentile(&v, 0.99), Some(990));
    assert_eq!(percentile(&v, 0.999), Some(999));
    assert_eq!(percentile(&v, 1.0), Some(1000));
    assert_eq!(percentile(&[7], 0.5), Some(7));
    assert_eq!(percentile(&[], 0.5), None);
    // 10 samples: p99 and p99.9 are the maximum.
    let v: Vec<u64> = (1..=10).collect();
    assert_eq!(percentile(&v, 0.99), Some(10));
    assert_eq!(percentile(&v, 0.5), Some(5));
    let p = Percentiles::of_sorted(&[1000, 2000, 3000, 4000]);
    assert_eq!(p.p50_ms, 2.0);
    assert_eq!(p.max_ms, 4.0);
    let d = p.minus(&Percentiles::of_sorted(&[500, 500, 500, 500]));
    assert_eq!(d.p50_ms, 1.5);
}

#[test]
fn schedule_is_open_loop() {
    let cfg = FixedRate {
        target: "127.0.0.1:1".parse().unwrap(),
        path: "/".into(),
        rate: 1000.0,
        duration: Duration::from_secs(20),
        connections: 32,
    };
    let s = Schedule::of(&cfg);
    assert_eq!(s.count, 20_000);
    assert_eq!(s.due(0), Duration::ZERO);
    assert_eq!(s.due(1500), Duration::from_millis(1500));
}

/// The synthetic case: one connection, 1,000 rps, every response takes
/// 100 µs except request 10, which stalls 50 ms. The requests due during
/// the stall are sent late, and their recorded latency (from the due time)
/// carries the wait: request 11 is due 1 ms after request 10 and completes
/// just after the stall ends, so its latency is 49.1 ms, not 100 µs.
#[test]
fn a_stall_is_charged_to_every_request_due_behind_it() {
    let s = Schedule {
        rate: 1000.0,
        count: 100,
    };
    let t0 = Instant::now();
    let service = |i: u64| {
        if i == 10 {
            Duration::from_millis(50)
        } else {
            Duration::from_micros(100)
        }
    };
    let mut free_at = t0;
    let mut lat = Vec::new();
    for i in 0..s.count {
        let due = t0 + s.due(i);
        let start = due.max(free_at);
        let done = start + service(i);
        free_at = done;
        lat.push(latency_us(due, done));
    }
    assert_eq!(lat[9], 100);
    assert_eq!(lat[10], 50_000);
    assert_eq!(lat[11], 49_100);
    assert_eq!(lat[20], 41_000);
    // Every request due before the backlog drains (11..=65) is late.
    assert!(lat[11..=65].iter().all(|l| *l > 100), "{lat:?}");
    assert_eq!(lat[66], 100);
    let mut sorted = lat.clone();
    sorted.sort_unstable();
    // Half the requests are behind the stall: p50 is 100 µs, p90 is not.
    let p = Percentiles::of_sorted(&sorted);
    assert!(p.p90_ms > 10.0, "{p:?}");
}

/// The live generator against a server that stalls its 5th response by
/// 300 ms: with one connection at 100 rps the ~29 requests due during the
/// stall are all sent late, and the generator charges them the wait.
#[test]
fn the_live_generator_corrects_for_coordinated_omission() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            if count.fetch_add(1, Ordering::SeqCst) == 4 {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                            let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if s.write_all(resp).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
    });
    let result = run_fixed_rate(&FixedRate {
        target: addr,
        path: "/".into(),
        rate: 100.0,
        duration: Duration::from_secs(1),
        connections: 1,
    })
    .unwrap();
    assert_eq!(result.scheduled, 100);
    assert_eq!(result.errors, 0);
    assert_eq!(result.ok(), 100);
    assert_eq!(served.load(Ordering::SeqCst), 100);
    let l = &result.latencies_us;
    // The stalled request itself.
    assert!(*l.last().unwrap() >= 290_000, "max {:?}", l.last());
    // Requests due 60..=250 ms after the start were waiting at least 50 ms
    // behind it: 20 of them. Timed from their send, only one would be slow.
    let slow = l.iter().filter(|x| **x > 50_000).count();
    assert!(slow >= 20, "only {slow} slow requests: {l:?}");
}
