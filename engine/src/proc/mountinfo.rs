//! `/proc/PID/mountinfo`:
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
//! ```
//!
//! root, mount point and source have space, tab, newline and backslash
//! escaped as `\ooo` octal; they are decoded here.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use super::{dec, read_parsed, ParseError, Pid, ProcError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountInfo {
    pub mnt_id: u64,
    pub parent_id: u64,
    pub major: u32,
    pub minor: u32,
    /// The root of the mount within its filesystem (decoded).
    pub root: PathBuf,
    /// Relative to the reader's root (decoded).
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,relatime`).
    pub options: String,
    /// `shared:N`, `master:N`, `propagate_from:N`, `unbindable`.
    pub optional: Vec<String>,
    /// `ext4`, `fuse.sshfs` ...
    pub fstype: String,
    /// Decoded; "none" and the like are kept as the kernel prints them.
    pub source: String,
    pub super_options: String,
}

impl MountInfo {
    fn tag(&self, tag: &str) -> Option<u64> {
        self.optional.iter().find_map(|o| {
            o.strip_prefix(tag)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|n| n.parse().ok())
        })
    }
    /// Peer group id when the mount is shared.
    pub fn shared(&self) -> Option<u64> {
        self.tag("shared")
    }
    /// Peer group this mount is a slave of.
    pub fn master(&self) -> Option<u64> {
        self.tag("master")
    }
    pub fn propagate_from(&self) -> Option<u64> {
        self.tag("propagate_from")
    }
    pub fn unbindable(&self) -> bool {
        self.optional.iter().any(|o| o == "unbindable")
    }
    /// Combined "rw,nosuid" per-mount options as a list.
    pub fn option_list(&self) -> impl Iterator<Item = &str> {
        self.options.split(',').filter(|s| !s.is_empty())
    }
}

/// Decode `\ooo` octal escapes into bytes. A backslash not followed by three
/// octal digits is kept as is.
pub fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if v <= 0xff {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn path(s: &str) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape_octal(s)))
}

pub fn parse_line(line: &str) -> Result<MountInfo, String> {
    let mut w = line.split(' ');
    let mut next = |what: &str| {
        w.next()
            .filter(|s| !s.is_empty())
            .ok_or(format!("missing {what}"))
    };
    let mnt_id = dec(next("mount id")?, "mount id")?;
    let parent_id = dec(next("parent id")?, "parent id")?;
    let dev = next("major:minor")?;
    let (ma, mi) = dev
        .split_once(':')
        .ok_or_else(|| format!("bad major:minor {dev:?}"))?;
    let major = dec(ma, "major")?;
    let minor = dec(mi, "minor")?;
    let root = path(next("root")?);
    let mount_point = path(next("mount point")?);
    let options = next("mount options")?.to_string();
    let mut optional = Vec::new();
    loop {
        let f = next("\"-\" separator")?;
        if f == "-" {
            break;
        }
        optional.push(f.to_string());
    }
    let fstype = next("filesystem type")?.to_string();
    // The source may be empty in principle; the kernel prints "none" then,
    // but be lenient.
    let source = w.next().ok_or("missing source")?;
    let source = String::from_utf8_lossy(&unescape_octal(source)).into_owned();
    let super_options = w.next().ok_or("missing super options")?.to_string();
    if let Some(extra) = w.next() {
        return Err(format!("unexpected {extra:?} after the super options"));
    }
    Ok(MountInfo {
        mnt_id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        options,
        optional,
        fstype,
        source,
        super_options,
    })
}

pub fn parse(text: &str) -> Result<Vec<MountInfo>, ParseError> {
    text.split('\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| parse_line(l).map_err(|r| ParseError::new("mountinfo", i + 1, r)))
        .collect()
}

/// `/proc/<pid>/mountinfo`: the mounts of the task's mount namespace, as
/// seen from its root.
pub fn read(pid: Pid) -> Result<Vec<MountInfo>, ProcError> {
    read_parsed(pid, "mountinfo", parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    const TEXT: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334524k,nr_inodes=3083631,mode=755
36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
40 36 0:50 /a\\040b /my\\040mnt\\011tab\\134x rw shared:5 propagate_from:2 unbindable - fuse.sshfs user@host:/x\\040y rw,user_id=0
";

    #[test]
    fn fixed() {
        let m = parse(TEXT).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(
            m[0],
            MountInfo {
                mnt_id: 22,
                parent_id: 27,
                major: 0,
                minor: 21,
                root: "/".into(),
                mount_point: "/proc".into(),
                options: "rw,relatime".into(),
                optional: vec![],
                fstype: "proc".into(),
                source: "proc".into(),
                super_options: "rw".into(),
            }
        );
        assert_eq!(
            m[1].super_options,
            "rw,size=12334524k,nr_inodes=3083631,mode=755"
        );
        assert_eq!((m[2].major, m[2].minor), (98, 0));
        assert_eq!(m[2].master(), Some(1));
        assert_eq!(m[2].shared(), None);
        assert_eq!(m[2].option_list().collect::<Vec<_>>(), ["rw", "noatime"]);
        assert_eq!(m[3].root, Path::new("/a b"));
        assert_eq!(m[3].mount_point, Path::new("/my mnt\ttab\\x"));
        assert_eq!(m[3].shared(), Some(5));
        assert_eq!(m[3].propagate_from(), Some(2));
        assert!(m[3].unbindable());
        assert_eq!(m[3].fstype, "fuse.sshfs");
        assert_eq!(m[3].source, "user@host:/x y");
    }

    #[test]
    fn errors() {
        let e = parse(
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n22 27 0:21 / /proc rw proc proc rw\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("separator"), "{e}");
        assert!(parse("x 27 0:21 / /proc rw - proc proc rw").is_err());
        assert!(parse("22 27 021 / /proc rw - proc proc rw").is_err());
        assert!(parse("22 27 0:21 / /proc rw - proc proc rw extra").is_err());
        assert!(parse("22 27 0:21 / /proc rw - proc proc").is_err());
    }

    #[test]
    fn unescape() {
        assert_eq!(unescape_octal("a\\040b"), b"a b");
        assert_eq!(unescape_octal("\\134"), b"\\");
        assert_eq!(unescape_octal("\\12"), b"\\12");
        assert_eq!(unescape_octal("x\\"), b"x\\");
        assert_eq!(unescape_octal("\\777"), b"\\777");
        assert_eq!(unescape_octal("\\377"), [0xff]);
    }

    #[test]
    fn self_mountinfo() {
        let me = std::process::id() as Pid;
        let m = read(me).unwrap();
        assert!(!m.is_empty());
        let proc = m
            .iter()
            .find(|m| m.mount_point == Path::new("/proc"))
            .unwrap();
        assert_eq!(proc.fstype, "proc");
        assert!(m.iter().any(|m| m.mount_point == Path::new("/")));
        // Mount ids are unique.
        let mut ids: Vec<u64> = m.iter().map(|m| m.mnt_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), m.len());
    }

    fn escape(b: &[u8]) -> String {
        let mut s = String::new();
        for &c in b {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\\') {
                s += &format!("\\{c:03o}");
            } else {
                s.push(c as char);
            }
        }
        s
    }

    proptest! {
        #[test]
        fn roundtrip(
            id: u32, parent: u32, major in 0u32..4096, minor in 0u32..(1 << 20),
            root in "/[ -~\t\n]{0,20}", mp in "/[ -~\t\n]{0,20}",
            shared in proptest::option::of(1u64..1000),
            src in "[!-~ ]{1,20}",
        ) {
            let opt = shared.map(|s| format!(" shared:{s}")).unwrap_or_default();
            let line = format!(
                "{id} {parent} {major}:{minor} {} {} rw,relatime{opt} - ext4 {} rw\n",
                escape(root.as_bytes()), escape(mp.as_bytes()), escape(src.as_bytes()),
            );
            let m = parse(&line).unwrap();
            prop_assert_eq!(m.len(), 1);
            let m = &m[0];
            prop_assert_eq!((m.mnt_id, m.parent_id), (id as u64, parent as u64));
            prop_assert_eq!((m.major, m.minor), (major, minor));
            prop_assert_eq!(m.root.to_str().unwrap(), root);
            prop_assert_eq!(m.mount_point.to_str().unwrap(), mp);
            prop_assert_eq!(m.shared(), shared);
            prop_assert_eq!(&m.source, &src);
        }
    }
}
