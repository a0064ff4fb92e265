//! `unshare_tree`: the by-hand check of the namespaces issue, as a trial.
//! util-linux's `unshare --pid --fork --uts --ipc --mount-proc` runs a
//! shell script that sets a hostname, makes a SysV segment, queue and
//! semaphore set, and starts a few processes (one with children of its
//! own). The tree's init stays in `unshare`'s process group and session,
//! outside its pid namespace (nobody calls setsid), as anyone trying this
//! by hand gets. The init is dumped by its pid as seen from outside,
//! restored with `-d`, and inside the restored namespaces the hostname,
//! the SysV objects (ids, keys, modes, sizes) and every process (pid in
//! the namespace, parent, group, session, command) must read as before.

use std::process::{Command, Stdio};

use libtest_mimic::Failed;

const SCRIPT: &str = "hostname ckpt-unshare-tree && ipcmk -M 4096 >/dev/null && ipcmk -Q >/dev/null \
                      && ipcmk -S 3 >/dev/null && { sleep 1000 & (sleep 1001 & sleep 1002 & wait) & } \
                      && exec sleep 1003";

/// How many processes the namespace holds once the script has started
/// them all.
const PROCS: usize = 5;

/// What the namespace looks like from inside: hostname, `ipcs` lines
/// without the times, and `pid ppid pgid sid comm` of each process but
/// the one reading it.
fn inside(init: i32) -> Result<String, String> {
    let run = |flags: &[&str], cmd: &str| -> Result<String, String> {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(init.to_string())
            .args(flags)
            .args(["sh", "-c", cmd])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("nsenter: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nsenter {flags:?} {cmd}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let host = run(&["-u"], "hostname")?;
    let ipcs = run(&["-i"], "ipcs -m; ipcs -q; ipcs -s")?;
    let ps = run(
        &["-p", "-m"],
        // Builtins only, no pipeline: the reading shell is the one
        // process of the namespace that is not the tree's.
        "for d in /proc/[0-9]*; do [ \"${d#/proc/}\" = \"$$\" ] || \
         { read -r pid comm st ppid pgid sid rest < $d/stat && echo $pid $ppid $pgid $sid $comm; }; \
         done",
    )?;
    Ok(format!("hostname: {host}{ipcs}{ps}"))
}

fn count_procs(view: &str) -> usize {
    view.lines()
        .filter(|l| l.split(' ').count() == 5 && l.ends_with(')'))
        .count()
}

pub fn run() -> Result<(), Failed> {
    let dir = std::env::temp_dir().join(format!("ckpt-programs-unshare.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut unshare = Command::new("unshare");
    unshare.args([
        "--pid",
        "--fork",
        "--uts",
        "--ipc",
        "--mount-proc",
        "sh",
        "-c",
        SCRIPT,
    ]);
    let (init, before, mut clean) =
        super::start_unshared(unshare, &dir, "the unshared tree", |init| {
            inside(init).ok().filter(|v| count_procs(v) == PROCS)
        })?;
    if !before.contains("ckpt-unshare-tree") || before.matches("0x").count() < 3 {
        return Err(format!("before the dump, inside:\n{before}").into());
    }
    let restored = super::dump_and_restore(&dir, init, &mut clean)?;
    let after = inside(restored)?;
    if after != before {
        return Err(format!(
            "inside the restored namespaces:\n{after}\nbefore the dump:\n{before}"
        )
        .into());
    }
    clean.keep = false;
    Ok(())
}
