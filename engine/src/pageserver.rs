//! The page server: a dump's pages sent over TCP to another machine
//! (CRIU's `page-server` and `dump --page-server`), which writes them as
//! the same `pages-N.img` files a local dump would.
//!
//! Only the pages travel, as with CRIU: the dump writes every other image
//! locally, and its manifest lists the pages files too (size and xxh3), so
//! the two halves put into one directory restore, and a page lost or
//! changed on the way is caught twice: by the server, which checks each
//! file against the digest the dump sends when it closes it, and by the
//! restore's manifest check.
//!
//! The protocol is ckpt's own; CRIU's page server speaks another one and
//! the two cannot be mixed. After an 8-byte hello, frames of `kind: u8,
//! file: u32, len: u32` (little-endian) and `len` bytes: OPEN (the file's
//! name), DATA (its next bytes), CLOSE (its size as u64 and its xxh3-128
//! digest), END (nothing). The server answers END with `K` once every file
//! is synced and in place, or with `E` and a message. A connection that
//! ends before END leaves nothing on the server: its files are written in
//! a temporary directory, as every image directory is (imgdir.rs).

use std::collections::HashMap;
use std::io::{IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::images::set::pages_file_id;
use crate::imgdir::{ImageDir, PagesWriter};

const HELLO: &[u8; 8] = b"CKPTPGS1";
const OPEN: u8 = 1;
const DATA: u8 = 2;
const CLOSE: u8 = 3;
const END: u8 = 4;
/// The largest frame either side accepts: a dump's chunks are 2 MiB.
const MAX_FRAME: u32 = 16 << 20;
/// How long the dump waits for the server to put the pages in place.
const ACK_TIMEOUT: Duration = Duration::from_secs(120);
/// The socket buffers of both ends: a whole frame of the dump (2 MiB)
/// and then some in flight, so that neither side waits on the other's
/// wakeup between frames.
const SOCKET_BUFFER: usize = 8 << 20;

/// Ask for `SOCKET_BUFFER`-sized socket buffers (the kernel caps them at
/// net.core.[rw]mem_max; a smaller buffer is slower, not wrong).
fn big_buffers(s: &impl std::os::fd::AsFd) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(s, sockopt::SndBuf, &SOCKET_BUFFER);
    let _ = setsockopt(s, sockopt::RcvBuf, &SOCKET_BUFFER);
}

