//! What the test targets that run zdtm cases through another tool (`cross`
//! with CRIU, `crit` with CRIU's image tool) share: the runner's process
//! setup, the lookup of a case by name, and the judging of a trial
//! against its list of known failures.

use libtest_mimic::{Arguments, Completion, Failed};

use crate::cases::{Case, CASES};

/// Makes this process the subreaper of what the trials start (restored
/// orphans become our children, as in the zdtm runner) and finds the
/// tool with `probe`. Without root, or when only listing, every trial is
/// to say it is skipped: Err holds why.
pub fn setup<T>(args: &Arguments, probe: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root".into());
    }
    if args.list {
        return Err("listing only".into());
    }
    let _ = nix::sys::prctl::set_child_subreaper(true);
    probe()
}

/// The case named `name` in the case table; a name missing there is a
/// mistake in the target's own list.
pub fn case(target: &str, name: &str) -> &'static Case {
    CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{target} case {name} is not in the case table"))
}

/// The verdict of trial `name` given its known failures: a listed trial
/// that fails is ignored with the listed reason and the first line of its
/// failure; one that passes fails, so that the entry is removed, unless
/// `unstable` says its outcome depends on timing.
pub fn judge(
    r: Result<Completion, Failed>,
    known: &[(&str, &str)],
    name: &str,
    unstable: bool,
) -> Result<Completion, Failed> {
    let Some(why) = known.iter().find(|(n, _)| *n == name).map(|(_, why)| *why) else {
        return r;
    };
    match r {
        Err(e) => Ok(Completion::ignored_with(format!(
            "xfail: {why} (failed as expected: {})",
            e.message().unwrap_or("").lines().next().unwrap_or("")
        ))),
        Ok(c) if unstable => Ok(c),
        Ok(_) => Err(
            format!("passes now, though listed as failing ({why}): remove it from KNOWN").into(),
        ),
    }
}
