//! Page-server trials, part of `cargo test --test safety`:
//!
//! - `dump/page-server`: `ckpt page-server` on a loopback port receives
//!   the pages of a dump (`dump --page-server`); the dump's own directory
//!   holds none (a restore of it alone is refused, saying where they
//!   are), the server's holds them all; put together, the two restore
//!   and the program finds its memory intact.
//! - `pre-dump/page-server`: a pre-dump and the dump after it, each
//!   through a page server; the chain, put together, restores.
//! - `restore/lazy-page-server-dies`: a lazy restore from a page server
//!   that dies part way: the tree is killed, the error names the server,
//!   the pages file and the range.
//! - `dump/page-server-fails`: a server that cannot be reached, and one
//!   that hangs up part way through the pages: each dump fails naming the
//!   page server, leaves no image, and the tree runs on as before.

use super::*;

use std::io::BufRead;
use std::net::TcpListener;

/// One dump (`cmd`: "dump" or "pre-dump", with `extra` options) of the
/// case's tree into `img` with its pages sent to a page server writing
/// `srv`: both must succeed, `img` must hold no pages and `srv` at least
/// `min_bytes` of them; returns the server's pages files.
fn dump_through(
    run: &mut Run,
    cmd: &str,
    img: &Path,
    srv: &Path,
    extra: &[&str],
    min_bytes: u64,
) -> Result<Vec<PathBuf>, String> {
    let pid = run.pid.expect("started");
    let name = srv
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    let server_what = format!("server-{name}");
    let server = run.start_page_server(srv, &server_what, false)?;
    let what = format!("{cmd}-{name}");
    let ps = server.dump_args();
    let mut all: Vec<&str> = ps.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    let mut args = dump_args(run, pid, img, &what, &all);
    args[0] = cmd.into();
    let st = run.engine(&what, img, args)?;
    if !st.success() {
        return Err(format!(
            "the {cmd} to the page server failed ({st}): {}",
            console(run, &what).trim()
        ));
    }
    let there = run.finish_page_server(server)?;
    let here = trial::pages_files(img);
    if !here.is_empty() {
        return Err(format!(
            "the {cmd} wrote pages into its own directory: {}",
            show_paths(&here)
        ));
    }
    let bytes: u64 = there
        .iter()
        .map(|p| fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    if bytes < min_bytes {
        return Err(format!(
            "after the {cmd}, the page server holds {bytes} bytes of pages ({}), less than {min_bytes}",
            show_paths(&there)
        ));
    }
    run.note(format!(
        "{cmd}: the page server received {} files, {bytes} bytes",
        there.len()
    ));
    Ok(there)
}

/// `mem` fills most of its 48 MiB with random data: that much must
/// travel (the restore's manifest check then holds it to the byte).
const MEM_BYTES: u64 = 40 << 20;

pub fn dump_page_server(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let (img, srv) = (run.path("img-1"), run.path("img-srv"));
    let pages = dump_through(run, "dump", &img, &srv, &[], MEM_BYTES)?;
    run.wait_tree_gone(Duration::from_secs(30))?;
    // Without the server's half, the restore refuses and says where the
    // pages are.
    let what = "restore-without-pages";
    let args = restore_args(run, &img, what);
    let out = expect_failure(run, what, &img, args)?;
    expect_mentions(what, &out, &[&["pages-1.img"], &["page server"]])?;
    trial::copy_into(&pages, &img)?;
    let st = run.engine_restore(1)?;
    if !st.success() {
        return Err(format!(
            "the restore of the dump's images with the server's pages failed ({st}): {}",
            console(run, "restore-1").trim()
        ));
    }
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// A pre-dump and the dump after it, both through page servers: the dump
/// needs only the pre-dump's pagemaps, not its pages, and sends only what
/// was written since; put together, the chain restores.
pub fn pre_dump_page_server(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let (pre, pre_srv) = (run.path("img-pre-1"), run.path("img-pre-srv"));
    let pre_pages = dump_through(run, "pre-dump", &pre, &pre_srv, &[], MEM_BYTES)?;
    let (img, srv) = (run.path("img-1"), run.path("img-srv"));
    let pages = dump_through(
        run,
        "dump",
        &img,
        &srv,
        &["--prev-images-dir", "../img-pre-1"],
        0,
    )?;
    run.wait_tree_gone(Duration::from_secs(30))?;
    trial::copy_into(&pre_pages, &pre)?;
    trial::copy_into(&pages, &img)?;
    let st = run.engine_restore(1)?;
    if !st.success() {
        return Err(format!(
            "the restore of the chain with the servers' pages failed ({st}): {}",
            console(run, "restore-1").trim()
        ));
    }
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// A listener that takes one connection, reads `keep` bytes of it and
/// hangs up: a page server that dies part way.
fn hang_up_after(keep: u64) -> Result<(u16, std::thread::JoinHandle<u64>), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    let h = std::thread::spawn(move || {
        let Ok((s, _)) = l.accept() else { return 0 };
        let mut r = std::io::BufReader::new(s);
        let mut got = 0u64;
        while got < keep {
            match r.fill_buf() {
                Ok([]) | Err(_) => break,
                Ok(b) => {
                    let n = b.len().min((keep - got) as usize);
                    r.consume(n);
                    got += n as u64;
                }
            }
        }
        got
    });
    Ok((port, h))
}

pub fn dump_page_server_fails(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let before = capture(run, pid)?;
    let p = pid.to_string();

    // Nothing listens on the port: refused before the tree is touched.
    let gone = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
    let port = gone.local_addr().map_err(|e| e.to_string())?.port();
    drop(gone);
    let img = run.path("img-unreachable");
    let what = "dump-unreachable";
    let extra = trial::page_server_args(port);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let args = dump_args(run, pid, &img, what, &extra);
    let out = expect_failure(run, what, &img, args)?;
    let addr = format!("127.0.0.1:{port}");
    expect_mentions(what, &out, &[&["page server"], &[&addr], &[&p]])?;
    check_unharmed(run, &before, "after the dump to no page server")?;
    expect_no_image(&img, &run.dir.clone(), &[])?;

    // The server hangs up after 4 MiB of the 48.
    let (port, server) = hang_up_after(4 << 20)?;
    let img = run.path("img-cut");
    let what = "dump-cut";
    let extra = trial::page_server_args(port);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let args = dump_args(run, pid, &img, what, &extra);
    let out = expect_failure(run, what, &img, args)?;
    let got = server.join().unwrap_or(0);
    run.note(format!("the hanging-up server read {got} bytes"));
    let addr = format!("127.0.0.1:{port}");
    expect_mentions(what, &out, &[&["page server"], &[&addr], &[&p]])?;
    check_unharmed(run, &before, "after the dump whose page server hung up")?;
    expect_no_image(&img, &run.dir.clone(), &[])?;
    run.stop_and_verify()?;
    Ok(Outcome::Passed)
}

/// A proxy on a loopback port in front of the page server on `upstream`
/// that forwards its first connection (the engine's) whole and each later
/// one (the lazy-pages daemon's: one for its faults, one for the runs it
/// fetches ahead) until `keep` bytes came back from the server on it,
/// then cuts it: a page server that dies in the middle of a lazy restore.
fn cut_daemon_after(upstream: u16, keep: u64) -> Result<u16, String> {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        for (n, c) in l.incoming().enumerate() {
            let (Ok(down), Ok(up)) = (c, TcpStream::connect(("127.0.0.1", upstream))) else {
                return;
            };
            let limit = if n >= 1 { keep } else { u64::MAX };
            let (mut d2, mut u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut d2, &mut u2);
            });
            std::thread::spawn(move || {
                let (mut down, mut up) = (down, up);
                let (mut buf, mut sent) = (vec![0u8; 1 << 16], 0u64);
                while sent < limit {
                    let want = buf.len().min((limit - sent) as usize);
                    match up.read(&mut buf[..want]) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            if down.write_all(&buf[..k]).is_err() {
                                break;
                            }
                            sent += k as u64;
                        }
                    }
                }
                let _ = down.shutdown(Shutdown::Both);
                let _ = up.shutdown(Shutdown::Both);
            });
            if n == 2 {
                return;
            }
        }
    });
    Ok(port)
}

