//! `pgwarden demo` end to end: it starts a PostgreSQL with sample data and
//! the proxy, prints working psql commands, and removes everything on Ctrl-C.

mod common;

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_serves_and_cleans_up() {
    let mut child = tokio::process::Command::new(common::pgwarden_bin())
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut commands = Vec::new();
    let mut views: Vec<String> = Vec::new();
    let mut cluster_dir = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.next_line())
        .await
        .expect("demo prints its hints")
        .map_err(|_| ())
    {
        if let Some(cmd) = line.split("psql \"").nth(1) {
            commands.push(cmd.trim_end_matches('"').to_string());
        }
        if let Some(dir) = line.trim().strip_prefix("cluster:") {
            cluster_dir = Some(dir.split(" (").next().unwrap().trim().to_string());
        }
        if line.trim_start().starts_with("agent_li ") {
            views.push(line.clone());
        }
        if line.trim_start().starts_with("dba_zhang ") {
            views.push(line.clone());
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    assert_eq!(commands.len(), 5, "{commands:?}");
    // What each employee sees: the support agent masks and refusals, the DBA
    // everything.
    assert_eq!(views.len(), 2, "{views:?}");
    assert!(
        views[0].contains("****") && views[0].contains("id_number: refused"),
        "{}",
        views[0]
    );
    assert!(
        !views[1].contains("refused") && !views[1].contains("****"),
        "{}",
        views[1]
    );
    let cluster_dir = std::path::PathBuf::from(cluster_dir.expect("cluster folder printed"));
    assert!(cluster_dir.exists());

    // Every printed command works as printed.
    for url in &commands {
        let out = tokio::process::Command::new("psql")
            .args(["-X", "-A", "-t", "-c", "select count(*) from customers"])
            .arg(url)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3000");
    }
    // Sample data looks like what it claims: valid 18-digit ID numbers, all distinct.
    let out = tokio::process::Command::new("psql")
        .args(["-X", "-A", "-t", "-c", "select count(distinct id_number), min(length(id_number)), count(*) filter (where phone !~ '^1[3-9][0-9]{9}$') from customers"])
        .arg(&commands[3])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3000|18|0");

    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("demo exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        !cluster_dir.exists(),
        "{} should be removed",
        cluster_dir.display()
    );
}
