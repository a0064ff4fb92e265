//! signalfd: the signal mask it reads, from fdinfo, and its flags; the
//! restore makes a new signalfd for the same signals (the pending signals
//! themselves are the task's, dumped with it).

use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::Result;
use crate::images::pb;

pub struct Signalfd;

impl FdDumper for Signalfd {
    fn claims(&self, link: &FdLink<'_>) -> bool {
        *link == FdLink::AnonInode("[signalfd]")
    }

    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)> {
        let sigmask = fd.field("signalfd", "sigmask", fd.info.signalfd_sigmask())?;
        let id = table.next_id();
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Signalfd as i32,
            id,
            sgfd: Some(pb::SignalfdEntry {
                id,
                flags: fd.flags,
                fown: pb::FownEntry::default(),
                sigmask,
            }),
            ..Default::default()
        });
        Ok((pb::FdTypes::Signalfd, id))
    }
}
