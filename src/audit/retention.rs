//! Retention: removing the oldest files of the trail without breaking it.
//!
//! A file may go once every record in it is older than `[audit]
//! retention_days`, it is not the file being written, and a `checkpoint`
//! record was written after it (so no file newer than its checkpoint is
//! ever removed). Before anything is deleted the writer chains a
//! `retention` record naming the files, then adds an *anchor* to
//! `retention.json`: the sequence number of the first record kept and the
//! MAC of the record before it, signed with the chain key. `audit verify`
//! starts a trail that does not begin at record 1 from the anchor for its
//! first record; a trail cut anywhere else still fails, and an old anchor
//! replayed names a record the trail no longer starts with.

use super::chain::{ChainKey, hex};
use super::files::{self, file_name};
use super::record::Record;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

pub const ANCHORS_FILE: &str = "retention.json";
/// Anchors kept in the file (older ones name files long gone).
const MAX_ANCHORS: usize = 64;

/// Where a trail that lost its oldest files legitimately starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// First record kept.
    pub first_seq: u64,
    /// MAC of record `first_seq - 1`, the chain head the kept records continue.
    pub prev_mac: String,
    pub ts: String,
    #[serde(default)]
    pub sig: String,
}

impl Anchor {
    fn signed(key: &ChainKey, first_seq: u64, prev_mac: &[u8; 32]) -> Anchor {
        let mut a = Anchor {
            first_seq,
            prev_mac: hex(prev_mac),
            ts: jiff::Timestamp::now().to_string(),
            sig: String::new(),
        };
        a.sig = a.signature(key);
        a
    }

    fn signature(&self, key: &ChainKey) -> String {
        key.sign(&[
            b"retention",
            &self.first_seq.to_be_bytes(),
            self.prev_mac.as_bytes(),
            self.ts.as_bytes(),
        ])
    }

