//! `/proc/PID/auxv`: the ELF auxiliary vector, native-endian (type, value)
//! u64 pairs ending with AT_NULL.

use super::{read_file_bytes, ParseError, Pid, ProcError};

/// The pairs before AT_NULL (the terminator is not included; append
/// `(libc::AT_NULL, 0)` when a full vector is needed). Bytes after the
/// terminator are ignored. An empty file (kernel threads, zombies) gives an
/// empty vector.
pub fn parse(bytes: &[u8]) -> Result<Vec<(u64, u64)>, ParseError> {
    let mut out = Vec::new();
    if bytes.is_empty() {
        return Ok(out);
    }
    for (i, pair) in bytes.chunks(16).enumerate() {
        if pair.len() != 16 {
            return Err(ParseError::new(
                "auxv",
                0,
                format!(
                    "{} bytes: not a whole number of 16-byte entries, and no AT_NULL before entry {i}",
                    bytes.len()
                ),
            ));
        }
        let t = u64::from_ne_bytes(pair[..8].try_into().expect("8 bytes"));
        let v = u64::from_ne_bytes(pair[8..].try_into().expect("8 bytes"));
        if t == libc::AT_NULL {
            return Ok(out);
        }
        out.push((t, v));
    }
    Err(ParseError::new("auxv", 0, "no AT_NULL entry"))
}

/// `/proc/<pid>/auxv`.
pub fn read(pid: Pid) -> Result<Vec<(u64, u64)>, ProcError> {
    let bytes = read_file_bytes(pid, "auxv")?;
    parse(&bytes).map_err(|e| ProcError::parse(pid, e.with_path(super::proc_path(pid, "auxv"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(pairs: &[(u64, u64)]) -> Vec<u8> {
        pairs
            .iter()
            .flat_map(|(t, v)| t.to_ne_bytes().into_iter().chain(v.to_ne_bytes()))
            .collect()
    }

    #[test]
    fn fixed() {
        let b = encode(&[(libc::AT_PAGESZ, 4096), (libc::AT_UID, 0), (0, 0), (99, 99)]);
        assert_eq!(
            parse(&b).unwrap(),
            [(libc::AT_PAGESZ, 4096), (libc::AT_UID, 0)]
        );
        assert!(parse(&b[..b.len() - 40]).is_err());
        assert!(parse(&encode(&[(6, 4096)])).is_err());
        assert!(parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn self_auxv() {
        let a = read(std::process::id() as Pid).unwrap();
        let get = |t: u64| a.iter().find(|(k, _)| *k == t).map(|(_, v)| *v);
        assert_eq!(get(libc::AT_PAGESZ), Some(4096));
        // SAFETY: getauxval has no preconditions.
        assert_eq!(
            get(libc::AT_ENTRY),
            Some(unsafe { libc::getauxval(libc::AT_ENTRY) })
        );
        assert_eq!(
            get(libc::AT_SYSINFO_EHDR),
            Some(unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) })
        );
    }

    proptest! {
        #[test]
        fn roundtrip(pairs in proptest::collection::vec((1u64.., any::<u64>()), 0..40)) {
            let mut all = pairs.clone();
            all.push((0, 0));
            prop_assert_eq!(parse(&encode(&all)).unwrap(), pairs);
        }
    }
}
