//! The SysV IPC objects of an image directory (ipcns-shm/sem/msg-N.img),
//! for `ckpt show`: ids, keys, owners, modes, sizes, semaphore values and
//! message counts, as the loader (`images::set`) read them.

use serde_json::{json, Value};

use crate::images::pb;
use crate::images::set::SysvIpc;

use super::names::human;

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
    for seg in &ipc.shm {
        let (ns, e) = (seg.ns, &seg.entry);
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
    for set in &ipc.sem {
        let (ns, e) = (set.ns, &set.entry);
        let v: Vec<String> = set.values.iter().map(u16::to_string).collect();
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
    for q in &ipc.msg {
        let (ns, e, msgs) = (q.ns, &q.entry, &q.msgs);
        let bytes: u64 = msgs.iter().map(|m| m.1.len() as u64).sum();
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
        "shm": ipc.shm.iter().map(|s| json!({
            "ns": s.ns, "desc": desc_json(&s.entry.desc), "size": s.entry.size,
        })).collect::<Vec<_>>(),
        "sem": ipc.sem.iter().map(|s| json!({
            "ns": s.ns, "desc": desc_json(&s.entry.desc), "values": s.values,
            "pids": s.entry.ckpt_sempid,
        })).collect::<Vec<_>>(),
        "msg": ipc.msg.iter().map(|q| json!({
            "ns": q.ns, "desc": desc_json(&q.entry.desc), "qbytes": q.entry.qbytes,
            "messages": q.msgs.iter()
                .map(|(t, text)| json!({ "mtype": t, "size": text.len() }))
                .collect::<Vec<_>>(),
            "lspid": q.entry.ckpt_lspid,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::set::ImageSet;
    use crate::images::{ImageWriter, Magic};

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
        let set = ImageSet::read(d.path()).unwrap();
        let ipc = &set.sysvipc;
        let problems: Vec<&String> = set
            .problems
            .iter()
            .filter(|p| p.contains("ipcns"))
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
        let lines: Vec<String> = text(ipc).into_iter().map(|(_, l)| l).collect();
        let all = lines.join("\n");
        assert!(all.contains("shm 5"), "{all}");
        assert!(all.contains("SHM_DEST"), "{all}");
        assert!(all.contains("3 semaphores: 3 5 7"), "{all}");
        assert!(all.contains("key 0x00004321"), "{all}");
        assert!(
            all.contains("2 messages") && all.contains("types 2 7"),
            "{all}"
        );
        let j = json(ipc);
        assert_eq!(j["sem"][0]["values"], json!([3, 5, 7]));
        assert_eq!(j["msg"][0]["lspid"], json!(11));

        // A truncated file is a problem naming it, not a panic.
        let p = d.path().join("ipcns-sem-2.img");
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 4).unwrap();
        let set = ImageSet::read(d.path()).unwrap();
        assert!(
            set.problems.iter().any(|p| p.contains("ipcns-sem-2.img")),
            "{:?}",
            set.problems
        );
    }
}
