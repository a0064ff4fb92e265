//! `/proc/PID/stat` (and `/proc/PID/task/TID/stat`).
//!
//! `pid (comm) state ppid ...`: comm is the raw task name, which may contain
//! spaces, parentheses and even newlines, so it runs from the first '(' to
//! the LAST ')' of the file. Field numbers below are those of proc(5).

use super::{read_parsed, ParseError, Pid, ProcError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    /// (1)
    pub pid: Pid,
    /// (2) without the parentheses.
    pub comm: String,
    /// (3) R, S, D, T, t, Z, X, I ...
    pub state: char,
    /// (4)
    pub ppid: Pid,
    /// (5)
    pub pgrp: Pid,
    /// (6)
    pub session: Pid,
    /// (7)
    pub tty_nr: i32,
    /// (8)
    pub tpgid: i32,
    /// (9) PF_* flags.
    pub flags: u32,
    /// (10)
    pub minflt: u64,
    /// (11)
    pub cminflt: u64,
    /// (12)
    pub majflt: u64,
    /// (13)
    pub cmajflt: u64,
    /// (14) clock ticks.
    pub utime: u64,
    /// (15)
    pub stime: u64,
    /// (16)
    pub cutime: i64,
    /// (17)
    pub cstime: i64,
    /// (18)
    pub priority: i64,
    /// (19)
    pub nice: i64,
    /// (20)
    pub num_threads: i64,
    /// (21) always 0.
    pub itrealvalue: i64,
    /// (22) clock ticks since boot.
    pub start_time: u64,
    /// (23) bytes.
    pub vsize: u64,
    /// (24) pages.
    pub rss: u64,
    /// (25) bytes.
    pub rsslim: u64,
    /// (26)
    pub start_code: u64,
    /// (27)
    pub end_code: u64,
    /// (28)
    pub start_stack: u64,
    /// (29)
    pub kstkesp: u64,
    /// (30)
    pub kstkeip: u64,
    /// (31) obsolete decimal signal masks; use status.
    pub signal: u64,
    /// (32)
    pub blocked: u64,
    /// (33)
    pub sigignore: u64,
    /// (34)
    pub sigcatch: u64,
    /// (35)
    pub wchan: u64,
    /// (36)
    pub nswap: u64,
    /// (37)
    pub cnswap: u64,
    /// (38)
    pub exit_signal: i32,
    /// (39)
    pub processor: i32,
    /// (40)
    pub rt_priority: u32,
    /// (41)
    pub policy: u32,
    /// (42)
    pub delayacct_blkio_ticks: u64,
    /// (43)
    pub guest_time: u64,
    /// (44)
    pub cguest_time: i64,
    /// (45)
    pub start_data: u64,
    /// (46)
    pub end_data: u64,
    /// (47)
    pub start_brk: u64,
    /// (48)
    pub arg_start: u64,
    /// (49)
    pub arg_end: u64,
    /// (50)
    pub env_start: u64,
    /// (51)
    pub env_end: u64,
    /// (52) as waitpid reports it.
    pub exit_code: i32,
}

/// Number of fields after the comm (state .. exit_code).
const TAIL_FIELDS: usize = 50;

pub fn parse(text: &str) -> Result<Stat, ParseError> {
    let err = |r: String| ParseError::new("stat", 1, r);
    let text = text.strip_suffix('\n').unwrap_or(text);
    let open = text
        .find(" (")
        .ok_or_else(|| err("no \" (\" before the command name".into()))?;
    let close = text
        .rfind(')')
        .filter(|&c| c > open)
        .ok_or_else(|| err("no ')' after the command name".into()))?;
    let pid = text[..open]
        .parse::<Pid>()
        .map_err(|_| err(format!("bad pid {:?}", &text[..open])))?;
    let comm = text[open + 2..close].to_string();
    let tail: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    if tail.len() < TAIL_FIELDS {
        return Err(err(format!(
            "{} fields after the command name, expected {TAIL_FIELDS}",
            tail.len()
        )));
    }
    // tail[0] is field 3 (state).
    fn num<T: std::str::FromStr>(tail: &[&str], field: usize) -> Result<T, String> {
        let s = tail[field - 3];
        s.parse::<T>()
            .map_err(|_| format!("field {field}: bad number {s:?}"))
    }
    let f = |field: usize| -> Result<u64, ParseError> { num::<u64>(&tail, field).map_err(err) };
    let i = |field: usize| -> Result<i64, ParseError> { num::<i64>(&tail, field).map_err(err) };
    let i32f = |field: usize| -> Result<i32, ParseError> { num::<i32>(&tail, field).map_err(err) };
    let u32f = |field: usize| -> Result<u32, ParseError> { num::<u32>(&tail, field).map_err(err) };

    let mut st = tail[0].chars();
    let state = match (st.next(), st.next()) {
        (Some(c), None) => c,
        _ => return Err(err(format!("bad state {:?}", tail[0]))),
    };
    Ok(Stat {
        pid,
        comm,
        state,
        ppid: i32f(4)?,
        pgrp: i32f(5)?,
        session: i32f(6)?,
        tty_nr: i32f(7)?,
        tpgid: i32f(8)?,
        flags: u32f(9)?,
        minflt: f(10)?,
        cminflt: f(11)?,
        majflt: f(12)?,
        cmajflt: f(13)?,
        utime: f(14)?,
        stime: f(15)?,
        cutime: i(16)?,
        cstime: i(17)?,
        priority: i(18)?,
        nice: i(19)?,
        num_threads: i(20)?,
        itrealvalue: i(21)?,
        start_time: f(22)?,
        vsize: f(23)?,
        rss: f(24)?,
        rsslim: f(25)?,
        start_code: f(26)?,
        end_code: f(27)?,
        start_stack: f(28)?,
        kstkesp: f(29)?,
        kstkeip: f(30)?,
        signal: f(31)?,
        blocked: f(32)?,
        sigignore: f(33)?,
        sigcatch: f(34)?,
        wchan: f(35)?,
        nswap: f(36)?,
        cnswap: f(37)?,
        exit_signal: i32f(38)?,
        processor: i32f(39)?,
        rt_priority: u32f(40)?,
        policy: u32f(41)?,
        delayacct_blkio_ticks: f(42)?,
        guest_time: f(43)?,
        cguest_time: i(44)?,
        start_data: f(45)?,
        end_data: f(46)?,
        start_brk: f(47)?,
        arg_start: f(48)?,
        arg_end: f(49)?,
        env_start: f(50)?,
        env_end: f(51)?,
        exit_code: i32f(52)?,
    })
}

