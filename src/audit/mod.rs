//! The audit trail: who ran what, from where, touching which classified
//! columns, what pgwarden decided and how many rows came back.
//!
//! A side path of the data path: sessions build [`Record`]s and queue them
//! on the [`AuditTrail`]; one writer thread chains them ([`chain`]) and
//! writes them to JSON Lines files ([`files`]) with group commit. In `sync`
//! durability a session forwards no result bytes before the record that
//! covers them is on disk. `pgwarden audit verify` ([`verify`]) checks the
//! chain and the seal; `pgwarden audit search` and `report` ([`search`])
//! read the trail back.

pub mod chain;
pub mod files;
pub mod record;
pub mod retention;
pub mod search;
pub mod verify;
pub mod writer;

pub use record::{ColumnUse, Record};
pub use writer::{AuditTrail, TrailOptions, Unavailable};

use crate::config::Config;
use crate::metrics::Metrics;
use chain::ChainKey;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the key is kept when `[audit] key_file` is not set.
pub const GENERATED_KEY: &str = "audit.key";

/// The chain key of a configuration: `[audit] key_file`, or a key
/// generated once in the audit folder (with a warning: whoever can write
/// the folder can then also rewrite the chain).
pub fn load_key(config: &Config) -> anyhow::Result<ChainKey> {
    let dir = config
        .audit
        .dir
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("[audit] dir is not set"))?;
    let path: PathBuf = match &config.audit.key_file {
        Some(p) => p.clone(),
        None => {
            let p = dir.join(GENERATED_KEY);
            if !p.exists() {
                std::fs::create_dir_all(dir)?;
                write_private(&p, &rand::random::<[u8; 32]>())?;
                tracing::warn!(path = %p.display(), "no [audit] key_file: generated an audit key inside the audit folder; move it out of reach of those who can write the trail and set key_file");
            }
            p
        }
    };
    let secret = std::fs::read(&path)
        .map_err(|e| anyhow::anyhow!("cannot read the audit key {}: {e}", path.display()))?;
    Ok(ChainKey::from_audit_key(&secret))
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

/// Start the trail of a configuration, if it has `[audit] dir`.
pub fn open(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Option<Arc<AuditTrail>>> {
    let Some(dir) = &config.audit.dir else {
        return Ok(None);
    };
    let key = load_key(config)?;
    if tokio::runtime::Handle::try_current().is_err() {
        anyhow::bail!("the audit trail must be opened inside the runtime");
    }
    let shipping = crate::ship::Shipping::start(&config.audit, &metrics)?.map(Arc::new);
    let trail = AuditTrail::start(
        dir,
        key,
        TrailOptions {
            durability: config.audit.durability,
            rotate_bytes: config.audit.rotate_bytes,
            rotate_after: Duration::from_secs(config.audit.rotate_secs.max(1)),
            checkpoint_every: Duration::from_secs(config.audit.checkpoint_secs.max(1)),
            retention_days: config.audit.retention_days,
            shipping,
        },
        metrics,
    )
    .map_err(|e| anyhow::anyhow!("cannot open the audit trail in {}: {e}", dir.display()))?;
    Ok(Some(Arc::new(trail)))
}
