//! The zdtm test-program protocol for Rust cases (see ZDTM_PROTOCOL.md and
//! zdtm/lib/zdtmtst.h, its C twin). A case includes it at its crate root:
//!
//! ```ignore
//! #[path = "../lib/zdtm.rs"]
//! mod zdtm;
//!
//! fn main() {
//!     let opts = zdtm::init_with(&[zdtm::Opt::new("mb", zdtm::Kind::Uint, "MiB to fill", false)]);
//!     let mb: u32 = opts.parse("mb").unwrap_or(16);
//!     // ... build the state under test ...
//!     zdtm::daemon();   // ready: the launcher writes the pidfile and exits
//!     zdtm::wait_sig(); // checkpoint/restore happen here
//!     // ... check the state ...
//!     if bad { zdtm::fail!("what went wrong: {}", x); } else { zdtm::pass(); }
//! }
//! ```
//!
//! The module must be mounted as `crate::zdtm` (the macros name it). Only
//! std and the libc crate are used. Messages go straight to file descriptor
//! 2 with one write(2) each; prefer `zdtm::test_msg!` to `println!` (Rust's
//! stdout is line buffered). The environment variables ZDTM_NEWNS,
//! ZDTM_USERNS, ZDTM_UID, ZDTM_GID and ZDTM_GROUPS mean what they mean for
//! C programs.
#![allow(dead_code, unused_macros, unused_imports)]

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};
use std::sync::OnceLock;

const INPROGRESS: &str = ".inprogress";
const STATUS_FD_ENV: &str = "ZDTM_NS_STATUS_FD";

const STAGE_INIT: i32 = 0;
const STAGE_RUNNING: i32 = 1;
const STAGE_FAIL: i32 = 2;

/// The type of a case-specific option's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `--name`, `--name=yes|no|on|off|true|false|1|0`
    Bool,
    Int,
    Uint,
    Long,
    Ulong,
    /// any non-empty string
    String,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Uint => "uint",
            Kind::Long => "long",
            Kind::Ulong => "ulong",
            Kind::String => "string",
        }
    }

    /// The canonical value, or None if `v` is not one of this kind.
    fn check(self, v: Option<&str>) -> Option<String> {
        match (self, v) {
            (Kind::Bool, None) => Some("1".into()),
            (Kind::Bool, Some(s)) => match s {
                "on" | "yes" | "true" | "1" => Some("1".into()),
                "off" | "no" | "false" | "0" => Some("0".into()),
                _ => None,
            },
            (_, None) => None,
            (Kind::String, Some(s)) => (!s.is_empty()).then(|| s.to_string()),
            (Kind::Int, Some(s)) => parse_int(s)
                .filter(|v| i32::try_from(*v).is_ok())
                .map(|v| v.to_string()),
            (Kind::Long, Some(s)) => parse_int(s).map(|v| v.to_string()),
            (Kind::Uint, Some(s)) => parse_uint(s)
                .filter(|v| u32::try_from(*v).is_ok())
                .map(|v| v.to_string()),
            (Kind::Ulong, Some(s)) => parse_uint(s).map(|v| v.to_string()),
        }
    }
}

/// strtol(…, 0)-like: decimal, 0x hex or 0 octal.
fn parse_uint(s: &str) -> Option<u64> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

fn parse_int(s: &str) -> Option<i64> {
    match s.strip_prefix('-') {
        Some(rest) => {
            let v = parse_uint(rest)?;
            if v <= i64::MAX as u64 + 1 {
                Some((v as i64).wrapping_neg())
            } else {
                None
            }
        }
        None => parse_uint(s).and_then(|v| i64::try_from(v).ok()),
    }
}

/// A case-specific option, spelled `--name=value`.
#[derive(Clone, Copy, Debug)]
pub struct Opt {
    pub name: &'static str,
    pub kind: Kind,
    pub doc: &'static str,
    pub required: bool,
}

