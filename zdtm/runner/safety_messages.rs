//! Refusals that say why, part of `cargo test --test safety`
//! (`dump/refusals-say-why`): where the kernel would only say EPERM or
//! ENOENT, the engine names what the target is and what to do.
//!
//! - pid 1: the init process, which cannot be traced;
//! - pid 2 (kthreadd): a kernel thread;
//! - a shell dumping its own tree, which holds the dumping ckpt;
//! - a second dump of a tree another dump is working on;
//! - a restore from a directory that does not exist;
//! - a restore of an image whose process tree names a pid that is not one.
//!
//! The program the case runs goes on unharmed through all of it.

use super::*;

use std::fs::File;

fn refused_dump(run: &mut Run, pid: i32, what: &str, groups: &[&[&str]]) -> Result<(), String> {
    let img = run.path(&format!("img-{what}"));
    let args = dump_args(run, pid, &img, what, &[]);
    let out = expect_failure(run, what, &img, args)?;
    expect_mentions(what, &out, groups)?;
    expect_pid(what, &out, pid)?;
    expect_no_image(&img, &img, &[])
}

pub fn dump_refusals_say_why(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let before = capture(run, pid)?;

    refused_dump(run, 1, "dump-init", &[&["init"]])?;
    refused_dump(run, 2, "dump-kthread", &[&["kernel thread"]])?;

    // A shell that dumps its own tree.
    let img = run.path("img-self");
    let log = run.path("dump-self.console");
    let st = Command::new("sh")
        .arg("-c")
        .arg("exec 3>&1; \"$0\" dump -t $$ -D \"$1\" --leave-running; echo \"exit $?\"")
        .arg(&run.cfg.engine)
        .arg(&img)
        .stdin(Stdio::null())
        .stdout(File::create(&log).map_err(|e| e.to_string())?)
        .stderr(Stdio::from(
            File::options()
                .append(true)
                .open(&log)
                .map_err(|e| e.to_string())?,
        ))
        .status()
        .map_err(|e| format!("sh: {e}"))?;
    let out = fs::read_to_string(&log).unwrap_or_default();
    run.note(format!(
        "a shell dumping its own tree ({st}): {}",
        out.trim()
    ));
    if !out.contains("exit 1") {
        return Err(format!(
            "the dump of the shell's own tree did not fail: {}",
            out.trim()
        ));
    }
    expect_mentions("dump-self", &out, &[&["ckpt's own process"]])?;

    // Two dumps of one tree: the second is refused while the first holds it.
    let img1 = run.path("img-first");
    let args = dump_args(run, pid, &img1, "dump-first", &["--leave-running"]);
    fs::create_dir(&img1).map_err(|e| e.to_string())?;
    let (mut first, _) = run.spawn_engine("dump-first", args)?;
    let traced = trial::poll(Duration::from_secs(30), || {
        procfs::status_field(pid, "TracerPid")
            .filter(|t| t.trim() != "0")
            .map(|_| ())
    });
    let second = traced.map(|()| {
        let img2 = run.path("img-second");
        let args = dump_args(run, pid, &img2, "dump-second", &["--leave-running"]);
        expect_failure(run, "dump-second", &img2, args)
    });
    let st = first.wait().map_err(|e| e.to_string())?;
    match second {
        // The first dump was over before it could be caught.
        None => run.note(format!(
            "dump-first ended ({st}) before a second could start"
        )),
        Some(out) => {
            let out = out?;
            expect_mentions("dump-second", &out, &[&["another ckpt"]])?;
        }
    }
    if !st.success() {
        return Err(format!(
            "dump-first failed ({st}): {}",
            console(run, "dump-first")
        ));
    }
    check_unharmed(run, &before, "after the refused dumps")?;

    // Restores.
    let missing = run.path("no-such-dir");
    let args = restore_args(run, &missing, "restore-missing");
    let out = expect_failure(run, "restore-missing", &missing, args)?;
    expect_mentions(
        "restore-missing",
        &out,
        &[&["no-such-dir"], &["does not exist"]],
    )?;

    let bad = run.path("img-badpid");
    copy_dir(&img1, &bad)?;
    let p = bad.join("pstree.img");
    let mut tree: Vec<pb::PstreeEntry> =
        images::read_all(&p, Magic::Pstree).map_err(|e| e.to_string())?;
    tree[0].pid = u32::MAX;
    let d = images::write_image(&p, Magic::Pstree, &tree).map_err(|e| e.to_string())?;
    reseal(&bad, "pstree.img", d)?;
    let args = restore_args(run, &bad, "restore-badpid");
    let out = expect_failure(run, "restore-badpid", &bad, args)?;
    expect_mentions(
        "restore-badpid",
        &out,
        &[&["pstree.img"], &["-1 is not a pid"]],
    )?;
    if out.contains("core--1") {
        return Err(format!(
            "restore-badpid names a file made of the bad pid: {}",
            out.trim()
        ));
    }

    check_unharmed(run, &before, "after the refused restores")?;
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// The program's first file mapping made shared and writable over a file
/// opened read-only: the restore's mmap fails (EACCES), and the message
/// must name the file, not only the address.
fn mmap_failure_names_the_file(run: &mut Run, img: &Path, pid: i32) -> Result<(), String> {
    let bad = run.path("img-mmap");
    copy_dir(img, &bad)?;
    let name = format!("mm-{pid}.img");
    let p = bad.join(&name);
    let mut mm: pb::MmEntry = images::read_one(&p, Magic::Mm).map_err(|e| e.to_string())?;
    let files: Vec<pb::FileEntry> =
        images::read_all(bad.join("files.img"), Magic::Files).map_err(|e| e.to_string())?;
    let v = mm
        .vmas
        .iter_mut()
        .find(|v| {
            v.status & ckpt::images::vma::VMA_FILE_PRIVATE != 0
                && v.prot & libc::PROT_EXEC as u32 != 0
        })
        .ok_or("test setup: no executable file mapping")?;
    let file = files
        .iter()
        .find(|f| f.id as u64 == v.shmid)
        .and_then(|f| f.reg.as_ref())
        .map(|r| r.name.clone())
        .ok_or("test setup: no file entry for the mapping")?;
    v.status =
        (v.status & !ckpt::images::vma::VMA_FILE_PRIVATE) | ckpt::images::vma::VMA_FILE_SHARED;
    v.flags = (v.flags & !(libc::MAP_PRIVATE as u32)) | libc::MAP_SHARED as u32;
    v.prot |= libc::PROT_WRITE as u32;
    v.fdflags = Some(libc::O_RDONLY as u32);
    let d = images::write_image(&p, Magic::Mm, &[mm]).map_err(|e| e.to_string())?;
    reseal(&bad, &name, d)?;
    let args = restore_args(run, &bad, "restore-mmap");
    let out = expect_failure(run, "restore-mmap", &bad, args)?;
    expect_mentions("restore-mmap", &out, &[&[file.as_str()]])?;
    expect_nothing_restored(run, pid, "restore-mmap")
}

/// `restore/mmap-names-the-file`: see [`mmap_failure_names_the_file`];
/// the intact image then restores.
pub fn restore_mmap_names_the_file(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    dump_1(run)?;
    let img = run.path("img-1");
    mmap_failure_names_the_file(run, &img, pid)?;
    restore_and_verify(
        run,
        "restore of the intact image",
        Some((&tree, &stopped, "after the refused restore")),
    )
}
