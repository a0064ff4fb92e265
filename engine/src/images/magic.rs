//! CRIU's image magic numbers (criu/include/magic.h) and the table of image
//! files: which name pattern holds which magic and which message type, and
//! how the file is framed.
//!
//! Framing, as CRIU (criu/image.c) and crit (lib/pycriu/images/images.py)
//! both do it for "images v1.1":
//!
//! * `inventory.img`: the INVENTORY magic only, then entries;
//! * `stats-*.img`, `irmap-cache.img`: IMG_SERVICE_MAGIC, then their magic;
//! * raw images (pages, tarballs, ip dumps; magic RAW_IMAGE_MAGIC = 0): no
//!   header at all, plain bytes;
//! * every other image: IMG_COMMON_MAGIC, then its own magic.
//!
//! All magics are u32 in host (little-endian) byte order.

use std::fmt;

/// The head magic of every ordinary image ("Sarov").
pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// The head magic of service files: stats and irmap-cache ("Zlatoust").
pub const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
/// "No magic": raw images carry no header.
pub const RAW_IMAGE_MAGIC: u32 = 0x0;
/// `inventory_entry.img_version` of every image set ckpt writes
/// (CRTOOLS_IMAGES_V1_1: the images have the common head magic).
pub const IMAGES_V1_1: u32 = 2;
/// `img_version` of an image set that needs ckpt: some of its pages are
/// shared with the parent process (PE_COW_PARENT). Any other value than
/// 1 and 2 makes CRIU refuse the set whole ("Not supported images
/// version"), where it would otherwise restore holes instead of pages.
pub const IMAGES_CKPT_COW: u32 = 0x636b_7031;

/// How an image file starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Head {
    /// Only the image's own magic (inventory.img).
    MagicOnly,
    /// IMG_COMMON_MAGIC, then the image's magic.
    Common,
    /// IMG_SERVICE_MAGIC, then the image's magic (stats, irmap-cache).
    Service,
    /// Nothing: raw bytes from offset 0 (pages, tarballs, ...).
    Raw,
}

impl Head {
    /// Size of the header in bytes.
    pub const fn len(self) -> u64 {
        match self {
            Head::MagicOnly => 4,
            Head::Common | Head::Service => 8,
            Head::Raw => 0,
        }
    }

    pub const fn is_empty(self) -> bool {
        matches!(self, Head::Raw)
    }
}

