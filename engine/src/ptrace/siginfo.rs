//! Pending signals as the kernel hands them to a tracer: raw 128-byte
//! `siginfo_t`s, read with `PTRACE_PEEKSIGINFO`, which copies them without
//! dequeuing and so leaves a queue exactly as it was. Dump stores the
//! queues this way; restore peeks again to see whether a signal it caused
//! has arrived.
//!
//! [`Siginfo`] is the pure part: decoding (and, for tests and tools,
//! building) the x86_64 kernel layout of a siginfo.

use crate::error::{Error, Pid, Result};

/// Size of a kernel `siginfo_t` (SI_MAX_SIZE).
pub const SIGINFO_SIZE: usize = 128;

const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
/// siginfos asked for per PTRACE_PEEKSIGINFO call.
const PEEK_BATCH: usize = 32;

/// `si_code` values of signals sent from user space (negative) and the
/// two "from the kernel / kill()" ones.
pub const SI_USER: i32 = 0;
pub const SI_KERNEL: i32 = 0x80;
pub const SI_QUEUE: i32 = -1;
pub const SI_TIMER: i32 = -2;
pub const SI_MESGQ: i32 = -3;
pub const SI_ASYNCIO: i32 = -4;
pub const SI_SIGIO: i32 = -5;
pub const SI_TKILL: i32 = -6;

/// One raw kernel siginfo (x86_64 layout).
///
/// ```text
///  0 si_signo  4 si_errno  8 si_code  12 (pad)
/// 16 union:  kill/rt/chld: pid @16, uid @20, (rt) sigval @24, (chld) status @24
///            timer:        tid @16, overrun @20, sigval @24
///            fault:        addr @16       poll: band @16, fd @24
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Siginfo(pub [u8; SIGINFO_SIZE]);

impl std::fmt::Debug for Siginfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Siginfo({})", self.describe())
    }
}

impl Siginfo {
    /// The raw bytes of an image entry; `None` if the length is wrong.
    pub fn from_bytes(b: &[u8]) -> Option<Siginfo> {
        Some(Siginfo(b.try_into().ok()?))
    }

    fn i32_at(&self, off: usize) -> i32 {
        i32::from_ne_bytes(self.0[off..off + 4].try_into().unwrap())
    }
    fn u64_at(&self, off: usize) -> u64 {
        u64::from_ne_bytes(self.0[off..off + 8].try_into().unwrap())
    }
    fn put_i32(&mut self, off: usize, v: i32) {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }

    pub fn signo(&self) -> i32 {
        self.i32_at(0)
    }
    pub fn errno(&self) -> i32 {
        self.i32_at(4)
    }
    pub fn code(&self) -> i32 {
        self.i32_at(8)
    }
    /// Sender pid (kill, sigqueue, tgkill, SIGCHLD).
    pub fn pid(&self) -> i32 {
        self.i32_at(16)
    }
    /// Sender uid (kill, sigqueue, tgkill, SIGCHLD).
    pub fn uid(&self) -> u32 {
        self.i32_at(20) as u32
    }
    /// POSIX timer id (SI_TIMER).
    pub fn timer_id(&self) -> i32 {
        self.i32_at(16)
    }
    /// Timer overrun count carried by the signal (SI_TIMER).
    pub fn overrun(&self) -> i32 {
        self.i32_at(20)
    }
    /// sigval (SI_QUEUE, SI_TIMER, SI_MESGQ, ...).
    pub fn value(&self) -> u64 {
        self.u64_at(24)
    }

    /// A siginfo as kill(2)/tgkill(2)/sigqueue(3) would make it.
    pub fn user(signo: i32, code: i32, pid: i32, uid: u32, value: u64) -> Siginfo {
        let mut s = Siginfo([0; SIGINFO_SIZE]);
        s.put_i32(0, signo);
        s.put_i32(8, code);
        s.put_i32(16, pid);
        s.put_i32(20, uid as i32);
        if code < 0 && code != SI_TKILL {
            s.put_u64(24, value);
        }
        s
    }

