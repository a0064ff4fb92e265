//! `/proc/sysvipc/{shm,sem,msg}`: every System V IPC object of the reader's
//! IPC namespace, one per line, with its key, id, mode, owner and creator,
//! and the pids that last used it (the only place the kernel shows the
//! creator pid of a segment or the last sender/receiver of a queue).
//!
//! ```text
//!        key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
//!  305419896      32769  1600                  8192  4242  4243      2 18943 58467 18943 58467 1700000000          0 1700000000                  4096                     0
//! ```
//!
//! Columns are found by their names in the header line, so a kernel that
//! adds or moves a column does not break the parser; a column we need and
//! do not find is an error naming the file. `key` is printed as a signed
//! decimal (`%10d`), `perms` in octal; the shm mode includes SHM_DEST
//! (01000, removed while still attached) and SHM_LOCKED (02000).

use std::collections::BTreeMap;

use super::{ParseError, Pid, ProcError};

/// The `struct ipc_perm` part every kind of object has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Perm {
    /// The key as the kernel stores it (an `int`; shown as unsigned in
    /// images, where CRIU keeps it as uint32).
    pub key: i32,
    pub id: i32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    pub ctime: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shm {
    pub perm: Perm,
    pub size: u64,
    pub cpid: Pid,
    pub lpid: Pid,
    pub nattch: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sem {
    pub perm: Perm,
    pub nsems: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Msg {
    pub perm: Perm,
    pub cbytes: u64,
    pub qnum: u64,
    pub lspid: Pid,
    pub lrpid: Pid,
}

/// SHM_DEST: the segment was removed (IPC_RMID) while attached; it lives
/// until the last detach and its key reads as IPC_PRIVATE.
pub const SHM_DEST: u32 = 0o1000;
/// SHM_LOCKED: SHM_LOCK was applied.
pub const SHM_LOCKED: u32 = 0o2000;

/// One row: its line number and its column-name -> text map.
type RowText = (usize, BTreeMap<String, String>);

/// The rows of one table.
fn rows(file: &str, text: &str) -> Result<Vec<RowText>, ParseError> {
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = match lines.next() {
        Some((_, h)) => h.split_ascii_whitespace().collect(),
        None => return Err(ParseError::new(file, 0, "empty file (no header line)")),
    };
    let mut out = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split_ascii_whitespace().collect();
        if cols.len() != header.len() {
            return Err(ParseError::new(
                file,
                i + 1,
                format!(
                    "{} columns, but the header names {}",
                    cols.len(),
                    header.len()
                ),
            ));
        }
        out.push((
            i + 1,
            header
                .iter()
                .zip(cols)
                .map(|(h, c)| (h.to_string(), c.to_string()))
                .collect(),
        ));
    }
    Ok(out)
}

struct Row<'a> {
    file: &'a str,
    line: usize,
    cols: &'a BTreeMap<String, String>,
}

impl Row<'_> {
    fn get<T: std::str::FromStr>(&self, name: &str) -> Result<T, ParseError> {
        let v = self
            .cols
            .get(name)
            .ok_or_else(|| ParseError::new(self.file, self.line, format!("no column {name:?}")))?;
        v.parse()
            .map_err(|_| ParseError::new(self.file, self.line, format!("{name}: bad number {v:?}")))
    }

    fn perm(&self, id_col: &str) -> Result<Perm, ParseError> {
        let mode_text = self
            .cols
            .get("perms")
            .ok_or_else(|| ParseError::new(self.file, self.line, "no column \"perms\""))?;
        let mode = u32::from_str_radix(mode_text, 8).map_err(|_| {
            ParseError::new(
                self.file,
                self.line,
                format!("perms: bad octal mode {mode_text:?}"),
            )
        })?;
        Ok(Perm {
            key: self.get("key")?,
            id: self.get(id_col)?,
            mode,
            uid: self.get("uid")?,
            gid: self.get("gid")?,
            cuid: self.get("cuid")?,
            cgid: self.get("cgid")?,
            ctime: self.get("ctime")?,
        })
    }
}

