//! Seccomp as the kernel keeps it: a thread's mode, and its filters as a
//! chain in which each filter points at the one installed before it.
//! Dump records the chain that way, restore walks it back to install the
//! filters in their original order.

use crate::images::pb;

pub const SECCOMP_MODE_STRICT: i32 = 1;
pub const SECCOMP_MODE_FILTER: i32 = 2;

/// The chain ending at `newest`, oldest first: the order to install it in.
/// `None` if an index is out of range or the chain loops (a damaged image);
/// a valid image only points backwards.
pub fn chain(filters: &[pb::SeccompFilter], newest: u32) -> Option<Vec<&pb::SeccompFilter>> {
    let mut out = Vec::new();
    let mut at = Some(newest);
    while let Some(i) = at {
        let f = filters.get(i as usize)?;
        if let Some(p) = f.prev {
            if p >= i {
                return None;
            }
        }
        out.push(f);
        at = f.prev;
    }
    out.reverse();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(byte: u8, prev: Option<u32>) -> pb::SeccompFilter {
        pb::SeccompFilter {
            filter: vec![byte; 8],
            prev,
            flags: Some(0),
        }
    }

    #[test]
    fn chain_is_oldest_first() {
        let fs = vec![f(1, None), f(2, Some(0)), f(3, Some(1)), f(4, Some(0))];
        let c: Vec<u8> = chain(&fs, 2).unwrap().iter().map(|f| f.filter[0]).collect();
        assert_eq!(c, vec![1, 2, 3]);
        let c: Vec<u8> = chain(&fs, 3).unwrap().iter().map(|f| f.filter[0]).collect();
        assert_eq!(c, vec![1, 4]);
    }

    #[test]
    fn damaged_chains_are_refused() {
        assert!(chain(&[f(1, Some(0))], 0).is_none());
        assert!(chain(&[f(1, None)], 1).is_none());
        assert!(chain(&[f(1, Some(1)), f(2, Some(0))], 1).is_none());
    }
}
