//! zdtm-threads-rust: a Rust program with std threads survives
//! checkpoint/restore.
//!
//! Named std::thread threads, each with its own `thread_local!` values:
//! - `rs-cv-0..2`: wait on a Mutex + Condvar for a "go" flag;
//! - `rs-consumer`: waits for a start flag while 1000 messages (seeded
//!   contents, boxed payloads) sit unreceived in its mpsc channel; after
//!   restore it receives them in order, then the ones sent after restore;
//! - `rs-recv`: blocked in `recv()` on an empty mpsc channel;
//! - `rs-syncsend`: blocked in `send()` on a rendezvous `sync_channel(0)`;
//! - `rs-park`: in `thread::park()`;
//! - `rs-sleep`: 200 ms `thread::sleep()`s, each measured with `Instant`;
//! - `rs-spin`: computes an integer and floating point sequence, publishing
//!   its progress; the result is recomputed and compared at the end.
//!
//! All spawned threads block SIGTERM (the main thread waits for it).
//!
//! After restore the main thread checks that /proc/self/task lists the same
//! TIDs and each thread's comm is its name, and that rs-spin makes progress;
//! then it wakes every thread (notify_all, messages, recv, unpark, stop
//! flags). Each thread checks its TID (gettid), its thread_local values and
//! its name, the messages it got, and returns a report; every thread must
//! finish within 10 s and be joined.
//!
//! `--sabotage=WHAT` (debug): tls, name, msg, spin.

#[path = "../lib/zdtm.rs"]
mod zdtm;

use std::cell::{Cell, RefCell};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const MESSAGES: u64 = 1000;

thread_local! {
    static ID: Cell<u64> = const { Cell::new(0) };
    static DATA: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

fn tid() -> i32 {
    unsafe { libc::gettid() }
}

/// The thread-local values of thread `n` for `seed`.
fn tls_values(seed: u64, n: u64) -> (u64, Vec<u64>) {
    let mut rng = zdtm::Rng::new(seed ^ n.wrapping_mul(0x9e37_79b9));
    let len = 16 + (n as usize * 7) % 50;
    (rng.next_u64(), (0..len).map(|_| rng.next_u64()).collect())
}

fn tls_set(seed: u64, n: u64) {
    let (id, data) = tls_values(seed, n);
    ID.with(|c| c.set(id));
    DATA.with(|d| *d.borrow_mut() = data);
}

fn tls_check(seed: u64, n: u64) -> Result<(), String> {
    let (id, data) = tls_values(seed, n);
    let got = ID.with(|c| c.get());
    if got != id {
        return Err(format!("thread_local ID {got:#x}, expected {id:#x}"));
    }
    if DATA.with(|d| *d.borrow() != data) {
        return Err("thread_local Vec changed".into());
    }
    Ok(())
}

fn block_sigterm(how: i32) {
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        libc::sigaddset(&mut s, libc::SIGTERM);
        libc::pthread_sigmask(how, &s, std::ptr::null_mut());
    }
}

/// One message of the consumer's channel.
struct Msg {
    seq: u64,
    value: u64,
    payload: Box<[u64; 4]>,
}

fn msg(seed: u64, seq: u64) -> Msg {
    let mut rng = zdtm::Rng::new(seed ^ seq.wrapping_mul(0x5851_f42d_4c95_7f2d));
    let value = rng.next_u64();
    let payload = Box::new([
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
    ]);
    Msg {
        seq,
        value,
        payload,
    }
}

fn spin_step(x: u64, y: f64) -> (u64, f64) {
    let mut x = x ^ (x << 13);
    x ^= x >> 7;
    x ^= x << 17;
    let y = (y * 1.000_000_1 + (x >> 40) as f64 * 1e-9).rem_euclid(1.0e6);
    (x, y)
}

struct Shared {
    seed: u64,
    sabotage: String,
    go: Mutex<bool>,
    cv: Condvar,
    start: Mutex<bool>,
    start_cv: Condvar,
    stop: AtomicBool,
    spin_progress: AtomicU64,
    tids: Mutex<Vec<(String, i32)>>,
}

