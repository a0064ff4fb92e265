//! The image loader under mutated real images, part of
//! `cargo test --test safety` (`restore/fuzz-loader`): a real program's
//! image directory is damaged thousands of ways (bit flips, truncations,
//! inserted and overwritten bytes, files removed, emptied or swapped),
//! mostly with the manifest resealed so the damage reaches the parsers
//! rather than the checksum. Each copy goes through the one loader as
//! `ckpt show` (read and render, text and JSON) and `ckpt restore`
//! (`restore::load::load`) use it, in this process: none may panic. A
//! sample also goes through the real `ckpt restore`, which must fail
//! cleanly (no crash, no hang) or restore a program that passes, and
//! leave nothing behind. Bounded in time; the seed is in the trace.

use super::*;

/// Time for the in-process part.
const BUDGET: Duration = Duration::from_secs(20);
/// Copies that also go through the real engine.
const ENGINE_SAMPLE: u32 = 25;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// One damage to `dir`; returns what was done.
fn mutate(dir: &Path, rng: &mut Rng) -> Result<String, String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != MANIFEST_NAME)
        .collect();
    names.sort();
    let name = names[rng.below(names.len() as u64) as usize].clone();
    let p = dir.join(&name);
    let mut data = fs::read(&p).map_err(|e| format!("{name}: {e}"))?;
    let len = data.len() as u64;
    // Most damage lands in the framing and the messages at the start.
    let at = |rng: &mut Rng| {
        if len == 0 {
            0
        } else if rng.below(4) == 0 {
            rng.below(len) as usize
        } else {
            rng.below(len.min(256)) as usize
        }
    };
    let what = match rng.below(9) {
        0..=3 => {
            let n = 1 + rng.below(4);
            for _ in 0..n {
                if !data.is_empty() {
                    let i = at(rng);
                    data[i] ^= 1 << rng.below(8);
                }
            }
            format!("{name}: {n} bit flips")
        }
        4 => {
            let cut = rng.below(len + 1) as usize;
            data.truncate(cut);
            format!("{name}: truncated to {cut} of {len} bytes")
        }
        5 => {
            let i = at(rng).min(data.len());
            let n = 1 + rng.below(8) as usize;
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(i..i, bytes);
            format!("{name}: {n} bytes inserted at {i}")
        }
        6 => {
            if data.len() >= 8 {
                let i = at(rng).min(data.len() - 4);
                let v = [0xff, 0xff, 0xff, 0x7f];
                data[i..i + 4].copy_from_slice(&v);
            }
            format!("{name}: a large varint or length written")
        }
        7 => {
            fs::remove_file(&p).map_err(|e| e.to_string())?;
            return Ok(format!("{name}: removed"));
        }
        _ => {
            let other = names[rng.below(names.len() as u64) as usize].clone();
            let od = fs::read(dir.join(&other)).map_err(|e| e.to_string())?;
            fs::write(dir.join(&other), &data).map_err(|e| e.to_string())?;
            data = od;
            format!("{name} and {other} swapped")
        }
    };
    fs::write(&p, &data).map_err(|e| format!("{name}: {e}"))?;
    Ok(what)
}

/// Writes a manifest that matches whatever is in `dir` now.
fn reseal_all(dir: &Path) -> Result<(), String> {
    let _ = fs::remove_file(dir.join(MANIFEST_NAME));
    let mut m = Manifest::new();
    for e in fs::read_dir(dir).map_err(|e| e.to_string())? {
        let name = e
            .map_err(|e| e.to_string())?
            .file_name()
            .to_string_lossy()
            .into_owned();
        let d = images::hash_file(&dir.join(&name)).map_err(|e| e.to_string())?;
        m.add_digest(&name, d);
    }
    m.write(dir).map_err(|e| e.to_string())
}

/// The loader as show and restore use it; Err with the panic's message.
fn load_everything(dir: &Path) -> Result<(), String> {
    let dir = dir.to_path_buf();
    std::panic::catch_unwind(move || {
        if let Ok(set) = ckpt::show::load(&dir) {
            let _ = ckpt::show::render_text(&set);
            let _ = ckpt::show::render_json(&set);
        }
        let _ = ckpt::restore::load::load(&dir);
    })
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into())
    })
}

pub fn fuzz_loader(run: &mut Run) -> Result<Outcome, String> {
    run.start()?;
    let pid = run.pid.expect("started");
    let tree = run.snapshot(pid);
    let stopped = trial::stopped_threads(&tree);
    let ids = image_pids(&tree);
    dump_1(run)?;
    let img = run.path("img-1");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64)
        | 1;
    let mut rng = Rng(seed);
    run.note(format!("mutations from seed {seed}"));

    let work = run.path("fuzz");
    let t0 = std::time::Instant::now();
    let mut n = 0u32;
    let mut engine_runs = 0u32;
    while t0.elapsed() < BUDGET || engine_runs < ENGINE_SAMPLE {
        let _ = fs::remove_dir_all(&work);
        copy_dir(&img, &work)?;
        let steps = 1 + rng.below(3);
        let mut done = Vec::new();
        for _ in 0..steps {
            done.push(mutate(&work, &mut rng)?);
        }
        if rng.below(8) != 0 {
            reseal_all(&work)?;
            done.push("manifest resealed".into());
        }
        let what = done.join("; ");
        load_everything(&work).map_err(|p| format!("the loader panicked ({p}) on: {what}"))?;
        n += 1;
        if engine_runs < ENGINE_SAMPLE && (n % 8 == 0 || t0.elapsed() >= BUDGET) {
            let name = format!("restore-fuzz-{engine_runs}");
            let args = restore_args(run, &work, &name);
            let st = run.engine(&name, &work, args)?;
            if st.signal().is_some() {
                return Err(format!(
                    "{name} crashed ({st}) on: {what}: {}",
                    console(run, &name).trim()
                ));
            }
            if st.success() {
                // The damage did not matter to the restore (say, a byte of
                // a page that is then checked by the program): it must
                // then be a working program; stop it and go on.
                run.note(format!("{name}: restored despite: {what}"));
                for &p in tree.keys() {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
            expect_nothing_left(run, pid, &ids, &format!("{name} on: {what}"))?;
            let _ = fs::remove_file(run.path(&format!("{name}.pid")));
            engine_runs += 1;
        }
    }
    let _ = fs::remove_dir_all(&work);
    run.note(format!(
        "{n} damaged copies loaded without a panic; {engine_runs} restored by the engine"
    ));
    restore_and_verify(
        run,
        "restore of the intact image",
        Some((&tree, &stopped, "after the damaged restores")),
    )
}
