//! The SysV IPC objects of an image directory (ipcns-shm/sem/msg-N.img),
//! for `ckpt show`: ids, keys, owners, modes, sizes, semaphore values and
//! message counts. Read on its own (not through restore::ipc), so that a
//! damaged file is shown as far as it reads, with the problem named.

use std::path::Path;

use serde_json::{json, Value};

use crate::images::pagemap::PAGE;
use crate::images::{pb, ImageReader, Magic};

use super::names::human;

#[derive(Debug, Clone, Default)]
pub struct SysvIpc {
    /// (namespace id, entry, stored bytes)
    pub shm: Vec<(u32, pb::IpcShmEntry)>,
    /// (namespace id, entry, values)
    pub sem: Vec<(u32, pb::IpcSemEntry, Vec<u16>)>,
    /// (namespace id, entry, (mtype, size) per message)
    pub msg: Vec<(u32, pb::IpcMsgEntry, Vec<MsgSize>)>,
}

/// A message's type and size.
pub type MsgSize = (u64, u32);

impl SysvIpc {
    pub fn is_empty(&self) -> bool {
        self.shm.is_empty() && self.sem.is_empty() && self.msg.is_empty()
    }
}

/// The namespace id of `ipcns-KIND-N.img`.
fn ns_of(name: &str, kind: &str) -> Option<u32> {
    name.strip_prefix(&format!("ipcns-{kind}-"))?
        .strip_suffix(".img")?
        .parse()
        .ok()
}

/// Reads every ipcns-{shm,sem,msg}-N.img of `dir`; problems go to
/// `problems`, each naming its file.
pub fn load(dir: &Path, names: &[String], problems: &mut Vec<String>) -> SysvIpc {
    let mut out = SysvIpc::default();
    for name in names {
        let path = dir.join(name);
        let r = if let Some(ns) = ns_of(name, "shm") {
            load_shm(&path, ns, &mut out)
        } else if let Some(ns) = ns_of(name, "sem") {
            load_sem(&path, ns, &mut out)
        } else if let Some(ns) = ns_of(name, "msg") {
            load_msg(&path, ns, &mut out)
        } else {
            Ok(())
        };
        if let Err(e) = r {
            // Named by file, as the other sections name theirs.
            problems.push(e.to_string().replace(&format!("{}/", dir.display()), ""));
        }
    }
    out
}

type R = crate::images::Result<()>;

fn load_shm(path: &Path, ns: u32, out: &mut SysvIpc) -> R {
    let mut r = ImageReader::open(path, Magic::IpcnsShm)?;
    while let Some(e) = r.read_entry::<pb::IpcShmEntry>()? {
        if e.in_pagemaps != Some(true) {
            r.skip_raw(e.size.div_ceil(4) * 4)?;
        }
        out.shm.push((ns, e));
    }
    Ok(())
}

fn load_sem(path: &Path, ns: u32, out: &mut SysvIpc) -> R {
    let mut r = ImageReader::open(path, Magic::IpcnsSem)?;
    while let Some(e) = r.read_entry::<pb::IpcSemEntry>()? {
        let n = e.nsems as usize;
        let mut raw = vec![0u8; (n * 2).div_ceil(8) * 8];
        r.read_raw(&mut raw)?;
        let vals = raw[..n * 2]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        out.sem.push((ns, e, vals));
    }
    Ok(())
}

fn load_msg(path: &Path, ns: u32, out: &mut SysvIpc) -> R {
    let mut r = ImageReader::open(path, Magic::IpcnsMsg)?;
    while let Some(e) = r.read_entry::<pb::IpcMsgEntry>()? {
        let mut msgs = Vec::new();
        for _ in 0..e.qnum {
            let Some(m) = r.read_entry::<pb::IpcMsg>()? else {
                break;
            };
            r.skip_raw((m.msize as u64).div_ceil(8) * 8)?;
            msgs.push((m.mtype, m.msize));
        }
        out.msg.push((ns, e, msgs));
    }
    Ok(())
}