/// What every thread does first: record its TID and name, set its TLS.
fn enter(sh: &Shared, n: u64) -> i32 {
    let t = tid();
    tls_set(sh.seed, n);
    let name = thread::current().name().unwrap_or("?").to_string();
    sh.tids.lock().unwrap().push((name, t));
    t
}

/// What every thread checks last.
fn leave(sh: &Shared, n: u64, t0: i32) -> Result<(), String> {
    if tid() != t0 {
        return Err(format!("gettid() {}, was {t0}", tid()));
    }
    if sh.sabotage == "tls" && n == 0 {
        ID.with(|c| c.set(c.get() ^ 1));
    }
    tls_check(sh.seed, n)?;
    let mut buf = [0u8; 32];
    let r = unsafe {
        libc::pthread_getname_np(libc::pthread_self(), buf.as_mut_ptr().cast(), buf.len())
    };
    let os =
        String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned();
    let want = thread::current().name().unwrap_or("?").to_string();
    if r != 0 || os != want {
        return Err(format!("OS thread name '{os}', expected '{want}'"));
    }
    Ok(())
}

type Report = Result<String, String>;

fn comm(t: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/task/{t}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

fn tasks() -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

fn main() {
    let opts = zdtm::init_with(&[zdtm::Opt::new(
        "sabotage",
        zdtm::Kind::String,
        "debug: damage the state after SIGTERM (tls, name, msg, spin)",
        false,
    )]);
    let seed = zdtm::random_seed();
    let sh = Arc::new(Shared {
        seed,
        sabotage: opts.get("sabotage").unwrap_or("").to_string(),
        go: Mutex::new(false),
        cv: Condvar::new(),
        start: Mutex::new(false),
        start_cv: Condvar::new(),
        stop: AtomicBool::new(false),
        spin_progress: AtomicU64::new(0),
        tids: Mutex::new(Vec::new()),
    });
    zdtm::test_msg!("seed {seed:#x}");

    block_sigterm(libc::SIG_BLOCK);
    let mut handles: Vec<(String, thread::JoinHandle<Report>)> = Vec::new();
    let spawn = |name: &str, f: Box<dyn FnOnce() -> Report + Send>| {
        let h = thread::Builder::new()
            .name(name.to_string())
            .spawn(f)
            .unwrap_or_else(|e| {
                zdtm::test_msg!("ERR: spawn {name}: {e}");
                std::process::exit(1)
            });
        (name.to_string(), h)
    };

    // Condvar waiters.
    for i in 0..3u64 {
        let sh = Arc::clone(&sh);
        handles.push(spawn(
            &format!("rs-cv-{i}"),
            Box::new(move || {
                let t0 = enter(&sh, i);
                let mut go = sh.go.lock().unwrap();
                let mut wakeups = 0;
                while !*go {
                    go = sh.cv.wait(go).unwrap();
                    wakeups += 1;
                }
                drop(go);
                leave(&sh, i, t0)?;
                Ok(format!("{wakeups} wakeups"))
            }),
        ));
    }

    // The consumer, with a full channel.
    let (tx, rx) = mpsc::channel::<Option<Msg>>();
    {
        let sh = Arc::clone(&sh);
        handles.push(spawn(
            "rs-consumer",
            Box::new(move || {
                let t0 = enter(&sh, 10);
                let mut start = sh.start.lock().unwrap();
                while !*start {
                    start = sh.start_cv.wait(start).unwrap();
                }
                drop(start);
                let mut next = 0u64;
                loop {
                    match rx.recv_timeout(Duration::from_secs(10)) {
                        Ok(Some(m)) => {
                            let want = msg(sh.seed, next);
                            if m.seq != next || m.value != want.value || m.payload != want.payload {
                                return Err(format!(
                                    "message #{next}: got seq {} value {:#x}, expected {:#x}",
                                    m.seq, m.value, want.value
                                ));
                            }
                            next += 1;
                        }
                        Ok(None) => break,
                        Err(e) => return Err(format!("recv after {next} messages: {e}")),
                    }
                }
                if next != MESSAGES + 10 {
                    return Err(format!("{next} messages, expected {}", MESSAGES + 10));
                }
                leave(&sh, 10, t0)?;
                Ok(format!("{next} messages"))
            }),
        ));
    }
    for seq in 0..MESSAGES {
        tx.send(Some(msg(seed, seq))).unwrap();
    }

    // Blocked in recv() on an empty channel; answers on another.
    let (req_tx, req_rx) = mpsc::channel::<u64>();
    let (ans_tx, ans_rx) = mpsc::channel::<u64>();
    {
        let sh = Arc::clone(&sh);
        handles.push(spawn(
            "rs-recv",
            Box::new(move || {
                let t0 = enter(&sh, 11);
                let v = req_rx.recv().map_err(|e| format!("recv: {e}"))?;
                ans_tx.send(v.rotate_left(7) ^ sh.seed).unwrap();
                leave(&sh, 11, t0)?;
                Ok(format!("got {v:#x}"))
            }),
        ));
    }

    // Blocked in send() on a rendezvous channel.
    let (sync_tx, sync_rx) = mpsc::sync_channel::<u64>(0);
    {
        let sh = Arc::clone(&sh);
        handles.push(spawn(
            "rs-syncsend",
            Box::new(move || {
                let t0 = enter(&sh, 12);
                sync_tx
                    .send(sh.seed ^ 0x5e4d)
                    .map_err(|e| format!("send: {e}"))?;
                leave(&sh, 12, t0)?;
                Ok("sent".into())
            }),
        ));
    }

    // Parked.
    let parked = {
        let sh = Arc::clone(&sh);
        spawn(
            "rs-park",
            Box::new(move || {
                let t0 = enter(&sh, 13);
                let mut parks = 0;
                while !sh.stop.load(Ordering::SeqCst) {
                    thread::park();
                    parks += 1;
                }
                leave(&sh, 13, t0)?;
                Ok(format!("{parks} returns from park()"))
            }),
        )
    };
    let park_thread = parked.1.thread().clone();
    handles.push(parked);

    // Sleeping.
    {
        let sh = Arc::clone(&sh);
        handles.push(spawn(
            "rs-sleep",
            Box::new(move || {
                let t0 = enter(&sh, 14);
                let mut n = 0;
                while !sh.stop.load(Ordering::SeqCst) {
                    let start = Instant::now();
                    thread::sleep(Duration::from_millis(200));
                    let took = start.elapsed();
                    if took < Duration::from_millis(200) {
                        return Err(format!("sleep #{n} took only {took:?}"));
                    }
                    n += 1;
                }
                leave(&sh, 14, t0)?;
                Ok(format!("{n} sleeps"))
            }),
        ));
    }

    // Spinning.
    let spin_result = Arc::new(Mutex::new((0u64, 0u64, 0f64)));
    {
        let sh = Arc::clone(&sh);
        let res = Arc::clone(&spin_result);
        handles.push(spawn(
            "rs-spin",
            Box::new(move || {
                let t0 = enter(&sh, 15);
                let (mut x, mut y, mut n) = (sh.seed | 1, 0.5f64, 0u64);
                while !sh.stop.load(Ordering::Relaxed) {
                    for _ in 0..1024 {
                        (x, y) = spin_step(x, y);
                    }
                    n += 1024;
                    sh.spin_progress.store(n, Ordering::Relaxed);
                }
                *res.lock().unwrap() = (n, x, y);
                leave(&sh, 15, t0)?;
                Ok(format!("{n} steps"))
            }),
        ));
    }
    block_sigterm(libc::SIG_UNBLOCK);

    // Everyone is in place.
    let t_end = Instant::now() + Duration::from_secs(10);
    while sh.tids.lock().unwrap().len() < handles.len() && Instant::now() < t_end {
        thread::sleep(Duration::from_millis(5));
    }
    let known: Vec<(String, i32)> = sh.tids.lock().unwrap().clone();
    if known.len() != handles.len() {
        zdtm::test_msg!(
            "ERR: only {} of {} threads started",
            known.len(),
            handles.len()
        );
        std::process::exit(1);
    }
    let mut want_tasks: Vec<i32> = known.iter().map(|(_, t)| *t).collect();
    want_tasks.push(tid());
    want_tasks.sort_unstable();
    thread::sleep(Duration::from_millis(50));
    zdtm::test_msg!("{} threads: {:?}", known.len(), known);

    zdtm::daemon();
    zdtm::wait_sig();

    let mut failures: Vec<String> = Vec::new();
    match sh.sabotage.as_str() {
        "" | "tls" => {}
        "name" => {
            let h = &handles[0].1;
            unsafe { libc::pthread_setname_np(h.as_pthread_t(), c"rs-other".as_ptr()) };
        }
        "msg" => {
            tx.send(Some(msg(seed ^ 1, MESSAGES))).unwrap();
        }
        "spin" => {} // below, once rs-spin has finished
        other => failures.push(format!("unknown --sabotage={other}")),
    }
    if !sh.sabotage.is_empty() {
        zdtm::test_msg!("sabotage: {}", sh.sabotage);
    }

    // From outside.
    let now = tasks();
    if now != want_tasks {
        failures.push(format!("threads are {now:?}, expected {want_tasks:?}"));
    }
    for (name, t) in &known {
        match comm(*t) {
            Some(c) if c == *name => {}
            Some(c) => failures.push(format!("thread {t} is named '{c}', expected '{name}'")),
            None => failures.push(format!("thread {name} ({t}) does not exist")),
        }
    }
    let p0 = sh.spin_progress.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(100));
    let p1 = sh.spin_progress.load(Ordering::Relaxed);
    if p1 <= p0 {
        failures.push(format!("rs-spin makes no progress ({p0} -> {p1})"));
    }

    // Wake everyone.
    *sh.go.lock().unwrap() = true;
    sh.cv.notify_all();
    for seq in MESSAGES..MESSAGES + 10 {
        tx.send(Some(msg(seed, seq))).unwrap();
    }
    tx.send(None).unwrap();
    *sh.start.lock().unwrap() = true;
    sh.start_cv.notify_all();
    req_tx.send(0x1234_5678).unwrap();
    match ans_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(v) if v == 0x1234_5678u64.rotate_left(7) ^ seed => {}
        Ok(v) => failures.push(format!("rs-recv answered {v:#x}")),
        Err(e) => failures.push(format!("rs-recv did not answer: {e}")),
    }
    match sync_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(v) if v == seed ^ 0x5e4d => {}
        Ok(v) => failures.push(format!("rs-syncsend sent {v:#x}")),
        Err(e) => failures.push(format!("rs-syncsend did not send: {e}")),
    }
    sh.stop.store(true, Ordering::SeqCst);
    park_thread.unpark();

    let t_end = Instant::now() + Duration::from_secs(10);
    for (name, h) in handles {
        while !h.is_finished() && Instant::now() < t_end {
            thread::sleep(Duration::from_millis(5));
        }
        if !h.is_finished() {
            failures.push(format!("{name} did not finish within 10 s"));
            continue;
        }
        match h.join() {
            Ok(Ok(s)) => zdtm::test_msg!("{name}: {s}"),
            Ok(Err(e)) => failures.push(format!("{name}: {e}")),
            Err(_) => failures.push(format!("{name} panicked")),
        }
    }

    // The spinner's result, recomputed.
    let (n, mut x, y) = *spin_result.lock().unwrap();
    if sh.sabotage == "spin" {
        x ^= 1;
    }
    let (mut ex, mut ey) = (seed | 1, 0.5f64);
    for _ in 0..n {
        (ex, ey) = spin_step(ex, ey);
    }
    if n == 0 || x != ex || y.to_bits() != ey.to_bits() {
        failures.push(format!(
            "rs-spin: after {n} steps {x:#x} {y}, expected {ex:#x} {ey}"
        ));
    }

    if failures.is_empty() {
        zdtm::pass();
    } else {
        for f in &failures {
            zdtm::test_msg!("FAILED: {f}");
        }
        zdtm::set_errno(0);
        zdtm::fail!("threads changed (see above)");
        std::process::exit(1);
    }
}
