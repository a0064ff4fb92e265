//! SysV IPC objects of an image directory (ipcns-{shm,sem,msg}-N.img):
//! every object with its contents (a segment's bytes stay in the file,
//! located by their offset). A damaged file is read as far as it reads.

use std::path::PathBuf;

use super::{ImageSet, Loader, MAX_QUEUED_BYTES, PAGE};
use crate::images::{self, pb, ImageError, ImageReader, Magic};

#[derive(Debug, Clone, Default)]
pub struct SysvIpc {
    pub shm: Vec<ShmSegment>,
    pub sem: Vec<SemSet>,
    pub msg: Vec<MsgQueue>,
}

/// A segment; its bytes stay in the image until restored.
#[derive(Debug, Clone)]
pub struct ShmSegment {
    /// The IPC namespace id its file is named for.
    pub ns: u32,
    pub entry: pb::IpcShmEntry,
    /// ipcns-shm-N.img and the offset of the segment's bytes in it (none
    /// with in_pagemaps, CRIU's newer layout).
    pub path: PathBuf,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct SemSet {
    pub ns: u32,
    pub entry: pb::IpcSemEntry,
    pub values: Vec<u16>,
}

#[derive(Debug, Clone)]
pub struct MsgQueue {
    pub ns: u32,
    pub entry: pb::IpcMsgEntry,
    /// (mtype, text), oldest first.
    pub msgs: Vec<(u64, Vec<u8>)>,
}

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

/// Reads every ipcns-{shm,sem,msg}-N.img among `names`; problems go to
/// `problems`, each naming its file.
pub(super) fn read(ld: &Loader<'_>, names: &[String], problems: &mut Vec<String>) -> SysvIpc {
    let mut out = SysvIpc::default();
    for name in names {
        let path = ld.dir.join(name);
        let r = if let Some(ns) = ns_of(name, "shm") {
            read_shm(path, ns, &mut out)
        } else if let Some(ns) = ns_of(name, "sem") {
            read_sem(path, ns, &mut out)
        } else if let Some(ns) = ns_of(name, "msg") {
            read_msg(path, ns, &mut out)
        } else {
            Ok(())
        };
        if let Err(e) = r {
            problems.push(ld.msg(&e));
        }
    }
    out
}

type R = images::Result<()>;

fn read_shm(path: PathBuf, ns: u32, out: &mut SysvIpc) -> R {
    let mut r = ImageReader::open(&path, Magic::IpcnsShm)?;
    while let Some(entry) = r.read_entry::<pb::IpcShmEntry>()? {
        let offset = r.offset();
        if entry.in_pagemaps != Some(true) {
            r.skip_raw(entry.size.div_ceil(4) * 4)?;
        }
        out.shm.push(ShmSegment {
            ns,
            entry,
            path: path.clone(),
            offset,
        });
    }
    Ok(())
}

fn read_sem(path: PathBuf, ns: u32, out: &mut SysvIpc) -> R {
    let mut r = ImageReader::open(&path, Magic::IpcnsSem)?;
    while let Some(entry) = r.read_entry::<pb::IpcSemEntry>()? {
        let n = entry.nsems as usize;
        if n > 65536 {
            return Err(ImageError::invalid(
                &path,
                format!("semaphore set {}: {n} semaphores", entry.desc.id),
            ));
        }
        let mut raw = vec![0u8; (n * 2).div_ceil(8) * 8];
        r.read_raw(&mut raw)?;
        let values = raw[..n * 2]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        out.sem.push(SemSet { ns, entry, values });
    }
    Ok(())
}

fn read_msg(path: PathBuf, ns: u32, out: &mut SysvIpc) -> R {
    let mut r = ImageReader::open(&path, Magic::IpcnsMsg)?;
    while let Some(entry) = r.read_entry::<pb::IpcMsgEntry>()? {
        let mut msgs = Vec::new();
        let mut total = 0u64;
        for i in 0..entry.qnum {
            let Some(m) = r.read_entry::<pb::IpcMsg>()? else {
                return Err(ImageError::invalid(
                    &path,
                    format!(
                        "queue {}: ends after {i} of its {} messages",
                        entry.desc.id, entry.qnum
                    ),
                ));
            };
            total += m.msize as u64;
            if total > MAX_QUEUED_BYTES {
                return Err(ImageError::invalid(
                    &path,
                    format!("queue {}: {total} bytes is implausible", entry.desc.id),
                ));
            }
            let mut raw = vec![0u8; (m.msize as usize).div_ceil(8) * 8];
            r.read_raw(&mut raw)?;
            raw.truncate(m.msize as usize);
            msgs.push((m.mtype, raw));
        }
        out.msg.push(MsgQueue { ns, entry, msgs });
    }
    Ok(())
}

/// Every SysV mapping of every task refers to a segment of the images and
/// lies inside it.
pub(super) fn cross_check(set: &ImageSet) -> Vec<String> {
    const SYSVIPC: u32 = 1 << 10;
    let mut out = Vec::new();
    for t in &set.tasks {
        let Ok(mm) = &t.mm else { continue };
        for v in mm.vmas.iter().filter(|v| v.status & SYSVIPC != 0) {
            let seg = set
                .sysvipc
                .shm
                .iter()
                .find(|s| s.entry.desc.id as u64 == v.shmid);
            let what = format!(
                "mm-{}.img: SysV mapping {:#x}-{:#x} refers to segment {}",
                t.pid(),
                v.start,
                v.end,
                v.shmid
            );
            match seg {
                None => out.push(format!("{what}, which no ipcns-shm image has")),
                Some(s) if v.pgoff + (v.end - v.start) > s.entry.size.div_ceil(PAGE) * PAGE => {
                    out.push(format!("{what}, which is only {} bytes", s.entry.size))
                }
                _ => {}
            }
        }
    }
    out
}