impl Opt {
    pub const fn new(name: &'static str, kind: Kind, doc: &'static str, required: bool) -> Opt {
        Opt {
            name,
            kind,
            doc,
            required,
        }
    }
}

/// The parsed command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub pidfile: String,
    pub outfile: String,
    values: Vec<(String, String)>,
}

impl Options {
    /// The value of a case option as given (bools: "1" or "0").
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A bool option (false when not given).
    pub fn flag(&self, name: &str) -> bool {
        self.get(name) == Some("1")
    }

    /// A numeric (or any FromStr) option; None when not given.
    pub fn parse<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.get(name).and_then(|v| v.parse().ok())
    }
}

const BUILTIN: &[Opt] = &[
    Opt::new(
        "pidfile",
        Kind::String,
        "file to store the pid of the test in",
        true,
    ),
    Opt::new(
        "outfile",
        Kind::String,
        "output file (the log; <outfile>.inprogress while running)",
        true,
    ),
    Opt::new("help", Kind::Bool, "print this help and exit", false),
];

fn usage_exit(prog: &str, opts: &[Opt]) -> ! {
    eprintln!("Usage: {prog} --pidfile=FILE --outfile=FILE [options]");
    for o in BUILTIN.iter().chain(opts) {
        let (a, b) = if o.required { ("", "") } else { ("[", "]") };
        eprintln!("  {a}--{}={}{b}\t{}", o.name, o.kind.name(), o.doc);
    }
    std::process::exit(1);
}

/// Strict option parsing: every argument is `--name[=value]` of a known
/// option with a valid value; mandatory options must be given. Otherwise a
/// usage message goes to stderr and the program exits with 1.
pub fn parse_args(args: &[OsString], opts: &[Opt]) -> Options {
    let prog = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "test".into());
    let all: Vec<Opt> = BUILTIN.iter().chain(opts).copied().collect();
    let mut values: Vec<(String, String)> = Vec::new();

    for raw in args.iter().skip(1) {
        let Some(arg) = raw.to_str() else {
            eprintln!("{}: options must be valid UTF-8", raw.to_string_lossy());
            usage_exit(&prog, opts);
        };
        let Some(body) = arg
            .strip_prefix("--")
            .filter(|b| !b.is_empty() && !b.starts_with('='))
        else {
            eprintln!("{arg}: options must be spelled --name=value");
            usage_exit(&prog, opts);
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(opt) = all.iter().find(|o| o.name == name) else {
            eprintln!("{arg}: unknown option");
            usage_exit(&prog, opts);
        };
        let Some(v) = opt.kind.check(value) else {
            eprintln!("{arg}: bad value for a {} option", opt.kind.name());
            usage_exit(&prog, opts);
        };
        values.push((name.to_string(), v));
    }

    let get = |n: &str| {
        values
            .iter()
            .rev()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    if get("help").as_deref() == Some("1") {
        usage_exit(&prog, opts);
    }
    for o in &all {
        if o.required && get(o.name).is_none() {
            eprintln!("mandatory option --{} not given", o.name);
            usage_exit(&prog, opts);
        }
    }
    Options {
        pidfile: get("pidfile").unwrap(),
        outfile: get("outfile").unwrap(),
        values,
    }
}

// ---- messages --------------------------------------------------------------

fn write_all(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        buf = &buf[n as usize..];
    }
}

fn timestamp() -> String {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe {
        libc::gettimeofday(&mut tv, ptr::null_mut());
        if libc::localtime_r(&tv.tv_sec, &mut tm).is_null() {
            return format!("{}.{:03}", tv.tv_sec, tv.tv_usec / 1000);
        }
    }
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tv.tv_usec / 1000
    )
}

/// A diagnostic line: "HH:MM:SS.mmm: PID: text" (use the `test_msg!` macro).
pub fn msg_fmt(args: fmt::Arguments) {
    let errno = errno();
    let mut s = format!("{}: {:5}: {}", timestamp(), std::process::id(), args);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    write_all(2, s.as_bytes());
    set_errno(errno);
}

