//! `/proc/PID/limits`: the task's resource limits, readable for a task of any
//! uid (prlimit(2) on another uid's task needs CAP_SYS_RESOURCE, which the
//! bounding set of this machine lacks).
//!
//! ```text
//! Limit                     Soft Limit           Hard Limit           Units
//! Max cpu time              unlimited            unlimited            seconds
//! Max nice priority         0                    0
//! ```
//!
//! Values are the raw rlimit numbers (the Units column only says what they
//! count, nothing is scaled); "unlimited" is RLIM_INFINITY.

use super::{read_parsed, ParseError, Pid, ProcError};

/// RLIM_INFINITY.
pub const RLIM_INFINITY: u64 = u64::MAX;

/// Number of resources (RLIM_NLIMITS).
pub const RLIM_NLIMITS: usize = 16;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rlimit {
    pub cur: u64,
    pub max: u64,
}

/// Row titles in RLIMIT_* order (RLIMIT_CPU = 0 ... RLIMIT_RTTIME = 15).
pub const TITLES: [&str; RLIM_NLIMITS] = [
    "Max cpu time",
    "Max file size",
    "Max data size",
    "Max stack size",
    "Max core file size",
    "Max resident set",
    "Max processes",
    "Max open files",
    "Max locked memory",
    "Max address space",
    "Max file locks",
    "Max pending signals",
    "Max msgqueue size",
    "Max nice priority",
    "Max realtime priority",
    "Max realtime timeout",
];

fn value(s: &str) -> Result<u64, String> {
    if s == "unlimited" {
        Ok(RLIM_INFINITY)
    } else {
        s.parse()
            .map_err(|_| format!("bad limit {s:?} (expected a number or \"unlimited\")"))
    }
}

/// Parse the text of `/proc/PID/limits`; index the result with
/// `libc::RLIMIT_*`.
pub fn parse(text: &str) -> Result<[Rlimit; RLIM_NLIMITS], ParseError> {
    let mut out = [Rlimit::default(); RLIM_NLIMITS];
    let mut seen = [false; RLIM_NLIMITS];
    for (i, line) in text.lines().enumerate() {
        let err = |r: String| ParseError::new("limits", i + 1, r);
        if line.trim().is_empty() || line.starts_with("Limit ") {
            continue;
        }
        // Titles are matched whole: "Max realtime priority" vs "... timeout".
        let (res, rest) = TITLES
            .iter()
            .enumerate()
            .find_map(|(r, t)| {
                line.strip_prefix(t)
                    .filter(|rest| rest.starts_with(' '))
                    .map(|rest| (r, rest))
            })
            .ok_or_else(|| err(format!("unknown limit {line:?}")))?;
        let mut cols = rest.split_ascii_whitespace();
        let (Some(cur), Some(max)) = (cols.next(), cols.next()) else {
            return Err(err(format!(
                "{}: expected soft and hard limits",
                TITLES[res]
            )));
        };
        // A third column, if any, is the unit; nothing may follow it.
        cols.next();
        if let Some(extra) = cols.next() {
            return Err(err(format!("{}: unexpected {extra:?}", TITLES[res])));
        }
        if seen[res] {
            return Err(err(format!("{} appears twice", TITLES[res])));
        }
        seen[res] = true;
        out[res] = Rlimit {
            cur: value(cur).map_err(err)?,
            max: value(max).map_err(err)?,
        };
    }
    if let Some(r) = seen.iter().position(|s| !s) {
        return Err(ParseError::new(
            "limits",
            0,
            format!("no {:?} line", TITLES[r]),
        ));
    }
    Ok(out)
}

