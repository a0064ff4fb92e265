//! Page-server trials, part of `cargo test --test safety`:
//!
//! - `dump/page-server`: `ckpt page-server` on a loopback port receives
//!   the pages of a dump (`dump --page-server`); the dump's own directory
//!   holds none (a restore of it alone is refused, saying where they
//!   are), the server's holds them all; put together, the two restore
//!   and the program finds its memory intact.
//! - `pre-dump/page-server`: a pre-dump and the dump after it, each
//!   through a page server; the chain, put together, restores.
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
    let server = run.start_page_server(srv, &server_what)?;
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