    pub fn valid(&self, key: &ChainKey) -> bool {
        self.signature(key) == self.sig
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AnchorFile {
    anchors: Vec<Anchor>,
}

/// The anchors recorded in `dir` (none when there is no file).
pub fn read_anchors(dir: &Path) -> io::Result<Vec<Anchor>> {
    match fs::read(dir.join(ANCHORS_FILE)) {
        Ok(b) => serde_json::from_slice::<AnchorFile>(&b)
            .map(|f| f.anchors)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn write_anchors(dir: &Path, anchors: &[Anchor]) -> io::Result<()> {
    let body = serde_json::to_vec_pretty(&AnchorFile {
        anchors: anchors.to_vec(),
    })
    .map_err(io::Error::other)?;
    let tmp = dir.join("retention.json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(ANCHORS_FILE))?;
    File::open(dir)?.sync_all()
}

/// Files that may be removed: every file before the first one whose
/// first record is newer than `cutoff`, not the last file, and only up to
/// `checkpoint_seq` (files wholly before the last checkpoint). Returns the
/// files and the first sequence number kept.
pub fn expired(
    dir: &Path,
    cutoff: jiff::Timestamp,
    checkpoint_seq: u64,
) -> io::Result<Option<(Vec<PathBuf>, u64)>> {
    let paths = files::list(dir)?;
    let mut doomed = Vec::new();
    let mut keep_from = 0;
    // File i may go when file i+1 starts before the cutoff: every record
    // of file i is older than that first record.
    for pair in paths.windows(2) {
        let Some(next_seq) = first_seq_of(&pair[1]) else {
            break;
        };
        let Some(next_ts) = first_ts(&pair[1])? else {
            break;
        };
        if next_ts >= cutoff || next_seq > checkpoint_seq {
            break;
        }
        doomed.push(pair[0].clone());
        keep_from = next_seq;
    }
    Ok((!doomed.is_empty()).then_some((doomed, keep_from)))
}

fn first_seq_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let seq: u64 = name
        .strip_prefix("audit-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()?;
    (file_name(seq) == name).then_some(seq)
}

fn first_ts(path: &Path) -> io::Result<Option<jiff::Timestamp>> {
    let mut line = String::new();
    BufReader::new(File::open(path)?).read_line(&mut line)?;
    let Ok(rec) = serde_json::from_str::<Record>(line.trim_end()) else {
        return Ok(None);
    };
    Ok(rec.ts.parse().ok())
}

/// The record written before `files` are removed.
pub fn record(files: &[PathBuf], keep_from: u64, retention_days: f64) -> Record {
    let names: Vec<&str> = files
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()))
        .collect();
    let mut r = Record::new("retention");
    r.detail = Some(serde_json::json!({
        "removed": names,
        "first_seq_kept": keep_from,
        "retention_days": retention_days,
    }));
    r
}

/// Anchor the trail at `keep_from` and remove `files` (oldest first).
/// `prev_mac` is the MAC of record `keep_from - 1`, read from the last of
/// `files`. The `retention` record must already be durable.
pub fn remove(dir: &Path, key: &ChainKey, files: &[PathBuf], keep_from: u64) -> io::Result<()> {
    let last = files.last().expect("something to remove");
    let (seq, prev_mac) = files::last_record(last)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} has no complete record", last.display()),
        )
    })?;
    if seq + 1 != keep_from {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} ends at record {seq}, not before {keep_from}",
                last.display()
            ),
        ));
    }
    let mut anchors = read_anchors(dir).unwrap_or_default();
    anchors.push(Anchor::signed(key, keep_from, &prev_mac));
    let excess = anchors.len().saturating_sub(MAX_ANCHORS);
    anchors.drain(..excess);
    write_anchors(dir, &anchors)?;
    for f in files {
        fs::remove_file(f)?;
    }
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::files::Files;
    use crate::audit::verify::verify;
    use std::time::Duration;

    const KEY: &[u8] = b"retention test key";

    fn key() -> ChainKey {
        ChainKey::from_audit_key(KEY)
    }

    /// Write `n` query records dated on day `day` of January 2020, in
    /// small files, then a checkpoint.
    fn write_day(files: &mut Files, day: u32, n: u64) {
        let mut buf = Vec::new();
        for i in 0..n {
            let mut r = Record::new("query");
            r.ts = format!("2020-01-{day:02}T00:00:{:02}Z", i % 60);
            r.sql = Some(format!("SELECT phone FROM customers WHERE id = {i}"));
            files.write(&mut [r], &mut buf).unwrap();
        }
        let mut c = Record::new("checkpoint");
        c.ts = format!("2020-01-{day:02}T23:00:00Z");
        files.write(&mut [c], &mut buf).unwrap();
        files.sync().unwrap();
        files.seal().unwrap();
    }

    fn open(dir: &Path) -> Files {
        Files::open(dir, key(), 4096, Duration::from_secs(3600)).unwrap()
    }

    fn cutoff(day: u32) -> jiff::Timestamp {
        format!("2020-01-{day:02}T00:00:00Z").parse().unwrap()
    }

    /// Run retention as the writer does: record, then anchor and remove.
    fn retain(files: &mut Files, day: u32) -> u64 {
        let dir = files.dir().to_path_buf();
        let (doomed, keep_from) = expired(&dir, cutoff(day), files.checkpoint_seq)
            .unwrap()
            .expect("files to remove");
        files
            .write(&mut [record(&doomed, keep_from, 1.0)], &mut Vec::new())
            .unwrap();
        files.sync().unwrap();
        remove(&dir, &key(), &doomed, keep_from).unwrap();
        files.seal().unwrap();
        keep_from
    }

    #[test]
    fn removed_old_files_leave_a_trail_that_verifies_from_its_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = open(dir.path());
        write_day(&mut files, 1, 60);
        write_day(&mut files, 2, 60);
        let before = files::list(dir.path()).unwrap().len();
        let keep_from = retain(&mut files, 2);
        let after = files::list(dir.path()).unwrap();
        assert!(after.len() < before, "{before} -> {}", after.len());
        // Only day-1 files went: the first file kept starts on day 1 or 2
        // but every removed record was older than the cutoff.
        let s = verify(dir.path(), &key()).unwrap();
        assert_eq!(s.retained_from, keep_from);
        assert_eq!(s.first_seq, keep_from);
        assert!(keep_from > 1);
        // The trail says what retention did.
        let text = std::fs::read_to_string(after.last().unwrap()).unwrap();
        assert!(text.contains("\"event\":\"retention\""), "{text}");
        // Deleting one more file than retention did is caught.
        std::fs::remove_file(&after[0]).unwrap();
        let p = verify(dir.path(), &key()).unwrap_err();
        assert!(p.what.contains("no retention anchor"), "{p}");
    }

    #[test]
    fn files_after_the_last_checkpoint_and_the_current_file_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = open(dir.path());
        write_day(&mut files, 1, 60);
        // Everything is old, but only files the checkpoint covers may go.
        let all = files::list(dir.path()).unwrap();
        let (doomed, keep_from) = expired(dir.path(), cutoff(9), 30).unwrap().unwrap();
        assert!(keep_from <= 30);
        assert!(doomed.len() < all.len() - 1);
        let (doomed, _) = expired(dir.path(), cutoff(9), files.checkpoint_seq)
            .unwrap()
            .unwrap();
        assert_eq!(doomed.len(), all.len() - 1, "the current file stays");
        // Nothing is old enough before day 1.
        assert!(
            expired(
                dir.path(),
                "2019-12-31T00:00:00Z".parse().unwrap(),
                u64::MAX
            )
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn a_replayed_or_forged_anchor_does_not_verify() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = open(dir.path());
        write_day(&mut files, 1, 60);
        write_day(&mut files, 2, 60);
        write_day(&mut files, 3, 60);
        retain(&mut files, 2);
        let first_anchors = std::fs::read(dir.path().join(ANCHORS_FILE)).unwrap();
        retain(&mut files, 3);
        verify(dir.path(), &key()).unwrap();
        let current = std::fs::read(dir.path().join(ANCHORS_FILE)).unwrap();
        // An older anchor file names records the trail no longer starts with.
        std::fs::write(dir.path().join(ANCHORS_FILE), &first_anchors).unwrap();
        assert!(verify(dir.path(), &key()).is_err());
        // An anchor altered to cover more is not signed.
        let mut f: AnchorFile = serde_json::from_slice(&current).unwrap();
        let last = f.anchors.last_mut().unwrap();
        last.first_seq += 5;
        std::fs::write(
            dir.path().join(ANCHORS_FILE),
            serde_json::to_vec(&f).unwrap(),
        )
        .unwrap();
        assert!(verify(dir.path(), &key()).is_err());
        // Put back, it verifies again.
        std::fs::write(dir.path().join(ANCHORS_FILE), &current).unwrap();
        verify(dir.path(), &key()).unwrap();
    }
}