    /// A siginfo as a POSIX timer expiry makes it.
    pub fn timer(signo: i32, timer_id: i32, overrun: i32, value: u64) -> Siginfo {
        let mut s = Siginfo([0; SIGINFO_SIZE]);
        s.put_i32(0, signo);
        s.put_i32(8, SI_TIMER);
        s.put_i32(16, timer_id);
        s.put_i32(20, overrun);
        s.put_u64(24, value);
        s
    }

    /// The name of the sender kind.
    pub fn code_name(&self) -> &'static str {
        match self.code() {
            SI_USER => "SI_USER",
            SI_KERNEL => "SI_KERNEL",
            SI_QUEUE => "SI_QUEUE",
            SI_TIMER => "SI_TIMER",
            SI_MESGQ => "SI_MESGQ",
            SI_ASYNCIO => "SI_ASYNCIO",
            SI_SIGIO => "SI_SIGIO",
            SI_TKILL => "SI_TKILL",
            c if c > 0 => "kernel",
            _ => "?",
        }
    }

    /// One line for logs: "signal 10 SI_QUEUE from pid 12 uid 0 value 0x7".
    pub fn describe(&self) -> String {
        let head = format!("signal {} {}", self.signo(), self.code_name());
        match self.code() {
            SI_USER | SI_TKILL => format!("{head} from pid {} uid {}", self.pid(), self.uid()),
            SI_QUEUE | SI_MESGQ => format!(
                "{head} from pid {} uid {} value {:#x}",
                self.pid(),
                self.uid(),
                self.value()
            ),
            SI_TIMER => format!(
                "{head} timer {} overrun {} value {:#x}",
                self.timer_id(),
                self.overrun(),
                self.value()
            ),
            c => format!("{head} (code {c})"),
        }
    }

    /// Whether the restore can queue this siginfo again (rt_sigqueueinfo
    /// takes any si_code from the task itself, but only real signal
    /// numbers).
    pub fn check(&self) -> std::result::Result<(), String> {
        let s = self.signo();
        if !(1..=64).contains(&s) {
            return Err(format!("signal number {s} is out of range 1..64"));
        }
        Ok(())
    }
}

