//! The `ckpt` command line. Spelling follows CRIU's for the common options
//! (`dump -t PID -D DIR`, `restore -D DIR -d`, `--leave-running`, `-o`,
//! `-v`), so people and scripts that know CRIU can use ckpt as it is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use ckpt::dump::{self, DumpOptions};
use ckpt::restore::{self, RestoreOptions};
use ckpt::{check, log, show};

#[derive(Parser)]
#[command(
    name = "ckpt",
    version,
    about = "Checkpoint/restore of Linux process trees (CRIU image format)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The options every command of CRIU's takes, spelled as CRIU spells them.
#[derive(Args, Clone)]
struct LogOpts {
    /// Write the log to this file instead of stderr. A relative path is
    /// relative to the work directory (-W), which is the images directory
    /// unless given, as in CRIU.
    #[arg(short = 'o', long = "log-file", value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Verbosity: -v alone (or --verbosity) is 4 (debug); -vN or
    /// --verbosity=N picks 0 (silent) to 4; CRIU's -vv... is accepted.
    #[arg(
        short = 'v',
        long = "verbosity",
        value_name = "N",
        num_args = 0..=1,
        default_missing_value = "4",
        value_parser = parse_verbosity
    )]
    verbosity: Option<u8>,
    /// The directory relative log and pid files go to (CRIU's work
    /// directory); the images directory by default.
    #[arg(short = 'W', long = "work-dir", value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Accepted for CRIU compatibility: ckpt reads no configuration files,
    /// default or other.
    #[arg(long)]
    no_default_config: bool,
    /// CRIU's cgroup yard (hierarchies CRIU would otherwise mount itself):
    /// ckpt mounts none, it works on the hierarchies the machine has
    /// mounted, so a yard is refused with a message saying so.
    #[arg(long, value_name = "PATH")]
    cgroup_yard: Option<PathBuf>,
}

/// A page server for a dump's pages (CRIU's spelling): where a dump sends
/// them, or where a lazy restore fetches them.
#[derive(Args, Clone)]
struct PageServerOpts {
    /// Dump: send the pages to the page server at --address and --port
    /// instead of writing them into the images directory; the other
    /// images are written here as usual (`ckpt page-server` on the other
    /// side). Restore (with --lazy-pages): fetch the pages from there
    /// (`ckpt page-server --lazy-pages`) instead of the pages files here.
    #[arg(long, requires_all = ["address", "port"])]
    page_server: bool,
    /// The page server's address.
    #[arg(long, value_name = "ADDR", requires = "page_server")]
    address: Option<String>,
    /// The page server's port.
    #[arg(long, value_name = "PORT", requires = "page_server")]
    port: Option<u16>,
}

