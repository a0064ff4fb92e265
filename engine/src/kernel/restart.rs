//! Syscall restart: what the kernel's -ERESTART* codes in a stopped
//! thread's rax mean, and how to restart the interrupted call in a thread
//! that a restore recreates (where the kernel's own restart state is gone).

use crate::images::chain::RestartCall;
use crate::ptrace::Regs;

/// Linux's -ERESTART* codes, seen in rax when a thread is stopped inside a
/// system call that will be restarted.
pub const ERESTARTSYS: i64 = -512;
pub const ERESTARTNOINTR: i64 = -513;
pub const ERESTARTNOHAND: i64 = -514;
pub const ERESTART_RESTARTBLOCK: i64 = -516;

/// Registers to give a restored thread so that a system call it was
/// blocked in at dump time runs again instead of failing with EINTR.
///
/// The kernel would restart ERESTARTSYS/NOINTR/NOHAND itself, but a
/// restarted ERESTART_RESTARTBLOCK call goes through `restart_syscall`,
/// whose state (the restart block) lives in the old kernel task and is
/// gone; so every case is turned into "execute the original syscall
/// again" here, with `orig_rax = -1` so the kernel leaves it alone.
/// For a relative nanosleep/clock_nanosleep the kernel wrote the time
/// still to sleep into `rem` when it was interrupted; the restarted call
/// sleeps that (`req := rem`), not the whole interval again.
pub fn restart_regs(r: Regs) -> Regs {
    let mut r = rewound(r);
    r.orig_rax = u64::MAX;
    r
}

/// The registers of a thread stopped in an interruptible system call, set
/// back to run the call again (see [`restart_regs`]), with `orig_rax`
/// kept: what a dump writes, as CRIU writes it, so that an image restored
/// by any engine runs the call again. Registers rewound already are left
/// as they are (their rax is a system call number, not -ERESTART*).
pub fn rewound(mut r: Regs) -> Regs {
    let rax = r.rax as i64;
    if (r.orig_rax as i64) < 0 {
        return r;
    }
    if matches!(
        rax,
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK
    ) {
        let nr = r.orig_rax as i64;
        if rax == ERESTART_RESTARTBLOCK {
            if nr == libc::SYS_nanosleep && r.rsi != 0 {
                r.rdi = r.rsi;
            } else if nr == libc::SYS_clock_nanosleep
                && (r.rsi & libc::TIMER_ABSTIME as u64) == 0
                && r.r10 != 0
            {
                r.rdx = r.r10;
            }
        }
        r.rax = r.orig_rax;
        r.rip -= 2;
    }
    r
}

fn args(r: &Regs) -> [u64; 6] {
    [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9]
}

/// The record a pre-dump keeps of thread `tid`, stopped with registers
/// `r`, if it was interrupted with ERESTART_RESTARTBLOCK: the kernel will
/// go on with the call through `restart_syscall`, after which only this
/// record tells which call it was (`known`, the parent image's records,
/// names one already seen going through it).
pub fn record(tid: i32, r: &Regs, known: &[RestartCall]) -> Option<RestartCall> {
    if r.rax as i64 != ERESTART_RESTARTBLOCK || (r.orig_rax as i64) < 0 {
        return None;
    }
    let nr = match r.orig_rax as i64 {
        libc::SYS_restart_syscall => find(tid, r, known)?.nr,
        nr => nr,
    };
    Some(RestartCall {
        tid,
        nr,
        rip: r.rip,
        args: args(r),
    })
}

/// The registers of thread `tid` with the call a `restart_syscall`
/// stands for put back, where `known` (the parent image's records) saw
/// the thread interrupted at the same instruction with the same
/// arguments. [`rewound`] can then run that call again in a restored
/// thread, as for a call interrupted once; without a record the call
/// stays `restart_syscall`, which in a new thread fails with EINTR.
pub fn with_known_call(mut r: Regs, tid: i32, known: &[RestartCall]) -> Regs {
    if r.rax as i64 == ERESTART_RESTARTBLOCK && r.orig_rax as i64 == libc::SYS_restart_syscall {
        if let Some(c) = find(tid, &r, known) {
            r.orig_rax = c.nr as u64;
        }
    }
    r
}

