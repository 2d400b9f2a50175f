//! Opaque TCP across clusters: psql in cluster-a against PostgreSQL in
//! cluster-b through the frontend's `default/db` outbound (tcp).

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use multicluster_tests::process::logs_on_error;
use multicluster_tests::servers::psql_args;
use multicluster_tests::standard::{Parts, Standard, DB};
use multicluster_tests::tools::{require, run, Tool};

const ROWS: u32 = 10_000;

#[test]
fn psql_creates_a_table_inserts_10000_rows_and_counts_them() -> Result<()> {
    logs_on_error(|| {
        let psql = require(Tool::Psql)?;
        let mut s = Standard::start(
            "postgres",
            Parts {
                web: false,
                db: true,
                secret: false,
            },
        )?;
        let db = s.outbound(DB)?;
        // One INSERT statement per row: 10 000 round trips through the tunnel.
        let mut script = String::from(
            "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);\nBEGIN;\n",
        );
        for i in 1..=ROWS {
            writeln!(script, "INSERT INTO items VALUES ({i}, 'item-{i}');")?;
        }
        script.push_str("COMMIT;\n");
        let start = Instant::now();
        let out = run(
            Command::new(&psql).args(psql_args(db)).args(["-f", "-"]),
            Some(script.into_bytes()),
            Duration::from_secs(240),
        )?;
        ensure!(
            out.success(),
            "psql insert failed after {:?}: {}",
            out.elapsed,
            out.stderr
        );
        eprintln!("{ROWS} INSERTs through the mesh in {:?}", start.elapsed());

        // A fresh connection sees them all.
        let out = run(
            Command::new(&psql)
                .args(psql_args(db))
                .args(["-c", "SELECT count(*), sum(id) FROM items"]),
            None,
            Duration::from_secs(30),
        )?;
        ensure!(out.success(), "psql count failed: {}", out.stderr);
        let expected_sum = u64::from(ROWS) * (u64::from(ROWS) + 1) / 2;
        ensure!(
            out.stdout_text().trim() == format!("{ROWS}|{expected_sum}"),
            "count|sum = {:?}",
            out.stdout_text()
        );
        s.mesh.assert_all_running()
    })
}