/// The verdict "PASS".
pub fn pass() {
    write_all(2, b"PASS\n");
}

/// The verdict "FAIL: file:line: msg (errno = N (text))" (use `fail!`).
pub fn fail_at(file: &str, line: u32, args: fmt::Arguments) {
    let errno = errno();
    let text = unsafe { CStr::from_ptr(libc::strerror(errno)) }
        .to_string_lossy()
        .into_owned();
    let mut s = format!("FAIL: {file}:{line}: {args} (errno = {errno} ({text}))");
    s = s.replace('\n', " ");
    s.push('\n');
    write_all(2, s.as_bytes());
    set_errno(errno);
}

/// `fail!("fmt", args...)`: write a FAIL verdict line.
macro_rules! fail {
    ($($arg:tt)*) => {
        $crate::zdtm::fail_at(file!(), line!(), format_args!($($arg)*))
    };
}
pub(crate) use fail;

/// `test_msg!("fmt", args...)`: write a diagnostic line.
macro_rules! test_msg {
    ($($arg:tt)*) => {
        $crate::zdtm::msg_fmt(format_args!($($arg)*))
    };
}
pub(crate) use test_msg;

pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn set_errno(e: i32) {
    unsafe { *libc::__errno_location() = e };
}

// ---- futex words -----------------------------------------------------------

fn futex_wake(w: &AtomicI32) {
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            w.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            ptr::null::<libc::timespec>(),
            0,
            0,
        );
    }
}

fn futex_set_and_wake(w: &AtomicI32, v: i32) {
    let e = errno();
    w.store(v, Ordering::SeqCst);
    futex_wake(w);
    set_errno(e);
}

fn futex_wait_while(w: &AtomicI32, v: i32) {
    while w.load(Ordering::SeqCst) == v {
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                w.as_ptr(),
                libc::FUTEX_WAIT,
                v,
                ptr::null::<libc::timespec>(),
                0,
                0,
            );
        }
    }
}

// ---- the protocol ----------------------------------------------------------

static SIG_RECEIVED: AtomicI32 = AtomicI32::new(0);
/// The stage word, in a MAP_SHARED|MAP_ANONYMOUS page.
static SHARED: AtomicPtr<AtomicI32> = AtomicPtr::new(ptr::null_mut());
static IS_LAUNCHER: AtomicBool = AtomicBool::new(false);

struct Fini {
    master: libc::pid_t,
    cwd_fd: i32,
    log: CString,
    outfile: CString,
    pidfile: CString,
}
static FINI: OnceLock<Fini> = OnceLock::new();

extern "C" fn sig_hand(signo: i32) {
    let p = SHARED.load(Ordering::SeqCst);
    if IS_LAUNCHER.load(Ordering::SeqCst) && !p.is_null() {
        futex_set_and_wake(unsafe { &*p }, STAGE_FAIL);
    }
    futex_set_and_wake(&SIG_RECEIVED, signo);
}

/// atexit: the test process publishes its log and removes the pidfile.
extern "C" fn test_fini() {
    let Some(f) = FINI.get() else { return };
    if unsafe { libc::getpid() } != f.master {
        return;
    }
    unsafe {
        libc::renameat(f.cwd_fd, f.log.as_ptr(), f.cwd_fd, f.outfile.as_ptr());
        libc::unlinkat(f.cwd_fd, f.pidfile.as_ptr(), 0);
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| {
        eprintln!("{s:?}: NUL in a path");
        std::process::exit(1)
    })
}

fn die(what: &str) -> ! {
    eprintln!("{what}: {}", io::Error::last_os_error());
    std::process::exit(1)
}

fn log_die(what: &str) -> ! {
    test_msg!(
        "ERR: {what} (errno = {} ({}))",
        errno(),
        io::Error::last_os_error()
    );
    std::process::exit(1)
}

fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|v| *v != u32::MAX)
}

