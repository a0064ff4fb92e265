//! Compiles the C zdtm programs.
//!
//! Contract (used by the runner):
//! - every `zdtm/cases/NAME.c` becomes the executable `$OUT_DIR/zdtm/NAME`,
//!   linked with the objects of every `zdtm/lib/*.c` and `-lpthread -lrt`;
//! - `cargo:rustc-env=ZDTM_BIN_DIR=$OUT_DIR/zdtm` is emitted, so any target of
//!   the package can find them with `env!("ZDTM_BIN_DIR")`;
//! - a compile error fails the build and shows the compiler's output.
//!
//! The `cc` crate is used only to find the C compiler and its target flags;
//! nothing is linked into the Rust crate. Objects and programs are rebuilt
//! only when a source, a header or the compiler command line changed.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

const CFLAGS: &[&str] = &["-O2", "-g", "-Wall", "-Werror", "-D_GNU_SOURCE"];
const LIBS: &[&str] = &["-lpthread", "-lrt"];

pub fn compile() {
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let lib_dir = root.join("zdtm/lib");
    let cases_dir = root.join("zdtm/cases");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("zdtm");
    let obj_dir = out.join(".obj");

    println!("cargo:rerun-if-changed={}", lib_dir.display());
    println!("cargo:rerun-if-changed={}", cases_dir.display());
    for var in [
        "CC",
        "CFLAGS",
        "TARGET_CC",
        "TARGET_CFLAGS",
        "CROSS_COMPILE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rustc-env=ZDTM_BIN_DIR={}", out.display());

    fs::create_dir_all(&obj_dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", obj_dir.display()));

    // The compiler with the target's flags, as cc would call it; cc must not
    // print its own cargo:warning/link lines for a build it does not do.
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .cargo_warnings(false)
        .opt_level(2)
        .debug(true)
        .get_compiler();
    // Our warning flags, not cc's (its "-w" would silence -Wall -Werror).
    let base = {
        let cmd = compiler.to_command();
        let mut v: Vec<OsString> = vec![cmd.get_program().to_owned()];
        v.extend(
            cmd.get_args()
                .filter(|a| !matches!(a.to_str(), Some("-w" | "-Wall" | "-Wextra")))
                .map(|a| a.to_owned()),
        );
        v
    };
    // Everything that changes the output: when it differs from the last
    // build, every object and program is rebuilt.
    let signature = format!("{:?} {:?} {:?}\n", base, CFLAGS, LIBS);
    let sig_path = out.join(".cmdline");
    let sig_changed = fs::read_to_string(&sig_path)
        .map(|s| s != signature)
        .unwrap_or(true);

    let lib_sources = list(&lib_dir, "c");
    let headers = list(&lib_dir, "h");
    let newest_header = headers
        .iter()
        .map(|h| mtime(h))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);

    let mut jobs: Vec<Job> = Vec::new();
    let mut objects = Vec::new();
    for src in &lib_sources {
        let obj = obj_dir.join(format!("{}.o", stem(src)));
        if sig_changed || !is_fresh(&obj, &[src], newest_header) {
            let mut args: Vec<OsString> = CFLAGS.iter().map(OsString::from).collect();
            args.extend(["-I".into(), lib_dir.clone().into_os_string()]);
            args.extend([
                "-c".into(),
                src.clone().into_os_string(),
                "-o".into(),
                obj.clone().into_os_string(),
            ]);
            jobs.push(Job {
                what: src.display().to_string(),
                output: obj.clone(),
                args,
            });
        }
        objects.push(obj);
    }
    run_jobs(&base, jobs);

    let newest_obj = objects
        .iter()
        .map(|o| mtime(o))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let newest_dep = newest_obj.max(newest_header);
    let mut jobs = Vec::new();
    let mut wanted = Vec::new();
    for src in list(&cases_dir, "c") {
        let name = stem(&src);
        let exe = out.join(&name);
        wanted.push(name);
        if sig_changed || !is_fresh(&exe, &[&src], newest_dep) {
            let mut args: Vec<OsString> = CFLAGS.iter().map(OsString::from).collect();
            args.extend(["-I".into(), lib_dir.clone().into_os_string()]);
            args.extend([
                "-o".into(),
                exe.clone().into_os_string(),
                src.clone().into_os_string(),
            ]);
            args.extend(objects.iter().map(|o| o.clone().into_os_string()));
            args.extend(LIBS.iter().map(OsString::from));
            jobs.push(Job {
                what: src.display().to_string(),
                output: exe,
                args,
            });
        }
    }
    run_jobs(&base, jobs);

    // Programs of cases that were removed must not linger.
    if let Ok(entries) = fs::read_dir(&out) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !wanted.contains(&name) && e.path().is_file() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    fs::write(&sig_path, signature).unwrap_or_else(|e| panic!("write {}: {e}", sig_path.display()));
}

struct Job {
    what: String,
    output: PathBuf,
    args: Vec<OsString>,
}

/// Runs the compiler jobs, NUM_JOBS at a time; panics with the compiler's
/// output if any fails.
fn run_jobs(base: &[OsString], jobs: Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    let parallel = env::var("NUM_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2usize)
        .clamp(1, jobs.len());
    let next = AtomicUsize::new(0);
    let errors = Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { break };
                let mut cmd = Command::new(&base[0]);
                cmd.args(&base[1..]).args(&job.args);
                match cmd.output() {
                    Ok(o) if o.status.success() => {
                        warn_output(&job.what, &o);
                    }
                    Ok(o) => {
                        let _ = fs::remove_file(&job.output);
                        errors.lock().unwrap().push(format!(
                            "compiling {} failed ({}):\n{:?}\n{}{}",
                            job.what,
                            o.status,
                            cmd,
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        ));
                    }
                    Err(e) => errors
                        .lock()
                        .unwrap()
                        .push(format!("can't run {:?}: {e}", base[0])),
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap();
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("{e}");
        }
        panic!(
            "zdtm: {} C compilation(s) failed (the compiler output is above)",
            errors.len()
        );
    }
}

fn warn_output(what: &str, o: &Output) {
    let text = String::from_utf8_lossy(&o.stderr);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning={what}: {line}");
    }
}

fn list(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The output exists and is newer than its sources and `dep`.
fn is_fresh(output: &Path, sources: &[&PathBuf], dep: SystemTime) -> bool {
    let Ok(out) = fs::metadata(output).and_then(|m| m.modified()) else {
        return false;
    };
    sources.iter().all(|s| mtime(s) <= out) && dep <= out
}
