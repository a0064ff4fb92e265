//! The namespaces an image directory holds: `utsns-N.img`,
//! `ipcns-var-N.img`, `pidns-N.img`, `timens-N.img`, `mountpoints-N.img`,
//! `netns-N.img` with `netdev-N.img` and the raw ifaddr, route, route6,
//! rule and nftables images, `userns-N.img` (N: the namespace's id
//! in the dump, as in the tasks' ids). A namespace of the tree's own has
//! its image; a task whose namespace has none lives in the restoring
//! engine's (the host's).

use std::collections::BTreeMap;

use super::{Loader, Part};
use crate::images::magic::Magic;
use crate::images::pb;

/// The namespace images, by namespace id.
#[derive(Clone, Debug, Default)]
pub struct Namespaces {
    pub uts: BTreeMap<u32, Part<pb::UtsnsEntry>>,
    pub ipc: BTreeMap<u32, Part<pb::IpcVarEntry>>,
    pub pid: BTreeMap<u32, Part<pb::PidnsEntry>>,
    pub time: BTreeMap<u32, Part<pb::TimensEntry>>,
    /// A mount namespace's mounts, in the order they were made.
    pub mnt: BTreeMap<u32, Part<Vec<pb::MntEntry>>>,
    pub net: BTreeMap<u32, Part<pb::NetnsEntry>>,
    /// A network namespace's devices.
    pub netdev: BTreeMap<u32, Part<Vec<pb::NetDeviceEntry>>>,
    /// A network namespace's raw images (ifaddr, route, route6, rule,
    /// nftables), by namespace id then file prefix.
    pub netraw: BTreeMap<u32, BTreeMap<&'static str, Part<Vec<u8>>>>,
    /// A user namespace's maps.
    pub user: BTreeMap<u32, Part<pb::UsernsEntry>>,
}

/// The raw images of a network namespace, `PREFIX-N.img`.
pub const NET_RAW: [&str; 5] = ["ifaddr", "route", "route6", "rule", "nftables"];

impl Namespaces {
    pub fn is_empty(&self) -> bool {
        self.uts.is_empty()
            && self.ipc.is_empty()
            && self.pid.is_empty()
            && self.time.is_empty()
            && self.mnt.is_empty()
            && self.net.is_empty()
            && self.user.is_empty()
    }
}

/// The id N of `PREFIX-N.img`.
fn id_of(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?
        .strip_suffix(".img")?
        .parse()
        .ok()
}

/// Reads every namespace image among `names`; problems go to `problems`,
/// each naming its file.
pub(super) fn read(ld: &Loader<'_>, names: &[String], problems: &mut Vec<String>) -> Namespaces {
    let mut out = Namespaces::default();
    fn keep<M>(
        map: &mut BTreeMap<u32, Part<M>>,
        id: u32,
        part: Part<M>,
        problems: &mut Vec<String>,
    ) {
        if let Err(e) = &part {
            problems.push(e.to_string());
        }
        map.insert(id, part);
    }
    for name in names {
        if let Some(id) = id_of(name, "utsns-") {
            keep(&mut out.uts, id, ld.one(name, Magic::Utsns), problems);
        } else if let Some(id) = id_of(name, "ipcns-var-") {
            keep(&mut out.ipc, id, ld.one(name, Magic::IpcVar), problems);
        } else if let Some(id) = id_of(name, "pidns-") {
            keep(&mut out.pid, id, ld.one(name, Magic::Pidns), problems);
        } else if let Some(id) = id_of(name, "timens-") {
            keep(&mut out.time, id, ld.one(name, Magic::Timens), problems);
        } else if let Some(id) = id_of(name, "mountpoints-") {
            keep(&mut out.mnt, id, ld.all(name, Magic::Mnts), problems);
        } else if let Some(id) = id_of(name, "netns-") {
            keep(&mut out.net, id, ld.one(name, Magic::Netns), problems);
        } else if let Some(id) = id_of(name, "userns-") {
            keep(&mut out.user, id, ld.one(name, Magic::Userns), problems);
        } else if let Some(id) = id_of(name, "netdev-") {
            keep(&mut out.netdev, id, ld.all(name, Magic::Netdev), problems);
        } else if let Some((prefix, id)) = NET_RAW
            .iter()
            .find_map(|p| Some((*p, id_of(name, &format!("{p}-"))?)))
        {
            let part = ld.raw(name);
            if let Err(e) = &part {
                problems.push(e.to_string());
            }
            out.netraw.entry(id).or_default().insert(prefix, part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::id_of;

    #[test]
    fn names() {
        assert_eq!(id_of("utsns-3.img", "utsns-"), Some(3));
        assert_eq!(id_of("ipcns-var-12.img", "ipcns-var-"), Some(12));
        assert_eq!(id_of("ipcns-shm-12.img", "ipcns-var-"), None);
        assert_eq!(id_of("utsns-x.img", "utsns-"), None);
    }
}