/// ZDTM_GROUPS, ZDTM_GID, ZDTM_UID: drop to these credentials.
fn set_creds() {
    if let Ok(val) = std::env::var("ZDTM_GROUPS") {
        let mut groups = Vec::new();
        for tok in val.split([' ', ',']).filter(|t| !t.is_empty()) {
            match parse_id(tok) {
                Some(g) => groups.push(g as libc::gid_t),
                None => {
                    eprintln!("Bad ZDTM_GROUPS={val}");
                    std::process::exit(1);
                }
            }
        }
        if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
            die(&format!("Can't set groups {val}"));
        }
    }
    if let Ok(val) = std::env::var("ZDTM_GID") {
        let Some(gid) = parse_id(&val) else {
            eprintln!("Bad ZDTM_GID={val}");
            std::process::exit(1)
        };
        if unsafe { libc::setgid(gid) } != 0 {
            die(&format!("Can't set gid {gid}"));
        }
    }
    if let Ok(val) = std::env::var("ZDTM_UID") {
        let Some(uid) = parse_id(&val) else {
            eprintln!("Bad ZDTM_UID={val}");
            std::process::exit(1)
        };
        if unsafe { libc::setuid(uid) } != 0 {
            die(&format!("Can't set uid {uid}"));
        }
    }
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } != 0 {
        die("Can't set the dumpable flag");
    }
}

/// `<outfile>.inprogress` becomes stdout and stderr; stdin becomes /dev/null.
fn setup_log(outfile: &str) {
    let log = cstr(&format!("{outfile}{INPROGRESS}"));
    let fd = unsafe {
        libc::open(
            log.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_APPEND | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        die(&format!("Can't create the log {outfile}{INPROGRESS}"));
    }
    unsafe {
        if libc::dup2(fd, 1) < 0 || libc::dup2(fd, 2) < 0 {
            die("Can't make the log stdout/stderr");
        }
        if fd > 2 {
            libc::close(fd);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            log_die("Can't open /dev/null");
        }
        if null != 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
    }
}

fn write_pidfile(pidfile: &str, pid: libc::pid_t) -> bool {
    let mut tmp = *b".zdtm.pidfile.XXXXXX\0";
    let fd = unsafe { libc::mkstemp(tmp.as_mut_ptr().cast()) };
    let tmp_name = unsafe { CStr::from_ptr(tmp.as_ptr().cast()) }.to_owned();
    if fd < 0 {
        test_msg!(
            "ERR: can't create a temporary pidfile: {}",
            io::Error::last_os_error()
        );
        return false;
    }
    let text = pid.to_string();
    let ok = unsafe {
        libc::fchmod(fd, 0o644) == 0
            && libc::write(fd, text.as_ptr().cast(), text.len()) == text.len() as isize
            && libc::close(fd) == 0
    };
    let target = cstr(pidfile);
    if !ok || unsafe { libc::rename(tmp_name.as_ptr(), target.as_ptr()) } != 0 {
        test_msg!(
            "ERR: can't write the pidfile {pidfile}: {}",
            io::Error::last_os_error()
        );
        unsafe { libc::unlink(tmp_name.as_ptr()) };
        return false;
    }
    true
}

fn page_size() -> usize {
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn launcher(pid: libc::pid_t, pidfile: &str) -> ! {
    let stage = unsafe { &*SHARED.load(Ordering::SeqCst) };
    futex_wait_while(stage, STAGE_INIT);
    if stage.load(Ordering::SeqCst) != STAGE_RUNNING {
        let mut status = 0;
        let mut ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if ret == 0 {
            test_msg!(
                "ERR: launcher got signal {} before the test was ready; killing the test",
                SIG_RECEIVED.load(Ordering::SeqCst)
            );
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                ret = libc::waitpid(pid, &mut status, 0);
            }
        }
        if ret != pid {
            test_msg!(
                "ERR: can't wait for the test {pid}: {}",
                io::Error::last_os_error()
            );
        } else if libc::WIFEXITED(status) {
            test_msg!(
                "ERR: Test exited unexpectedly with code {}",
                libc::WEXITSTATUS(status)
            );
        } else if libc::WIFSIGNALED(status) {
            test_msg!(
                "ERR: Test exited on unexpected signal {}",
                libc::WTERMSIG(status)
            );
        }
        unsafe { libc::_exit(1) };
    }
    let ok = write_pidfile(pidfile, pid);
    unsafe { libc::_exit(if ok { 0 } else { 1 }) };
}

fn set_handler(sig: i32, handler: libc::sighandler_t, flags: i32) -> bool {
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, ptr::null_mut()) == 0
    }
}