/// ptrace_peeksiginfo_args.
#[repr(C)]
struct PeekArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// Read a signal queue of the stopped thread `tid` without dequeuing:
/// its private queue, or with `shared` the process-wide one.
pub fn peek_queue(tid: Pid, shared: bool) -> Result<Vec<Siginfo>> {
    let mut out = Vec::new();
    let mut buf = vec![[0u8; SIGINFO_SIZE]; PEEK_BATCH];
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: PEEK_BATCH as i32,
        };
        // SAFETY: the kernel reads `args` and writes at most `nr` siginfos
        // of SIGINFO_SIZE bytes into `buf`, which has room for exactly that.
        let r = unsafe {
            libc::ptrace(
                PTRACE_PEEKSIGINFO,
                tid,
                &args as *const PeekArgs,
                buf.as_mut_ptr(),
            )
        };
        if r < 0 {
            let which = if shared { "shared" } else { "private" };
            return Err(Error::sys(
                tid,
                format!("PTRACE_PEEKSIGINFO of the {which} signal queue"),
                nix::errno::Errno::last(),
            ));
        }
        if r == 0 {
            break;
        }
        out.extend(buf[..r as usize].iter().map(|b| Siginfo(*b)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let s = Siginfo::user(libc::SIGUSR1, SI_QUEUE, 42, 1000, 0xdead_beef);
        assert_eq!(s.signo(), libc::SIGUSR1);
        assert_eq!(s.code(), SI_QUEUE);
        assert_eq!((s.pid(), s.uid(), s.value()), (42, 1000, 0xdead_beef));
        assert_eq!(s.errno(), 0);
        // Compare with libc's view of the same bytes.
        // SAFETY: siginfo_t is 128 bytes of plain data.
        let li: libc::siginfo_t = unsafe { std::mem::transmute(s.0) };
        assert_eq!(li.si_signo, libc::SIGUSR1);
        assert_eq!(li.si_code, SI_QUEUE);
        unsafe {
            assert_eq!(li.si_pid(), 42);
            assert_eq!(li.si_uid(), 1000);
            assert_eq!(li.si_value().sival_ptr as u64, 0xdead_beef);
        }
        let t = Siginfo::timer(libc::SIGALRM, 3, 7, 0x55);
        assert_eq!(
            (t.code(), t.timer_id(), t.overrun(), t.value()),
            (SI_TIMER, 3, 7, 0x55)
        );
        assert_eq!(
            t.describe(),
            "signal 14 SI_TIMER timer 3 overrun 7 value 0x55"
        );
        let k = Siginfo::user(libc::SIGTERM, SI_USER, 9, 0, 0x99);
        assert_eq!(k.value(), 0, "kill() carries no value");
        assert_eq!(k.describe(), "signal 15 SI_USER from pid 9 uid 0");
    }

    #[test]
    fn bytes_and_checks() {
        let s = Siginfo::user(64, SI_TKILL, 1, 2, 0);
        assert_eq!(Siginfo::from_bytes(&s.0), Some(s));
        assert_eq!(Siginfo::from_bytes(&[0u8; 127]), None);
        assert!(s.check().is_ok());
        assert!(Siginfo::user(0, 0, 0, 0, 0).check().is_err());
        assert!(Siginfo::user(65, 0, 0, 0, 0).check().is_err());
    }

    /// A stopped child with signals queued in both queues: peek sees them
    /// in order and leaves them there.
    #[test]
    fn peek_real_queue() {
        use nix::sys::signal::{kill, Signal};
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        use nix::unistd::{fork, ForkResult};
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // SAFETY: the child only blocks signals, stops and exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
                libc::raise(libc::SIGSTOP);
                libc::_exit(0);
            },
            ForkResult::Parent { child } => {
                let pid = child.as_raw();
                let st = waitpid(child, Some(WaitPidFlag::WUNTRACED)).unwrap();
                assert!(matches!(st, WaitStatus::Stopped(_, Signal::SIGSTOP)));
                let q = |sig: i32, v: u64| {
                    let mut si = Siginfo::user(sig, SI_QUEUE, 0, 0, v).0;
                    // SAFETY: 128-byte siginfo buffer.
                    let r = unsafe {
                        libc::syscall(libc::SYS_rt_sigqueueinfo, pid, sig, si.as_mut_ptr())
                    };
                    assert_eq!(r, 0, "{}", nix::errno::Errno::last());
                };
                q(libc::SIGRTMIN() + 1, 1);
                q(libc::SIGRTMIN() + 1, 2);
                q(libc::SIGUSR1, 3);
                // SAFETY: tgkill to our child.
                unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGUSR2) };
                nix::sys::ptrace::seize(child, nix::sys::ptrace::Options::empty()).unwrap();
                nix::sys::ptrace::interrupt(child).unwrap();
                let _ = waitpid(child, Some(WaitPidFlag::__WALL)).unwrap();
                let shared = peek_queue(pid, true).unwrap();
                let private = peek_queue(pid, false).unwrap();
                let again = peek_queue(pid, true).unwrap();
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                let v: Vec<(i32, u64)> = shared.iter().map(|s| (s.signo(), s.value())).collect();
                assert_eq!(
                    v,
                    [
                        (libc::SIGRTMIN() + 1, 1),
                        (libc::SIGRTMIN() + 1, 2),
                        (libc::SIGUSR1, 3)
                    ]
                );
                assert_eq!(again, shared);
                assert_eq!(private.len(), 1);
                assert_eq!(private[0].signo(), libc::SIGUSR2);
                assert_eq!(private[0].code(), SI_TKILL);
            }
        }
    }
}
