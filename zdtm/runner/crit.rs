//! ckpt's images through CRIU's own image tool: every image file of a
//! real ckpt dump is decoded to JSON with `crit decode` and encoded back
//! with `crit encode` (the Debian `criu` package's, /usr/bin/crit, which
//! ci/setup.sh installs), and ckpt restores the re-encoded copy, whose
//! program must then pass its own check, as in the zdtm runner.
//!
//! What this says: crit reads every image ckpt writes, and what crit
//! writes back (CRIU's schema, with ckpt's own fields numbered 1000 and
//! up dropped, since crit does not know them) is enough for ckpt to
//! restore.
//!
//! The manifest. `ckpt.manifest` vouches for the bytes ckpt wrote; crit's
//! files are other bytes (the fields it drops, its own encoding), so the
//! copy carries no manifest: ckpt restores images without one, as it does
//! CRIU's, with a warning, which the trial checks the restore printed.
//! Files crit does not decode are copied as they are: pages-N.img (raw
//! page contents, no magic, as in CRIU) and anything not an image.
//!
//! Without crit every trial says it is skipped and why.
//! `cargo test --test crit [-- NAME]`.

#[allow(dead_code)]
#[path = "cases.rs"]
mod cases;
#[path = "cgroups.rs"]
mod cgroups;
#[path = "known.rs"]
mod known;
#[allow(dead_code)]
#[path = "procfs.rs"]
mod procfs;
#[allow(dead_code)]
#[path = "trial.rs"]
mod trial;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use libtest_mimic::{Arguments, Completion, Trial};

use cases::{Case, Flavor, Variant};

/// The cases whose dumps go through crit: between them they write most
/// kinds of image (memory and pages, threads, a tree, pipes with data,
/// POSIX timers and itimers, pending signals, UNIX sockets with queues
/// and files in flight, a file lock, an unlinked file, memfd objects, SysV
/// IPC, cgroups), in about a minute on an idle machine.
const CRIT_CASES: &[&str] = &[
    "mem",
    "threads_basic",
    "tree_basic",
    "pipe_shared_child",
    "posix_timers",
    "sigpending",
    "unix_sockets_rights",
    "file_locks_held",
    "unlinked_file",
    "memfd",
    "sysv_sem_msg",
];

/// Trials known to fail, with why: each still runs, a failure shows as
/// ignored with the reason, and a pass fails the trial so that the entry
/// is removed.
const KNOWN: &[(&str, &str)] = &[
    (
        "crit/posix_timers",
        "a TIMER_ABSTIME POSIX timer is kept exact by the clock reading at dump in \
         posix_timer_entry fields 1000/1001 (ckpt's), which crit drops; CRIU's fields alone \
         hold it relative, so it comes back off by the time between dump and restore, as \
         CRIU's own images do (the cross test's criu-to-ckpt/posix_timers)",
    ),
    (
        "crit/memfd",
        "Debian's crit is CRIU 3.17's, whose memfd_inode_entry has no mode (field 9, CRIU \
         4.0): it drops the mode, and the memfd comes back with memfd_create's 0777",
    ),
];

/// The crit to use: `ZDTM_CRIT`, else /usr/bin/crit, if it runs.
fn crit() -> Result<PathBuf, String> {
    let path = std::env::var_os("ZDTM_CRIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/crit".into());
    match Command::new(&path).arg("--help").output() {
        Ok(o) if o.status.success() => Ok(path),
        Ok(o) => Err(format!(
            "{} --help failed: {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!(
            "no crit ({}: {e}); ci/setup.sh installs Debian's criu package, which has it",
            path.display()
        )),
    }
}