/// `init_with(&[])`.
pub fn init() -> Options {
    init_with(&[])
}

/// Parse the options (the mandatory --pidfile and --outfile plus `opts`),
/// drop credentials, set up the log and fork. Only the test process
/// returns; the launcher exits once `daemon()` is called.
pub fn init_with(opts: &[Opt]) -> Options {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut options = parse_args(&args, opts);

    match std::env::var("ZDTM_NEWNS").ok().as_deref() {
        None => {}
        Some("1") => ns_create(&args, &options),
        Some("2") => ns_init(&args, &options),
        Some("3") => options.pidfile = inner_pidfile(&options.pidfile),
        Some(v) => {
            eprintln!("Bad ZDTM_NEWNS={v} (1 to start in new namespaces)");
            std::process::exit(1);
        }
    }

    set_creds();

    let handler = sig_hand as extern "C" fn(i32) as libc::sighandler_t;
    if !set_handler(libc::SIGTERM, handler, libc::SA_RESTART)
        || !set_handler(libc::SIGCHLD, handler, libc::SA_RESTART)
    {
        die("Can't set the SIGTERM/SIGCHLD handlers");
    }

    let outfile = &options.outfile;
    let c_out = cstr(outfile);
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::lstat(c_out.as_ptr(), &mut st) } == 0 || errno() != libc::ENOENT {
        eprintln!("Output file {outfile} appears to exist, aborting");
        std::process::exit(1);
    }
    let cwd_fd = unsafe {
        libc::open(
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if cwd_fd < 0 {
        die("Can't open the working directory");
    }
    let fini = Fini {
        master: 0,
        cwd_fd,
        log: cstr(&format!("{outfile}{INPROGRESS}")),
        outfile: c_out,
        pidfile: cstr(&options.pidfile),
    };
    if unsafe { libc::atexit(test_fini) } != 0 {
        eprintln!("Can't register the exit hook");
        std::process::exit(1);
    }
    setup_log(outfile);

    let page = unsafe {
        libc::mmap(
            ptr::null_mut(),
            page_size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        log_die("Can't map the shared stage page");
    }
    let stage = page as *mut AtomicI32;
    unsafe { (*stage).store(STAGE_INIT, Ordering::SeqCst) };
    SHARED.store(stage, Ordering::SeqCst);

    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGTERM);
        libc::sigaddset(&mut block, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &block, &mut old);

        let pid = libc::fork();
        if pid < 0 {
            log_die("Can't fork the test");
        }
        if pid > 0 {
            IS_LAUNCHER.store(true, Ordering::SeqCst);
            libc::sigprocmask(libc::SIG_SETMASK, &old, ptr::null_mut());
            launcher(pid, &options.pidfile);
        }

        IS_LAUNCHER.store(false, Ordering::SeqCst);
        let _ = FINI.set(Fini {
            master: libc::getpid(),
            ..fini
        });
        if !set_handler(libc::SIGCHLD, libc::SIG_DFL, libc::SA_RESTART) {
            log_die("Can't reset the SIGCHLD handler");
        }
        libc::sigprocmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        if libc::setsid() < 0 {
            log_die("Can't become a session leader");
        }
    }
    options
}

