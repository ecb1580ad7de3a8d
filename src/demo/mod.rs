//! `pgwarden demo`: a throwaway PostgreSQL with sample data, the proxy in
//! front of it, and the commands to connect as each sample employee.
//!
//! Everything lives in temporary folders and is removed on Ctrl-C.

pub mod postgres;

use crate::config::Config;
use crate::listener::Proxy;
use anyhow::Context;
use postgres::{ClusterOptions, PgCluster};
use std::path::Path;

const SAMPLE_SQL: &str = include_str!("sample.sql");
const EMPLOYEES_SQL: &str = include_str!("employees.sql");
/// The policy the demo runs with (support masks, analyst hashes, dba sees all).
const DEMO_POLICY: &str = include_str!("../../policies/example.yaml");
/// The database the sample data lives in.
pub const DATABASE: &str = "shop";

/// Options of `pgwarden demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: String,
    pub metrics_listen: Option<String>,
}

/// Start a cluster and load the sample database and logins into it.
pub fn start_sample_cluster() -> anyhow::Result<PgCluster> {
    let cluster = PgCluster::start(&ClusterOptions::default())?;
    cluster.psql("postgres", &format!("CREATE DATABASE {DATABASE};"))?;
    cluster
        .psql(DATABASE, SAMPLE_SQL)
        .context("loading sample data")?;
    cluster
        .psql(DATABASE, EMPLOYEES_SQL)
        .context("creating sample logins")?;
    Ok(cluster)
}

/// The demo configuration in TOML, pointing at `upstream`.
fn demo_config(opts: &DemoOptions, upstream: &str, policies: &Path) -> String {
    let mut toml = format!(
        "listen = \"{}\"\nupstream = \"{upstream}\"\npolicies = \"{}\"\n\n[catalog]\nuser = \"pgwarden\"\npassword = \"pgwarden-catalog\"\n",
        opts.listen,
        policies.display()
    );
    if let Some(m) = &opts.metrics_listen {
        toml.push_str(&format!("\n[metrics]\nlisten = \"{m}\"\n"));
    }
    toml
}

/// Run the demo until Ctrl-C or SIGTERM.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    eprintln!("Starting a throwaway PostgreSQL and loading sample data...");
    let cluster = tokio::task::spawn_blocking(start_sample_cluster).await??;
    let policies = cluster.dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(policies.join("demo.yaml"), DEMO_POLICY)?;
    let config_text = demo_config(&opts, &cluster.addr(), &policies);
    let config = Config::parse(&config_text, Path::new("demo.toml"))?;
    let proxy = Proxy::start(config).await?;
    print_hints(&proxy, &cluster);
    print_views(&proxy).await;
    println!("Press Ctrl-C to stop; everything is removed.");
    // Flush now: the hints are what a person (or a script) waits for.
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    crate::cli::wait_for_stop_signal().await;
    eprintln!("\nStopping pgwarden and removing the demo database...");
    proxy.shutdown().await;
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    Ok(())
}

fn print_hints(proxy: &Proxy, cluster: &PgCluster) {
    let port = proxy.addr.port();
    let host = proxy.addr.ip();
    println!();
    println!("pgwarden demo is running.");
    println!(
        "  proxy:      {} -> PostgreSQL at {}",
        proxy.addr,
        cluster.addr()
    );
    if let Some(m) = proxy.metrics_addr {
        println!("  metrics:    http://{m}/metrics");
    }
    println!(
        "  data:       database `{DATABASE}`: customers (3,000), shipments (20,000), credit_reports (1,500)"
    );
    println!("  cluster:    {} (removed on exit)", cluster.dir.display());
    println!();
    println!("Connect as a sample employee (the password is the login name):");
    for (user, role) in [
        ("agent_li", "support agent"),
        ("courier_zhao", "courier dispatcher (support)"),
        ("analyst_wu", "data analyst"),
        ("dba_zhang", "database administrator"),
        ("intern_sun", "intern, in no role"),
    ] {
        println!("  {role:<30} psql \"postgresql://{user}:{user}@{host}:{port}/{DATABASE}\"");
    }
    println!();
    println!("Try: SELECT name, phone, id_number, address FROM customers LIMIT 5;");
}

/// The sample employees, their login and what the policy makes of them.
const EMPLOYEES: [(&str, &str); 5] = [
    ("agent_li", "support"),
    ("courier_zhao", "support"),
    ("analyst_wu", "analyst"),
    ("dba_zhang", "dba"),
    ("intern_sun", "default"),
];

/// Show, through the proxy, what each sample employee sees of one customer.
async fn print_views(proxy: &Proxy) {
    const SQL: &str = "SELECT name, phone, address, id_number FROM customers WHERE id = 1";
    println!();
    println!("What each employee sees of customer 1, column by column ({SQL}):");
    for (user, role) in EMPLOYEES {
        let mut cells = Vec::new();
        match connect_as(proxy, user).await {
            Err(e) => cells.push(format!("cannot connect: {e}")),
            Ok(client) => {
                for col in ["name", "phone", "address", "id_number"] {
                    let q = format!("SELECT {col} FROM customers WHERE id = 1");
                    cells.push(match client.simple_query(&q).await {
                        Ok(msgs) => msgs
                            .iter()
                            .find_map(|m| match m {
                                tokio_postgres::SimpleQueryMessage::Row(r) => {
                                    r.get(0).map(|v| format!("{col}={v}"))
                                }
                                _ => None,
                            })
                            .unwrap_or_else(|| format!("{col}=NULL")),
                        Err(_) => format!("{col}: refused"),
                    });
                }
            }
        }
        println!("  {user:<13} ({role:<7}) {}", cells.join("  "));
    }
    println!();
}

async fn connect_as(
    proxy: &Proxy,
    user: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host(proxy.addr.ip().to_string())
        .port(proxy.addr.port())
        .user(user)
        .password(user)
        .dbname(DATABASE)
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}