/// Runs crit with `args`; Err has its stderr.
fn run_crit(args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let crit = crit()?;
    let out = Command::new(&crit)
        .args(args)
        .output()
        .map_err(|e| format!("running {}: {e}", crit.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "crit {}: {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether crit decodes this file of an image directory: images with a
/// magic, not the raw pages nor what is not an image.
fn crit_decodes(name: &str) -> bool {
    name.ends_with(".img") && !name.starts_with("pages-")
}

/// One image through crit and back: Some(what changed) if the bytes
/// crit wrote differ from ckpt's.
fn one_file(img: &Path, copy: &Path, json: &Path, name: &str) -> Result<Option<String>, String> {
    let from = img.join(name);
    let to = copy.join(name);
    let j = json.join(format!("{name}.json"));
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    run_crit(&[
        os("decode"),
        os("-i"),
        from.as_os_str(),
        os("-o"),
        j.as_os_str(),
        os("--pretty"),
    ])
    .map_err(|e| format!("crit cannot decode {name} of ckpt's dump: {e}"))?;
    run_crit(&[
        os("encode"),
        os("-i"),
        j.as_os_str(),
        os("-o"),
        to.as_os_str(),
    ])
    .map_err(|e| format!("crit cannot encode {name} back from its own JSON: {e}"))?;
    let a = std::fs::read(&from).map_err(|e| format!("{}: {e}", from.display()))?;
    let b = std::fs::read(&to).map_err(|e| format!("{}: {e}", to.display()))?;
    Ok((a != b).then(|| format!("{name} ({} -> {} bytes)", a.len(), b.len())))
}

/// The between-hook: `img-N` goes through crit into `img-N.crit`, then
/// the two swap names, so the restore reads crit's copy and the original
/// stays beside it (`img-N.orig`) for comparison.
fn round_trip(dir: &Path, n: usize) -> Result<(), String> {
    let img = dir.join(format!("img-{n}"));
    let copy = dir.join(format!("img-{n}.crit"));
    let json = dir.join(format!("img-{n}.json"));
    for d in [&copy, &json] {
        std::fs::create_dir(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    let mut names: Vec<String> = std::fs::read_dir(&img)
        .map_err(|e| format!("list {}: {e}", img.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    // crit is a Python program: its runs go four at a time.
    let todo: Vec<&String> = names
        .iter()
        .filter(|n| n.as_str() != "ckpt.manifest") // see the module doc
        .collect();
    for name in todo.iter().filter(|n| !crit_decodes(n)) {
        std::fs::copy(img.join(name), copy.join(name)).map_err(|e| format!("copy {name}: {e}"))?;
    }
    let through: Vec<&String> = todo.into_iter().filter(|n| crit_decodes(n)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<Option<String>, String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(name) = through.get(i) else { break };
                        out.push(one_file(&img, &copy, &json, name));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("crit worker panicked"))
            .collect()
    });
    let decoded = results.len();
    let mut changed = Vec::new();
    for r in results {
        if let Some(c) = r? {
            changed.push(c);
        }
    }
    changed.sort();
    if decoded == 0 {
        return Err(format!("{}: no image for crit to decode", img.display()));
    }
    eprintln!(
        "crit: {}: {decoded} images decoded and encoded again; changed: {}",
        img.display(),
        if changed.is_empty() {
            "none".to_string()
        } else {
            changed.join(", ")
        }
    );
    // ckpt's manifest would refuse exactly what crit changed: the copy
    // goes without it (see the module doc), not with a weaker check.
    let manifest = ckpt::images::Manifest::read(&img).map_err(|e| e.to_string())?;
    match (manifest.check(&copy), changed.is_empty()) {
        (Ok(()), true) => {}
        (Err(e), false) => {
            let flagged = e.problems.len();
            if flagged != changed.len() {
                return Err(format!(
                    "the manifest flags {flagged} problems in crit's copy, but {} files changed: {e}",
                    changed.len()
                ));
            }
        }
        (Ok(()), false) => {
            return Err(
                "the manifest accepts crit's changed files: the checksums check nothing".into(),
            )
        }
        (Err(e), true) => return Err(format!("the manifest refuses crit's identical copy: {e}")),
    }
    // The images go private as ckpt wrote them (the restore refuses
    // images others could have written).
    {
        use std::os::unix::fs::PermissionsExt;
        for name in std::fs::read_dir(&copy)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            let _ = std::fs::set_permissions(name.path(), std::fs::Permissions::from_mode(0o600));
        }
        let _ = std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700));
    }
    let orig = dir.join(format!("img-{n}.orig"));
    std::fs::rename(&img, &orig).map_err(|e| format!("rename {}: {e}", img.display()))?;
    std::fs::rename(&copy, &img).map_err(|e| format!("rename {}: {e}", copy.display()))?;
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let crit = known::setup(&args, crit);
    let cfg = Arc::new(trial::Config::from_env());
    let mut trials = Vec::new();
    for name in CRIT_CASES {
        let case = known::case("crit", name);
        assert!(
            case.between.is_none(),
            "crit case {name} has a between-hook of its own"
        );
        let case: &'static Case = Box::leak(Box::new(Case {
            between: Some(round_trip),
            ..*case
        }));
        let cfg = Arc::clone(&cfg);
        let crit = crit.clone();
        let name = format!("crit/{}", case.name);
        trials.push(Trial::ignorable_test(name.clone(), move || {
            if let Err(why) = &crit {
                return Ok(Completion::ignored_with(why.clone()));
            }
            let r = trial::run(case, Flavor::H, Variant::Once, &cfg);
            known::judge(r, KNOWN, &name, false)
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}