/// The state is built: wake the launcher (it writes the pidfile and exits).
pub fn daemon() {
    let p = SHARED.swap(ptr::null_mut(), Ordering::SeqCst);
    if p.is_null() {
        test_msg!("ERR: daemon() called twice or before init()");
        return;
    }
    futex_set_and_wake(unsafe { &*p }, STAGE_RUNNING);
    unsafe { libc::munmap(p.cast(), page_size()) };
}

/// True while SIGTERM has not been received.
pub fn go() -> bool {
    SIG_RECEIVED.load(Ordering::SeqCst) == 0
}

/// Sleep until SIGTERM arrives.
pub fn wait_sig() {
    let e = errno();
    futex_wait_while(&SIG_RECEIVED, 0);
    set_errno(e);
}

// ---- the "ns" flavour (see ns.c; the same design) --------------------------

const NS_FLAGS: i32 = libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

fn inner_pidfile(pidfile: &str) -> String {
    format!("{pidfile}.inner")
}

fn self_exe() -> std::path::PathBuf {
    std::fs::read_link("/proc/self/exe").unwrap_or_else(|e| {
        eprintln!("Can't read /proc/self/exe: {e}");
        std::process::exit(1)
    })
}

fn exec_self(exe: &std::path::Path, args: &[OsString], newns: &str) -> io::Error {
    let mut cmd = Command::new(exe);
    cmd.args(&args[1..]).env("ZDTM_NEWNS", newns);
    if let Some(a0) = args.first() {
        cmd.arg0(a0);
    }
    cmd.exec()
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    pad: [u8; 22],
}

fn lo_up() -> bool {
    unsafe {
        let sk = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sk < 0 {
            return false;
        }
        let mut ifr: IfReq = std::mem::zeroed();
        for (d, s) in ifr.name.iter_mut().zip(b"lo") {
            *d = *s as libc::c_char;
        }
        let mut ok = libc::ioctl(sk, libc::SIOCGIFFLAGS, &mut ifr) == 0;
        if ok {
            ifr.flags |= libc::IFF_UP as libc::c_short;
            ok = libc::ioctl(sk, libc::SIOCSIFFLAGS, &mut ifr) == 0;
        }
        libc::close(sk);
        ok
    }
}

/// The "uns" flavour's maps (ns.c's USERNS_UID_MAP, USERNS_GID_MAP): ids
/// below 65536 map to themselves, those above are shifted.
const USERNS_UID_MAP: &str = "0 0 65536\n65536 200000 65536\n";
const USERNS_GID_MAP: &str = "0 0 65536\n65536 300000 65536\n";
/// ZDTM_USERNS=2 (ns.c's USERNS_SHIFTED_*): every id shifted, the host's
/// root not mapped, as in CRIU's zdtm and an unprivileged container.
const USERNS_SHIFTED_UID_MAP: &str = "0 100000 65536\n";
const USERNS_SHIFTED_GID_MAP: &str = "0 200000 65536\n";

/// ns.c's ns_enter_userns: the caller enters a new user namespace; a child
/// of it, still outside, writes the maps (a process cannot give itself
/// more than its own id). `shifted`: the shifted maps, after which the
/// caller becomes the namespace's root.
fn ns_enter_userns(shifted: bool) {
    unsafe {
        let mut go = [0i32; 2];
        if libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            die("ns: pipe");
        }
        let me = libc::getpid();
        let pid = libc::fork();
        if pid < 0 {
            die("ns: fork");
        }
        if pid == 0 {
            libc::close(go[1]);
            let mut c = 0u8;
            if libc::read(go[0], (&mut c as *mut u8).cast(), 1) != 1 {
                libc::_exit(1);
            }
            let maps = match shifted {
                true => [
                    ("uid_map", USERNS_SHIFTED_UID_MAP),
                    ("gid_map", USERNS_SHIFTED_GID_MAP),
                ],
                false => [("uid_map", USERNS_UID_MAP), ("gid_map", USERNS_GID_MAP)],
            };
            for (name, map) in maps {
                let path = format!("/proc/{me}/{name}");
                if let Err(e) = std::fs::write(&path, map) {
                    eprintln!("ns: can't write {path}: {e}");
                    libc::_exit(1);
                }
            }
            libc::_exit(0);
        }
        libc::close(go[0]);
        if libc::unshare(libc::CLONE_NEWUSER) != 0 {
            die("ns: can't create a user namespace");
        }
        let mut status = -1;
        if libc::write(go[1], c"g".as_ptr().cast(), 1) != 1
            || libc::waitpid(pid, &mut status, 0) != pid
            || status != 0
        {
            eprintln!("ns: the user namespace was not mapped (status {status:#x})");
            std::process::exit(1);
        }
        libc::close(go[1]);
        // The host's root is not mapped there: become the namespace's.
        if shifted
            && (libc::setgroups(0, std::ptr::null())
                | libc::setresgid(0, 0, 0)
                | libc::setresuid(0, 0, 0))
                != 0
        {
            die("ns: can't become the user namespace's root");
        }
    }
}

