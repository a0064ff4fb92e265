//! `/proc/PID/ns/*`: the namespaces of a task, as (kind, inode) from the
//! links (`mnt -> mnt:[4026531841]`).

use super::{proc_path, ParseError, Pid, ProcError};

/// The namespace kinds a task has links for.
pub const KINDS: [&str; 10] = [
    "cgroup",
    "ipc",
    "mnt",
    "net",
    "pid",
    "pid_for_children",
    "time",
    "time_for_children",
    "user",
    "uts",
];

/// Parse a link target `kind:[inode]`.
pub fn parse_link(link: &str) -> Result<(String, u64), ParseError> {
    let err = || ParseError::new("ns", 0, format!("bad namespace link {link:?}"));
    let (kind, rest) = link.split_once(':').ok_or_else(err)?;
    let ino = rest
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(err)?;
    if kind.is_empty() {
        return Err(err());
    }
    Ok((kind.to_string(), ino))
}

/// The inode of one namespace of a task (`kind` as in [`KINDS`]).
pub fn ns_id(pid: Pid, kind: &str) -> Result<u64, ProcError> {
    let path = proc_path(pid, &format!("ns/{kind}"));
    let link = std::fs::read_link(&path).map_err(|e| ProcError::io(pid, &path, e))?;
    let (_, ino) = parse_link(&link.to_string_lossy())
        .map_err(|e| ProcError::parse(pid, e.with_path(&path)))?;
    Ok(ino)
}

/// Every namespace link of a task: (kind, inode), sorted by kind. The kind
/// is the link's file name (`pid_for_children`, not the `pid` of its
/// target). A `*_for_children` link that cannot be read (ENOENT: the task
/// unshared its pid namespace and has not forked the namespace's init yet)
/// is left out.
pub fn ns_ids(pid: Pid) -> Result<Vec<(String, u64)>, ProcError> {
    let dir = proc_path(pid, "ns");
    let entries = std::fs::read_dir(&dir).map_err(|e| ProcError::io(pid, &dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ProcError::io(pid, &dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let link = match std::fs::read_link(&path) {
            Ok(l) => l,
            // pid_for_children of a task that unshared its pid namespace and
            // has no child yet reads as ENOENT.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && name.ends_with("_for_children") => {
                continue
            }
            Err(e) => return Err(ProcError::io(pid, path, e)),
        };
        let (_, ino) = parse_link(&link.to_string_lossy())
            .map_err(|e| ProcError::parse(pid, e.with_path(&path)))?;
        out.push((name, ino));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn links() {
        assert_eq!(
            parse_link("mnt:[4026531841]").unwrap(),
            ("mnt".into(), 4026531841)
        );
        assert_eq!(parse_link("time:[1]").unwrap(), ("time".into(), 1));
        for bad in ["mnt", "mnt:4026531841", ":[1]", "mnt:[x]", "mnt:[1", ""] {
            assert!(parse_link(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn self_ns() {
        let me = std::process::id() as Pid;
        let ids = ns_ids(me).unwrap();
        let kinds: Vec<&str> = ids.iter().map(|(k, _)| k.as_str()).collect();
        for k in ["mnt", "pid", "net", "ipc", "uts", "user", "cgroup", "time"] {
            assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
        }
        let mnt = ids.iter().find(|(k, _)| k == "mnt").unwrap().1;
        assert_eq!(mnt, std::fs::metadata("/proc/self/ns/mnt").unwrap().ino());
        assert_eq!(
            ns_id(me, "net").unwrap(),
            ids.iter().find(|(k, _)| k == "net").unwrap().1
        );
        assert!(ns_id(me, "nope").unwrap_err().is_gone());
    }
}