/// Every SysV mapping of every task refers to a segment of the images and
/// lies inside it (as restore checks).
pub fn cross_check(set: &super::ImageSet) -> Vec<String> {
    const SYSVIPC: u32 = 1 << 10;
    let mut out = Vec::new();
    for t in &set.tasks {
        let Ok(mm) = &t.mm else { continue };
        for v in mm.vmas.iter().filter(|v| v.status & SYSVIPC != 0) {
            let seg = set
                .sysvipc
                .shm
                .iter()
                .find(|(_, e)| e.desc.id as u64 == v.shmid);
            let what = format!(
                "mm-{}.img: SysV mapping {:#x}-{:#x} refers to segment {}",
                t.pid(),
                v.start,
                v.end,
                v.shmid
            );
            match seg {
                None => out.push(format!("{what}, which no ipcns-shm image has")),
                Some((_, e)) if v.pgoff + (v.end - v.start) > e.size.div_ceil(PAGE) * PAGE => {
                    out.push(format!("{what}, which is only {} bytes", e.size))
                }
                _ => {}
            }
        }
    }
    out
}

/// SHM_DEST / SHM_LOCKED, shown after the mode.
fn mode_text(mode: u32) -> String {
    let mut s = format!("{:04o}", mode & 0o777);
    if mode & 0o1000 != 0 {
        s += " SHM_DEST (removed while attached)";
    }
    if mode & 0o2000 != 0 {
        s += " SHM_LOCKED";
    }
    s
}

fn desc_text(d: &pb::IpcDescEntry) -> String {
    format!(
        "key {:#010x}  owner {}:{}  creator {}:{}  mode {}",
        d.key,
        d.uid,
        d.gid,
        d.cuid,
        d.cgid,
        mode_text(d.mode)
    )
}

/// The text section: (indent, line) pairs.
pub fn text(ipc: &SysvIpc) -> Vec<(usize, String)> {
    let mut out = vec![(0, "SysV IPC objects (ipcns-*.img)".to_string())];
    for (ns, e) in &ipc.shm {
        out.push((
            2,
            format!(
                "shm {:<6} {}  size {}  (ipc ns {ns})",
                e.desc.id,
                desc_text(&e.desc),
                human(e.size)
            ),
        ));
    }
    for (ns, e, vals) in &ipc.sem {
        let v: Vec<String> = vals.iter().map(u16::to_string).collect();
        out.push((
            2,
            format!(
                "sem {:<6} {}  {} semaphores: {}  (ipc ns {ns})",
                e.desc.id,
                desc_text(&e.desc),
                e.nsems,
                v.join(" ")
            ),
        ));
    }
    for (ns, e, msgs) in &ipc.msg {
        let bytes: u64 = msgs.iter().map(|m| m.1 as u64).sum();
        let types: Vec<String> = msgs.iter().map(|m| m.0.to_string()).collect();
        out.push((
            2,
            format!(
                "msg {:<6} {}  {} messages, {} of {}; types {}  (ipc ns {ns})",
                e.desc.id,
                desc_text(&e.desc),
                msgs.len(),
                human(bytes),
                human(e.qbytes as u64),
                if types.is_empty() {
                    "-".to_string()
                } else {
                    types.join(" ")
                }
            ),
        ));
    }
    out
}

fn desc_json(d: &pb::IpcDescEntry) -> Value {
    json!({
        "id": d.id, "key": d.key, "uid": d.uid, "gid": d.gid,
        "cuid": d.cuid, "cgid": d.cgid, "mode": d.mode, "ctime": d.ckpt_ctime,
    })
}