/// A lazy restore from a page server (`restore --lazy-pages
/// --page-server`) whose server goes away part way through the pages:
/// the lazy-pages daemon kills the restored tree rather than let it run
/// on missing memory, and its error names the server's address, the
/// pages file and the range it could not fetch.
pub fn restore_lazy_page_server_dies(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    dump_1(run)?;
    let (img, srv) = (run.path("img-1"), run.path("img-lps"));
    fs::create_dir(&srv).map_err(|e| format!("create {}: {e}", srv.display()))?;
    let manifest = images::MANIFEST_NAME;
    fs::copy(img.join(manifest), srv.join(manifest)).map_err(|e| format!("copy: {e}"))?;
    for p in trial::pages_files(&img) {
        let to = srv.join(p.file_name().expect("a file"));
        fs::rename(&p, &to).map_err(|e| format!("move {}: {e}", p.display()))?;
    }
    let server = run.start_page_server(&srv, "lazy-page-server", true)?;
    // `mem` has 48 MiB of lazy memory: cut after 4 MiB of it.
    let port = cut_daemon_after(server.port, 4 << 20)?;
    let what = "restore-cut";
    let mut args = restore_args(run, &img, what);
    args.push("--lazy-pages".into());
    args.extend(trial::page_server_args(port).iter().map(Into::into));
    let st = run.engine(what, &img, args)?;
    run.note(format!(
        "{what}: {st} (the cut may come before or after the tree runs)"
    ));
    let line = daemon_kill_line(run, what, "the cut connection")?;
    let addr = format!("127.0.0.1:{port}");
    expect_mentions(
        what,
        &line,
        &[
            &[&addr],
            &["pages-"],
            &["bytes at offset"],
            &["closed the connection"],
        ],
    )?;
    tree_killed(run, pid, "after the cut")?;
    run.note(format!("after the cut: {line}"));
    drop(server);
    Ok(Outcome::Passed)
}