impl PageServerOpts {
    fn target(self) -> Option<(String, u16)> {
        match (self.page_server, self.address, self.port) {
            (true, Some(a), Some(p)) => Some((a, p)),
            _ => None,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Checkpoint the process tree rooted at PID into DIR.
    Dump {
        #[arg(short = 't', long = "tree", value_name = "PID")]
        pid: i32,
        #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
        dir: PathBuf,
        /// Let the tree go on running after the dump (default: kill it).
        #[arg(short = 'R', long)]
        leave_running: bool,
        /// Accepted for CRIU compatibility: the tree's terminal is left as is.
        #[arg(short = 'j', long)]
        shell_job: bool,
        /// The largest unlinked file still open or mapped whose contents
        /// are copied into the images, in bytes (K, M, G suffixes allowed).
        #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_size)]
        ghost_limit: u64,
        /// Freeze the tree through this freezer cgroup (a cgroup directory,
        /// or a path in the freezer hierarchy) before seizing it, so a tree
        /// that keeps forking can be stopped.
        #[arg(long, value_name = "PATH")]
        freeze_cgroup: Option<String>,
        /// Also dump this SysV IPC object (shm:ID, sem:ID or msg:ID; may
        /// be repeated or comma-separated): for objects the tree created
        /// but never used, which the dump cannot tell are the tree's.
        #[arg(long = "ipc-id", value_name = "KIND:ID", value_delimiter = ',')]
        ipc_ids: Vec<String>,
        /// Dump UNIX sockets whose peer is outside the tree; the restore
        /// connects them again to the peer's name (CRIU's option).
        #[arg(long)]
        ext_unix_sk: bool,
        /// Dump the file locks (flock, POSIX, OFD) the tree holds; without
        /// it a tree holding one is refused (CRIU's option).
        #[arg(short = 'l', long)]
        file_locks: bool,
        /// Dump established TCP connections (in repair mode, their packets
        /// blocked until the restore; CRIU's option).
        #[arg(long)]
        tcp_established: bool,
        /// An object reaching outside the tree, dumped as it is inside
        /// (CRIU's option; may be repeated): `veth[IFNAME]`, a veth device
        /// of the tree's network namespace whose other end is in another;
        /// `mnt[MOUNTPOINT]:KEY`, a bind mount from outside a
        /// pivot_root'ed tree's root, restored from the path the restore
        /// gives KEY.
        #[arg(long, value_name = "KIND[KEY]")]
        external: Vec<ckpt::external::External>,
        /// Write images CRIU restores too: every process's pages in full,
        /// none marked as shared with the parent (larger images; ckpt's
        /// restore shares such pages again by comparing them).
        #[arg(long)]
        criu_compatible: bool,
        /// Give up freezing the tree after this many seconds (a task
        /// that does not stop, in uninterruptible sleep say), as CRIU's
        /// --timeout; the tree is then let go as it was.
        #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT, value_parser = parse_timeout)]
        timeout: u64,
        /// CRIU writes a pid file on dump only for its page server or
        /// lazy-pages daemon, which ckpt does not have: accepted, and
        /// nothing is written (a warning says so).
        #[arg(long, value_name = "FILE")]
        pidfile: Option<PathBuf>,
        /// Accepted for CRIU compatibility: the dump always records every
        /// task's cgroups with their properties; the mode is the
        /// restore's to apply.
        #[arg(long, value_name = "MODE", num_args = 0..=1, default_missing_value = "soft")]
        manage_cgroups: Option<ckpt::restore::cgroups::Mode>,
        /// CRIU's link remaps (linking a file removed from its path back
        /// under a temporary name): not supported, refused with a message
        /// (ckpt copies unlinked files as ghost files, see --ghost-limit).
        #[arg(long)]
        link_remap: bool,
        /// Store only the pages written since this pre-dump (relative to
        /// the image directory unless absolute); the others are recorded
        /// as in it, through a `parent` link (CRIU's option).
        #[arg(long, value_name = "DIR")]
        prev_images_dir: Option<PathBuf>,
        /// Keep tracking the tree's writes after the dump, so that it can
        /// be the parent of the next one (CRIU's option).
        #[arg(long)]
        track_mem: bool,
        #[command(flatten)]
        page_server: PageServerOpts,
        #[command(flatten)]
        log: LogOpts,
    },
    /// Receive the pages of one dump (`dump --page-server`) into DIR,
    /// which appears once they have all arrived and check out; then exit.
    /// With --lazy-pages, serve DIR's pages to one lazy restore instead.
    PageServer {
        #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
        dir: PathBuf,
        /// Serve the pages images of DIR (checked against its manifest
        /// first) to one lazy restore, range by range as it asks, instead
        /// of receiving a dump's (CRIU's `page-server --lazy-pages`).
        #[arg(long)]
        lazy_pages: bool,
        /// The address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
        address: String,
        /// The port to listen on (0: any free one, printed on stdout).
        #[arg(long, value_name = "PORT")]
        port: u16,
        #[command(flatten)]
        log: LogOpts,
    },
    /// Copy the memory of the tree rooted at PID into DIR while it goes on
    /// running, and track its writes: a later `dump --prev-images-dir`
    /// stores only the pages written since (CRIU's pre-dump).
    PreDump {
        #[arg(short = 't', long = "tree", value_name = "PID")]
        pid: i32,
        #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
        dir: PathBuf,
        /// A previous pre-dump: this one stores only the pages written
        /// since, and links to it.
        #[arg(long, value_name = "DIR")]
        prev_images_dir: Option<PathBuf>,
        /// Accepted for CRIU compatibility: a pre-dump always tracks.
        #[arg(long)]
        track_mem: bool,
        /// Freeze the tree through this freezer cgroup first.
        #[arg(long, value_name = "PATH")]
        freeze_cgroup: Option<String>,
        /// Give up freezing the tree after this many seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT, value_parser = parse_timeout)]
        timeout: u64,
        #[command(flatten)]
        page_server: PageServerOpts,
        #[command(flatten)]
        log: LogOpts,
    },
    /// Restore the tree saved in DIR.
    Restore {
        #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
        dir: PathBuf,
        /// Detach from the restored tree and exit once it runs.
        #[arg(short = 'd', long = "restore-detached")]
        detach: bool,
        /// Write the restored root's PID here.
        #[arg(long, value_name = "FILE")]
        pidfile: Option<PathBuf>,
        /// Accepted for CRIU compatibility.
        #[arg(short = 'j', long)]
        shell_job: bool,
        /// Accepted for CRIU compatibility: the images say which UNIX
        /// sockets are connected again to a peer outside the tree.
        #[arg(long)]
        ext_unix_sk: bool,
        /// Take again the file locks the images hold (CRIU's option); a
        /// restore of images holding locks without it is refused.
        #[arg(short = 'l', long)]
        file_locks: bool,
        /// Restore the established TCP connections of the images (CRIU's
        /// option; without it such images are refused).
        #[arg(long)]
        tcp_established: bool,
        /// The tree's root file system is DIR (CRIU's option): the root a
        /// pivot_root'ed tree had is bound from DIR.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Where an object that reached outside the tree goes (CRIU's
        /// option; may be repeated): `veth[IFNAME]:OUTNAME[@BRIDGE]` makes
        /// the veth IFNAME's other end again as OUTNAME in this network
        /// namespace, up, and a port of BRIDGE if given; `mnt[KEY]:PATH`
        /// binds the external mount the dump declared as KEY from PATH.
        #[arg(long, value_name = "KIND[KEY]:VALUE")]
        external: Vec<ckpt::external::External>,
        /// Start the tree before its private anonymous memory is in: a
        /// daemon the restore leaves behind fills it on demand (page
        /// faults, through userfaultfd) and in the background, then exits
        /// (README: "Lazy restore").
        #[arg(long)]
        lazy_pages: bool,
        #[command(flatten)]
        page_server: PageServerOpts,
        /// What of the CPU the images were dumped on this one must have
        /// (CRIU's option): `fpu` (xsave state components), `ins`
        /// (instruction sets), `cpu` (every feature bit and the vendor),
        /// `all`, or `none`; comma-separated.
        #[arg(long, value_name = "CAPS", default_value = "fpu,ins")]
        cpu_cap: ckpt::kernel::cpu::CpuCap,
        /// What to do with cgroups (CRIU's modes): ignore, none, props,
        /// soft (the default, also without a value), full, strict.
        #[arg(long, value_name = "MODE", num_args = 0..=1, default_missing_value = "soft")]
        manage_cgroups: Option<ckpt::restore::cgroups::Mode>,
        /// Put the restored tree's cgroups under this root:
        /// `[controller:]/path` (no controller: every hierarchy without its
        /// own; cgroup2 is `cgroup2` or `unified`); the tree's own cgroup
        /// (the deepest one holding all its tasks) becomes the new root.
        /// May be given more than once.
        #[arg(long, value_name = "[CONTROLLER:]/PATH")]
        cgroup_root: Vec<ckpt::cgroupfs::CgroupRoot>,
        /// Restore what the images ask for even when an unprivileged user
        /// owns them or others can write them (README: "Trusting images").
        #[arg(long)]
        trust_images: bool,
        #[command(flatten)]
        log: LogOpts,
    },
    /// Print an image directory for people (or as JSON).
    Show {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Report which kernel features ckpt needs and whether this machine
    /// has them; `--feature NAME` checks one feature in CRIU's spelling
    /// (`--feature list` lists them), exiting 0 only when it is there.
    Check {
        #[arg(long, value_name = "NAME")]
        feature: Option<String>,
        /// Also probe every feature of `--feature list` (CRIU's --all).
        #[arg(long, alias = "extra")]
        all: bool,
    },
}

/// CRIU's default for --timeout, in seconds.
const DEFAULT_TIMEOUT: u64 = 10;

/// --timeout: whole seconds; 0 waits without a limit.
fn parse_timeout(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|&n| n <= 24 * 3600)
        .ok_or_else(|| format!("{s:?} is not a timeout (whole seconds, at most a day; 0: none)"))
}

/// -vN, --verbosity=N, or CRIU's -vv... (clap hands over what follows the
/// first v). Levels above 4 are 4: there is nothing more to say.
fn parse_verbosity(s: &str) -> Result<u8, String> {
    if !s.is_empty() && s.bytes().all(|b| b == b'v') {
        return Ok(4);
    }
    s.parse::<u32>()
        .map(|n| n.min(4) as u8)
        .map_err(|_| format!("{s:?} is not a verbosity (0 to 4, or more v's)"))
}

/// Where a file named on the command line goes: as CRIU resolves it, in
/// the work directory (-W), which is the images directory unless given;
/// an absolute path stays as it is.
fn in_work_dir(images: &Path, work: Option<&Path>, file: &Path) -> PathBuf {
    work.unwrap_or(images).join(file)
}

/// CRIU options whose feature ckpt does not have: refused before anything
/// is done, saying which feature is missing.
fn refuse_missing(log: &LogOpts, link_remap: bool) -> Result<(), String> {
    if let Some(yard) = &log.cgroup_yard {
        return Err(format!(
            "--cgroup-yard {}: cgroup yards are not supported: ckpt mounts no cgroup \
             hierarchies of its own, it uses those mounted on this machine \
             (/proc/self/mountinfo); drop the option",
            yard.display()
        ));
    }
    if link_remap {
        return Err(
            "--link-remap: link remaps are not supported: ckpt cannot link a file \
                    removed from its path back into the filesystem; it copies unlinked files \
                    into the images as ghost files (up to --ghost-limit) and refuses, naming \
                    it, a file removed from one path but linked under another; drop the option"
                .into(),
        );
    }
    Ok(())
}

/// A size in bytes with an optional K, M or G suffix (powers of 1024), as
/// CRIU's --ghost-limit takes it.
fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (a number of bytes, K, M or G)"))
}

/// Opens the log (-o, resolved in the work directory) and sets the level.
/// When the log goes into an images directory that does not exist yet,
/// the directory is made (private) to hold it, as CRIU wants it made.
fn init_log(l: &LogOpts, images: &Path) -> Result<(), String> {
    let level = l.verbosity.unwrap_or(2).min(4);
    match &l.log_file {
        Some(p) => {
            let path = in_work_dir(images, l.work_dir.as_deref(), p);
            if l.work_dir.is_none() && p.is_relative() && !images.exists() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(images)
                    .map_err(|e| {
                        format!(
                            "{}: cannot create the images directory for the log file {}: {e}",
                            images.display(),
                            p.display()
                        )
                    })?;
            }
            // Private like the images it may sit among (CRIU's mode too).
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("{}: cannot create log file: {e}", path.display()))?;
            log::init(level, Box::new(f), false);
        }
        None => log::init(level, Box::new(std::io::stderr()), true),
    }
    Ok(())
}

