//! The trail on disk: numbered JSON Lines files in `[audit] dir`, the
//! chain head carried across them, rotation, the seal file and recovery
//! of a torn last line after a crash.
//!
//! Files are named `audit-<first seq, 20 digits>.jsonl`, so they sort in
//! the order they were written. Only the writer thread touches them.

use super::chain::{self, ChainKey, GENESIS, Seal};
use super::record::Record;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const SEAL_FILE: &str = "seal.json";

/// Name of the file whose first record is `seq`.
pub fn file_name(seq: u64) -> String {
    format!("audit-{seq:020}.jsonl")
}

/// The trail's files in order.
pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    Ok(files)
}

pub fn read_seal(dir: &Path) -> io::Result<Option<Seal>> {
    match fs::read(dir.join(SEAL_FILE)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The end of a file: enough bytes to hold its last two complete lines
/// (or the whole file), and the offset they start at.
fn read_tail(f: &mut File) -> io::Result<(Vec<u8>, u64)> {
    let len = f.metadata()?.len();
    let mut window = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(window);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        Read::by_ref(f).take(len - start).read_to_end(&mut buf)?;
        let complete = buf.iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
        let lines_seen = buf[..complete].iter().filter(|&&c| c == b'\n').count();
        if start == 0 || lines_seen >= 2 {
            return Ok((buf, start));
        }
        window *= 4;
    }
}

/// Sequence number and MAC of the last line of `body` (complete lines).
fn last_complete(body: &[u8], path: &Path) -> io::Result<Option<(u64, [u8; 32])>> {
    let last = body
        .strip_suffix(b"\n")
        .map(|b| b.rsplit(|&c| c == b'\n').next().unwrap_or(b))
        .unwrap_or(b"");
    if last.is_empty() {
        return Ok(None);
    }
    let line =
        std::str::from_utf8(last).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let (json, mac) = chain::open_line(line).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the last record of {} carries no MAC", path.display()),
        )
    })?;
    let rec: Record =
        serde_json::from_str(&json).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some((rec.seq, mac)))
}

/// Sequence number and MAC of the last complete record of a file.
pub fn last_record(path: &Path) -> io::Result<Option<(u64, [u8; 32])>> {
    let mut f = File::open(path)?;
    let (text, _) = read_tail(&mut f)?;
    let complete = text.iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
    last_complete(&text[..complete], path)
}

/// The open end of the trail.
pub struct Files {
    dir: PathBuf,
    key: ChainKey,
    rotate_bytes: u64,
    rotate_after: Duration,
    file: Option<File>,
    name: String,
    size: u64,
    opened: Instant,
    /// Last record written, and its MAC.
    pub seq: u64,
    pub mac: [u8; 32],
    /// Last record covered by the seal file.
    sealed: u64,
    /// Written but not yet fsynced.
    pub unsynced: bool,
    /// Records to write first, about the trail itself (recovery).
    pub notes: Vec<Record>,
    /// The last `checkpoint` record written since the trail was opened.
    pub checkpoint_seq: u64,
    /// Scratch space for a record's JSON.
    json: Vec<u8>,
}

impl Files {
    /// Open the trail in `dir` (created if missing), continuing the chain
    /// from its last record. A last line torn by a crash is cut off and
    /// reported in a `recovered` record.
    pub fn open(
        dir: &Path,
        key: ChainKey,
        rotate_bytes: u64,
        rotate_after: Duration,
    ) -> io::Result<Files> {
        fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
        let mut files = Files {
            dir: dir.to_path_buf(),
            key,
            rotate_bytes: rotate_bytes.max(4096),
            rotate_after,
            file: None,
            name: String::new(),
            size: 0,
            opened: Instant::now(),
            seq: 0,
            mac: GENESIS,
            sealed: 0,
            unsynced: false,
            notes: Vec::new(),
            checkpoint_seq: 0,
            json: Vec::new(),
        };
        if let Some(last) = list(dir)?.pop() {
            files.resume(&last)?;
        }
        if let Ok(Some(seal)) = read_seal(dir) {
            files.sealed = seal.seq;
        }
        Ok(files)
    }