/// `/proc/<pid>/stat`.
pub fn read(pid: Pid) -> Result<Stat, ProcError> {
    read_parsed(pid, "stat", parse)
}

/// `/proc/<pid>/task/<tid>/stat`.
pub fn read_task(pid: Pid, tid: Pid) -> Result<Stat, ProcError> {
    read_parsed(pid, &format!("task/{tid}/stat"), parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LINE: &str = "5275 (cat) R 5269 5269 4039 0 -1 4194304 96 0 0 0 0 0 0 0 20 0 1 0 733208 3133440 350 18446744073709551615 94521595260928 94521595280809 140722526475808 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 94521595296816 94521595298432 94522300026880 140722526477016 140722526477036 140722526477036 140722526478315 0\n";

    #[test]
    fn fixed() {
        let s = parse(LINE).unwrap();
        assert_eq!((s.pid, s.comm.as_str(), s.state), (5275, "cat", 'R'));
        assert_eq!(
            (s.ppid, s.pgrp, s.session, s.tty_nr, s.tpgid),
            (5269, 5269, 4039, 0, -1)
        );
        assert_eq!(s.flags, 4194304);
        assert_eq!((s.priority, s.nice, s.num_threads), (20, 0, 1));
        assert_eq!((s.start_time, s.vsize, s.rss), (733208, 3133440, 350));
        assert_eq!(s.rsslim, u64::MAX);
        assert_eq!(s.start_code, 94521595260928);
        assert_eq!(
            (s.exit_signal, s.processor, s.rt_priority, s.policy),
            (17, 1, 0, 0)
        );
        assert_eq!(s.start_data, 94521595296816);
        assert_eq!(s.start_brk, 94522300026880);
        assert_eq!(s.arg_start, 140722526477016);
        assert_eq!(s.env_end, 140722526478315);
        assert_eq!(s.exit_code, 0);
    }

    #[test]
    fn weird_comm() {
        let l = LINE.replacen("(cat)", "(a) R 1 (b\nc) )", 1);
        let s = parse(&l).unwrap();
        assert_eq!(s.comm, "a) R 1 (b\nc) ");
        assert_eq!(s.ppid, 5269);
        let l = LINE.replacen("(cat)", "()", 1);
        assert_eq!(parse(&l).unwrap().comm, "");
    }

    #[test]
    fn errors() {
        assert!(parse("").is_err());
        assert!(parse("12 (x R 1").is_err());
        assert!(parse("x (cat) R 1").is_err());
        let e = parse(&LINE.replace(" 733208 ", " 7x3208 ")).unwrap_err();
        assert!(e.reason.contains("field 22"), "{e}");
        let e = parse("5275 (cat) R 5269 5269").unwrap_err();
        assert!(e.reason.contains("expected 50"), "{e}");
        assert!(parse(&LINE.replacen(" R ", " RR ", 1)).is_err());
    }

    #[test]
    fn self_stat() {
        let me = std::process::id() as Pid;
        let s = read(me).unwrap();
        assert_eq!(s.pid, me);
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(s.pgrp, nix::unistd::getpgrp().as_raw());
        assert!(s.num_threads >= 1);
        assert!(s.start_brk > 0 && s.arg_start < s.arg_end && s.env_start < s.env_end);
        let tid = nix::unistd::gettid().as_raw();
        let t = read_task(me, tid).unwrap();
        assert_eq!(t.pid, tid);
        assert_eq!(t.state, 'R', "the thread reading its own stat is running");
    }

    proptest! {
        #[test]
        fn comm_roundtrip(comm in "[ -~\n]{0,15}", vals in proptest::collection::vec(0u64..i32::MAX as u64, 49)) {
            let mut line = format!("42 ({comm}) S");
            for v in &vals { line.push_str(&format!(" {v}")); }
            line.push('\n');
            let s = parse(&line).unwrap();
            prop_assert_eq!(s.comm, comm);
            prop_assert_eq!(s.pid, 42);
            prop_assert_eq!(s.state, 'S');
            prop_assert_eq!(s.ppid as u64, vals[0]);
            prop_assert_eq!(s.start_time, vals[18]);
            prop_assert_eq!(s.exit_code as u64, vals[48]);
        }
    }
}