/// [`init_log`] and [`refuse_missing`], an error printed: what every
/// command does first.
fn start(l: &LogOpts, images: &Path, link_remap: bool) -> Result<(), ExitCode> {
    let r = refuse_missing(l, link_remap).and_then(|()| init_log(l, images));
    r.map_err(|e| {
        eprintln!("Error: {e}");
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (what, result): (&str, Result<i32, String>) = match cli.cmd {
        Cmd::Dump {
            pid,
            dir,
            leave_running,
            shell_job,
            ghost_limit,
            freeze_cgroup,
            ipc_ids,
            ext_unix_sk,
            file_locks,
            tcp_established,
            external,
            criu_compatible,
            timeout,
            pidfile,
            manage_cgroups,
            link_remap,
            prev_images_dir,
            track_mem,
            page_server,
            log,
        } => {
            if let Err(code) = start(&log, &dir, link_remap) {
                return code;
            }
            if let Some(mode) = manage_cgroups {
                ckpt::debug!(
                    "--manage-cgroups={mode}: the dump records every cgroup of the tree with \
                     its properties whatever the mode; the restore applies one"
                );
            }
            if let Some(p) = &pidfile {
                ckpt::warn!(
                    "--pidfile {}: on dump CRIU writes it only for a page server or \
                     lazy-pages daemon the dump runs, which ckpt does not have (its page \
                     server is `ckpt page-server`); nothing is written",
                    p.display()
                );
            }
            let code = dump::worker::run(|| {
                let t = std::time::Instant::now();
                let r = dump::dump(&DumpOptions {
                    pid,
                    dir: dir.clone(),
                    leave_running,
                    ghost_limit,
                    freeze_cgroup,
                    ipc_ids,
                    shell_job,
                    ext_unix_sk,
                    file_locks,
                    tcp_established,
                    external,
                    criu_compatible,
                    timeout: (timeout > 0).then(|| std::time::Duration::from_secs(timeout)),
                    pre_dump: false,
                    prev_images_dir,
                    track_mem,
                    page_server: page_server.target(),
                });
                finish(
                    "dump",
                    r.map(|s| {
                    ckpt::info!(
                        "dumped {} task(s), {} mappings, {} private + {} shared pages into {} in {:.3}s",
                        s.tasks,
                        s.vmas,
                        s.pages,
                        s.shmem_pages,
                        dir.display(),
                        t.elapsed().as_secs_f64()
                    );
                        0
                    })
                    .map_err(|e| e.to_string()),
                )
            });
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
        Cmd::PreDump {
            pid,
            dir,
            prev_images_dir,
            track_mem: _,
            freeze_cgroup,
            timeout,
            page_server,
            log,
        } => {
            if let Err(code) = start(&log, &dir, false) {
                return code;
            }
            let code = dump::worker::run(|| {
                let t = std::time::Instant::now();
                let r = dump::dump(&DumpOptions {
                    freeze_cgroup,
                    timeout: (timeout > 0).then(|| std::time::Duration::from_secs(timeout)),
                    pre_dump: true,
                    prev_images_dir,
                    track_mem: true,
                    leave_running: true,
                    page_server: page_server.target(),
                    ..DumpOptions::new(pid, dir.clone())
                });
                finish(
                    "pre-dump",
                    r.map(|s| {
                        ckpt::info!(
                            "pre-dumped {} task(s), {} mappings, {} pages into {} in {:.3}s",
                            s.tasks,
                            s.vmas,
                            s.pages,
                            dir.display(),
                            t.elapsed().as_secs_f64()
                        );
                        0
                    })
                    .map_err(|e| e.to_string()),
                )
            });
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
        Cmd::Restore {
            dir,
            detach,
            pidfile,
            shell_job,
            ext_unix_sk: _,
            file_locks,
            tcp_established,
            root,
            external,
            lazy_pages,
            page_server,
            cpu_cap,
            manage_cgroups,
            cgroup_root,
            trust_images,
            log,
        } => {
            if let Err(code) = start(&log, &dir, false) {
                return code;
            }
            let page_server = page_server
                .target()
                .map(|(address, port)| restore::lazy::PageServer { address, port });
            if page_server.is_some() && !lazy_pages {
                return ExitCode::from(finish(
                    "restore",
                    Err("--page-server needs --lazy-pages (the pages are fetched by the lazy-pages daemon; \
                         without it, copy the page server's pages files into the images directory)"
                        .to_string()),
                ) as u8);
            }
            let pidfile = pidfile.map(|p| in_work_dir(&dir, log.work_dir.as_deref(), &p));
            let r = restore::restore(&RestoreOptions {
                dir,
                detach,
                pidfile,
                manage_cgroups: manage_cgroups.unwrap_or_default(),
                cgroup_roots: cgroup_root,
                trust_images,
                shell_job,
                file_locks,
                tcp_established,
                root,
                external,
                lazy_pages,
                page_server,
                cpu_cap,
            });
            ("restore", r.map_err(|e| e.to_string()))
        }
        Cmd::PageServer {
            dir,
            lazy_pages,
            address,
            port,
            log,
        } => {
            if let Err(code) = start(&log, &dir, false) {
                return code;
            }
            ("page-server", page_server(&dir, &address, port, lazy_pages))
        }
        Cmd::Show { dir, json } => (
            "show",
            show::run(&dir, json).map(|_| 0).map_err(|e| e.to_string()),
        ),
        Cmd::Check { feature, all } => (
            "check",
            Ok(match feature {
                Some(name) => check::feature(&name),
                None => check::run(all),
            }),
        ),
    };
    ExitCode::from(finish(what, result).clamp(0, 255) as u8)
}

/// `ckpt page-server`: one dump's pages into `dir`, or (`lazy`) `dir`'s
/// pages to one lazy restore.
fn page_server(dir: &Path, address: &str, port: u16, lazy: bool) -> Result<i32, String> {
    use ckpt::pageserver;
    // The images to serve are checked before anyone is told to connect.
    let pages = match lazy {
        true => Some(pageserver::ServedPages::open(dir).map_err(|e| e.to_string())?),
        false => None,
    };
    let l = pageserver::listen(address, port).map_err(|e| e.to_string())?;
    let at = l.local_addr().map_err(|e| e.to_string())?;
    // On stdout, so that a script that asked for any port learns which.
    println!("ckpt page-server: listening on {at}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if let Some(pages) = pages {
        let sent = pageserver::serve_pages(&l, &pages).map_err(|e| e.to_string())?;
        ckpt::info!(
            "served {} bytes of {} in {} requests",
            sent.bytes,
            dir.display(),
            sent.requests
        );
        return Ok(0);
    }
    let got = pageserver::serve(&l, dir).map_err(|e| e.to_string())?;
    ckpt::info!(
        "received {} pages images, {} bytes, into {}",
        got.files,
        got.bytes,
        dir.display()
    );
    Ok(0)
}

/// The exit code of a command, its error reported.
fn finish(what: &str, result: Result<i32, String>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            ckpt::error!("{what} failed: {e}");
            if !ckpt::log::is_stderr() || !ckpt::log::enabled(1) {
                eprintln!("Error ({what}): {e}");
            }
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ckpt").chain(args.iter().copied()))
    }

    fn dump(args: &[&str]) -> Cmd {
        let mut v = vec!["dump", "-t", "1", "-D", "img"];
        v.extend_from_slice(args);
        parse(&v).unwrap_or_else(|e| panic!("{args:?}: {e}")).cmd
    }

    fn log_of(cmd: &Cmd) -> &LogOpts {
        match cmd {
            Cmd::Dump { log, .. } | Cmd::Restore { log, .. } => log,
            _ => panic!("no log options"),
        }
    }

    #[test]
    fn verbosity_spellings() {
        assert_eq!(parse_verbosity("0"), Ok(0));
        assert_eq!(parse_verbosity("3"), Ok(3));
        assert_eq!(parse_verbosity("9"), Ok(4));
        assert_eq!(parse_verbosity("v"), Ok(4));
        assert_eq!(parse_verbosity("vvv"), Ok(4));
        assert!(parse_verbosity("").is_err());
        assert!(parse_verbosity("x").is_err());
        assert!(parse_verbosity("-1").is_err());
        for (args, want) in [
            (&["-v"][..], Some(4)),
            (&["-v2"], Some(2)),
            (&["-vv"], Some(4)),
            (&["-vvvv"], Some(4)),
            (&["--verbosity=1"], Some(1)),
            (&["--verbosity"], Some(4)),
            (&[], None),
        ] {
            assert_eq!(log_of(&dump(args)).verbosity, want, "{args:?}");
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("0"), Ok(0));
        assert_eq!(parse_timeout("10"), Ok(10));
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("1.5").is_err());
        assert!(parse_timeout("100000").is_err());
        match dump(&[]) {
            Cmd::Dump { timeout, .. } => assert_eq!(timeout, DEFAULT_TIMEOUT),
            _ => unreachable!(),
        }
        match dump(&["--timeout", "3"]) {
            Cmd::Dump { timeout, .. } => assert_eq!(timeout, 3),
            _ => unreachable!(),
        }
    }

    #[test]
    fn files_go_to_the_work_directory() {
        let img = Path::new("/srv/img");
        let w = Path::new("/var/log/ckpt");
        let f = |work: Option<&Path>, file: &str| in_work_dir(img, work, Path::new(file));
        assert_eq!(f(None, "dump.log"), Path::new("/srv/img/dump.log"));
        assert_eq!(f(Some(w), "dump.log"), Path::new("/var/log/ckpt/dump.log"));
        assert_eq!(f(None, "/tmp/x.log"), Path::new("/tmp/x.log"));
        assert_eq!(f(Some(w), "/tmp/x.log"), Path::new("/tmp/x.log"));
        assert_eq!(f(None, "sub/r.pid"), Path::new("/srv/img/sub/r.pid"));
        // A relative images directory stays relative to where ckpt runs.
        assert_eq!(
            in_work_dir(Path::new("img"), None, Path::new("d.log")),
            Path::new("img/d.log")
        );
    }

    #[test]
    fn page_server_options_go_together() {
        let ok = ["--page-server", "--address", "10.0.0.2", "--port", "9000"];
        for cmd in [
            &["dump", "-t", "1", "-D", "i"][..],
            &["pre-dump", "-t", "1", "-D", "i"],
        ] {
            let args: Vec<&str> = cmd.iter().chain(&ok).copied().collect();
            assert!(parse(&args).is_ok(), "{args:?}");
            let alone: Vec<&str> = cmd.iter().chain(&ok[..1]).copied().collect();
            assert!(
                parse(&alone).is_err(),
                "--page-server needs --address and --port"
            );
            let no_flag: Vec<&str> = cmd.iter().chain(&ok[1..]).copied().collect();
            assert!(parse(&no_flag).is_err(), "--address alone means nothing");
        }
        match parse(
            &["dump", "-t", "1", "-D", "i"]
                .iter()
                .chain(&ok)
                .copied()
                .collect::<Vec<_>>(),
        )
        .unwrap()
        .cmd
        {
            Cmd::Dump { page_server, .. } => {
                assert_eq!(page_server.target(), Some(("10.0.0.2".to_string(), 9000)))
            }
            _ => panic!("not a dump"),
        }
        assert!(parse(&["page-server", "-D", "d", "--port", "0"]).is_ok());
        assert!(
            parse(&["page-server", "-D", "d"]).is_err(),
            "a port is needed"
        );
    }

    #[test]
    fn criu_options_are_known() {
        // Every option CRIU users pass, in CRIU's spelling.
        let c = dump(&[
            "--manage-cgroups",
            "--file-locks",
            "--tcp-established",
            "--ext-unix-sk",
            "--no-default-config",
            "--log-file",
            "d.log",
            "--verbosity=4",
            "--timeout",
            "5",
            "--pidfile",
            "p",
            "-W",
            "/tmp",
            "--shell-job",
            "--leave-running",
        ]);
        let Cmd::Dump {
            manage_cgroups,
            file_locks,
            tcp_established,
            ext_unix_sk,
            pidfile,
            log,
            ..
        } = &c
        else {
            unreachable!()
        };
        assert_eq!(*manage_cgroups, Some(ckpt::restore::cgroups::Mode::Soft));
        assert!(*file_locks && *tcp_established && *ext_unix_sk);
        assert_eq!(pidfile.as_deref(), Some(Path::new("p")));
        assert!(log.no_default_config);
        assert_eq!(log.work_dir.as_deref(), Some(Path::new("/tmp")));
        assert_eq!(log.log_file.as_deref(), Some(Path::new("d.log")));
        assert!(parse(&["dump", "--tree", "1", "--images-dir", "i"]).is_ok());
        assert!(parse(&["dump", "-t", "1", "-D", "i", "--manage-cgroups=full"]).is_ok());
        assert!(parse(&["dump", "-t", "1", "-D", "i", "--manage-cgroups=bogus"]).is_err());
        assert!(parse(&[
            "restore",
            "--images-dir",
            "i",
            "--work-dir",
            "w",
            "--log-file",
            "r.log",
            "--no-default-config",
            "--manage-cgroups",
            "-vvv"
        ])
        .is_ok());
        assert!(parse(&["check", "--feature", "timens"]).is_ok());
        assert!(parse(&["check", "--all"]).is_ok());
    }

    #[test]
    fn missing_features_are_named() {
        let Cmd::Dump {
            log, link_remap, ..
        } = dump(&["--link-remap"])
        else {
            unreachable!()
        };
        let e = refuse_missing(&log, link_remap).unwrap_err();
        assert!(
            e.contains("--link-remap") && e.contains("not supported"),
            "{e}"
        );
        let yard = dump(&["--cgroup-yard", "/y"]);
        let e = refuse_missing(log_of(&yard), false).unwrap_err();
        assert!(
            e.contains("--cgroup-yard /y") && e.contains("not supported"),
            "{e}"
        );
        assert!(refuse_missing(log_of(&dump(&[])), false).is_ok());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("8K"), Ok(8192));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("1.5M").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