    /// Continue after the last complete line of `path`.
    fn resume(&mut self, path: &Path) -> io::Result<()> {
        let mut f = OpenOptions::new().read(true).append(true).open(path)?;
        let (text, start) = read_tail(&mut f)?;
        let complete = text.iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
        let torn = text.len() - complete;
        if torn > 0 {
            // A write cut short by a crash: its records were never durable.
            f.set_len(start + complete as u64)?;
            f.sync_all()?;
            let mut note = Record::new("recovered");
            note.detail = Some(serde_json::json!({
                "file": path.file_name().and_then(|n| n.to_str()).unwrap_or(""),
                "torn_bytes": torn,
            }));
            self.notes.push(note);
        }
        if let Some((seq, mac)) = last_complete(&text[..complete], path)? {
            self.seq = seq;
            self.mac = mac;
        }
        self.size = start + complete as u64;
        self.name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        self.file = Some(f);
        self.opened = Instant::now();
        Ok(())
    }

    /// Chain and write `records` (giving them their sequence numbers) in
    /// one write, rotating first when the current file is full or old.
    /// On error nothing of the batch stays on disk and the chain head is
    /// unchanged.
    pub fn write(&mut self, records: &mut [Record], buf: &mut Vec<u8>) -> io::Result<()> {
        let (seq0, mac0, checkpoint0) = (self.seq, self.mac, self.checkpoint_seq);
        let result = self.write_inner(records, buf);
        if result.is_err() {
            self.seq = seq0;
            self.mac = mac0;
            self.checkpoint_seq = checkpoint0;
            // Cut what part of the batch reached the file, if we can; if
            // not, the next attempt starts a new file.
            let size = self.size;
            if let Some(f) = &self.file {
                if f.set_len(size).is_err() {
                    self.file = None;
                }
            }
        }
        result
    }

    fn write_inner(&mut self, records: &mut [Record], buf: &mut Vec<u8>) -> io::Result<()> {
        let due = self.file.is_none()
            || self.size >= self.rotate_bytes
            || self.opened.elapsed() >= self.rotate_after;
        if due {
            self.rotate()?;
        }
        buf.clear();
        let mut rotate_line = Vec::new();
        if self.size == 0 && self.seq > 0 {
            // A new file continues the chain of the last one.
            let mut r = Record::new("rotate");
            r.detail = Some(serde_json::json!({ "previous_seq": self.seq }));
            // Dated with the batch that opened the file.
            r.ts = records.first().map(|f| f.ts.clone()).unwrap_or_default();
            self.chain(&mut r, &mut rotate_line)?;
        }
        buf.extend_from_slice(&rotate_line);
        let mut notes = std::mem::take(&mut self.notes);
        for r in notes.iter_mut().chain(records.iter_mut()) {
            self.chain(r, buf)?;
        }
        let f = self.file.as_mut().expect("opened by rotate");
        f.write_all(buf)?;
        self.size += buf.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    fn chain(&mut self, r: &mut Record, buf: &mut Vec<u8>) -> io::Result<()> {
        r.seq = self.seq + 1;
        r.mac.clear();
        if r.ts.is_empty() {
            r.ts = jiff::Timestamp::now().to_string();
        }
        // One buffer for every record's JSON: no growing a new string
        // from nothing per line.
        self.json.clear();
        serde_json::to_writer(&mut self.json, r).map_err(io::Error::other)?;
        self.mac = chain::seal_line(&self.key, &self.mac, &self.json, buf);
        self.seq = r.seq;
        if r.event == "checkpoint" {
            self.checkpoint_seq = r.seq;
        }
        Ok(())
    }

    /// Start a new file named after the next record.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        let name = file_name(self.seq + 1);
        let path = self.dir.join(&name);
        let f = OpenOptions::new().create(true).append(true).open(&path)?;
        // Make the new name durable before records rely on it.
        File::open(&self.dir)?.sync_all()?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        self.name = name;
        self.opened = Instant::now();
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn key(&self) -> &ChainKey {
        &self.key
    }

    pub fn sync(&mut self) -> io::Result<()> {
        if let Some(f) = &self.file {
            f.sync_data()?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Rewrite the seal if records were written since the last one.
    pub fn seal(&mut self) -> io::Result<()> {
        if self.seq == self.sealed || self.unsynced {
            return Ok(());
        }
        let seal = Seal::signed(&self.key, self.seq, &self.mac, &self.name);
        let tmp = self.dir.join("seal.json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&seal).map_err(io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join(SEAL_FILE))?;
        File::open(&self.dir)?.sync_all()?;
        self.sealed = self.seq;
        Ok(())
    }
}
