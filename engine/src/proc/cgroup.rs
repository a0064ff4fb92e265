//! `/proc/PID/cgroup`: `hierarchy-id:controllers:path`, one line per
//! hierarchy. cgroup v1 lines name their controllers (`4:memory:/a`,
//! `9:name=systemd:/`, `2:cpu,cpuacct:/`); the cgroup v2 line is `0::/path`.

use super::{dec, read_parsed, ParseError, Pid, ProcError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLine {
    pub hierarchy_id: u32,
    /// Empty for the v2 line; `name=systemd` style names are kept whole.
    pub controllers: Vec<String>,
    /// Relative to the hierarchy's root as seen from the reader's cgroup
    /// namespace; may contain ':' and spaces, and may end in " (deleted)".
    pub path: String,
}

impl CgroupLine {
    /// The cgroup v2 (unified) line: `0::/path`.
    pub fn is_v2(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty()
    }
    pub fn has_controller(&self, c: &str) -> bool {
        self.controllers.iter().any(|x| x == c)
    }
}

pub fn parse(text: &str) -> Result<Vec<CgroupLine>, ParseError> {
    text.split('\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            let err = |r: String| ParseError::new("cgroup", i + 1, r);
            let mut parts = l.splitn(3, ':');
            let (Some(id), Some(ctl), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(err(format!("expected \"id:controllers:path\", got {l:?}")));
            };
            Ok(CgroupLine {
                hierarchy_id: dec(id, "hierarchy id").map_err(err)?,
                controllers: ctl
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// `/proc/<pid>/cgroup`.
pub fn read(pid: Pid) -> Result<Vec<CgroupLine>, ProcError> {
    read_parsed(pid, "cgroup", parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fixed() {
        let c = parse(
            "9:name=systemd:/\n4:memory:/process_api/1cf1\n2:cpu,cpuacct:/a:b c\n0::/user.slice\n",
        )
        .unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].controllers, ["name=systemd"]);
        assert_eq!(c[1].hierarchy_id, 4);
        assert_eq!(c[1].path, "/process_api/1cf1");
        assert!(c[2].has_controller("cpuacct") && c[2].has_controller("cpu"));
        assert_eq!(c[2].path, "/a:b c");
        assert!(c[3].is_v2() && !c[1].is_v2());
        assert_eq!(c[3].path, "/user.slice");
    }

    #[test]
    fn errors() {
        let e = parse("0::/\nbad\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse("x:memory:/").is_err());
        assert!(parse("1:memory").is_err());
    }

    #[test]
    fn self_cgroup() {
        let c = read(std::process::id() as Pid).unwrap();
        assert!(!c.is_empty());
        assert!(c.iter().all(|l| l.path.starts_with('/')));
        // This machine is a hybrid: v1 controllers plus the v2 line.
        assert!(c.iter().any(|l| l.is_v2()), "{c:?}");
        assert!(c.iter().any(|l| l.has_controller("memory")), "{c:?}");
    }

    proptest! {
        #[test]
        fn roundtrip(id: u32, ctls in proptest::collection::vec("[a-z=_]{1,10}", 0..4), path in "/[ -~]{0,30}") {
            let line = format!("{id}:{}:{path}\n", ctls.join(","));
            let c = parse(&line).unwrap();
            prop_assert_eq!(c.len(), 1);
            prop_assert_eq!(c[0].hierarchy_id, id);
            prop_assert_eq!(&c[0].controllers, &ctls);
            prop_assert_eq!(&c[0].path, &path);
        }
    }
}
