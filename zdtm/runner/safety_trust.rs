//! Untrusted images, part of `cargo test --test safety`
//! (`restore/untrusted-images`): an image directory that an unprivileged
//! user owns restores only what that user could do themselves, whatever
//! the images say. The program is one of the suite's, running as the test
//! user; its image is given to that user and then edited as they could:
//!
//! - credentials raised to uid 0 with every capability: refused, naming
//!   the credentials and `--trust-images`;
//! - a file entry pointing at /etc/shadow: refused, naming the path;
//! - a relative file path: refused even with `--trust-images`;
//! - a directory others can write: refused;
//!
//! nothing is created by any of them, and the intact image, owned by the
//! user, restores and the program passes.

use super::*;

use cases::{TEST_GID, TEST_GROUPS, TEST_UID};

/// Gives `dir` to the test user, as if they had dumped it: one file gets
/// their other group (which only a member could give it).
fn give_to_user(dir: &Path) -> Result<(), String> {
    let chown = |p: &Path, gid: u32| {
        std::os::unix::fs::chown(p, Some(TEST_UID), Some(gid))
            .map_err(|e| format!("chown {}: {e}", p.display()))
    };
    chown(dir, TEST_GID)?;
    for e in fs::read_dir(dir).map_err(|e| e.to_string())? {
        let p = e.map_err(|e| e.to_string())?.path();
        let gid = if p.ends_with("inventory.img") {
            TEST_GROUPS[1]
        } else {
            TEST_GID
        };
        chown(&p, gid)?;
    }
    Ok(())
}

fn edit_creds(dir: &Path, pid: i32) -> Result<(), String> {
    let name = format!("core-{pid}.img");
    let p = dir.join(&name);
    let mut core: pb::CoreEntry = images::read_one(&p, Magic::Core).map_err(|e| e.to_string())?;
    let c = core
        .thread_core
        .as_mut()
        .and_then(|t| t.creds.as_mut())
        .ok_or("test setup: no creds in the core image")?;
    (c.uid, c.euid, c.suid, c.fsuid) = (0, 0, 0, 0);
    (c.gid, c.egid, c.sgid, c.fsgid) = (0, 0, 0, 0);
    c.cap_eff = vec![u32::MAX, 0x1ff];
    c.cap_prm = vec![u32::MAX, 0x1ff];
    let d = images::write_image(&p, Magic::Core, &[core]).map_err(|e| e.to_string())?;
    reseal(dir, &name, d)
}

/// Points the file entry of the program's executable at `path`.
fn edit_exe_path(dir: &Path, pid: i32, path: &str) -> Result<(), String> {
    let mm: pb::MmEntry = images::read_one(dir.join(format!("mm-{pid}.img")), Magic::Mm)
        .map_err(|e| e.to_string())?;
    let p = dir.join("files.img");
    let mut files: Vec<pb::FileEntry> =
        images::read_all(&p, Magic::Files).map_err(|e| e.to_string())?;
    let reg = files
        .iter_mut()
        .find(|f| f.id == mm.exe_file_id)
        .and_then(|f| f.reg.as_mut())
        .ok_or("test setup: no file entry for the executable")?;
    reg.name = path.to_string();
    let d = images::write_image(&p, Magic::Files, &files).map_err(|e| e.to_string())?;
    reseal(dir, "files.img", d)
}

fn refused(
    run: &mut Run,
    pid: i32,
    img: &Path,
    what: &str,
    extra: &[&str],
    groups: &[&[&str]],
) -> Result<(), String> {
    let mut args = restore_args(run, img, what);
    args.extend(extra.iter().map(Into::into));
    let out = expect_failure(run, what, img, args)?;
    expect_mentions(what, &out, groups)?;
    expect_nothing_restored(run, pid, what)
}

pub fn restore_untrusted(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    dump_1(run)?;
    let img = run.path("img-1");

    let bad = run.path("img-root");
    copy_dir(&img, &bad)?;
    edit_creds(&bad, pid)?;
    give_to_user(&bad)?;
    refused(
        run,
        pid,
        &bad,
        "restore-root",
        &[],
        &[&["credentials"], &["uid 0", "euid 0"], &["--trust-images"]],
    )?;

    let bad = run.path("img-shadow");
    copy_dir(&img, &bad)?;
    edit_exe_path(&bad, pid, "/etc/shadow")?;
    give_to_user(&bad)?;
    refused(
        run,
        pid,
        &bad,
        "restore-shadow",
        &[],
        &[&["/etc/shadow"], &["may not open"]],
    )?;

    let bad = run.path("img-relative");
    copy_dir(&img, &bad)?;
    edit_exe_path(&bad, pid, "../../etc/shadow")?;
    refused(
        run,
        pid,
        &bad,
        "restore-relative",
        &["--trust-images"],
        &[&["../../etc/shadow"], &["relative"]],
    )?;

    let bad = run.path("img-open");
    copy_dir(&img, &bad)?;
    give_to_user(&bad)?;
    fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .map_err(|e| e.to_string())?;
    refused(
        run,
        pid,
        &bad,
        "restore-open",
        &[],
        &[&["writable"], &["--trust-images"]],
    )?;

    give_to_user(&img)?;
    restore_and_verify(
        run,
        "restore of the intact image the user owns",
        Some((&tree, &stopped, "after the refused restores")),
    )
}
