//! The FINs of a TCP connection being closed, made again on the socket
//! that resumes it. TCP_REPAIR rebuilds a connection as ESTABLISHED, with
//! the sequence numbers of its data alone; the FINs are made afterwards,
//! in the order they came, so that the kernel's own state machine moves
//! the socket to the dumped state: its own FIN by shutdown() (in repair
//! mode, marked as sent already, when no data is left to send before
//! it), the peer's FIN, and the peer's acknowledgement of its own FIN, by
//! a segment injected through a raw socket as if the peer had sent it.
//! The injected segments carry the network lock's mark, so the lock lets
//! them in while it keeps every real packet of the connection out.

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::images::inet::{
    fins, state_name, TCP_CLOSE_WAIT, TCP_CLOSING, TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2,
    TCP_LAST_ACK,
};
use crate::images::pb;
use crate::kernel::netlock;
use crate::kernel::tcp_segment::{self as seg, Segment};
use crate::sys::inet_sock as is;
use crate::sys::raw_sock;
use crate::sys::tcp_repair as tr;

/// One step of closing a connection again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Its own side shut down: its FIN queued (after any data).
    Shut,
    /// The peer's FIN arrives.
    PeerFin,
    /// The peer acknowledges its FIN.
    FinAcked,
}

/// The steps that take a connection rebuilt as ESTABLISHED to `state`, in
/// the order the FINs came.
pub fn steps(state: u32) -> Vec<Step> {
    match state {
        TCP_FIN_WAIT1 => vec![Step::Shut],
        TCP_FIN_WAIT2 => vec![Step::Shut, Step::FinAcked],
        TCP_CLOSE_WAIT => vec![Step::PeerFin],
        // The peer's FIN came first, then its own went out.
        TCP_LAST_ACK => vec![Step::PeerFin, Step::Shut],
        // Its own FIN went out first and the peer's crossed it.
        TCP_CLOSING => vec![Step::Shut, Step::PeerFin],
        _ => vec![],
    }
}

/// What the segments of the peer need to know about the connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// The sequence number of the peer's FIN (after its data).
    pub fin_seq: u32,
    /// The first byte the peer has not acknowledged.
    pub snd_una: u32,
    /// The sequence number of the connection's own FIN.
    pub own_fin_seq: u32,
    /// The window the peer last advertised, as its segments carry it.
    pub window: u16,
}

impl Peer {
    pub fn of(local: SocketAddr, peer: SocketAddr, e: &pb::TcpStreamEntry) -> Peer {
        let wnd = e.snd_wnd.unwrap_or(0xffff);
        let scaled = if e.opt_mask & tr::TCPI_OPT_WSCALE != 0 {
            wnd >> e.snd_wscale.min(14)
        } else {
            wnd
        };
        Peer {
            local,
            peer,
            fin_seq: e.inq_seq,
            snd_una: e.outq_seq.wrapping_sub(e.outq_len),
            own_fin_seq: e.outq_seq,
            window: scaled.min(0xffff) as u16,
        }
    }
}

/// The state a step leaves the connection in, from `now`.
fn next_state(now: u32, step: Step) -> u32 {
    match (now, step) {
        (TCP_ESTABLISHED, Step::Shut) => TCP_FIN_WAIT1,
        (TCP_CLOSE_WAIT, Step::Shut) => TCP_LAST_ACK,
        (TCP_FIN_WAIT1, Step::FinAcked) => TCP_FIN_WAIT2,
        (TCP_ESTABLISHED, Step::PeerFin) => TCP_CLOSE_WAIT,
        (TCP_FIN_WAIT1, Step::PeerFin) => TCP_CLOSING,
        (s, _) => s,
    }
}

