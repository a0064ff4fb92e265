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
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::images::framing::FileDigest;
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
    fn send_vectored(&mut self, parts: &mut [IoSlice<'_>], what: &str) -> Result<()> {
        if self.broken {
            return Err(err(self.peer, what, "the connection failed earlier"));
        }
        let sent = write_all_vectored(&mut self.out, parts);
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
    TcpListener::bind((address, port))
        .map_err(|e| err(format!("{address}:{port}"), "listening for a dump", e))
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

/// The greeting of a lazy restore asking for pages (`ckpt page-server
/// --lazy-pages`), rather than of a dump sending them.
const LAZY_HELLO: &[u8; 8] = b"CKPTPGL1";
/// A request's file number that ends the session.
const LAZY_END: u32 = u32::MAX;

/// The pages images of an image directory, as a page server serves them
/// to a lazy restore: in manifest order, checked against the manifest
/// before the server listens (so that what it serves is what the dump
/// wrote), mapped for the session.
pub struct ServedPages {
    names: Vec<String>,
    digests: Vec<FileDigest>,
    /// Each file, to send from (sendfile), and mapped, to hash what is
    /// sent.
    files: Vec<std::fs::File>,
    maps: Vec<crate::sys::Mmap>,
}

impl ServedPages {
    pub fn open(dir: &Path) -> Result<ServedPages> {
        let manifest = crate::images::Manifest::read(dir)?;
        let mut out = ServedPages {
            names: Vec::new(),
            digests: Vec::new(),
            files: Vec::new(),
            maps: Vec::new(),
        };
        for (name, want) in manifest.iter() {
            if pages_file_id(name).is_none() {
                continue;
            }
            let path = dir.join(name);
            let have = crate::images::hash_file(&path)?;
            if have != want {
                return Err(Error::io(
                    &path,
                    "checking the pages image against the manifest",
                    std::io::Error::other(format!(
                        "{} bytes with xxh3 {:032x}, the manifest says {} bytes with xxh3 {:032x}",
                        have.size, have.xxh3, want.size, want.xxh3
                    )),
                ));
            }
            let f = std::fs::File::open(&path)
                .map_err(|e| Error::io(&path, "opening the pages image", e))?;
            let map = crate::sys::Mmap::map(&f)
                .map_err(|e| Error::io(&path, "mapping the pages image", e))?;
            out.names.push(name.to_string());
            out.digests.push(want);
            out.maps.push(map);
            out.files.push(f);
        }
        Ok(out)
    }
}

/// What a page server sent a lazy restore.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub requests: u64,
    pub bytes: u64,
}

/// Serve `files` to one lazy restore on `listener`: the list of them
/// (name, size, xxh3-128, which the restore checks against its own
/// manifest), then each requested range with its xxh3-64.
///
/// A restore opens two connections, each served on a thread of its own:
/// the engine's, for the pages it writes before the tree runs, and the
/// lazy-pages daemon's, opened while the engine's is still up. The server
/// is done when a session ends with END (the daemon has everything), or
/// when no connection is left open (the restore failed, or is complete).
pub fn serve_pages(listener: &TcpListener, files: &ServedPages) -> Result<Sent> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    let total = Mutex::new(Sent::default());
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    let ended = AtomicBool::new(false);
    listener
        .set_nonblocking(true)
        .map_err(|e| err("-", "listening for a lazy restore", e))?;
    std::thread::scope(|scope| -> Result<()> {
        let mut running: Vec<std::thread::ScopedJoinHandle<'_, ()>> = Vec::new();
        let mut served = 0usize;
        loop {
            match listener.accept() {
                Ok((s, peer)) => {
                    served += 1;
                    let (total, first_err, ended) = (&total, &first_err, &ended);
                    running.push(scope.spawn(move || {
                        let _ = s.set_nonblocking(false);
                        let r = serve_session(s, peer, files);
                        match r {
                            Ok((sent, end)) => {
                                let mut t = total.lock().unwrap_or_else(|p| p.into_inner());
                                t.requests += sent.requests;
                                t.bytes += sent.bytes;
                                if end {
                                    ended.store(true, Ordering::SeqCst);
                                }
                            }
                            Err(e) => {
                                let mut f = first_err.lock().unwrap_or_else(|p| p.into_inner());
                                f.get_or_insert(e);
                            }
                        }
                    }));
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(err("-", "accepting a lazy restore's connection", e)),
            }
            running.retain(|h| !h.is_finished());
            if ended.load(Ordering::SeqCst) || (served > 0 && running.is_empty()) {
                return Ok(());
            }
            // The next connection at once (the restore's engine and
            // daemon wait for it), or a look at the sessions again.
            let _ = crate::sys::fd::poll_in(listener.as_raw_fd(), 5);
        }
    })?;
    // A session that ended with END is the restore having everything:
    // a failed other one does not matter then.
    if !ended.load(Ordering::SeqCst) {
        if let Some(e) = first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
    }
    Ok(total.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// One connection of [`serve_pages`]: what it sent, and whether it
/// ended with END.
fn serve_session(mut s: TcpStream, peer: SocketAddr, files: &ServedPages) -> Result<(Sent, bool)> {
    let _ = s.set_nodelay(true);
    let mut hello = [0u8; 8];
    s.read_exact(&mut hello)
        .map_err(|e| err(peer, "reading the greeting", e))?;
    if &hello != LAZY_HELLO {
        return Err(err(peer, "reading the greeting", "not a ckpt lazy restore"));
    }
    let mut list = (files.names.len() as u32).to_le_bytes().to_vec();
    for (name, d) in files.names.iter().zip(&files.digests) {
        list.extend_from_slice(&(name.len() as u16).to_le_bytes());
        list.extend_from_slice(name.as_bytes());
        list.extend_from_slice(&d.size.to_le_bytes());
        list.extend_from_slice(&d.xxh3.to_le_bytes());
    }
    s.write_all(&list)
        .map_err(|e| err(peer, "sending the list of pages images", e))?;
    let mut sent = Sent::default();
    loop {
        let mut req = [0u8; 16];
        match s.read_exact(&mut req) {
            Ok(()) => {}
            // The restore has what it wanted, or is gone: either way, done.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok((sent, false)),
            Err(e) => return Err(err(peer, "reading a request", e)),
        }
        let file = u32::from_le_bytes(req[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(req[4..8].try_into().expect("4 bytes"));
        let off = u64::from_le_bytes(req[8..].try_into().expect("8 bytes"));
        if file == LAZY_END {
            return Ok((sent, true));
        }
        let data = files
            .maps
            .get(file as usize)
            .and_then(|m| m.as_slice().get(off as usize..)?.get(..len as usize))
            .filter(|_| len <= MAX_FRAME);
        let Some(data) = data else {
            let why = format!("no {len} bytes at offset {off} of pages image number {file}");
            let _ = s.write_all(format!("E{why}").as_bytes());
            return Err(err(peer, "serving pages", why));
        };
        let mut head = [0u8; 13];
        head[0] = b'D';
        head[1..5].copy_from_slice(&len.to_le_bytes());
        head[5..].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(data).to_le_bytes());
        send_pages(&s, &head, &files.files[file as usize], off, data.len())
            .map_err(|e| err(peer, "sending pages", e))?;
        sent.requests += 1;
        sent.bytes += u64::from(len);
    }
}

/// An answer: its head, then `len` bytes of `file` from `off` with
/// sendfile (the file's pages go to the socket as they are: no copy
/// through a buffer).
fn send_pages(
    s: &TcpStream,
    head: &[u8],
    file: &std::fs::File,
    mut off: u64,
    len: usize,
) -> std::io::Result<()> {
    let fd = s.as_raw_fd();
    let mut s = s;
    s.write_all(head)?;
    let end = off + len as u64;
    while off < end {
        match crate::sys::fd::sendfile(fd, file.as_raw_fd(), off, (end - off) as usize) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => off += n as u64,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Write all of `parts`, in as few writes as the socket takes.
fn write_all_vectored(out: &mut impl Write, mut parts: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        match out.write_vectored(parts) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A lazy restore's connection to the page server holding its pages
/// (`restore --lazy-pages --page-server`).
pub struct RemotePages {
    peer: SocketAddr,
    s: TcpStream,
    /// The server's pages images by name: their number and size.
    files: HashMap<String, (u32, u64)>,
}

impl RemotePages {
    /// Connect to the page server at `address:port` and check that it
    /// holds exactly the pages images `manifest` (the restore's) lists.
    pub fn connect(
        address: &str,
        port: u16,
        manifest: &crate::images::Manifest,
    ) -> Result<RemotePages> {
        let target = format!("{address}:{port}");
        let peer = (address, port)
            .to_socket_addrs()
            .map_err(|e| err(&target, "resolving the page server's address", e))?
            .next()
            .ok_or_else(|| err(&target, "resolving the page server's address", "no address"))?;
        let mut s = TcpStream::connect_timeout(&peer, Duration::from_secs(10))
            .map_err(|e| err(peer, "connecting to the page server", e))?;
        let _ = s.set_nodelay(true);
        let what = "reading the list of pages images";
        s.write_all(LAZY_HELLO)
            .map_err(|e| err(peer, "greeting the page server", e))?;
        let mut n = [0u8; 4];
        s.read_exact(&mut n).map_err(|e| err(peer, what, e))?;
        let mut files = HashMap::new();
        for i in 0..u32::from_le_bytes(n) {
            let mut len = [0u8; 2];
            s.read_exact(&mut len).map_err(|e| err(peer, what, e))?;
            let mut name = vec![0u8; u16::from_le_bytes(len) as usize];
            let mut d = [0u8; 24];
            s.read_exact(&mut name)
                .and_then(|()| s.read_exact(&mut d))
                .map_err(|e| err(peer, what, e))?;
            let size = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
            let xxh3 = u128::from_le_bytes(d[8..].try_into().expect("16 bytes"));
            let name = String::from_utf8_lossy(&name).into_owned();
            if let Some(want) = manifest.get(&name) {
                if (want.size, want.xxh3) != (size, xxh3) {
                    return Err(err(
                        peer,
                        &name,
                        format!(
                            "the page server has {size} bytes with xxh3 {xxh3:032x}, the \
                             images here say {} bytes with xxh3 {:032x}: pages of another dump",
                            want.size, want.xxh3
                        ),
                    ));
                }
            }
            files.insert(name, (i, size));
        }
        for (name, _) in manifest.iter() {
            if pages_file_id(name).is_some() && !files.contains_key(name) {
                return Err(err(peer, name, "the page server does not have it"));
            }
        }
        Ok(RemotePages { peer, s, files })
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The server's pages images: name and size.
    pub fn files(&self) -> std::collections::BTreeMap<String, u64> {
        self.files
            .iter()
            .map(|(n, &(_, size))| (n.clone(), size))
            .collect()
    }

    /// Fill `buf` with the bytes of pages image `name` from `off`, checked
    /// against the xxh3-64 the server sent with them.
    pub fn fetch(&mut self, name: &str, off: u64, buf: &mut [u8]) -> Result<()> {
        let ask = self.ask(name, off, buf.len())?;
        ask.answer(&mut self.s, self.peer, buf)
    }

    /// Send the request for `len` bytes of `name` from `off`; its answer
    /// comes after those of the requests sent before it.
    fn ask(&mut self, name: &str, off: u64, len: usize) -> Result<Ask> {
        let what = format!("fetching {len} bytes at offset {off} of {name}");
        let &(file, size) = self
            .files
            .get(name)
            .ok_or_else(|| err(self.peer, &what, "the page server does not have it"))?;
        if len > MAX_FRAME as usize || off + len as u64 > size {
            return Err(err(self.peer, &what, format!("the file has {size} bytes")));
        }
        let mut req = [0u8; 16];
        req[..4].copy_from_slice(&file.to_le_bytes());
        req[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        req[8..].copy_from_slice(&off.to_le_bytes());
        self.s
            .write_all(&req)
            .map_err(|e| err(self.peer, &what, gone(e)))?;
        Ok(Ask { what })
    }

    /// Fetch ahead on this connection (a second one of the restore's,
    /// for the background): requests go out as [`Ahead::ask`] is called,
    /// and a thread of its own takes in the answers in order, so that
    /// the transfer goes on while the caller copies what came before.
    pub fn ahead<T: Send + 'static>(self) -> Result<Ahead<T>> {
        let peer = self.peer;
        let mut input = self
            .s
            .try_clone()
            .map_err(|e| err(peer, "setting up the connection", e))?;
        let (wake_rx, mut wake_tx) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| err(peer, "setting up the connection", e))?;
        wake_rx
            .set_nonblocking(true)
            .map_err(|e| err(peer, "setting up the connection", e))?;
        let (asks, todo) = std::sync::mpsc::channel::<(T, Ask, Vec<u8>)>();
        let (back, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("pages-ahead".into())
            .spawn(move || {
                // After a failed answer the connection is not read again:
                // the later ones fail too, after it, so that the caller
                // meets the first error first.
                let mut failed = false;
                for (tag, ask, mut buf) in todo {
                    let r = if failed {
                        Err(err(peer, &ask.what, "an earlier answer failed"))
                    } else {
                        ask.answer(&mut input, peer, &mut buf)
                    };
                    failed |= r.is_err();
                    if back.send((tag, buf, r)).is_err() {
                        return;
                    }
                    let _ = wake_tx.write_all(&[1]);
                }
            })
            .map_err(|e| err(peer, "starting the thread that fetches ahead", e))?;
        Ok(Ahead {
            remote: self,
            asks,
            done,
            wake: wake_rx,
        })
    }

    /// End the session: the page server exits.
    pub fn end(mut self) {
        let mut req = [0u8; 16];
        req[..4].copy_from_slice(&LAZY_END.to_le_bytes());
        let _ = self.s.write_all(&req);
    }
}

/// How a cut connection reads in a message.
fn gone(e: std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof => "the page server closed the connection".to_string(),
        BrokenPipe | ConnectionReset => format!("the page server closed the connection ({e})"),
        _ => e.to_string(),
    }
}

/// A request sent, its answer not yet read.
struct Ask {
    /// What it fetches, for messages.
    what: String,
}

impl Ask {
    /// Read the answer into `buf` (the requested length) from `s`, and
    /// check it against the xxh3-64 the server sent with it.
    fn answer(&self, s: &mut TcpStream, peer: SocketAddr, buf: &mut [u8]) -> Result<()> {
        let what = &self.what;
        let mut head = [0u8; 13];
        s.read_exact(&mut head[..1])
            .map_err(|e| err(peer, what, gone(e)))?;
        if head[0] != b'D' {
            let mut msg = Vec::new();
            let _ = s.take(4096).read_to_end(&mut msg);
            return Err(err(peer, what, String::from_utf8_lossy(&msg)));
        }
        s.read_exact(&mut head[1..])
            .and_then(|()| s.read_exact(buf))
            .map_err(|e| err(peer, what, gone(e)))?;
        let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes"));
        let sum = u64::from_le_bytes(head[5..].try_into().expect("8 bytes"));
        if len as usize != buf.len() || xxhash_rust::xxh3::xxh3_64(buf) != sum {
            return Err(err(peer, what, "the bytes arrived changed (xxh3 mismatch)"));
        }
        Ok(())
    }
}

/// A connection to the page server that fetches ahead
/// ([`RemotePages::ahead`]): answers arrive in the order of the requests,
/// each with the caller's tag and the buffer it gave.
pub struct Ahead<T> {
    remote: RemotePages,
    asks: std::sync::mpsc::Sender<(T, Ask, Vec<u8>)>,
    done: std::sync::mpsc::Receiver<(T, Vec<u8>, Result<()>)>,
    /// A byte per answer: readable when one is in.
    wake: std::os::unix::net::UnixStream,
}

impl<T: Send + 'static> Ahead<T> {
    /// Ask for `buf.len()` bytes of `name` from `off` into `buf`.
    pub fn ask(&mut self, tag: T, name: &str, off: u64, buf: Vec<u8>) -> Result<()> {
        let ask = self.remote.ask(name, off, buf.len())?;
        let peer = self.remote.peer;
        self.asks
            .send((tag, ask, buf))
            .map_err(|_| err(peer, "fetching ahead", "the connection failed earlier"))
    }

    /// Readable (for poll) when an answer is in.
    pub fn ready_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.wake.as_fd()
    }

    /// The next answer, if one is in: its tag, its buffer, and whether
    /// it arrived whole and checked.
    pub fn take(&mut self) -> Option<(T, Vec<u8>, Result<()>)> {
        // The wake bytes first: one written after this try_recv wakes the
        // next poll, one left over from an answer taken before it was
        // written wakes it once for nothing.
        let mut b = [0u8; 64];
        while matches!(self.wake.read(&mut b), Ok(n) if n > 0) {}
        self.done.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_128;

    /// `serve` (or `serve_pages`) of `dir` on a loopback port, on a thread.
    fn on_loopback<T: Send + 'static>(
        dir: &Path,
        serve: fn(&TcpListener, &Path) -> Result<T>,
    ) -> (u16, std::thread::JoinHandle<Result<T>>) {
        let l = listen("127.0.0.1", 0).unwrap();
        let port = l.local_addr().unwrap().port();
        let dir = dir.to_path_buf();
        (port, std::thread::spawn(move || serve(&l, &dir)))
    }

    fn server(dir: &Path) -> (u16, std::thread::JoinHandle<Result<Received>>) {
        on_loopback(dir, serve)
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

    /// An image directory with pages-1.img (`data`) and its manifest.
    fn pages_dir(data: &[u8]) -> (tempfile::TempDir, crate::images::Manifest) {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("pages-1.img"), data).unwrap();
        std::fs::write(t.path().join("core-1.img"), b"not pages").unwrap();
        let mut m = crate::images::Manifest::new();
        m.add_file(t.path(), "pages-1.img").unwrap();
        m.add_file(t.path(), "core-1.img").unwrap();
        m.write(t.path()).unwrap();
        (t, m)
    }

    fn lazy_server(dir: &Path) -> (u16, std::thread::JoinHandle<Result<Sent>>) {
        on_loopback(dir, |l, d| serve_pages(l, &ServedPages::open(d)?))
    }

    #[test]
    fn a_lazy_restore_fetches_checked_ranges() {
        let data: Vec<u8> = (0..64 * 4096).map(|i| (i * 13 % 251) as u8).collect();
        let (t, m) = pages_dir(&data);
        let (port, h) = lazy_server(t.path());
        let mut r = RemotePages::connect("127.0.0.1", port, &m).unwrap();
        let mut buf = vec![0u8; 5 * 4096];
        r.fetch("pages-1.img", 7 * 4096, &mut buf).unwrap();
        assert_eq!(buf, data[7 * 4096..12 * 4096]);
        let mut end = vec![0u8; 4096];
        r.fetch("pages-1.img", 63 * 4096, &mut end).unwrap();
        assert_eq!(end, data[63 * 4096..]);
        // Beyond the end: refused here, before asking.
        let e = r.fetch("pages-1.img", 63 * 4096, &mut buf).unwrap_err();
        assert!(e.to_string().contains("the file has"), "{e}");
        r.end();
        assert_eq!(
            h.join().unwrap().unwrap(),
            Sent {
                requests: 2,
                bytes: 6 * 4096
            }
        );
    }

    /// Requests sent ahead on a connection of their own come back in
    /// order, each with its tag and its buffer, checked.
    #[test]
    fn fetching_ahead_answers_in_order() {
        let data: Vec<u8> = (0..64 * 4096).map(|i| (i * 13 % 251) as u8).collect();
        let (t, m) = pages_dir(&data);
        let (port, h) = lazy_server(t.path());
        let faults = RemotePages::connect("127.0.0.1", port, &m).unwrap();
        let mut ahead = RemotePages::connect("127.0.0.1", port, &m)
            .unwrap()
            .ahead::<usize>()
            .unwrap();
        let run = 8 * 4096;
        for k in 0..8 {
            ahead
                .ask(k, "pages-1.img", (k * run) as u64, vec![0u8; run])
                .unwrap();
        }
        let mut next = 0;
        while next < 8 {
            let fd = ahead.ready_fd().as_raw_fd();
            assert!(crate::sys::fd::poll_in(fd, 10_000).unwrap(), "no answer");
            while let Some((k, buf, got)) = ahead.take() {
                got.unwrap();
                assert_eq!(k, next);
                assert_eq!(buf, data[k * run..(k + 1) * run]);
                next += 1;
            }
        }
        faults.end();
        drop(ahead);
        assert_eq!(
            h.join().unwrap().unwrap(),
            Sent {
                requests: 8,
                bytes: 64 * 4096
            }
        );
    }

    /// The engine's connection and the daemon's, opened while the first
    /// is up, are both served; the first closing does not end the
    /// server, the daemon's END does.
    #[test]
    fn a_lazy_server_serves_the_engine_and_the_daemon() {
        let data: Vec<u8> = (0..16 * 4096).map(|i| (i * 7 % 253) as u8).collect();
        let (t, m) = pages_dir(&data);
        let (port, h) = lazy_server(t.path());
        let mut engine = RemotePages::connect("127.0.0.1", port, &m).unwrap();
        let mut daemon = RemotePages::connect("127.0.0.1", port, &m).unwrap();
        let mut buf = vec![0u8; 4096];
        engine.fetch("pages-1.img", 0, &mut buf).unwrap();
        assert_eq!(buf, data[..4096]);
        drop(engine);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !h.is_finished(),
            "the server ended with the daemon still connected"
        );
        let mut rest = vec![0u8; 15 * 4096];
        daemon.fetch("pages-1.img", 4096, &mut rest).unwrap();
        assert_eq!(rest, data[4096..]);
        daemon.end();
        assert_eq!(
            h.join().unwrap().unwrap(),
            Sent {
                requests: 2,
                bytes: 16 * 4096
            }
        );
    }

    #[test]
    fn pages_of_another_dump_are_refused() {
        let (t, _) = pages_dir(&[1u8; 8192]);
        let (_, other) = pages_dir(&[2u8; 8192]);
        let (port, h) = lazy_server(t.path());
        let e = RemotePages::connect("127.0.0.1", port, &other)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("pages-1.img") && e.contains("pages of another dump"),
            "{e}"
        );
        h.join().unwrap().unwrap();
    }

    #[test]
    fn a_server_whose_pages_changed_does_not_start() {
        let (t, _) = pages_dir(&[1u8; 8192]);
        std::fs::write(t.path().join("pages-1.img"), [3u8; 8192]).unwrap();
        let e = ServedPages::open(t.path()).err().unwrap().to_string();
        assert!(e.contains("pages-1.img") && e.contains("manifest"), "{e}");
    }

    #[test]
    fn a_cut_connection_names_the_server_and_the_missing_pages() {
        let (t, m) = pages_dir(&[1u8; 8192]);
        let l = listen("127.0.0.1", 0).unwrap();
        let port = l.local_addr().unwrap().port();
        // A server that lists the pages, then dies.
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut hello = [0u8; 8];
            s.read_exact(&mut hello).unwrap();
            let d = m.get("pages-1.img").unwrap();
            let mut list = 1u32.to_le_bytes().to_vec();
            list.extend_from_slice(&11u16.to_le_bytes());
            list.extend_from_slice(b"pages-1.img");
            list.extend_from_slice(&d.size.to_le_bytes());
            list.extend_from_slice(&d.xxh3.to_le_bytes());
            s.write_all(&list).unwrap();
        });
        let m = crate::images::Manifest::read(t.path()).unwrap();
        let mut r = RemotePages::connect("127.0.0.1", port, &m).unwrap();
        h.join().unwrap();
        let mut buf = vec![0u8; 4096];
        let e = r
            .fetch("pages-1.img", 4096, &mut buf)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("127.0.0.1:{port}"))
                && e.contains("4096 bytes at offset 4096 of pages-1.img")
                && e.contains("closed the connection"),
            "{e}"
        );
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
