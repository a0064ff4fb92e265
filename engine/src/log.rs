//! A small leveled logger for the `-o LOGFILE` / `-v[N]` options.
//!
//! Levels follow CRIU's: 0 silent, 1 errors, 2 warnings (default),
//! 3 info, 4 debug.

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

struct Logger {
    level: u8,
    to_stderr: bool,
    out: Box<dyn Write + Send>,
    start: Instant,
}

static LOGGER: Mutex<Option<Logger>> = Mutex::new(None);

/// Route log lines to `out` (a file, or stderr) at `level`.
pub fn init(level: u8, out: Box<dyn Write + Send>, to_stderr: bool) {
    *LOGGER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Logger {
        level,
        to_stderr,
        out,
        start: Instant::now(),
    });
}

/// Whether log lines already reach the terminal (no -o given).
pub fn is_stderr() -> bool {
    match &*LOGGER.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(l) => l.to_stderr,
        None => true,
    }
}

pub fn enabled(level: u8) -> bool {
    match &*LOGGER.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(l) => level <= l.level,
        None => level <= 2,
    }
}

pub fn write(level: u8, args: std::fmt::Arguments<'_>) {
    let mut g = LOGGER.lock().unwrap_or_else(|e| e.into_inner());
    let tag = match level {
        1 => "Error",
        2 => "Warn",
        3 => "Info",
        _ => "Debug",
    };
    match &mut *g {
        Some(l) if level <= l.level => {
            let t = l.start.elapsed();
            // One write per line: formatting straight into an unbuffered
            // file made a syscall of each piece (a dozen per line), which
            // slowed a -v4 run and skewed its time stamps.
            let line = format!(
                "({:>3}.{:06}) {}: {}\n",
                t.as_secs(),
                t.subsec_micros(),
                tag,
                args
            );
            let _ = l.out.write_all(line.as_bytes());
            let _ = l.out.flush();
        }
        Some(_) => {}
        None if level <= 2 => eprintln!("{tag}: {args}"),
        None => {}
    }
}

#[macro_export]
macro_rules! error { ($($a:tt)*) => { $crate::log::write(1, format_args!($($a)*)) } }
#[macro_export]
macro_rules! warn { ($($a:tt)*) => { $crate::log::write(2, format_args!($($a)*)) } }
#[macro_export]
macro_rules! info { ($($a:tt)*) => { $crate::log::write(3, format_args!($($a)*)) } }
#[macro_export]
macro_rules! debug { ($($a:tt)*) => { $crate::log::write(4, format_args!($($a)*)) } }