/// `/proc/<pid>/limits`.
pub fn read(pid: Pid) -> Result<[Rlimit; RLIM_NLIMITS], ProcError> {
    read_parsed(pid, "limits", parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TEXT: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max data size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max core file size        0                    unlimited            bytes     
Max resident set          unlimited            unlimited            bytes     
Max processes             96365                96365                processes 
Max open files            20000                20000                files     
Max locked memory         8388608              8388608              bytes     
Max address space         unlimited            unlimited            bytes     
Max file locks            unlimited            unlimited            locks     
Max pending signals       96365                96365                signals   
Max msgqueue size         819200               819200               bytes     
Max nice priority         0                    0                    
Max realtime priority     0                    0                    
Max realtime timeout      unlimited            unlimited            us        
";

    #[test]
    fn fixed() {
        let l = parse(TEXT).unwrap();
        let inf = RLIM_INFINITY;
        assert_eq!(l[libc::RLIMIT_CPU as usize], Rlimit { cur: inf, max: inf });
        assert_eq!(
            l[libc::RLIMIT_STACK as usize],
            Rlimit {
                cur: 8388608,
                max: inf
            }
        );
        assert_eq!(l[libc::RLIMIT_CORE as usize], Rlimit { cur: 0, max: inf });
        assert_eq!(
            l[libc::RLIMIT_NPROC as usize],
            Rlimit {
                cur: 96365,
                max: 96365
            }
        );
        assert_eq!(
            l[libc::RLIMIT_NOFILE as usize],
            Rlimit {
                cur: 20000,
                max: 20000
            }
        );
        assert_eq!(l[libc::RLIMIT_MSGQUEUE as usize].cur, 819200);
        assert_eq!(l[libc::RLIMIT_NICE as usize], Rlimit { cur: 0, max: 0 });
        assert_eq!(l[libc::RLIMIT_RTPRIO as usize], Rlimit { cur: 0, max: 0 });
        assert_eq!(
            l[libc::RLIMIT_RTTIME as usize],
            Rlimit { cur: inf, max: inf }
        );
    }

    #[test]
    fn errors() {
        let e = parse(&TEXT.replace(
            "Max file locks            unlimited            unlimited            locks     \n",
            "",
        ))
        .unwrap_err();
        assert!(e.reason.contains("Max file locks"), "{e}");
        let e = parse(&TEXT.replace("20000                20000", "20000                lots"))
            .unwrap_err();
        assert_eq!(e.line, 9);
        let e = parse(&TEXT.replace("Max processes ", "Max processez ")).unwrap_err();
        assert!(e.reason.contains("unknown limit"), "{e}");
        assert!(parse(&format!("{TEXT}Max cpu time 1 1 seconds\n")).is_err());
    }

    #[test]
    fn self_limits() {
        let me = std::process::id() as i32;
        let l = read(me).unwrap();
        for (r, lim) in l.iter().enumerate() {
            let (cur, max) = nix::sys::resource::getrlimit(resource(r)).unwrap();
            assert_eq!((lim.cur, lim.max), (cur, max), "{}", TITLES[r]);
        }
    }

    fn resource(r: usize) -> nix::sys::resource::Resource {
        use nix::sys::resource::Resource::*;
        [
            RLIMIT_CPU,
            RLIMIT_FSIZE,
            RLIMIT_DATA,
            RLIMIT_STACK,
            RLIMIT_CORE,
            RLIMIT_RSS,
            RLIMIT_NPROC,
            RLIMIT_NOFILE,
            RLIMIT_MEMLOCK,
            RLIMIT_AS,
            RLIMIT_LOCKS,
            RLIMIT_SIGPENDING,
            RLIMIT_MSGQUEUE,
            RLIMIT_NICE,
            RLIMIT_RTPRIO,
            RLIMIT_RTTIME,
        ][r]
    }

    proptest! {
        #[test]
        fn roundtrip(vals in proptest::collection::vec((any::<u64>(), any::<u64>()), 16)) {
            // The kernel's format: "%-25s%-20s%-20s%-10s\n" (units omitted
            // for nice and rtprio).
            let units = ["seconds", "bytes", "bytes", "bytes", "bytes", "bytes", "processes",
                "files", "bytes", "bytes", "locks", "signals", "bytes", "", "", "us"];
            let show = |v: u64| if v == RLIM_INFINITY { "unlimited".to_string() } else { v.to_string() };
            let mut t = format!("{:<25} {:<20} {:<20} {:<10}\n", "Limit", "Soft Limit", "Hard Limit", "Units");
            for r in 0..16 {
                t += &format!("{:<25} {:<20} {:<20} {:<10}\n", TITLES[r], show(vals[r].0), show(vals[r].1), units[r]);
            }
            let l = parse(&t).unwrap();
            for r in 0..16 {
                prop_assert_eq!((l[r].cur, l[r].max), vals[r]);
            }
        }
    }
}
