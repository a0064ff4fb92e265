//! The zdtm conformance runner (`cargo test --test zdtm`).
//!
//! Every row of the case table yields three trials: `NAME` (dump + restore),
//! `NAME/iter3` (three dump/restore cycles) and `NAME/leave-running` (dump
//! with --leave-running, the original is verified), in the host's
//! namespaces (the `h` flavour). A case that may run in the `ns` flavour
//! (new pid, mount, net, ipc and uts namespaces, `ZDTM_NEWNS=1`) also
//! yields `NAME/ns` and `NAME/ns/iter3`: the flavour's name goes between
//! the case name and the variant suffix. libtest-mimic provides
//! the usual test-binary command line: a substring filter, `--exact`,
//! `--list`, `--ignored`, `--test-threads`.
//!
//! Environment:
//! - `ZDTM_ENGINE=/path/to/engine`: drive another engine with the same
//!   command line (for example criu) instead of this package's `ckpt`;
//!   `ZDTM_ENGINE_OPTS` adds options to every engine command.
//! - `ZDTM_WORKDIR`: where work directories go (default /tmp/ckpt-zdtm).
//! - `ZDTM_KEEP=1`: keep the work directory of passing trials too.
//! - `ZDTM_BIN_DIR`: run the C programs from this directory.

mod cases;
mod cgroups;
mod procfs;
mod trial;

use std::sync::Arc;

use libtest_mimic::{Arguments, Completion, Trial};

use cases::{Flavor, Variant, CASES};

fn main() {
    let args = Arguments::from_args();
    let root = nix::unistd::geteuid().is_root();
    if root && !args.list {
        // Orphans of the cases (the dumped root once its launcher exits, the
        // restored root once the engine exits) become children of this
        // process, so the runner can reap them; none stays a zombie.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            eprintln!("zdtm: PR_SET_CHILD_SUBREAPER failed: {e}");
        }
    }
    let cfg = Arc::new(trial::Config::from_env());
    let mut trials = Vec::new();
    for case in CASES {
        for flavor in [Flavor::H, Flavor::Ns, Flavor::Uns] {
            if !case.flavors.contains(&flavor) {
                continue;
            }
            for &variant in flavor.variants() {
                if matches!(variant, Variant::PreDump | Variant::PageServer) && !case.pre_dump {
                    continue;
                }
                if variant == Variant::VdsoProxy && !case.vdso {
                    continue;
                }
                if variant == Variant::Lazy && case.no_lazy.is_some() {
                    continue;
                }
                if variant == Variant::LazyRemote && (!case.pre_dump || case.no_lazy.is_some()) {
                    continue;
                }
                let cfg = Arc::clone(&cfg);
                let name = format!("{}{}{}", case.name, flavor.suffix(), variant.suffix());
                let t = Trial::ignorable_test(name, move || {
                    if !root {
                        return Ok(Completion::ignored_with("needs root"));
                    }
                    trial::run(case, flavor, variant, &cfg)
                });
                trials.push(t.with_ignored_flag(case.noauto));
            }
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
