//! Bulk transfers: a 256 MiB upload and a 256 MiB download between curl in
//! cluster-a and nginx in cluster-b, compared by SHA-256. Size from env
//! `ISTHMUS_BULK_MIB` (default 256).

use std::time::Duration;

use anyhow::Result;
use multicluster_tests::process::logs_on_error;
use multicluster_tests::standard::{Parts, Standard};

fn size_bytes() -> u64 {
    let mib: u64 = std::env::var("ISTHMUS_BULK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    mib << 20
}

/// Generous for debug builds on 2 cores.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn upload_and_download_of_256_mib_cross_the_tunnel_intact() -> Result<()> {
    logs_on_error(|| {
        let mut s = Standard::start("bulk", Parts::WEB)?;
        let t = s.bulk_round_trip(size_bytes(), TRANSFER_TIMEOUT)?;
        eprintln!("{}", t.summary("bulk"));
        s.mesh.assert_all_running()
    })
}