/// A lazy restore from local images whose pages file has a damaged block
/// in the lazy memory: the restore checks every other block before any
/// task exists and leaves the lazy ones to the daemon, which checks each
/// before its first byte reaches a task. So the tree may start, but it
/// never runs on the damaged page: the daemon kills it, naming the file
/// and the block. The intact image then restores and passes.
pub fn restore_lazy_damaged_block(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    dump_1(run)?;
    let (img, bad) = (run.path("img-1"), run.path("img-bad"));
    copy_dir(&img, &bad)?;
    let manifest = fs::read_to_string(bad.join(images::MANIFEST_NAME))
        .map_err(|e| format!("{}: {e}", bad.display()))?;
    if !manifest.lines().any(|l| l.starts_with("blocks ")) {
        return Err(format!(
            "the images of `mem` have no block checksums:\n{manifest}"
        ));
    }
    let (desc, _) = flip_page_byte(&bad, pid)?;
    run.note(format!("damaged copy img-bad: {desc}"));
    let what = "restore-lazy-bad";
    let mut args = restore_args(run, &bad, what);
    args.push("--lazy-pages".into());
    let st = run.engine(what, &bad, args)?;
    run.note(format!(
        "{what}: {st} (the damage is found when the daemon first serves the block)"
    ));
    let line = daemon_kill_line(run, what, "the damaged block")?;
    expect_mentions(what, &line, &[&["pages-1.img"], &["block"], &["damaged"]])?;
    tree_killed(run, pid, "after the damaged block")?;
    run.note(format!("the daemon: {line}"));
    restore_and_verify(
        run,
        "restore of the intact image",
        Some((&tree, &stopped, "after restoring the intact image")),
    )
}

/// The line of the restore `what`'s log where the lazy-pages daemon says
/// it kills the tree, waited for (it reports `why`).
fn daemon_kill_line(run: &Run, what: &str, why: &str) -> Result<String, String> {
    let log = run.path(&format!("{what}.log"));
    let said = trial::poll(Duration::from_secs(20), || {
        let text = fs::read_to_string(&log).ok()?;
        text.contains("killing the restored tasks").then_some(text)
    })
    .ok_or_else(|| {
        format!(
            "the lazy-pages daemon did not report {why} in {}",
            log.display()
        )
    })?;
    Ok(said
        .lines()
        .find(|l| l.contains("killing the restored tasks"))
        .unwrap_or_default()
        .to_string())
}

/// The restored tree (root `pid`) is gone, and no process of the case
/// runs: nothing goes on on memory the daemon could not fill.
fn tree_killed(run: &mut Run, pid: i32, when: &str) -> Result<(), String> {
    let known = run.known.clone();
    let gone = trial::poll(SETTLE, || {
        procfs::reap_zombies(pid, &known);
        procfs::stat(pid).is_none().then_some(())
    });
    if gone.is_none() {
        return Err(format!(
            "{when}, pid {pid} still runs on memory the daemon did not fill"
        ));
    }
    let left = strays(run, &[]);
    if !left.is_empty() {
        return Err(format!("{when}, processes of the case run: {left:?}"));
    }
    Ok(())
}
