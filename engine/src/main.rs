//! The `ckpt` command line. Spelling follows CRIU's for the common options
//! (`dump -t PID -D DIR`, `restore -D DIR -d`, `--leave-running`, `-o`,
//! `-v`), so people and scripts that know CRIU can use ckpt as it is.

use std::path::PathBuf;
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

#[derive(Args, Clone)]
struct LogOpts {
    /// Write the log to this file (relative paths are relative to the
    /// current directory) instead of stderr.
    #[arg(short = 'o', long = "log-file", value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Verbosity: -v alone is 4 (debug); -vN picks 0 (silent) to 4.
    #[arg(short = 'v', value_name = "N", num_args = 0..=1, default_missing_value = "4")]
    verbosity: Option<u8>,
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
        /// Write images CRIU restores too: every process's pages in full,
        /// none marked as shared with the parent (larger images; ckpt's
        /// restore shares such pages again by comparing them).
        #[arg(long)]
        criu_compatible: bool,
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
    /// Report which kernel features ckpt needs and whether this machine has them.
    Check,
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

fn init_log(l: &LogOpts) -> Result<(), String> {
    let level = l.verbosity.unwrap_or(2).min(4);
    match &l.log_file {
        Some(p) => {
            let f = std::fs::File::create(p)
                .map_err(|e| format!("{}: cannot create log file: {e}", p.display()))?;
            log::init(level, Box::new(f), false);
        }
        None => log::init(level, Box::new(std::io::stderr()), true),
    }
    Ok(())
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
            criu_compatible,
            log,
        } => {
            if let Err(e) = init_log(&log) {
                eprintln!("Error: {e}");
                return ExitCode::from(1);
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
                    criu_compatible,
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
        Cmd::Restore {
            dir,
            detach,
            pidfile,
            shell_job,
            ext_unix_sk: _,
            file_locks,
            tcp_established,
            manage_cgroups,
            cgroup_root,
            trust_images,
            log,
        } => {
            if let Err(e) = init_log(&log) {
                eprintln!("Error: {e}");
                return ExitCode::from(1);
            }
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
            });
            ("restore", r.map_err(|e| e.to_string()))
        }
        Cmd::Show { dir, json } => (
            "show",
            show::run(&dir, json).map(|_| 0).map_err(|e| e.to_string()),
        ),
        Cmd::Check => ("check", Ok(check::run())),
    };
    ExitCode::from(finish(what, result).clamp(0, 255) as u8)
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
    use super::parse_size;

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
