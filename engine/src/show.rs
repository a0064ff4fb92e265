//! `ckpt show`: an image directory, decoded for people.
//!
//! `ckpt show DIR` prints a header (inventory, root ids, the manifest
//! check), the process tree, one section per task (state, credentials,
//! limits, signal handlers, per-thread registers and signal state, memory
//! map with the pages stored per mapping, open files, cwd/root/umask),
//! every file of the directory with its magic and entry count, and every
//! problem found. Numbers come with names (signals, capabilities, flags,
//! clocks, syscalls, protections) and sizes in binary units. `--json`
//! gives the same as one JSON document.
//!
//! A damaged directory is shown as far as it can be read: files that do
//! not match the manifest are marked, images that cannot be decoded are
//! named with the reason where their section would be, and the command
//! exits non-zero after printing when it found problems.
//!
//! Loading ([`load`]) and rendering ([`render_text`], [`render_json`])
//! are separate; rendering is a pure function of the loaded images.

mod inet;
mod ipc;
mod json;
mod load;
mod model;
pub mod names;
mod ns;
mod text;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::Path;

pub use load::{
    describe_file, Absent, DirFile, FileView, ImageSet, ManifestStatus, PageSet, Part, Task, Thread,
};

/// Reads every image of `dir` that `show` shows. Fails only when the
/// directory cannot be listed; problems with its files are recorded in
/// [`ImageSet::problems`].
pub fn load(dir: &Path) -> crate::Result<ImageSet> {
    load::load(dir)
}

/// The text form.
pub fn render_text(set: &ImageSet) -> String {
    text::render(set)
}

/// The JSON form.
pub fn render_json(set: &ImageSet) -> serde_json::Value {
    json::render(set)
}

/// `ckpt show DIR [--json]`: prints the directory; returns an error (after
/// printing) when the directory has problems, so scripts can tell.
pub fn run(dir: &Path, json: bool) -> crate::Result<()> {
    if !dir.is_dir() {
        return Err(crate::Error::Usage(format!(
            "{}: not an image directory (no such directory)",
            dir.display()
        )));
    }
    let set = load(dir)?;
    let out = if json {
        let mut s = serde_json::to_string_pretty(&render_json(&set))
            .expect("a serde_json::Value always serializes");
        s.push('\n');
        s
    } else {
        render_text(&set)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => {}
        // `ckpt show DIR | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(crate::Error::io("<stdout>", "writing the output", e)),
    }
    if set.problems.is_empty() {
        Ok(())
    } else {
        Err(crate::Error::Image(crate::images::ImageError::invalid(
            dir,
            format!(
                "the image directory has {} problem(s), listed above",
                set.problems.len()
            ),
        )))
    }
}
