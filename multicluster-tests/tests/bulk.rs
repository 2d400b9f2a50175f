//! Bulk transfers: a 256 MiB upload and a 256 MiB download between curl in
//! cluster-a and nginx in cluster-b, compared by SHA-256. Size from env
//! `ISTHMUS_BULK_MIB` (default 256).

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use multicluster_tests::process::logs_on_error;
use multicluster_tests::standard::{Parts, Standard, WEB};
use multicluster_tests::tools::{curl, random_file, sha256_file};

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
        let len = size_bytes();
        let served = s.nginx()?.root().join("big.bin");
        random_file(&served, len)?;
        let up_src = s.mesh.dir().join("upload-src.bin");
        random_file(&up_src, len)?;

        // Download.
        let got = s.mesh.dir().join("downloaded.bin");
        let start = Instant::now();
        let r = curl(
            &["-o", got.to_str().unwrap(), &s.url(WEB, "/big.bin")?],
            TRANSFER_TIMEOUT,
        )?;
        let down = start.elapsed();
        ensure!(
            r.out.success(),
            "download failed after {down:?}: {}",
            r.out.stderr
        );
        ensure!(r.status == 200, "download status {}", r.status);
        ensure!(std::fs::metadata(&got)?.len() == len, "downloaded length");
        ensure!(
            sha256_file(&got)? == sha256_file(&served)?,
            "downloaded bytes differ"
        );

        // Upload (WebDAV PUT; nginx stores it).
        let start = Instant::now();
        let r = curl(
            &[
                "-T",
                up_src.to_str().unwrap(),
                &s.url(WEB, "/upload/big.bin")?,
            ],
            TRANSFER_TIMEOUT,
        )?;
        let up = start.elapsed();
        ensure!(
            r.out.success(),
            "upload failed after {up:?}: {}",
            r.out.stderr
        );
        ensure!(
            r.status == 201 || r.status == 204,
            "upload status {}",
            r.status
        );
        let stored = s.nginx()?.upload_dir().join("big.bin");
        ensure!(
            sha256_file(&stored)? == sha256_file(&up_src)?,
            "uploaded bytes differ"
        );

        let mib = len as f64 / f64::from(1 << 20);
        eprintln!(
            "bulk {mib} MiB: download {:.1} s ({:.1} MiB/s), upload {:.1} s ({:.1} MiB/s)",
            down.as_secs_f64(),
            mib / down.as_secs_f64(),
            up.as_secs_f64(),
            mib / up.as_secs_f64()
        );
        s.mesh.assert_all_running()
    })
}
