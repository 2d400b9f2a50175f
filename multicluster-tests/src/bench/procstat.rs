//! CPU time and resident memory of running processes, from `/proc`
//! (proc(5)): `utime + stime` of `/proc/<pid>/stat` (every thread of the
//! process, in clock ticks) and `VmRSS` of `/proc/<pid>/status` (KiB), with a
//! sampler thread that keeps the peak RSS every 100 ms.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// How often [`RssSampler`] reads `VmRSS`.
pub const RSS_PERIOD: Duration = Duration::from_millis(100);

/// Clock ticks per second (`getconf CLK_TCK`, read once; 100 when `getconf`
/// cannot say).
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// CPU seconds (user + system, all threads) process `pid` has used so far.
///
/// # Errors
/// The process is gone or its stat line is malformed.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&text)?;
    Ok(ticks as f64 / clock_ticks() as f64)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock
/// ticks. The command name (field 2) is in parentheses and may hold spaces
/// and parentheses, so fields are counted after the last `)`.
///
/// # Errors
/// Fewer fields than expected, or not numbers.
pub fn parse_stat_ticks(text: &str) -> Result<u64> {
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| anyhow!("no `)` in stat line {text:?}"))?;
    // After the name: field 3 (state) is index 0, so field n is index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .ok_or_else(|| anyhow!("stat line has no field {n}: {text:?}"))?
            .parse::<u64>()
            .with_context(|| format!("stat field {n} is not a number: {text:?}"))
    };
    Ok(get(14)? + get(15)?)
}

/// Resident set size of process `pid`, KiB.
///
/// # Errors
/// The process is gone or has no `VmRSS` line (a zombie).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vmrss_kib(&text).ok_or_else(|| anyhow!("no VmRSS line for pid {pid}"))
}

/// The `VmRSS:  1234 kB` value of a `/proc/<pid>/status` text, KiB.
pub fn parse_vmrss_kib(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// KiB → MiB.
pub fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// CPU seconds used by a set of processes between [`CpuMeter::start`] and
/// [`CpuMeter::finish`].
#[derive(Debug, Clone)]
pub struct CpuMeter {
    pids: Vec<u32>,
    before: Vec<f64>,
}

impl CpuMeter {
    /// Reads the CPU time of every pid now.
    ///
    /// # Errors
    /// A process is gone.
    pub fn start(pids: &[u32]) -> Result<Self> {
        Ok(CpuMeter {
            pids: pids.to_vec(),
            before: pids
                .iter()
                .map(|p| cpu_seconds(*p))
                .collect::<Result<_>>()?,
        })
    }

    /// CPU seconds each process used since [`CpuMeter::start`], in the
    /// order given there.
    ///
    /// # Errors
    /// A process is gone.
    pub fn finish(&self) -> Result<Vec<f64>> {
        self.pids
            .iter()
            .zip(&self.before)
            .map(|(p, b)| Ok(cpu_seconds(*p)? - b))
            .collect()
    }
}

/// A thread reading the `VmRSS` of some processes every [`RSS_PERIOD`] and
/// keeping each one's peak.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<u64>>>,
}

impl RssSampler {
    /// Starts sampling `pids` (one sample at once, then every
    /// [`RSS_PERIOD`]).
    pub fn start(pids: &[u32]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let pids = pids.to_vec();
        let handle = std::thread::spawn(move || {
            let mut peak = vec![0u64; pids.len()];
            loop {
                for (p, m) in pids.iter().zip(peak.iter_mut()) {
                    if let Ok(kib) = rss_kib(*p) {
                        *m = (*m).max(kib);
                    }
                }
                if flag.load(Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(RSS_PERIOD);
            }
        });
        RssSampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling (after one last sample) and returns each process's
    /// peak RSS, KiB (0 for a process never read), in the order given.
    pub fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_are_utime_plus_stime_even_with_odd_names() {
        // A real line (cat /proc/self/stat), with a name holding `) (`.
        let line = "1234 (we ) ird (x) S 1 1234 1234 0 -1 4194304 1100 0 0 0 \
                    250 37 0 0 20 0 4 0 5000 123456789 2500 18446744073709551615";
        assert_eq!(parse_stat_ticks(line).unwrap(), 287);
        assert!(parse_stat_ticks("1234 (x) S 1 2").is_err());
        assert!(parse_stat_ticks("no paren").is_err());
    }

    #[test]
    fn vmrss_is_read_in_kib() {
        let status = "Name:\tnginx\nVmPeak:\t   20000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";
        assert_eq!(parse_vmrss_kib(status), Some(5120));
        assert_eq!(parse_vmrss_kib("Name:\tzombie\n"), None);
        assert!((kib_to_mib(5120) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn our_own_process_has_cpu_time_and_rss() {
        let me = std::process::id();
        // Burn a little CPU so the counter moves past one tick.
        let meter = CpuMeter::start(&[me]).unwrap();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let used = meter.finish().unwrap();
        assert!(used[0] > 0.0, "{used:?}");
        let sampler = RssSampler::start(&[me]);
        let peak = sampler.finish();
        assert!(peak[0] > 100, "{peak:?}");
        assert!(clock_ticks() >= 100);
    }
}
