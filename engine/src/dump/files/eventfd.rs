//! eventfd: its counter, from fdinfo, and its flags; the restore makes a
//! new eventfd and writes the counter back.

use super::{FdCx, FdDumper, FdLink, FileTable};
use crate::error::Result;
use crate::images::pb;

pub struct Eventfd;

impl FdDumper for Eventfd {
    fn claims(&self, link: &FdLink<'_>) -> bool {
        *link == FdLink::AnonInode("[eventfd]")
    }

    fn dump(&self, fd: &FdCx<'_>, table: &mut FileTable) -> Result<(pb::FdTypes, u32)> {
        let counter = fd.field("eventfd", "eventfd-count", fd.info.eventfd_count())?;
        let id = table.next_id();
        table.entries.push(pb::FileEntry {
            r#type: pb::FdTypes::Eventfd as i32,
            id,
            efd: Some(pb::EventfdFileEntry {
                id,
                flags: fd.flags,
                fown: pb::FownEntry::default(),
                counter,
            }),
            ..Default::default()
        });
        Ok((pb::FdTypes::Eventfd, id))
    }
}