fn ns_create(args: &[OsString], opts: &Options) -> ! {
    let exe = self_exe();
    let mut pfd = [0i32; 2];
    match std::env::var("ZDTM_USERNS").ok().as_deref() {
        Some("1") => ns_enter_userns(false),
        Some("2") => ns_enter_userns(true),
        _ => {}
    }
    unsafe {
        if libc::pipe2(pfd.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            die("ns: pipe");
        }
        if libc::unshare(NS_FLAGS) != 0 {
            die("ns: can't create namespaces");
        }
        let pid = libc::fork();
        if pid < 0 {
            die("ns: fork");
        }
        if pid == 0 {
            libc::close(pfd[0]);
            let step = |ok: bool, what: &str| {
                if !ok {
                    eprintln!("ns: {what}: {}", io::Error::last_os_error());
                    libc::_exit(1);
                }
            };
            step(libc::setsid() >= 0, "setsid");
            step(
                libc::mount(
                    ptr::null(),
                    c"/".as_ptr(),
                    ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    ptr::null(),
                ) == 0,
                "can't make / private",
            );
            step(
                libc::mount(
                    c"proc".as_ptr(),
                    c"/proc".as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    ptr::null(),
                ) == 0,
                "can't mount /proc",
            );
            step(lo_up(), "can't bring lo up");
            step(libc::fcntl(pfd[1], libc::F_SETFD, 0) == 0, "fcntl");
            std::env::set_var(STATUS_FD_ENV, pfd[1].to_string());
            let e = exec_self(&exe, args, "2");
            eprintln!("ns: can't exec {}: {e}", exe.display());
            libc::_exit(1);
        }
        libc::close(pfd[1]);
        let mut status: i32 = -1;
        let n = loop {
            let n = libc::read(pfd[0], (&mut status as *mut i32).cast(), 4);
            if n >= 0 || errno() != libc::EINTR {
                break n;
            }
        };
        if n != 4 || status != 0 {
            eprintln!("ns: the test failed to start (status {status})");
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, ptr::null_mut(), 0);
            std::process::exit(1);
        }
        if !write_pidfile(&opts.pidfile, pid) {
            std::process::exit(1);
        }
        libc::_exit(0);
    }
}

extern "C" fn ns_noop(_: i32) {}

fn report(pid: libc::pid_t, status: i32) {
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0 {
        test_msg!(
            "ns init: process {pid} exited with code {}",
            libc::WEXITSTATUS(status)
        );
    } else if libc::WIFSIGNALED(status) {
        test_msg!(
            "ns init: process {pid} was killed by signal {}",
            libc::WTERMSIG(status)
        );
    }
}

