//! Kernel semantics that dump and restore both rely on and that belong
//! to neither side: how clocks are read and compared across boots, the
//! layout and rules of the timer syscalls' structs, and the like. Pure
//! functions where possible, so that both sides agree by construction.

pub mod clock;
pub mod cpu;
pub mod netconf;
pub mod netlock;
pub mod restart;
pub mod seccomp;
pub mod tcp_segment;
pub mod timers;
pub mod tty;
pub mod vdso;
