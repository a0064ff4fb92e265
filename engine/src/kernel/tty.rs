//! What a pty holds that both sides must handle alike: the data queued in
//! it, and how it goes back in.
//!
//! Data queued in a pty cannot be peeked: the dump reads it out and puts
//! it straight back, and the restore puts it in the same way. Input (what
//! the slave reads) is written into the master and output (what the master
//! reads) into the slave, each under a termios that keeps the line
//! discipline from changing the bytes (no echo, no signals, no CR/NL
//! mapping, no output processing) but keeps canonical mode as it was, so a
//! partial line stays partial. The real termios is set last.

use std::os::fd::RawFd;

use crate::sys::tty::{self as t, Termios};

/// `term` with everything that would alter bytes on their way through the
/// line discipline turned off, canonical mode kept.
pub fn transparent(term: &Termios) -> Termios {
    let mut x = *term;
    x.c_lflag &= !(libc::ECHO
        | libc::ECHOE
        | libc::ECHOK
        | libc::ECHONL
        | libc::ECHOCTL
        | libc::ECHOKE
        | libc::ISIG
        | libc::IEXTEN);
    x.c_iflag &= !(libc::ICRNL
        | libc::INLCR
        | libc::IGNCR
        | libc::ISTRIP
        | libc::IUCLC
        | libc::IXON
        | libc::IXOFF
        | libc::PARMRK);
    x.c_oflag &= !libc::OPOST;
    x
}

/// Queues `input` for the slave to read and `output` for the master to
/// read, then sets `term`.
pub fn fill(
    master: RawFd,
    slave: RawFd,
    term: &Termios,
    input: &[u8],
    output: &[u8],
) -> nix::Result<()> {
    if !input.is_empty() || !output.is_empty() {
        t::set_termios(master, &transparent(term))?;
        t::write_all(slave, output)?;
        t::write_all(master, input)?;
    }
    t::set_termios(master, term)
}

/// Everything queued in the pty, taken out: (input, output). `slave` is
/// needed for the input only. Packet mode is left off while reading, and
/// canonical mode too (a partial line is not readable otherwise); the
/// caller puts both back (`fill`, then packet mode).
pub fn drain(
    master: RawFd,
    slave: Option<RawFd>,
    term: &Termios,
) -> nix::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = vec![0u8; 4096];
    let mut output = Vec::new();
    while let Some(n) = t::read_ready(master, &mut buf)? {
        output.extend_from_slice(&buf[..n]);
    }
    let mut input = Vec::new();
    if let Some(s) = slave {
        let mut raw = *term;
        raw.c_lflag &= !libc::ICANON;
        raw.c_cc[libc::VMIN] = 0;
        raw.c_cc[libc::VTIME] = 0;
        t::set_termios(master, &raw)?;
        while let Some(n) = t::read_ready(s, &mut buf)? {
            input.extend_from_slice(&buf[..n]);
        }
    }
    Ok((input, output))
}

/// A device number as /proc/PID/stat's tty_nr and st_rdev give it, as
/// (major, minor).
pub fn dev_parts(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}

/// The pts number of a Unix98 pty slave device, if it is one.
pub fn pts_index(major: u32, minor: u32) -> Option<u32> {
    (136..=143)
        .contains(&major)
        .then(|| (major - 136) * 256 + minor)
}

/// /dev/ptmx (and /dev/pts/ptmx): a pty master.
pub fn is_ptmx(major: u32, minor: u32) -> bool {
    major == 5 && minor == 2
}