fn find<'a>(tid: i32, r: &Regs, known: &'a [RestartCall]) -> Option<&'a RestartCall> {
    known
        .iter()
        .find(|c| c.tid == tid && c.rip == r.rip && c.args == args(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero() -> Regs {
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn restart_plain_syscall() {
        let mut r = zero();
        r.orig_rax = libc::SYS_read as u64;
        r.rax = ERESTARTSYS as u64;
        r.rip = 0x1002;
        let n = restart_regs(r);
        assert_eq!(n.rax, libc::SYS_read as u64);
        assert_eq!(n.rip, 0x1000);
        assert_eq!(n.orig_rax, u64::MAX);
    }

    #[test]
    fn restart_relative_clock_nanosleep_uses_rem() {
        let mut r = zero();
        r.orig_rax = libc::SYS_clock_nanosleep as u64;
        r.rax = ERESTART_RESTARTBLOCK as u64;
        r.rip = 0x2002;
        r.rsi = 0;
        r.rdx = 0x1000;
        r.r10 = 0x2000;
        let n = restart_regs(r);
        assert_eq!(n.rdx, 0x2000);
        assert_eq!(n.rax, libc::SYS_clock_nanosleep as u64);
        assert_eq!(n.rip, 0x2000);
    }

    #[test]
    fn absolute_sleep_keeps_its_deadline() {
        let mut r = zero();
        r.orig_rax = libc::SYS_clock_nanosleep as u64;
        r.rax = ERESTARTNOHAND as u64;
        r.rsi = libc::TIMER_ABSTIME as u64;
        r.rdx = 0x1000;
        r.r10 = 0x2000;
        r.rip = 0x3002;
        let n = restart_regs(r);
        assert_eq!(n.rdx, 0x1000);
    }

    #[test]
    fn not_in_syscall_untouched() {
        let mut r = zero();
        r.orig_rax = u64::MAX;
        r.rax = ERESTARTSYS as u64; // a value that only looks like one
        r.rip = 0x5000;
        let n = restart_regs(r);
        assert_eq!(n.rip, 0x5000);
        assert_eq!(n.rax, ERESTARTSYS as u64);
    }

    fn sleeping(nr: i64) -> Regs {
        let mut r = zero();
        r.orig_rax = nr as u64;
        r.rax = ERESTART_RESTARTBLOCK as u64;
        r.rip = 0x4002;
        r.rdi = 0x7000;
        r.rsi = 0x7010;
        r
    }

    #[test]
    fn a_restart_syscall_goes_back_to_the_recorded_call() {
        let first = record(7, &sleeping(libc::SYS_nanosleep), &[]).expect("recorded");
        assert_eq!(first.nr, libc::SYS_nanosleep);
        // Interrupted again, now in restart_syscall: the chain names it.
        let again = sleeping(libc::SYS_restart_syscall);
        let second = record(7, &again, &[first]).expect("still recorded");
        assert_eq!(second.nr, libc::SYS_nanosleep);
        let r = rewound(with_known_call(again, 7, &[second]));
        assert_eq!(r.rax, libc::SYS_nanosleep as u64);
        assert_eq!(r.rdi, 0x7010, "sleeps what is left (rem)");
        assert_eq!(r.rip, 0x4000);
    }

    #[test]
    fn a_restart_syscall_unknown_or_elsewhere_stays() {
        let first = record(7, &sleeping(libc::SYS_nanosleep), &[]).expect("recorded");
        let mut moved = sleeping(libc::SYS_restart_syscall);
        moved.rip = 0x5002;
        assert_eq!(record(7, &moved, &[first]), None);
        let kept = with_known_call(moved, 7, &[first]);
        assert_eq!(kept.orig_rax, libc::SYS_restart_syscall as u64);
        let other_thread = with_known_call(sleeping(libc::SYS_restart_syscall), 8, &[first]);
        assert_eq!(other_thread.orig_rax, libc::SYS_restart_syscall as u64);
        let mut plain = sleeping(libc::SYS_read);
        plain.rax = ERESTARTSYS as u64;
        assert_eq!(
            record(7, &plain, &[]),
            None,
            "the kernel restarts it itself"
        );
    }

    #[test]
    fn rewinding_twice_is_rewinding_once() {
        let mut r = zero();
        r.orig_rax = libc::SYS_read as u64;
        r.rax = ERESTARTSYS as u64;
        r.rip = 0x1002;
        let once = rewound(r);
        assert_eq!(once.orig_rax, libc::SYS_read as u64);
        let twice = restart_regs(once);
        assert_eq!(twice.rip, 0x1000);
        assert_eq!(twice.rax, libc::SYS_read as u64);
        assert_eq!(twice.orig_rax, u64::MAX);
    }
}