fn ns_init(args: &[OsString], opts: &Options) -> ! {
    let inner = inner_pidfile(&opts.pidfile);
    let log = format!("{}{INPROGRESS}", opts.outfile);
    let Some(status_fd) = std::env::var(STATUS_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        eprintln!("ns init: {STATUS_FD_ENV} is not set");
        std::process::exit(1)
    };
    std::env::remove_var(STATUS_FD_ENV);
    let exe = self_exe();
    unsafe {
        libc::fcntl(status_fd, libc::F_SETFD, libc::FD_CLOEXEC);
        let noop = ns_noop as extern "C" fn(i32) as libc::sighandler_t;
        set_handler(libc::SIGTERM, noop, 0);
        set_handler(libc::SIGCHLD, noop, 0);
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);

        let pid = libc::fork();
        if pid < 0 {
            die("ns init: fork");
        }
        if pid == 0 {
            set_handler(libc::SIGTERM, libc::SIG_DFL, 0);
            set_handler(libc::SIGCHLD, libc::SIG_DFL, 0);
            libc::sigprocmask(libc::SIG_SETMASK, &old, ptr::null_mut());
            let e = exec_self(&exe, args, "3");
            eprintln!("ns init: can't exec {}: {e}", exe.display());
            libc::_exit(1);
        }

        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if errno() != libc::EINTR {
                status = -1;
                break;
            }
        }
        let mut test_pid: libc::pid_t = -1;
        let mut ok = false;
        if status == 0 {
            test_pid = std::fs::read_to_string(&inner)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(-1);
            let c_log = cstr(&log);
            let fd = libc::open(
                c_log.as_ptr(),
                libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC,
            );
            if test_pid > 0 && fd >= 0 {
                libc::dup2(fd, 1);
                libc::dup2(fd, 2);
                libc::close(fd);
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, 0);
                    if null > 2 {
                        libc::close(null);
                    }
                }
                ok = true;
            } else {
                eprintln!(
                    "ns init: can't read {inner} or open {log}: {}",
                    io::Error::last_os_error()
                );
            }
        }
        let st: i32 = if ok { 0 } else { 1 };
        while libc::write(status_fd, (&st as *const i32).cast(), 4) < 0 && errno() == libc::EINTR {}
        libc::close(status_fd);
        if !ok {
            std::process::exit(1);
        }

        let mut got_term = false;
        loop {
            let mut st = 0;
            let r = loop {
                let r = libc::waitpid(-1, &mut st, libc::WNOHANG);
                if r <= 0 {
                    break r;
                }
                report(r, st);
            };
            if r < 0 && errno() == libc::ECHILD {
                break;
            }
            let mut si: libc::siginfo_t = std::mem::zeroed();
            if libc::sigwaitinfo(&set, &mut si) == libc::SIGTERM && !got_term {
                got_term = true;
                if libc::kill(test_pid, libc::SIGTERM) != 0 {
                    test_msg!(
                        "ns init: can't send SIGTERM to the test {test_pid}: {}",
                        io::Error::last_os_error()
                    );
                }
            }
        }
        if !got_term {
            test_msg!("ns init: every process of the test exited before SIGTERM");
        }
        if std::path::Path::new(&log).exists() {
            let _ = std::fs::rename(&log, &opts.outfile);
        }
        let _ = std::fs::remove_file(&inner);
        let _ = std::fs::remove_file(&opts.pidfile);
        std::process::exit(if got_term { 0 } else { 1 });
    }
}

// ---- data helpers ----------------------------------------------------------

/// xorshift64*: deterministic pseudo-random data (same seed, same bytes).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let s = seed ^ 0x9e37_79b9_7f4a_7c15;
        Rng(if s == 0 { 1 } else { s })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A seed that differs between runs.
pub fn random_seed() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_007)
        ^ ts.tv_nsec as u64
        ^ ((std::process::id() as u64) << 32)
}

/// CRC-32 (IEEE), as zdtm_crc32() in the C library.
pub fn crc32(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = (c >> 1) ^ if c & 1 != 0 { 0xedb8_8320 } else { 0 };
            }
            *e = c;
        }
        t
    });
    for &b in data {
        crc = (crc >> 8) ^ t[((crc ^ b as u32) & 0xff) as usize];
    }
    crc
}