macro_rules! magics {
    ($( $(#[$doc:meta])* $variant:ident = $value:literal, $name:literal; )*) => {
        /// An image magic number of CRIU's magic.h. Several CRIU names share
        /// a value (SHMEM_PAGEMAP = PAGEMAP, PSIGNAL = SIGNAL, PAGES and the
        /// network/tarball dumps = RAW); each value appears here once.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Magic {
            $( $(#[$doc])* $variant, )*
        }

        impl Magic {
            /// Every magic, in magic.h order.
            pub const ALL: &'static [Magic] = &[ $( Magic::$variant, )* ];

            /// The u32 written to the file.
            pub const fn value(self) -> u32 {
                match self { $( Magic::$variant => $value, )* }
            }

            /// The name crit shows (magic.h's name without `_MAGIC`).
            pub const fn name(self) -> &'static str {
                match self { $( Magic::$variant => $name, )* }
            }

            /// The magic with this value, if it is one of CRIU's image magics.
            pub fn from_value(value: u32) -> Option<Magic> {
                match value {
                    $( $value => Some(Magic::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

magics! {
    /// No header: raw data (pages-*.img and friends).
    Raw = 0x0000_0000, "RAW";
    Inventory = 0x5831_3116, "INVENTORY";
    Pstree = 0x5027_3030, "PSTREE";
    Fdinfo = 0x5621_3732, "FDINFO";
    /// pagemap-<pid>.img and pagemap-shmem-<id>.img.
    Pagemap = 0x5608_4025, "PAGEMAP";
    Core = 0x5505_3847, "CORE";
    Ids = 0x5443_2030, "IDS";
    Vmas = 0x5412_3737, "VMAS";
    Pipes = 0x5651_3555, "PIPES";
    PipesData = 0x5645_3709, "PIPES_DATA";
    Fifo = 0x5836_4939, "FIFO";
    FifoData = 0x5933_3054, "FIFO_DATA";
    Sigact = 0x5534_4201, "SIGACT";
    Unixsk = 0x5437_3943, "UNIXSK";
    Inetsk = 0x5644_3851, "INETSK";
    Packetsk = 0x6045_4618, "PACKETSK";
    Itimers = 0x5746_4056, "ITIMERS";
    PosixTimers = 0x5260_3957, "POSIX_TIMERS";
    SkQueues = 0x5626_4026, "SK_QUEUES";
    Utsns = 0x5447_3203, "UTSNS";
    Creds = 0x5402_3547, "CREDS";
    IpcVar = 0x5311_5007, "IPC_VAR";
    IpcnsShm = 0x4628_3044, "IPCNS_SHM";
    IpcnsMsg = 0x5545_3737, "IPCNS_MSG";
    IpcnsSem = 0x5957_3019, "IPCNS_SEM";
    RegFiles = 0x5036_3636, "REG_FILES";
    ExtFiles = 0x5925_5641, "EXT_FILES";
    Fs = 0x5140_3912, "FS";
    Mm = 0x5749_2820, "MM";
    RemapFpath = 0x5913_3954, "REMAP_FPATH";
    GhostFile = 0x5258_3605, "GHOST_FILE";
    TcpStream = 0x5146_5506, "TCP_STREAM";
    EventfdFile = 0x4452_3722, "EVENTFD_FILE";
    EventpollFile = 0x4502_3858, "EVENTPOLL_FILE";
    EventpollTfd = 0x4443_3746, "EVENTPOLL_TFD";
    Signalfd = 0x5732_3820, "SIGNALFD";
    InotifyFile = 0x4842_4431, "INOTIFY_FILE";
    InotifyWd = 0x5456_2009, "INOTIFY_WD";
    Mnts = 0x5556_3928, "MNTS";
    Netdev = 0x5737_3951, "NETDEV";
    Netns = 0x5593_3752, "NETNS";
    TtyFiles = 0x5943_3025, "TTY_FILES";
    TtyInfo = 0x5945_3036, "TTY_INFO";
    TtyData = 0x5941_3026, "TTY_DATA";
    FileLocks = 0x5432_3616, "FILE_LOCKS";
    Rlimit = 0x5711_3925, "RLIMIT";
    FanotifyFile = 0x5509_6122, "FANOTIFY_FILE";
    FanotifyMark = 0x5650_6035, "FANOTIFY_MARK";
    /// signal-s-<pid>.img and signal-p-<tid>.img (SIGNAL = PSIGNAL).
    Signal = 0x5925_5647, "SIGNAL";
    NetlinkSk = 0x5800_5614, "NETLINK_SK";
    NsFiles = 0x6139_4011, "NS_FILES";
    Tunfile = 0x5714_3751, "TUNFILE";
    Cgroup = 0x5938_3330, "CGROUP";
    Timerfd = 0x5049_3712, "TIMERFD";
    Cpuinfo = 0x6140_4013, "CPUINFO";
    Userns = 0x5547_4906, "USERNS";
    Seccomp = 0x6441_3049, "SECCOMP";
    BinfmtMisc = 0x6734_3323, "BINFMT_MISC";
    Autofs = 0x4935_3943, "AUTOFS";
    Files = 0x5630_3138, "FILES";
    MemfdInode = 0x4845_3499, "MEMFD_INODE";
    Timens = 0x4311_4433, "TIMENS";
    Pidns = 0x6115_7326, "PIDNS";
    BpfmapFile = 0x5750_6142, "BPFMAP_FILE";
    BpfmapData = 0x6432_4033, "BPFMAP_DATA";
    Apparmor = 0x5942_3047, "APPARMOR";
    /// Service file: stats-dump.img / stats-restore.img.
    Stats = 0x5709_3306, "STATS";
    /// Service file: irmap-cache.img.
    IrmapCache = 0x5700_4059, "IRMAP_CACHE";
}

impl Magic {
    /// How a file of this magic starts.
    pub const fn head(self) -> Head {
        match self {
            Magic::Inventory => Head::MagicOnly,
            Magic::Stats | Magic::IrmapCache => Head::Service,
            Magic::Raw => Head::Raw,
            _ => Head::Common,
        }
    }

    /// The header bytes a file of this magic starts with.
    pub fn header_bytes(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8);
        match self.head() {
            Head::Raw => {}
            Head::MagicOnly => v.extend_from_slice(&self.value().to_le_bytes()),
            Head::Common => {
                v.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes());
                v.extend_from_slice(&self.value().to_le_bytes());
            }
            Head::Service => {
                v.extend_from_slice(&IMG_SERVICE_MAGIC.to_le_bytes());
                v.extend_from_slice(&self.value().to_le_bytes());
            }
        }
        v
    }
}

impl fmt::Display for Magic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:08x})", self.name(), self.value())
    }
}

/// What follows each protobuf entry, beyond the entry itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Payload {
    /// Only entries: u32 LE length + message, repeated to EOF.
    Entries,
    /// The first entry is `head` (pagemap_head), the rest `message`.
    HeadThenEntries { head: &'static str },
    /// Each entry is followed by raw bytes whose length a field of the
    /// entry gives (`field`), possibly padded (`align`: 1 = no padding).
    RawAfterEntry { field: &'static str, align: u32 },
    /// ghost-file: see ghost_file_entry (raw contents to EOF, or chunks).
    GhostFile,
    /// ipcns-msg: each entry is followed by `qnum` (ipc_msg + data padded to 8).
    IpcMsgQueue,
    /// Not protobuf at all: raw bytes (pages, tarballs, ip/iptables dumps).
    RawFile,
}

/// One kind of image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageKind {
    /// CRIU's CR_FD_* name without the prefix, e.g. "CORE".
    pub key: &'static str,
    /// File name pattern with one printf-style placeholder at most, as in
    /// CRIU's image-desc.c plus ".img": "core-%u.img", "files.img".
    pub pattern: &'static str,
    pub magic: Magic,
    /// The proto message of the entries (CRIU's name, e.g. "core_entry"),
    /// None for raw files.
    pub message: Option<&'static str>,
    pub payload: Payload,
}

const fn kind(
    key: &'static str,
    pattern: &'static str,
    magic: Magic,
    message: &'static str,
) -> ImageKind {
    ImageKind {
        key,
        pattern,
        magic,
        message: Some(message),
        payload: Payload::Entries,
    }
}

const fn raw(key: &'static str, pattern: &'static str) -> ImageKind {
    ImageKind {
        key,
        pattern,
        magic: Magic::Raw,
        message: None,
        payload: Payload::RawFile,
    }
}

const fn with_payload(mut k: ImageKind, payload: Payload) -> ImageKind {
    k.payload = payload;
    k
}

/// Every image file CRIU's image-desc.c names, with its magic and message.
/// Placeholders: %u %d %lu %ld match decimal numbers, %x hex, %s a word.
pub const IMAGE_KINDS: &[ImageKind] = &[
    kind(
        "INVENTORY",
        "inventory.img",
        Magic::Inventory,
        "inventory_entry",
    ),
    kind("FDINFO", "fdinfo-%u.img", Magic::Fdinfo, "fdinfo_entry"),
    with_payload(
        kind(
            "PAGEMAP",
            "pagemap-%lu.img",
            Magic::Pagemap,
            "pagemap_entry",
        ),
        Payload::HeadThenEntries {
            head: "pagemap_head",
        },
    ),
    with_payload(
        kind(
            "SHMEM_PAGEMAP",
            "pagemap-shmem-%lu.img",
            Magic::Pagemap,
            "pagemap_entry",
        ),
        Payload::HeadThenEntries {
            head: "pagemap_head",
        },
    ),
    kind(
        "REG_FILES",
        "reg-files.img",
        Magic::RegFiles,
        "reg_file_entry",
    ),
    kind(
        "EXT_FILES",
        "ext-files.img",
        Magic::ExtFiles,
        "ext_file_entry",
    ),
    kind("NS_FILES", "ns-files.img", Magic::NsFiles, "ns_file_entry"),
    kind(
        "EVENTFD_FILE",
        "eventfd.img",
        Magic::EventfdFile,
        "eventfd_file_entry",
    ),
    kind(
        "EVENTPOLL_FILE",
        "eventpoll.img",
        Magic::EventpollFile,
        "eventpoll_file_entry",
    ),
    kind(
        "EVENTPOLL_TFD",
        "eventpoll-tfd.img",
        Magic::EventpollTfd,
        "eventpoll_tfd_entry",
    ),
    kind(
        "SIGNALFD",
        "signalfd.img",
        Magic::Signalfd,
        "signalfd_entry",
    ),
    kind(
        "INOTIFY_FILE",
        "inotify.img",
        Magic::InotifyFile,
        "inotify_file_entry",
    ),
    kind(
        "INOTIFY_WD",
        "inotify-wd.img",
        Magic::InotifyWd,
        "inotify_wd_entry",
    ),
    kind(
        "FANOTIFY_FILE",
        "fanotify.img",
        Magic::FanotifyFile,
        "fanotify_file_entry",
    ),
    kind(
        "FANOTIFY_MARK",
        "fanotify-mark.img",
        Magic::FanotifyMark,
        "fanotify_mark_entry",
    ),
    kind("CORE", "core-%u.img", Magic::Core, "core_entry"),
    kind("IDS", "ids-%u.img", Magic::Ids, "task_kobj_ids_entry"),
    kind("MM", "mm-%u.img", Magic::Mm, "mm_entry"),
    kind("VMAS", "vmas-%u.img", Magic::Vmas, "vma_entry"),
    kind("PIPES", "pipes.img", Magic::Pipes, "pipe_entry"),
    with_payload(
        kind(
            "PIPES_DATA",
            "pipes-data.img",
            Magic::PipesData,
            "pipe_data_entry",
        ),
        Payload::RawAfterEntry {
            field: "bytes",
            align: 1,
        },
    ),
    kind("FIFO", "fifo.img", Magic::Fifo, "fifo_entry"),
    with_payload(
        kind(
            "FIFO_DATA",
            "fifo-data.img",
            Magic::FifoData,
            "pipe_data_entry",
        ),
        Payload::RawAfterEntry {
            field: "bytes",
            align: 1,
        },
    ),
    kind("PSTREE", "pstree.img", Magic::Pstree, "pstree_entry"),
    kind("SIGACT", "sigacts-%u.img", Magic::Sigact, "sa_entry"),
    kind("UNIXSK", "unixsk.img", Magic::Unixsk, "unix_sk_entry"),
    kind("INETSK", "inetsk.img", Magic::Inetsk, "inet_sk_entry"),
    kind(
        "PACKETSK",
        "packetsk.img",
        Magic::Packetsk,
        "packet_sock_entry",
    ),
    kind(
        "NETLINK_SK",
        "netlinksk.img",
        Magic::NetlinkSk,
        "netlink_sk_entry",
    ),
    with_payload(
        kind(
            "SK_QUEUES",
            "sk-queues.img",
            Magic::SkQueues,
            "sk_packet_entry",
        ),
        Payload::RawAfterEntry {
            field: "length",
            align: 1,
        },
    ),
    kind("ITIMERS", "itimers-%u.img", Magic::Itimers, "itimer_entry"),
    kind(
        "POSIX_TIMERS",
        "posix-timers-%u.img",
        Magic::PosixTimers,
        "posix_timer_entry",
    ),
    kind("CREDS", "creds-%u.img", Magic::Creds, "creds_entry"),
    kind("UTSNS", "utsns-%u.img", Magic::Utsns, "utsns_entry"),
    kind(
        "IPC_VAR",
        "ipcns-var-%u.img",
        Magic::IpcVar,
        "ipc_var_entry",
    ),
    with_payload(
        kind(
            "IPCNS_SHM",
            "ipcns-shm-%u.img",
            Magic::IpcnsShm,
            "ipc_shm_entry",
        ),
        Payload::RawAfterEntry {
            field: "size",
            align: 4,
        },
    ),
    with_payload(
        kind(
            "IPCNS_MSG",
            "ipcns-msg-%u.img",
            Magic::IpcnsMsg,
            "ipc_msg_entry",
        ),
        Payload::IpcMsgQueue,
    ),
    with_payload(
        kind(
            "IPCNS_SEM",
            "ipcns-sem-%u.img",
            Magic::IpcnsSem,
            "ipc_sem_entry",
        ),
        // nsems u16 values, padded to 8 bytes.
        Payload::RawAfterEntry {
            field: "nsems*2",
            align: 8,
        },
    ),
    kind("FS", "fs-%u.img", Magic::Fs, "fs_entry"),
    kind(
        "REMAP_FPATH",
        "remap-fpath.img",
        Magic::RemapFpath,
        "remap_file_path_entry",
    ),
    with_payload(
        kind(
            "GHOST_FILE",
            "ghost-file-%x.img",
            Magic::GhostFile,
            "ghost_file_entry",
        ),
        Payload::GhostFile,
    ),
    kind(
        "MEMFD_INODE",
        "memfd.img",
        Magic::MemfdInode,
        "memfd_inode_entry",
    ),
    with_payload(
        kind(
            "TCP_STREAM",
            "tcp-stream-%x.img",
            Magic::TcpStream,
            "tcp_stream_entry",
        ),
        Payload::RawAfterEntry {
            field: "inq_len+outq_len",
            align: 1,
        },
    ),
    kind("MNTS", "mountpoints-%u.img", Magic::Mnts, "mnt_entry"),
    kind("NETDEV", "netdev-%u.img", Magic::Netdev, "net_device_entry"),
    kind("NETNS", "netns-%u.img", Magic::Netns, "netns_entry"),
    raw("IFADDR", "ifaddr-%u.img"),
    raw("ROUTE", "route-%u.img"),
    raw("ROUTE6", "route6-%u.img"),
    raw("RULE", "rule-%u.img"),
    raw("IPTABLES", "iptables-%u.img"),
    raw("IP6TABLES", "ip6tables-%u.img"),
    raw("NFTABLES", "nftables-%u.img"),
    raw("TMPFS_IMG", "tmpfs-%u.tar.gz.img"),
    raw("TMPFS_DEV", "tmpfs-dev-%u.tar.gz.img"),
    kind("AUTOFS", "autofs-%u.img", Magic::Autofs, "autofs_entry"),
    kind(
        "BINFMT_MISC_OLD",
        "binfmt-misc-%u.img",
        Magic::BinfmtMisc,
        "binfmt_misc_entry",
    ),
    kind(
        "BINFMT_MISC",
        "binfmt-misc.img",
        Magic::BinfmtMisc,
        "binfmt_misc_entry",
    ),
    kind("TTY_FILES", "tty.img", Magic::TtyFiles, "tty_file_entry"),
    kind("TTY_INFO", "tty-info.img", Magic::TtyInfo, "tty_info_entry"),
    kind("TTY_DATA", "tty-data.img", Magic::TtyData, "tty_data_entry"),
    kind(
        "FILE_LOCKS",
        "filelocks.img",
        Magic::FileLocks,
        "file_lock_entry",
    ),
    kind("RLIMIT", "rlimit-%u.img", Magic::Rlimit, "rlimit_entry"),
    raw("PAGES", "pages-%u.img"),
    // Not listed: CRIU's pre-pagemap formats PAGES_OLD ("pages-%d.img") and
    // SHM_PAGES_OLD ("pages-shmem-%ld.img"), both with the PAGEMAP magic,
    // which CRIU itself has not written for years.
    kind("SIGNAL", "signal-s-%u.img", Magic::Signal, "siginfo_entry"),
    kind("PSIGNAL", "signal-p-%u.img", Magic::Signal, "siginfo_entry"),
    kind("TUNFILE", "tunfile.img", Magic::Tunfile, "tunfile_entry"),
    kind("CGROUP", "cgroup.img", Magic::Cgroup, "cgroup_entry"),
    kind("TIMERFD", "timerfd.img", Magic::Timerfd, "timerfd_entry"),
    kind("CPUINFO", "cpuinfo.img", Magic::Cpuinfo, "cpuinfo_entry"),
    kind("SECCOMP", "seccomp.img", Magic::Seccomp, "seccomp_entry"),
    kind("USERNS", "userns-%u.img", Magic::Userns, "userns_entry"),
    raw("NETNF_CT", "netns-ct-%u.img"),
    raw("NETNF_EXP", "netns-exp-%u.img"),
    kind("FILES", "files.img", Magic::Files, "file_entry"),
    kind("TIMENS", "timens-%u.img", Magic::Timens, "timens_entry"),
    kind("PIDNS", "pidns-%u.img", Magic::Pidns, "pidns_entry"),
    kind(
        "BPFMAP_FILE",
        "bpfmap-file.img",
        Magic::BpfmapFile,
        "bpfmap_file_entry",
    ),
    with_payload(
        kind(
            "BPFMAP_DATA",
            "bpfmap-data.img",
            Magic::BpfmapData,
            "bpfmap_data_entry",
        ),
        Payload::RawAfterEntry {
            field: "keys_bytes+values_bytes",
            align: 1,
        },
    ),
    kind(
        "APPARMOR",
        "apparmor.img",
        Magic::Apparmor,
        "apparmor_entry",
    ),
    kind("STATS", "stats-%s.img", Magic::Stats, "stats_entry"),
    kind(
        "IRMAP_CACHE",
        "irmap-cache.img",
        Magic::IrmapCache,
        "irmap_cache_entry",
    ),
];

impl ImageKind {
    /// The kind with this CR_FD_* key ("CORE", "PAGEMAP", ...).
    ///
    /// # Panics
    /// If no kind has that key (a programming error).
    pub fn by_key(key: &str) -> &'static ImageKind {
        IMAGE_KINDS
            .iter()
            .find(|k| k.key == key)
            .unwrap_or_else(|| panic!("no image kind {key:?}"))
    }

    /// The kind of a file, from its name, and the text its placeholder
    /// matched (the pid, id, ...), if the pattern has one.
    pub fn of_file_name(name: &str) -> Option<(&'static ImageKind, Option<&str>)> {
        IMAGE_KINDS
            .iter()
            .find_map(|k| match_pattern(k.pattern, name).map(|arg| (k, arg)))
    }

    /// The file name for this kind and id (the id is ignored by patterns
    /// without a placeholder). `%x` placeholders format the id in hex.
    pub fn file_name(&self, id: impl fmt::Display + fmt::LowerHex) -> String {
        match split_pattern(self.pattern) {
            None => self.pattern.to_string(),
            Some((pre, "x", post)) => format!("{pre}{id:x}{post}"),
            Some((pre, _, post)) => format!("{pre}{id}{post}"),
        }
    }
}

/// Splits "core-%u.img" into ("core-", "u", ".img").
fn split_pattern(pattern: &str) -> Option<(&str, &str, &str)> {
    let pct = pattern.find('%')?;
    let rest = &pattern[pct + 1..];
    let conv_len = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    Some((&pattern[..pct], &rest[..conv_len], &rest[conv_len..]))
}

fn match_pattern<'n>(pattern: &str, name: &'n str) -> Option<Option<&'n str>> {
    let Some((pre, conv, post)) = split_pattern(pattern) else {
        return (pattern == name).then_some(None);
    };
    let arg = name.strip_prefix(pre)?.strip_suffix(post)?;
    if arg.is_empty() {
        return None;
    }
    let ok = match conv {
        "x" => arg.bytes().all(|b| b.is_ascii_hexdigit()),
        "s" => arg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        _ => arg.bytes().all(|b| b.is_ascii_digit()),
    };
    ok.then_some(Some(arg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &m in Magic::ALL {
            assert!(seen.insert(m.value()), "{m} listed twice");
            assert_eq!(Magic::from_value(m.value()), Some(m));
        }
        assert_eq!(Magic::from_value(IMG_COMMON_MAGIC), None);
        assert_eq!(Magic::from_value(IMG_SERVICE_MAGIC), None);
    }

    #[test]
    fn known_values() {
        assert_eq!(Magic::Inventory.value(), 0x58313116);
        assert_eq!(Magic::Core.value(), 0x55053847);
        assert_eq!(Magic::Pagemap.value(), 0x56084025);
        assert_eq!(Magic::Files.value(), 0x56303138);
        assert_eq!(Magic::Stats.value(), 0x57093306);
    }

    #[test]
    fn headers() {
        assert_eq!(Magic::Inventory.header_bytes(), 0x58313116u32.to_le_bytes());
        assert_eq!(
            Magic::Core.header_bytes(),
            [0x19, 0x43, 0x56, 0x54, 0x47, 0x38, 0x05, 0x55]
        );
        assert_eq!(
            &Magic::Stats.header_bytes()[..4],
            &IMG_SERVICE_MAGIC.to_le_bytes()
        );
        assert!(Magic::Raw.header_bytes().is_empty());
        for &m in Magic::ALL {
            assert_eq!(m.header_bytes().len() as u64, m.head().len());
        }
    }

    #[test]
    fn file_names() {
        let (k, arg) = ImageKind::of_file_name("core-42.img").unwrap();
        assert_eq!((k.key, k.magic, arg), ("CORE", Magic::Core, Some("42")));
        let (k, _) = ImageKind::of_file_name("pagemap-7.img").unwrap();
        assert_eq!(k.key, "PAGEMAP");
        let (k, _) = ImageKind::of_file_name("pagemap-shmem-123.img").unwrap();
        assert_eq!(k.key, "SHMEM_PAGEMAP");
        let (k, _) = ImageKind::of_file_name("pages-1.img").unwrap();
        assert_eq!((k.key, k.magic.head()), ("PAGES", Head::Raw));
        assert!(ImageKind::of_file_name("pages-shmem-9.img").is_none());
        let (k, arg) = ImageKind::of_file_name("ghost-file-1f.img").unwrap();
        assert_eq!((k.key, arg), ("GHOST_FILE", Some("1f")));
        let (k, _) = ImageKind::of_file_name("stats-dump.img").unwrap();
        assert_eq!((k.key, k.magic.head()), ("STATS", Head::Service));
        let (k, _) = ImageKind::of_file_name("tty-info.img").unwrap();
        assert_eq!(k.key, "TTY_INFO");
        let (k, _) = ImageKind::of_file_name("netns-ct-3.img").unwrap();
        assert_eq!(k.key, "NETNF_CT");
        let (k, _) = ImageKind::of_file_name("files.img").unwrap();
        assert_eq!(k.magic, Magic::Files);
        let (k, _) = ImageKind::of_file_name("inventory.img").unwrap();
        assert_eq!(k.magic.head(), Head::MagicOnly);
        assert!(ImageKind::of_file_name("core-.img").is_none());
        assert!(ImageKind::of_file_name("core-x.img").is_none());
        assert!(ImageKind::of_file_name("ckpt.manifest").is_none());

        assert_eq!(ImageKind::by_key("CORE").file_name(42), "core-42.img");
        assert_eq!(
            ImageKind::by_key("GHOST_FILE").file_name(31),
            "ghost-file-1f.img"
        );
        assert_eq!(ImageKind::by_key("FILES").file_name(0), "files.img");
        // Every pattern round-trips through its own file name.
        for k in IMAGE_KINDS {
            if k.pattern.contains("%s") {
                continue;
            }
            let name = k.file_name(17);
            let (found, _) = ImageKind::of_file_name(&name).unwrap();
            assert_eq!(found.key, k.key, "{name}");
        }
    }
}