fn err(peer: impl std::fmt::Display, what: &str, reason: impl std::fmt::Display) -> Error {
    Error::PageServer {
        peer: peer.to_string(),
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// The dump's end of the connection, shared by the page writers of a dump
/// (the writer thread of each process's pages and the main thread).
pub struct Client {
    peer: SocketAddr,
    /// Unbuffered: each frame goes out in one writev (head and payload),
    /// the payload straight from the dump's buffer.
    out: TcpStream,
    next_file: u32,
    /// A send failed: the connection is unusable, and the first error is
    /// the one the dump reports.
    broken: bool,
}

impl Client {
    /// Connect to the page server at `address:port`.
    pub fn connect(address: &str, port: u16) -> Result<Client> {
        let target = format!("{address}:{port}");
        let addrs: Vec<SocketAddr> = (address, port)
            .to_socket_addrs()
            .map_err(|e| err(&target, "resolving the page server's address", e))?
            .collect();
        let mut last = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, Duration::from_secs(10)) {
                Ok(s) => {
                    // Frames are whole writes: nothing waits for more.
                    let _ = s.set_nodelay(true);
                    big_buffers(&s);
                    let mut c = Client {
                        peer: *a,
                        out: s,
                        next_file: 0,
                        broken: false,
                    };
                    c.send(HELLO, "greeting the page server")?;
                    return Ok(c);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => err(&target, "connecting to the page server", e),
            None => err(&target, "resolving the page server's address", "no address"),
        })
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn send(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        self.send_vectored(&mut [IoSlice::new(bytes)], what)
    }

    /// Send all of `parts`, in as few writes as the socket takes.
    fn send_vectored(&mut self, mut parts: &mut [IoSlice<'_>], what: &str) -> Result<()> {
        if self.broken {
            return Err(err(self.peer, what, "the connection failed earlier"));
        }
        let sent = (|| {
            IoSlice::advance_slices(&mut parts, 0);
            while !parts.is_empty() {
                match self.out.write_vectored(parts) {
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => IoSlice::advance_slices(&mut parts, n),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })();
        match sent {
            Ok(()) => Ok(()),
            Err(e) => {
                self.broken = true;
                // The server stops reading when it refuses something, and
                // says why before it closes: that is the reason to give.
                match self.answer(Duration::from_secs(2)) {
                    Err(Some(msg)) => Err(err(self.peer, "storing the pages", msg)),
                    _ => Err(err(self.peer, what, e)),
                }
            }
        }
    }

    /// The server's answer within `wait`, up to its close: Ok for `K`,
    /// its message for `E`, None for nothing (or nothing readable).
    fn answer(&mut self, wait: Duration) -> Result<(), Option<String>> {
        let s = &mut self.out;
        let _ = s.set_read_timeout(Some(wait));
        let mut answer = Vec::new();
        let _ = s.take(4096).read_to_end(&mut answer);
        match answer.split_first() {
            Some((b'K', _)) => Ok(()),
            Some((b'E', msg)) => Err(Some(String::from_utf8_lossy(msg).into_owned())),
            _ => Err(None),
        }
    }

    fn frame(&mut self, kind: u8, file: u32, payload: &[u8], what: &str) -> Result<()> {
        let mut head = [0u8; 9];
        head[0] = kind;
        head[1..5].copy_from_slice(&file.to_le_bytes());
        head[5..9].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        self.send_vectored(&mut [IoSlice::new(&head), IoSlice::new(payload)], what)
    }

    /// Start file `name`; the number names it in the frames that follow.
    pub fn open(&mut self, name: &str) -> Result<u32> {
        let file = self.next_file;
        self.next_file += 1;
        self.frame(OPEN, file, name.as_bytes(), &format!("sending {name}"))?;
        Ok(file)
    }

    /// The next bytes of file `file` (`name` is for messages).
    pub fn data(&mut self, file: u32, name: &str, data: &[u8]) -> Result<()> {
        for part in data.chunks(MAX_FRAME as usize) {
            self.frame(DATA, file, part, &format!("sending {name}"))?;
        }
        Ok(())
    }

    /// File `file` is complete: `size` bytes with xxh3-128 `digest`.
    pub fn close(&mut self, file: u32, name: &str, size: u64, digest: u128) -> Result<()> {
        let mut p = [0u8; 24];
        p[..8].copy_from_slice(&size.to_le_bytes());
        p[8..].copy_from_slice(&digest.to_le_bytes());
        self.frame(CLOSE, file, &p, &format!("sending {name}"))
    }

    /// Tell the server the dump is complete and wait until it has put the
    /// pages in place (or says why it could not).
    pub fn finish(&mut self) -> Result<()> {
        self.frame(END, 0, &[], "ending the transfer")?;
        self.answer(ACK_TIMEOUT).map_err(|msg| {
            err(
                self.peer,
                "storing the pages",
                msg.as_deref()
                    .unwrap_or("the page server closed the connection without confirming"),
            )
        })
    }
}

/// What a page server received.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub files: usize,
    pub bytes: u64,
}

/// Listen on `address:port` (port 0: any free port; the listener says
/// which).
pub fn listen(address: &str, port: u16) -> Result<TcpListener> {
    let l = TcpListener::bind((address, port))
        .map_err(|e| err(format!("{address}:{port}"), "listening for a dump", e))?;
    // Set on the listener, the accepted socket starts with them (and a
    // window scale to match).
    big_buffers(&l);
    Ok(l)
}

/// Take one dump's pages on `listener` into `dir`, which is written
/// atomically: it appears, with the pages files and a manifest of them,
/// only once the dump has sent them all and they check out.
pub fn serve(listener: &TcpListener, dir: &Path) -> Result<Received> {
    let images = ImageDir::create(dir)?;
    let (stream, peer) = listener
        .accept()
        .map_err(|e| err("-", "accepting a dump's connection", e))?;
    let mut answer = stream
        .try_clone()
        .map_err(|e| err(peer, "setting up the connection", e))?;
    // Unbuffered: a frame's head is one small read, its payload one read
    // straight into the buffer it is hashed and written from.
    let mut input = stream;
    let r = receive(&mut input, peer, images);
    match &r {
        Ok(_) => {
            let _ = answer.write_all(b"K");
        }
        Err(e) => {
            // Say why, then take in what the dump still sends until it
            // reads that and hangs up: a socket closed with unread data
            // resets the connection, and the message would be lost.
            let _ = answer.write_all(format!("E{e}").as_bytes());
            let _ = answer.shutdown(std::net::Shutdown::Write);
            let _ = input.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = std::io::copy(&mut input, &mut std::io::sink());
        }
    }
    r
}

/// One frame as received.
struct Frame {
    kind: u8,
    file: u32,
    buf: Vec<u8>,
}

/// Frames in flight between the receiving and the storing thread.
const IN_FLIGHT: usize = 4;

/// Receives on this thread and stores (hash, write) on another, so that
/// the two copies of each byte (socket to buffer, buffer to file) overlap.
fn receive(input: &mut impl Read, peer: SocketAddr, images: ImageDir) -> Result<Received> {
    let mut got = Received::default();
    let mut hello = [0u8; 8];
    read_exact(input, &mut hello, peer, "reading the greeting", &got)?;
    if &hello != HELLO {
        return Err(err(peer, "reading the greeting", "not a ckpt dump"));
    }
    let (to_store, frames) = std::sync::mpsc::sync_channel::<Frame>(IN_FLIGHT);
    let (back, pool) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let store = scope.spawn(move || store(images, frames, back, peer));
        let read = (|| -> Result<()> {
            loop {
                let mut head = [0u8; 9];
                read_exact(input, &mut head, peer, "reading a frame", &got)?;
                let kind = head[0];
                let file = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes"));
                let len = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes"));
                if len > MAX_FRAME {
                    return Err(err(
                        peer,
                        "reading a frame",
                        format!("frame of {len} bytes"),
                    ));
                }
                let mut buf = pool.try_recv().unwrap_or_default();
                buf.resize(len as usize, 0);
                read_exact(input, &mut buf, peer, "reading a frame", &got)?;
                match kind {
                    DATA => got.bytes += u64::from(len),
                    CLOSE => got.files += 1,
                    _ => {}
                }
                // The store has stopped (it failed): its error is the one.
                if to_store.send(Frame { kind, file, buf }).is_err() || kind == END {
                    return Ok(());
                }
            }
        })();
        drop(to_store);
        let stored = store.join().unwrap_or_else(|_| {
            Err(err(
                peer,
                "storing the pages",
                "the storing thread panicked",
            ))
        });
        match (stored, read) {
            (Err(e), _) | (Ok(None), Err(e)) => Err(e),
            (Ok(Some(g)), Ok(())) => Ok(g),
            (Ok(Some(_)), Err(e)) => Err(e),
            (Ok(None), Ok(())) => Err(err(peer, "storing the pages", "the transfer stopped")),
        }
    })
}

/// The storing half of [`receive`]: the files, their checks, the commit.
/// `Ok(None)`: the frames stopped before the end (the receiving half says
/// why).
fn store(
    images: ImageDir,
    frames: std::sync::mpsc::Receiver<Frame>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
    peer: SocketAddr,
) -> Result<Option<Received>> {
    let mut got = Received::default();
    let mut open: HashMap<u32, (String, PagesWriter)> = HashMap::new();
    for Frame { kind, file, buf } in frames {
        match kind {
            OPEN => {
                let name = String::from_utf8_lossy(&buf).into_owned();
                let id = pages_file_id(&name).ok_or_else(|| {
                    err(
                        peer,
                        "opening a file",
                        format!("{name:?} is not a pages image"),
                    )
                })?;
                if open.contains_key(&file) {
                    return Err(err(peer, &name, format!("file number {file} is in use")));
                }
                let w = images.pages_writer(id)?;
                open.insert(file, (name, w));
            }
            DATA => {
                let (_, w) = open
                    .get_mut(&file)
                    .ok_or_else(|| err(peer, "receiving data", format!("no open file {file}")))?;
                w.write(&buf)?;
                got.bytes += buf.len() as u64;
            }
            CLOSE => {
                let (name, w) = open
                    .remove(&file)
                    .ok_or_else(|| err(peer, "closing a file", format!("no open file {file}")))?;
                if buf.len() != 24 {
                    return Err(err(peer, &name, "a closing frame of the wrong size"));
                }
                let size = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
                let digest = u128::from_le_bytes(buf[8..].try_into().expect("16 bytes"));
                let (have_size, have) = (w.out.size(), w.hash.digest128());
                if (have_size, have) != (size, digest) {
                    return Err(err(
                        peer,
                        &name,
                        format!(
                            "received {have_size} bytes with xxh3 {have:032x}, the dump sent \
                             {size} bytes with xxh3 {digest:032x}"
                        ),
                    ));
                }
                images.finish_pages(w)?;
                got.files += 1;
            }
            END => {
                if let Some((name, _)) = open.values().next() {
                    return Err(err(peer, name, "the dump ended with the file incomplete"));
                }
                images.commit()?;
                return Ok(Some(got));
            }
            k => {
                return Err(err(
                    peer,
                    "reading a frame",
                    format!("unknown frame kind {k}"),
                ))
            }
        }
        let _ = back.send(buf);
    }
    Ok(None)
}

fn read_exact(
    input: &mut impl Read,
    buf: &mut [u8],
    peer: SocketAddr,
    what: &str,
    got: &Received,
) -> Result<()> {
    input.read_exact(buf).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the connection was closed before the dump ended".to_string()
        } else {
            e.to_string()
        };
        err(
            peer,
            what,
            format!(
                "{why} (after {} complete files, {} bytes); nothing was kept",
                got.files, got.bytes
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_128;

    fn server(dir: &Path) -> (u16, std::thread::JoinHandle<Result<Received>>) {
        let l = listen("127.0.0.1", 0).unwrap();
        let port = l.local_addr().unwrap().port();
        let dir = dir.to_path_buf();
        (port, std::thread::spawn(move || serve(&l, &dir)))
    }

    #[test]
    fn pages_names() {
        assert_eq!(pages_file_id("pages-12.img"), Some(12));
        assert_eq!(pages_file_id("pages-.img"), None);
        assert_eq!(pages_file_id("pages-1.img/../x"), None);
        assert_eq!(pages_file_id("../pages-1.img"), None);
        assert_eq!(pages_file_id("core-1.img"), None);
        assert_eq!(pages_file_id("pages-+1.img"), None);
    }

    #[test]
    fn files_arrive_whole_and_checked() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        let (port, h) = server(&dir);
        let mut c = Client::connect("127.0.0.1", port).unwrap();
        let a: Vec<u8> = (0..3 * 4096).map(|i| (i * 7) as u8).collect();
        let fa = c.open("pages-1.img").unwrap();
        let fb = c.open("pages-2.img").unwrap();
        c.data(fa, "pages-1.img", &a[..4096]).unwrap();
        c.close(fb, "pages-2.img", 0, xxh3_128(b"")).unwrap();
        c.data(fa, "pages-1.img", &a[4096..]).unwrap();
        c.close(fa, "pages-1.img", a.len() as u64, xxh3_128(&a))
            .unwrap();
        c.finish().unwrap();
        let got = h.join().unwrap().unwrap();
        assert_eq!(
            got,
            Received {
                files: 2,
                bytes: a.len() as u64
            }
        );
        assert_eq!(std::fs::read(dir.join("pages-1.img")).unwrap(), a);
        assert_eq!(std::fs::read(dir.join("pages-2.img")).unwrap(), b"");
        assert!(dir.join(crate::images::MANIFEST_NAME).exists());
    }

    #[test]
    fn a_changed_byte_is_refused_and_nothing_kept() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        let (port, h) = server(&dir);
        let mut c = Client::connect("127.0.0.1", port).unwrap();
        let f = c.open("pages-1.img").unwrap();
        c.data(f, "pages-1.img", b"abcd").unwrap();
        c.close(f, "pages-1.img", 4, xxh3_128(b"abce")).unwrap();
        let e = c.finish().unwrap_err().to_string();
        drop(c);
        assert!(e.contains("pages-1.img") && e.contains("xxh3"), "{e}");
        assert!(h.join().unwrap().is_err());
        assert!(!dir.exists());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_cut_connection_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        let (port, h) = server(&dir);
        let mut c = Client::connect("127.0.0.1", port).unwrap();
        let f = c.open("pages-1.img").unwrap();
        c.data(f, "pages-1.img", &[1u8; 8192]).unwrap();
        drop(c);
        let e = h.join().unwrap().unwrap_err().to_string();
        assert!(e.contains("closed before the dump ended"), "{e}");
        assert!(!dir.exists());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }

    #[test]
    fn only_pages_images_are_written() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        let (port, h) = server(&dir);
        let mut c = Client::connect("127.0.0.1", port).unwrap();
        c.open("../escape.img").unwrap();
        let e = c.finish().unwrap_err().to_string();
        drop(c);
        assert!(e.contains("not a pages image"), "{e}");
        assert!(h.join().unwrap().is_err());
        assert!(!t.path().join("escape.img").exists());
    }

    #[test]
    fn no_server_is_a_clear_error() {
        let l = listen("127.0.0.1", 0).unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = Client::connect("127.0.0.1", port)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(&format!("127.0.0.1:{port}")) && e.contains("connecting"),
            "{e}"
        );
    }
}
