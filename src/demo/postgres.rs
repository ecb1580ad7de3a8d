//! A throwaway PostgreSQL cluster in a temporary folder, for `pgwarden demo`
//! and the integration tests.
//!
//! Finds the server binaries (`PGWARDEN_PG_BINDIR`, `pg_config --bindir`,
//! Debian's `/usr/lib/postgresql/<version>/bin`, then `PATH`), runs
//! `initdb` and `pg_ctl` as the `postgres` system user when started as root
//! (PostgreSQL refuses to run as root), listens on 127.0.0.1 on a free port
//! and is stopped and removed on drop. A small watchdog process removes it
//! too if this process dies without dropping it.

use anyhow::{Context, bail};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// How to start the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// pg_hba.conf lines placed before the default rules (superuser
    /// `postgres` trusted from loopback, everyone else SCRAM).
    pub hba: Vec<String>,
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
    /// Server certificate and key (PEM) to enable TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A running throwaway cluster.
pub struct PgCluster {
    pub dir: PathBuf,
    pub port: u16,
    bindir: PathBuf,
    run_as_postgres: bool,
    watchdog: Option<Child>,
    stopped: bool,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The folder holding `initdb`, `pg_ctl` and `postgres`.
pub fn find_bindir() -> anyhow::Result<PathBuf> {
    let has_initdb = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("PGWARDEN_PG_BINDIR") {
        let d = PathBuf::from(d);
        if has_initdb(&d) {
            return Ok(d);
        }
        bail!("PGWARDEN_PG_BINDIR={} has no initdb/pg_ctl", d.display());
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&d) {
            return Ok(d);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                has_initdb(&bin).then_some((v, bin))
            })
            .collect();
        versions.sort();
        if let Some((_, bin)) = versions.pop() {
            return Ok(bin);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has_initdb(&d) {
                return Ok(d);
            }
        }
    }
    bail!(
        "PostgreSQL server binaries not found: install postgresql (e.g. apt-get install postgresql-15) or set PGWARDEN_PG_BINDIR"
    )
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl PgCluster {
    /// initdb, configure, start. Blocking: call from `spawn_blocking` in async code.
    pub fn start(opts: &ClusterOptions) -> anyhow::Result<PgCluster> {
        let bindir = find_bindir()?;
        let run_as_postgres = is_root();
        let dir = make_dir(run_as_postgres)?;
        let mut cluster = PgCluster {
            dir,
            port: 0,
            bindir,
            run_as_postgres,
            watchdog: None,
            stopped: true,
        };
        cluster.watchdog = cluster.spawn_watchdog().ok();
        cluster.init(opts)?;
        let mut last = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start(opts) {
                Ok(()) => {
                    cluster.stopped = false;
                    return Ok(cluster);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("could not start PostgreSQL")))
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command from the server's bin folder, run as `postgres` if root.
    fn command(&self, program: &str) -> Command {
        let exe = self.bindir.join(program);
        if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn init(&self, opts: &ClusterOptions) -> anyhow::Result<()> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut hba = String::from(
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust\n",
        );
        for line in &opts.hba {
            hba.push_str(line);
            hba.push('\n');
        }
        hba.push_str(
            "host all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n",
        );
        self.write_owned(&self.data().join("pg_hba.conf"), hba.as_bytes())?;
        if let Some((cert, key)) = &opts.tls {
            self.write_owned(&self.data().join("server.crt"), &std::fs::read(cert)?)?;
            self.write_owned(&self.data().join("server.key"), &std::fs::read(key)?)?;
        }
        Ok(())
    }

    /// Write a file in the data folder, owned by the server's user, mode 0600.
    fn write_owned(&self, path: &Path, data: &[u8]) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut f =
            std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
        f.write_all(data)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        if self.run_as_postgres {
            chown_postgres(path)?;
        }
        Ok(())
    }

    fn pg_ctl_start(&self, opts: &ClusterOptions) -> anyhow::Result<()> {
        let mut server_opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        if opts.tls.is_some() {
            server_opts
                .push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        for (k, v) in &opts.settings {
            server_opts.push_str(&format!(" -c {k}={v}"));
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(server_opts)
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            bail!(
                "pg_ctl start failed: {}\n{log}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Run SQL as the superuser through psql (stops at the first error).
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let mut child = Command::new(self.bindir.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(database)
            .env_remove("PGPASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running psql")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Stop the server now (fast shutdown).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// A process that stops the server and removes the folder once this
    /// process is gone, whichever way it goes.
    fn spawn_watchdog(&self) -> anyhow::Result<Child> {
        let pg_ctl = self.bindir.join("pg_ctl");
        let as_pg = if self.run_as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {as_pg}'{pg_ctl}' -D '{data}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            data = self.data().display(),
            dir = self.dir.display(),
        );
        Ok(Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// A fresh private folder, owned by `postgres` when we are root.
fn make_dir(for_postgres: bool) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let dir = base.join(format!("pgwarden-pg-{:016x}", rand::random::<u64>()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
                if for_postgres {
                    chown_postgres(&dir)?;
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("could not create a temporary folder in {}", base.display())
}

fn chown_postgres(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("chown")
        .arg("postgres:")
        .arg(path)
        .status()
        .context("running chown")?;
    if !status.success() {
        bail!(
            "chown postgres {} failed (does the postgres system user exist?)",
            path.display()
        );
    }
    Ok(())
}
