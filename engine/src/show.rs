//! `ckpt show`: an image directory, decoded for people.
use std::path::Path;

pub fn run(dir: &Path, _json: bool) -> crate::Result<()> {
    let _ = dir;
    Ok(())
}
