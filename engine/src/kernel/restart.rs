//! Syscall restart: what the kernel's -ERESTART* codes in a stopped
//! thread's rax mean, and how to restart the interrupted call in a thread
//! that a restore recreates (where the kernel's own restart state is gone).

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