fn parse_with<T>(
    file: &str,
    text: &str,
    one: impl Fn(&Row<'_>) -> Result<T, ParseError>,
) -> Result<Vec<T>, ParseError> {
    rows(file, text)?
        .iter()
        .map(|(line, cols)| {
            one(&Row {
                file,
                line: *line,
                cols,
            })
        })
        .collect()
}

/// Parse the text of `/proc/sysvipc/shm`.
pub fn parse_shm(text: &str) -> Result<Vec<Shm>, ParseError> {
    parse_with("sysvipc/shm", text, |r| {
        Ok(Shm {
            perm: r.perm("shmid")?,
            size: r.get("size")?,
            cpid: r.get("cpid")?,
            lpid: r.get("lpid")?,
            nattch: r.get("nattch")?,
        })
    })
}

/// Parse the text of `/proc/sysvipc/sem`.
pub fn parse_sem(text: &str) -> Result<Vec<Sem>, ParseError> {
    parse_with("sysvipc/sem", text, |r| {
        Ok(Sem {
            perm: r.perm("semid")?,
            nsems: r.get("nsems")?,
        })
    })
}

/// Parse the text of `/proc/sysvipc/msg`.
pub fn parse_msg(text: &str) -> Result<Vec<Msg>, ParseError> {
    parse_with("sysvipc/msg", text, |r| {
        Ok(Msg {
            perm: r.perm("msqid")?,
            cbytes: r.get("cbytes")?,
            qnum: r.get("qnum")?,
            lspid: r.get("lspid")?,
            lrpid: r.get("lrpid")?,
        })
    })
}

/// Read and parse `/proc/sysvipc/NAME` of the engine's IPC namespace;
/// `pid` is the task the caller works for (for the error message).
fn read<T>(
    pid: Pid,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<T, ProcError> {
    let path = format!("/proc/sysvipc/{name}");
    let text = std::fs::read_to_string(&path).map_err(|e| ProcError::io(pid, &path, e))?;
    parse(&text).map_err(|e| ProcError::parse(pid, e.with_path(&path)))
}

pub fn read_shm(pid: Pid) -> Result<Vec<Shm>, ProcError> {
    read(pid, "shm", parse_shm)
}

pub fn read_sem(pid: Pid) -> Result<Vec<Sem>, ProcError> {
    read(pid, "sem", parse_sem)
}

pub fn read_msg(pid: Pid) -> Result<Vec<Msg>, ProcError> {
    read(pid, "msg", parse_msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHM: &str = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
 305419896      32769  1600                  8192  4242  4243      2 18943 58467 18943 58467 1700000000          0 1700000001                  4096                     0
         0      65538  1666                 12288  4242     0      1     0     0     0     0          0          0 1700000002                     0                     0
";
    const SEM: &str =
        "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime
-559038737          0   600          3 18943 58467 18943 58467          0 1700000003
";
    const MSG: &str = "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime
 305419897          1   644          24          3  4242     0 18943 58467 18943 58467 1700000004          0 1700000005
";

    #[test]
    fn shm_rows() {
        let v = parse_shm(SHM).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0],
            Shm {
                perm: Perm {
                    key: 0x1234_5678,
                    id: 32769,
                    mode: 0o1600,
                    uid: 18943,
                    gid: 58467,
                    cuid: 18943,
                    cgid: 58467,
                    ctime: 1_700_000_001,
                },
                size: 8192,
                cpid: 4242,
                lpid: 4243,
                nattch: 2,
            }
        );
        assert_eq!(v[1].perm.mode & SHM_DEST, SHM_DEST);
        assert_eq!(v[1].perm.key, 0);
    }

    #[test]
    fn sem_and_msg_rows() {
        let s = parse_sem(SEM).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].perm.key, 0xdeadbeefu32 as i32);
        assert_eq!((s[0].perm.id, s[0].nsems, s[0].perm.mode), (0, 3, 0o600));
        let m = parse_msg(MSG).unwrap();
        assert_eq!(
            (m[0].perm.id, m[0].cbytes, m[0].qnum, m[0].lspid, m[0].lrpid),
            (1, 24, 3, 4242, 0)
        );
        assert_eq!(m[0].perm.ctime, 1_700_000_005);
    }

    #[test]
    fn empty_tables() {
        assert!(parse_shm(SHM.lines().next().unwrap()).unwrap().is_empty());
        assert!(parse_sem("").is_err());
    }

    #[test]
    fn errors_name_line_and_column() {
        let bad = SHM.replace(" 1600 ", " 16x0 ");
        let e = parse_shm(&bad).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("perms"), "{e}");
        let short = format!("{}\n 1 2 3\n", SEM.lines().next().unwrap());
        let e = parse_sem(&short).unwrap_err();
        assert!(e.reason.contains("columns"), "{e}");
        let no_col = "key semid perms uid gid cuid cgid ctime\n1 2 600 0 0 0 0 0\n";
        let e = parse_sem(no_col).unwrap_err();
        assert!(e.reason.contains("nsems"), "{e}");
    }

    proptest! {
        /// Whatever the kernel prints (in the kernel's own format), the
        /// parser reads back the same values.
        #[test]
        fn msg_round_trip(rows in proptest::collection::vec(
            (any::<i32>(), 0i32..i32::MAX, 0u32..0o7777, any::<u32>(), any::<u32>(),
             0u64..1 << 40, 0u64..1 << 20, 0i32..4_194_304, 0i32..4_194_304, 0i64..1 << 40),
            0..8,
        )) {
            let mut text = String::from("       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime\n");
            for &(key, id, mode, uid, gid, cbytes, qnum, lspid, lrpid, ctime) in &rows {
                text += &format!(
                    "{key:10} {id:10} {mode:5o} {cbytes:11} {qnum:10} {lspid:5} {lrpid:5} {uid:5} {gid:5} {uid:5} {gid:5} {:10} {:10} {ctime:10}\n",
                    0, 0
                );
            }
            let got = parse_msg(&text).unwrap();
            prop_assert_eq!(got.len(), rows.len());
            for (g, &(key, id, mode, uid, gid, cbytes, qnum, lspid, lrpid, ctime)) in got.iter().zip(&rows) {
                prop_assert_eq!(g.perm, Perm { key, id, mode, uid, gid, cuid: uid, cgid: gid, ctime });
                prop_assert_eq!((g.cbytes, g.qnum, g.lspid, g.lrpid), (cbytes, qnum, lspid, lrpid));
            }
        }

        /// Arbitrary text never panics the parsers.
        #[test]
        fn no_panics(text in "[ 0-9a-z\n-]{0,200}") {
            let _ = parse_shm(&text);
            let _ = parse_sem(&text);
            let _ = parse_msg(&text);
        }
    }
}