/// Runs `step` on the socket; `repair` if it is in repair mode. Errors
/// say what failed.
pub fn run(fd: BorrowedFd<'_>, step: Step, p: &Peer, repair: bool) -> Result<(), String> {
    let now = is::tcp_info(fd)
        .map_err(|e| format!("TCP_INFO: {e}"))?
        .state as u32;
    let want = next_state(now, step);
    match step {
        Step::Shut => {
            // In repair mode, with the send queue selected, the FIN counts
            // as sent already: the peer had it, or the retransmission
            // timer sends it again.
            let q = |q| tr::set_queue(fd, q).map_err(|e| format!("TCP_REPAIR_QUEUE: {e}"));
            if repair {
                q(tr::Queue::Send)?;
            }
            crate::sys::unix_sock::shutdown(fd, pb::SkShutdown::Write as i32)
                .map_err(|e| format!("shutting its side down again: {e}"))?;
            if repair {
                q(tr::Queue::None)?;
            }
        }
        Step::PeerFin | Step::FinAcked => {
            let (what, s) = if step == Step::PeerFin {
                (
                    "the peer's FIN",
                    Segment {
                        from: p.peer,
                        to: p.local,
                        seq: p.fin_seq,
                        ack: p.snd_una,
                        flags: seg::FIN | seg::ACK,
                        window: p.window,
                    },
                )
            } else {
                (
                    "the peer's acknowledgement of its FIN",
                    Segment {
                        from: p.peer,
                        to: p.local,
                        seq: p.fin_seq,
                        ack: p.own_fin_seq.wrapping_add(1),
                        flags: seg::ACK,
                        window: p.window,
                    },
                )
            };
            let packet = seg::packet(&s).ok_or_else(|| {
                format!("{what}: {} and {} are not of one IP version", s.from, s.to)
            })?;
            raw_sock::send_ip_packet(&packet, seg::plain(p.local.ip()), netlock::MARK)
                .map_err(|e: Errno| format!("sending {what} through a raw socket: {e}"))?;
            await_state(fd, want).map_err(|got| {
                format!(
                    "{what}, sent through a raw socket, left it in state {} and not {}",
                    state_name(got),
                    state_name(want)
                )
            })?;
        }
    }
    Ok(())
}

/// Waits a little for the kernel to take an injected segment (loopback
/// delivers it from a softirq); Err with the state it stayed in.
fn await_state(fd: BorrowedFd<'_>, want: u32) -> Result<(), u32> {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        let st = is::tcp_info(fd).map_or(0, |i| i.state as u32);
        if st == want {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(st);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether an image's entry in `state` is consistent: a FIN acknowledged
/// leaves nothing to send.
pub fn check(state: u32, e: &pb::TcpStreamEntry) -> Result<(), String> {
    let f = fins(state);
    if f.acked && (e.outq_len != 0 || e.unsq_len.unwrap_or(0) != 0) {
        return Err(format!(
            "{} with {} bytes still to be acknowledged: its FIN cannot have been",
            state_name(state),
            e.outq_len
        ));
    }
    if e.unsq_len.unwrap_or(0) > e.outq_len {
        return Err(format!(
            "{} bytes never sent of a send queue of {}",
            e.unsq_len.unwrap_or(0),
            e.outq_len
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_reach_each_state() {
        for st in [
            TCP_ESTABLISHED,
            TCP_FIN_WAIT1,
            TCP_FIN_WAIT2,
            TCP_CLOSE_WAIT,
            TCP_LAST_ACK,
            TCP_CLOSING,
        ] {
            let end = steps(st).into_iter().fold(TCP_ESTABLISHED, next_state);
            assert_eq!(end, st, "{}", state_name(st));
            // The FINs the state has, and no others.
            let f = fins(st);
            let s = steps(st);
            assert_eq!(s.contains(&Step::Shut), f.sent);
            assert_eq!(s.contains(&Step::PeerFin), f.received);
            assert_eq!(s.contains(&Step::FinAcked), f.acked);
        }
    }

    #[test]
    fn peer_segments_from_the_entry() {
        let e = pb::TcpStreamEntry {
            inq_seq: 1000,
            inq_len: 10,
            outq_seq: 5000,
            outq_len: 300,
            opt_mask: tr::TCPI_OPT_WSCALE,
            snd_wscale: 7,
            snd_wnd: Some(65536 * 4),
            ..Default::default()
        };
        let p = Peer::of(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            &e,
        );
        assert_eq!((p.fin_seq, p.snd_una, p.own_fin_seq), (1000, 4700, 5000));
        assert_eq!(p.window, 2048);
        let big = pb::TcpStreamEntry {
            opt_mask: 0,
            snd_wnd: Some(1 << 20),
            ..e
        };
        assert_eq!(Peer::of(p.local, p.peer, &big).window, 0xffff);
        assert!(check(TCP_FIN_WAIT2, &e).is_err());
        assert!(check(TCP_LAST_ACK, &e).is_ok());
    }
}
