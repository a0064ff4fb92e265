//! The image layer: CRIU-format image files (magic numbers, framing of
//! protobuf entries, the generated message types) and ckpt's own manifest.
//!
//! Every error of this layer is an [`ImageError`] that names the file and
//! says what is wrong with it (and at which byte offset, where that helps).

pub mod chain;
pub mod fown;
pub mod framing;
pub mod inet;
pub mod magic;
pub mod manifest;
pub mod pagemap;
pub mod pb;
pub mod set;
pub mod task;
pub mod vma;

use std::fmt;
use std::path::{Path, PathBuf};

pub use framing::{
    read_all, read_one, sync_dir, write_image, Entries, FileDigest, HashingWriter, ImageReader,
    ImageWriter, MAX_ENTRY_SIZE,
};
pub use magic::{Head, ImageKind, Magic, Payload, IMAGES_V1_1, IMAGE_KINDS};
pub use manifest::{hash_file, Manifest, ManifestError, ManifestProblem, MANIFEST_NAME};

/// Something is wrong with an image file (or the manifest). Every variant
/// carries the path of the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A system call on the file failed (open, read, write, fsync, ...).
    #[error("{}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the magic number(s) expected.
    #[error("{}: at byte {offset}: {reason}", path.display())]
    BadMagic {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The file ends in the middle of something.
    #[error("{}: at byte {offset}: file is truncated: {reason}", path.display())]
    Truncated {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An entry's length prefix is larger than any sane entry.
    #[error("{}: at byte {offset}: entry length {len} exceeds the limit of {max} bytes (corrupted length prefix?)", path.display())]
    Oversize {
        path: PathBuf,
        offset: u64,
        len: u64,
        max: u64,
    },
    /// An entry's bytes are not a valid message of the expected type.
    #[error("{}: at byte {offset}: cannot decode {message} ({len} bytes): {source}", path.display())]
    Decode {
        path: PathBuf,
        offset: u64,
        message: &'static str,
        len: u64,
        #[source]
        source: prost::DecodeError,
    },
    /// The manifest file itself is malformed.
    #[error("{}: line {line}: {reason}", path.display())]
    BadManifest {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// Files of the image directory do not match the manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The image is readable but its content is inconsistent or unusable
    /// (missing entry, dangling reference, unsupported value, ...).
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

impl ImageError {
    pub fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        ImageError::Io {
            path: path.into(),
            op,
            source,
        }
    }

    /// An image whose content does not make sense; `reason` says why.
    pub fn invalid(path: impl Into<PathBuf>, reason: impl fmt::Display) -> Self {
        ImageError::Invalid {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// The file the error is about (for a manifest mismatch: the directory).
    pub fn path(&self) -> &Path {
        match self {
            ImageError::Io { path, .. }
            | ImageError::BadMagic { path, .. }
            | ImageError::Truncated { path, .. }
            | ImageError::Oversize { path, .. }
            | ImageError::Decode { path, .. }
            | ImageError::BadManifest { path, .. }
            | ImageError::Invalid { path, .. } => path,
            ImageError::Manifest(m) => &m.dir,
        }
    }
}

/// Checks that crit (CRIU's image tool) reads what this layer writes. Runs
/// only where `crit` is installed (Debian: `apt-get install criu`);
/// elsewhere it says so and passes.
#[cfg(test)]
mod crit_tests {
    use super::*;
    use std::process::Command;

    fn crit() -> Option<&'static str> {
        Command::new("crit")
            .arg("-h")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| "crit")
    }

    fn run(args: &[&str]) -> String {
        let out = Command::new("crit").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "crit {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(dir: &Path, name: &str) -> serde_json::Value {
        let path = dir.join(name);
        let text = run(&["decode", "-i", path.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v
    }

    /// A one-process image set as ckpt's dump writes it.
    fn write_sample(dir: &Path) {
        let pid = 4242u32;
        let ids = pb::TaskKobjIdsEntry {
            vm_id: 1,
            files_id: 2,
            fs_id: 3,
            sighand_id: 4,
            pid_ns_id: Some(5),
            ..Default::default()
        };
        write_image(
            dir.join("inventory.img"),
            Magic::Inventory,
            &[pb::InventoryEntry {
                img_version: IMAGES_V1_1,
                fdinfo_per_id: Some(true),
                root_ids: Some(ids),
                ns_per_id: Some(true),
                lsmtype: Some(pb::Lsmtype::NoLsm as i32),
                ..Default::default()
            }],
        )
        .unwrap();
        write_image(
            dir.join("pstree.img"),
            Magic::Pstree,
            &[pb::PstreeEntry {
                pid,
                ppid: 0,
                pgid: pid,
                sid: 1,
                threads: vec![pid, pid + 1],
                ..Default::default()
            }],
        )
        .unwrap();
        write_image(dir.join(format!("ids-{pid}.img")), Magic::Ids, &[ids]).unwrap();
        for tid in [pid, pid + 1] {
            let core = pb::CoreEntry {
                mtype: pb::core_entry::March::X8664 as i32,
                thread_info: Some(pb::ThreadInfoX86 {
                    clear_tid_addr: 0x7f00_0000_1000,
                    gpregs: pb::UserX86RegsEntry {
                        ip: 0x401000,
                        sp: 0x7ffd_0000_0000,
                        ax: u64::MAX - 3, // -ERESTARTNOHAND style value
                        orig_ax: 230,
                        cs: 0x33,
                        ss: 0x2b,
                        fs_base: 0x7f00_0000_2000,
                        mode: Some(pb::UserX86RegsMode::Native as i32),
                        ..Default::default()
                    },
                    fpregs: pb::UserX86FpregsEntry {
                        cwd: 0x37f,
                        mxcsr: 0x1f80,
                        st_space: vec![0; 32],
                        xmm_space: vec![0; 64],
                        xsave: Some(pb::UserX86XsaveEntry {
                            xstate_bv: 7,
                            ymmh_space: vec![0; 64],
                            ..Default::default()
                        }),
                        ckpt_xsave_raw: Some(vec![0xab; 2696]),
                        ..Default::default()
                    },
                    tls: vec![],
                }),
                tc: (tid == pid).then(|| pb::TaskCoreEntry {
                    task_state: 1,
                    comm: "sleeper".into(),
                    blk_sigset: 1 << 9,
                    timers: Some(pb::TaskTimersEntry {
                        real: pb::ItimerEntry::default(),
                        virt: pb::ItimerEntry::default(),
                        prof: pb::ItimerEntry::default(),
                        posix: vec![],
                    }),
                    rlimits: Some(pb::TaskRlimitsEntry {
                        rlimits: vec![
                            pb::RlimitEntry {
                                cur: u64::MAX,
                                max: u64::MAX
                            };
                            16
                        ],
                    }),
                    sigactions: vec![pb::SaEntry::default(); 64],
                    child_subreaper: Some(false),
                    ..Default::default()
                }),
                ids: (tid == pid).then_some(ids),
                thread_core: Some(pb::ThreadCoreEntry {
                    futex_rla: 0x7f00_0000_1010,
                    futex_rla_len: 24,
                    sched_nice: Some(0),
                    blk_sigset: Some(0),
                    creds: Some(pb::CredsEntry {
                        cap_eff: vec![u32::MAX, 0x1ff],
                        ..Default::default()
                    }),
                    seccomp_mode: Some(pb::SeccompMode::Disabled as i32),
                    comm: Some("sleeper".into()),
                    rseq_entry: Some(pb::RseqEntry {
                        rseq_abi_pointer: 0x7f00_0000_3000,
                        rseq_abi_size: 32,
                        signature: 0x5305_3053,
                        rseq_cs_pointer: None,
                    }),
                    timerslack_ns: Some(50_000),
                    ..Default::default()
                }),
            };
            write_image(dir.join(format!("core-{tid}.img")), Magic::Core, &[core]).unwrap();
        }
        let vma = |start: u64, end: u64, prot: u32, flags: u32, shmid: u64| pb::VmaEntry {
            start,
            end,
            pgoff: 0,
            shmid,
            prot,
            flags,
            status: 0x1 | if shmid != 0 { 0x40 } else { 0x20 },
            fd: -1,
            madv: Some(0),
            fdflags: None,
        };
        write_image(
            dir.join(format!("mm-{pid}.img")),
            Magic::Mm,
            &[pb::MmEntry {
                mm_start_code: 0x400000,
                mm_end_code: 0x401000,
                exe_file_id: 10,
                mm_saved_auxv: vec![6, 4096, 0, 0],
                vmas: vec![
                    vma(0x400000, 0x401000, 5, 2, 10),
                    vma(0x7ffd_0000_0000, 0x7ffd_0002_1000, 3, 0x22, 0),
                ],
                dumpable: Some(1),
                ..Default::default()
            }],
        )
        .unwrap();
        let mut w =
            ImageWriter::create(dir.join(format!("pagemap-{pid}.img")), Magic::Pagemap).unwrap();
        w.write_entry(&pb::PagemapHead { pages_id: 1 }).unwrap();
        w.write_entry(&pb::PagemapEntry {
            nr_pages64: None,
            vaddr: 0x7ffd_0002_0000,
            nr_pages: 1,
            in_parent: None,
            flags: Some(4),
        })
        .unwrap();
        w.finish().unwrap();
        let mut w = ImageWriter::create(dir.join("pages-1.img"), Magic::Raw).unwrap();
        w.write_raw(&[0x5a; 4096]).unwrap();
        w.finish().unwrap();

        let fown = pb::FownEntry::default();
        write_image(
            dir.join("fdinfo-2.img"),
            Magic::Fdinfo,
            &[pb::FdinfoEntry {
                id: 11,
                flags: 0,
                r#type: pb::FdTypes::Reg as i32,
                fd: 0,
                xattr_security_selinux: None,
            }],
        )
        .unwrap();
        let reg = |id: u32, name: &str| pb::FileEntry {
            r#type: pb::FdTypes::Reg as i32,
            id,
            reg: Some(pb::RegFileEntry {
                id,
                flags: 0o2,
                pos: 0,
                fown,
                name: name.into(),
                mnt_id: Some(25),
                size: Some(0),
                mode: Some(0o100644),
                ..Default::default()
            }),
            ..Default::default()
        };
        write_image(
            dir.join("files.img"),
            Magic::Files,
            &[
                reg(10, "/usr/bin/sleep"),
                reg(11, "/dev/null"),
                reg(12, "/"),
                reg(13, "/tmp"),
            ],
        )
        .unwrap();
        write_image(
            dir.join(format!("fs-{pid}.img")),
            Magic::Fs,
            &[pb::FsEntry {
                cwd_id: 13,
                root_id: 12,
                umask: Some(0o22),
            }],
        )
        .unwrap();
    }

    #[test]
    fn crit_decodes_our_images() {
        if crit().is_none() {
            eprintln!("crit not installed: skipping the crit compatibility check");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_sample(dir);

        let inv = json(dir, "inventory.img");
        assert_eq!(inv["magic"], "INVENTORY");
        assert_eq!(inv["entries"][0]["img_version"], 2);
        assert_eq!(inv["entries"][0]["root_ids"]["files_id"], 2);

        let ps = json(dir, "pstree.img");
        assert_eq!(ps["magic"], "PSTREE");
        assert_eq!(ps["entries"][0]["threads"][1], 4243);

        let core = json(dir, "core-4242.img");
        assert_eq!(core["magic"], "CORE");
        let e = &core["entries"][0];
        assert_eq!(e["mtype"], "X86_64");
        assert_eq!(e["tc"]["comm"], "sleeper");
        assert_eq!(e["thread_info"]["gpregs"]["ip"], 0x401000);
        assert_eq!(e["thread_info"]["fpregs"]["mxcsr"], 0x1f80);
        assert_eq!(e["thread_core"]["rseq_entry"]["rseq_abi_size"], 32);
        assert_eq!(
            json(dir, "core-4243.img")["entries"][0]["thread_core"]["comm"],
            "sleeper"
        );

        let mm = json(dir, "mm-4242.img");
        assert_eq!(mm["magic"], "MM");
        assert_eq!(mm["entries"][0]["vmas"].as_array().unwrap().len(), 2);

        let pm = json(dir, "pagemap-4242.img");
        assert_eq!(pm["magic"], "PAGEMAP");
        assert_eq!(pm["entries"][0]["pages_id"], 1);
        assert_eq!(pm["entries"][1]["nr_pages"], 1);

        assert_eq!(json(dir, "ids-4242.img")["magic"], "IDS");
        assert_eq!(json(dir, "fdinfo-2.img")["entries"][0]["type"], "REG");
        let files = json(dir, "files.img");
        assert_eq!(files["magic"], "FILES");
        assert_eq!(files["entries"][0]["reg"]["name"], "/usr/bin/sleep");
        assert_eq!(json(dir, "fs-4242.img")["entries"][0]["cwd_id"], 13);

        // The pretty printer (field-specific formats) and the cross-image
        // explorers read the set as a whole.
        let d = dir.to_str().unwrap();
        run(&["decode", "--pretty", "-i", &format!("{d}/core-4242.img")]);
        run(&["decode", "--pretty", "-i", &format!("{d}/mm-4242.img")]);
        let ps = run(&["x", d, "ps"]);
        assert!(ps.contains("4242") && ps.contains("sleeper"), "{ps}");
        let fds = run(&["x", d, "fds"]);
        assert!(fds.contains("/dev/null") && fds.contains("/tmp"), "{fds}");
        let mems = run(&["x", d, "mems"]);
        assert!(mems.contains("/usr/bin/sleep"), "{mems}");
        eprintln!("crit x ps:\n{ps}\ncrit x fds:\n{fds}\ncrit x mems:\n{mems}");
    }
}