pub fn json(ipc: &SysvIpc) -> Value {
    json!({
        "shm": ipc.shm.iter().map(|(ns, e)| json!({
            "ns": ns, "desc": desc_json(&e.desc), "size": e.size,
        })).collect::<Vec<_>>(),
        "sem": ipc.sem.iter().map(|(ns, e, v)| json!({
            "ns": ns, "desc": desc_json(&e.desc), "values": v, "pids": e.ckpt_sempid,
        })).collect::<Vec<_>>(),
        "msg": ipc.msg.iter().map(|(ns, e, m)| json!({
            "ns": ns, "desc": desc_json(&e.desc), "qbytes": e.qbytes,
            "messages": m.iter().map(|(t, s)| json!({ "mtype": t, "size": s })).collect::<Vec<_>>(),
            "lspid": e.ckpt_lspid,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageWriter;

    fn desc(id: u32, key: u32, mode: u32) -> pb::IpcDescEntry {
        pb::IpcDescEntry {
            key,
            uid: 18943,
            gid: 58467,
            cuid: 18943,
            cgid: 58467,
            mode,
            id,
            ckpt_ctime: Some(1),
        }
    }

    #[test]
    fn shows_every_kind() {
        let d = tempfile::tempdir().unwrap();
        let mut w = ImageWriter::create(d.path().join("ipcns-shm-2.img"), Magic::IpcnsShm).unwrap();
        w.write_entry(&pb::IpcShmEntry {
            desc: desc(5, 0, 0o1600),
            size: 6,
            in_pagemaps: None,
        })
        .unwrap();
        w.write_raw(&[1, 2, 3, 4, 5, 6, 0, 0]).unwrap();
        w.finish().unwrap();
        let mut w = ImageWriter::create(d.path().join("ipcns-sem-2.img"), Magic::IpcnsSem).unwrap();
        w.write_entry(&pb::IpcSemEntry {
            desc: desc(7, 0x1234, 0o640),
            nsems: 3,
            ckpt_sempid: vec![10, 11, 10],
        })
        .unwrap();
        w.write_raw(&[3, 0, 5, 0, 7, 0, 0, 0]).unwrap();
        w.finish().unwrap();
        let mut w = ImageWriter::create(d.path().join("ipcns-msg-2.img"), Magic::IpcnsMsg).unwrap();
        w.write_entry(&pb::IpcMsgEntry {
            desc: desc(9, 0x4321, 0o600),
            qbytes: 16384,
            qnum: 2,
            ckpt_lspid: Some(11),
        })
        .unwrap();
        for (t, n) in [(2u64, 3usize), (7, 0)] {
            w.write_entry(&pb::IpcMsg {
                mtype: t,
                msize: n as u32,
            })
            .unwrap();
            w.write_raw(&vec![0u8; n.div_ceil(8) * 8]).unwrap();
        }
        w.finish().unwrap();
        let names: Vec<String> = ["ipcns-msg-2.img", "ipcns-sem-2.img", "ipcns-shm-2.img"]
            .map(String::from)
            .to_vec();
        let mut problems = Vec::new();
        let ipc = load(d.path(), &names, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let lines: Vec<String> = text(&ipc).into_iter().map(|(_, l)| l).collect();
        let all = lines.join("\n");
        assert!(all.contains("shm 5"), "{all}");
        assert!(all.contains("SHM_DEST"), "{all}");
        assert!(all.contains("3 semaphores: 3 5 7"), "{all}");
        assert!(all.contains("key 0x00004321"), "{all}");
        assert!(
            all.contains("2 messages") && all.contains("types 2 7"),
            "{all}"
        );
        let j = json(&ipc);
        assert_eq!(j["sem"][0]["values"], json!([3, 5, 7]));
        assert_eq!(j["msg"][0]["lspid"], json!(11));

        // A truncated file is a problem naming it, not a panic.
        let p = d.path().join("ipcns-sem-2.img");
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 4).unwrap();
        let mut problems = Vec::new();
        load(d.path(), &names, &mut problems);
        assert!(
            problems.iter().any(|p| p.contains("ipcns-sem-2.img")),
            "{problems:?}"
        );
    }
}
