//! `/proc/sys/kernel/random/boot_id`: a random id the kernel picks at
//! boot, which tells whether two clock readings were taken in the same
//! boot (MONOTONIC and BOOTTIME restart from zero at each).

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_boot() {
        let id = boot_id().unwrap();
        assert_eq!(id.len(), 36, "{id:?}");
    }
}
