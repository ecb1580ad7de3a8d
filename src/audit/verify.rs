//! `pgwarden audit verify`: walk every file of the trail and check the
//! chain, the sequence numbers, the file names and the seal.

use super::chain::{self, ChainKey, GENESIS};
use super::files::{self, file_name};
use super::record::Record;
use super::retention;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// The first thing wrong with a trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// Line number in `file`, from 1 (0: the file as a whole).
    pub line: usize,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file, self.line, self.what)
        } else {
            write!(f, "{}: {}", self.file, self.what)
        }
    }
}

/// What an intact trail holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The sealed record (the trail must reach it).
    pub sealed_seq: u64,
    /// When retention removed the oldest files: the first record kept
    /// (0 when the trail starts at record 1).
    pub retained_from: u64,
    /// A last line cut short by a crash (never acknowledged; removed at
    /// the next start).
    pub torn_tail: bool,
}

fn problem(file: &str, line: usize, what: impl Into<String>) -> Problem {
    Problem {
        file: file.to_string(),
        line,
        what: what.into(),
    }
}

/// Check the trail in `dir` with `key`.
pub fn verify(dir: &Path, key: &ChainKey) -> Result<Summary, Problem> {
    let dirname = dir.display().to_string();
    let paths = files::list(dir).map_err(|e| problem(&dirname, 0, format!("cannot list: {e}")))?;
    let seal = files::read_seal(dir)
        .map_err(|e| problem(files::SEAL_FILE, 0, format!("unreadable seal: {e}")))?;
    let anchors = retention::read_anchors(dir)
        .map_err(|e| problem(retention::ANCHORS_FILE, 0, format!("unreadable: {e}")))?;
    let mut s = Summary::default();
    let mut prev_mac = GENESIS;
    let mut prev_seq = 0u64;
    let mut sealed_mac_seen = false;
    for (fi, path) in paths.iter().enumerate() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let f = std::fs::File::open(path)
            .map_err(|e| problem(&name, 0, format!("cannot open: {e}")))?;
        let last_file = fi + 1 == paths.len();
        let mut reader = BufReader::new(f);
        let mut line = String::new();
        let mut lineno = 0;
        let mut first_in_file = true;
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .map_err(|e| problem(&name, lineno + 1, format!("unreadable: {e}")))?;
            if n == 0 {
                break;
            }
            lineno += 1;
            if !line.ends_with('\n') {
                if last_file {
                    s.torn_tail = true;
                    break;
                }
                return Err(problem(
                    &name,
                    lineno,
                    "incomplete line in the middle of the trail",
                ));
            }
            let text = line.trim_end_matches('\n');
            let (body, mac) = chain::open_line(text).ok_or_else(|| {
                problem(
                    &name,
                    lineno,
                    "not a chained record (no MAC): inserted or altered",
                )
            })?;
            let rec: Record = serde_json::from_str(&body).map_err(|e| {
                problem(&name, lineno, format!("not a valid record ({e}): altered"))
            })?;
            if first_in_file && name != file_name(rec.seq) {
                return Err(problem(
                    &name,
                    lineno,
                    format!(
                        "file starts with record {} but is named for another: renamed or replaced",
                        rec.seq
                    ),
                ));
            }
            if s.records == 0 && rec.seq != 1 {
                // Only retention may remove the oldest records, and it
                // leaves a signed anchor for the first record it kept.
                let anchor = anchors
                    .iter()
                    .rev()
                    .find(|a| a.first_seq == rec.seq && a.valid(key))
                    .and_then(|a| chain::unhex(&a.prev_mac));
                let Some(anchor_mac) = anchor else {
                    return Err(problem(
                        &name,
                        lineno,
                        format!(
                            "the trail starts at record {}: records 1 to {} are missing and no retention anchor covers them",
                            rec.seq,
                            rec.seq - 1
                        ),
                    ));
                };
                prev_mac = anchor_mac;
                prev_seq = rec.seq - 1;
                s.retained_from = rec.seq;
            }
            if rec.seq != prev_seq + 1 {
                let what = if rec.seq > prev_seq + 1 {
                    format!(
                        "records {} to {} are missing (deleted)",
                        prev_seq + 1,
                        rec.seq - 1
                    )
                } else {
                    format!(
                        "record {} follows record {}: reordered or duplicated",
                        rec.seq, prev_seq
                    )
                };
                return Err(problem(&name, lineno, what));
            }
            if key.mac(&prev_mac, body.as_bytes()) != mac {
                return Err(problem(
                    &name,
                    lineno,
                    format!(
                        "record {} does not match its MAC: modified, inserted, or signed with another key",
                        rec.seq
                    ),
                ));
            }
            if let Some(seal) = &seal {
                if rec.seq == seal.seq {
                    if chain::hex(&mac) != seal.mac {
                        return Err(problem(
                            files::SEAL_FILE,
                            0,
                            format!("the seal names record {} with another MAC", seal.seq),
                        ));
                    }
                    sealed_mac_seen = true;
                }
            }
            if s.records == 0 {
                s.first_seq = rec.seq;
            }
            s.records += 1;
            prev_seq = rec.seq;
            prev_mac = mac;
            first_in_file = false;
        }
        s.files += 1;
    }
    s.last_seq = prev_seq;
    match &seal {
        None if s.records > 0 => {
            return Err(problem(
                files::SEAL_FILE,
                0,
                "missing: the end of the trail cannot be checked",
            ));
        }
        None => {}
        Some(seal) => {
            if !seal.valid(key) {
                return Err(problem(
                    files::SEAL_FILE,
                    0,
                    "signature does not match: altered or signed with another key",
                ));
            }
            if seal.seq > s.last_seq {
                return Err(problem(
                    &seal.file,
                    0,
                    format!(
                        "the trail ends at record {} but the seal of {} covers records up to {}: the newest records were cut off",
                        s.last_seq, seal.ts, seal.seq
                    ),
                ));
            }
            if !sealed_mac_seen && seal.seq > 0 {
                return Err(problem(
                    files::SEAL_FILE,
                    0,
                    format!("record {} named by the seal is not in the trail", seal.seq),
                ));
            }
            s.sealed_seq = seal.seq;
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::files::Files;
    use std::time::Duration;

    const KEY: &[u8] = b"test audit key";

    /// A sealed trail of `n` query records over several files.
    fn trail(n: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let key = ChainKey::from_audit_key(KEY);
        let mut files = Files::open(dir.path(), key, 4096, Duration::from_secs(3600)).unwrap();
        let mut buf = Vec::new();
        for i in 0..n {
            let mut r = Record::new("query");
            r.user = Some("agent_li".into());
            r.sql = Some(format!("SELECT phone FROM customers WHERE id = {i}"));
            r.rows = Some(1);
            files.write(&mut [r], &mut buf).unwrap();
        }
        files.sync().unwrap();
        files.seal().unwrap();
        dir
    }

    fn check(dir: &Path) -> Result<Summary, Problem> {
        verify(dir, &ChainKey::from_audit_key(KEY))
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    fn second_file(dir: &Path) -> PathBuf {
        files::list(dir).unwrap()[1].clone()
    }

    use std::path::PathBuf;

    #[test]
    fn an_intact_trail_verifies() {
        let dir = trail(60);
        let s = check(dir.path()).unwrap();
        // 60 queries and the rotation records between files.
        assert!(s.files >= 3, "{s:?}");
        assert_eq!(s.records, s.last_seq);
        assert_eq!(s.sealed_seq, s.last_seq);
        assert!(check(dir.path()).is_ok());
        // Another key does not verify it.
        assert!(verify(dir.path(), &ChainKey::from_audit_key(b"other")).is_err());
    }

    #[test]
    fn a_modified_record_is_named() {
        let dir = trail(60);
        let f = second_file(dir.path());
        let mut l = lines(&f);
        l[3] = l[3].replacen("\"rows\":1", "\"rows\":0", 1);
        write_lines(&f, &l);
        let p = check(dir.path()).unwrap_err();
        assert_eq!(p.file, f.file_name().unwrap().to_str().unwrap());
        assert_eq!(p.line, 4);
        assert!(p.what.contains("MAC"), "{p}");
    }

    #[test]
    fn deleted_inserted_and_reordered_records_are_named() {
        // Deleted.
        let dir = trail(60);
        let f = second_file(dir.path());
        let mut l = lines(&f);
        l.remove(2);
        write_lines(&f, &l);
        let p = check(dir.path()).unwrap_err();
        assert_eq!(p.line, 3);
        assert!(p.what.contains("missing"), "{p}");
        // Inserted: a copy of another record.
        let dir = trail(60);
        let f = second_file(dir.path());
        let mut l = lines(&f);
        let copy = l[1].clone();
        l.insert(3, copy);
        write_lines(&f, &l);
        let p = check(dir.path()).unwrap_err();
        assert_eq!(p.line, 4);
        // Reordered.
        let dir = trail(60);
        let f = second_file(dir.path());
        let mut l = lines(&f);
        l.swap(2, 3);
        write_lines(&f, &l);
        let p = check(dir.path()).unwrap_err();
        assert_eq!(p.line, 3);
        assert!(
            p.what.contains("missing") || p.what.contains("reordered"),
            "{p}"
        );
        // A forged line without a MAC.
        let dir = trail(60);
        let f = second_file(dir.path());
        let mut l = lines(&f);
        l.insert(
            1,
            r#"{"ts":"2026-01-01T00:00:00Z","seq":9,"event":"query"}"#.into(),
        );
        write_lines(&f, &l);
        assert_eq!(check(dir.path()).unwrap_err().line, 2);
    }

    #[test]
    fn cut_tails_removed_files_and_a_forged_seal_are_caught() {
        // The newest records cut off.
        let dir = trail(60);
        let last = files::list(dir.path()).unwrap().pop().unwrap();
        let mut l = lines(&last);
        l.truncate(l.len() - 2);
        write_lines(&last, &l);
        let p = check(dir.path()).unwrap_err();
        assert!(p.what.contains("cut off"), "{p}");
        // A whole file removed from the middle.
        let dir = trail(60);
        std::fs::remove_file(second_file(dir.path())).unwrap();
        let p = check(dir.path()).unwrap_err();
        assert!(p.what.contains("missing"), "{p}");
        // The first file removed.
        let dir = trail(60);
        std::fs::remove_file(&files::list(dir.path()).unwrap()[0]).unwrap();
        assert!(check(dir.path()).unwrap_err().what.contains("missing"));
        // A seal rewritten to hide a cut.
        let dir = trail(60);
        let seal_path = dir.path().join(files::SEAL_FILE);
        let text = std::fs::read_to_string(&seal_path).unwrap();
        let mut seal: chain::Seal = serde_json::from_str(&text).unwrap();
        seal.seq -= 1;
        std::fs::write(&seal_path, serde_json::to_vec(&seal).unwrap()).unwrap();
        assert!(check(dir.path()).is_err());
        // The seal deleted.
        std::fs::remove_file(&seal_path).unwrap();
        assert!(check(dir.path()).unwrap_err().what.contains("missing"));
    }

    #[test]
    fn a_torn_last_line_is_reported_and_cut_at_the_next_start() {
        let dir = trail(5);
        let last = files::list(dir.path()).unwrap().pop().unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap();
        std::io::Write::write_all(&mut f, b"{\"ts\":\"2026").unwrap();
        let s = check(dir.path()).unwrap();
        assert!(s.torn_tail);
        // Reopening cuts it and says so in the trail.
        let key = ChainKey::from_audit_key(KEY);
        let mut files = Files::open(dir.path(), key, 4096, Duration::from_secs(3600)).unwrap();
        files
            .write(&mut [Record::new("start")], &mut Vec::new())
            .unwrap();
        files.sync().unwrap();
        files.seal().unwrap();
        let s = check(dir.path()).unwrap();
        assert!(!s.torn_tail);
        let text = std::fs::read_to_string(&last).unwrap();
        assert!(text.contains("\"event\":\"recovered\""));
    }
}
