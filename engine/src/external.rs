//! CRIU's `--external KIND[KEY]...` declarations: objects of the tree
//! that reach outside it, which a dump keeps only when told to, and a
//! restore connects again to what the user names. ckpt knows two kinds:
//!
//! - `veth[IFNAME]` at dump: the tree's network namespace has the veth
//!   device IFNAME whose other end is in another namespace; its own end
//!   is dumped (dump/netns.rs).
//! - `veth[IFNAME]:OUTNAME` or `veth[IFNAME]:OUTNAME@BRIDGE` at restore:
//!   the pair is made again with its other end named OUTNAME in the
//!   restoring engine's network namespace, up, and, with BRIDGE, a port of
//!   that bridge (restore/netns.rs).
//! - `mnt[MOUNTPOINT]:KEY` at dump: a bind mount from outside a
//!   pivot_root'ed tree's root, at MOUNTPOINT in the tree's root, kept as
//!   KEY (dump/mntns.rs); `mnt[KEY]:PATH` at restore: bound from PATH
//!   (restore/mntns.rs).

use std::fmt;

/// One `--external` declaration, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum External {
    Veth {
        /// The device inside the tree's namespace.
        inner: String,
        /// At restore: the name of the other end, outside.
        outer: Option<String>,
        /// At restore: the bridge the other end joins.
        bridge: Option<String>,
    },
    /// `mnt[ID]:VALUE`: at dump ID is the mount point (in the tree's
    /// root) of a bind from outside a pivot_root'ed root and VALUE its
    /// key; at restore ID is the key and VALUE the path to bind it from
    /// (dump/mntns.rs, restore/mntns.rs).
    Mnt { id: String, value: String },
}

/// A device name the kernel takes: 1 to 15 bytes, no '/', ':' or space.
fn ifname(s: &str, what: &str, whole: &str) -> Result<String, String> {
    if s.is_empty()
        || s.len() >= libc::IFNAMSIZ
        || s.contains(['/', ':', '@'])
        || s.contains(char::is_whitespace)
        || s == "."
        || s == ".."
    {
        return Err(format!(
            "--external {whole}: {what} {s:?} is not a network device name \
             (1 to 15 bytes, no '/', ':', '@' or space)"
        ));
    }
    Ok(s.to_string())
}

impl std::str::FromStr for External {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once('[').ok_or_else(|| {
            format!("--external {s}: not KIND[KEY]... (for a veth: veth[IFNAME]:OUTNAME[@BRIDGE])")
        })?;
        let (key, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("--external {s}: no ']' closing the key"))?;
        match kind {
            "veth" => {
                let inner = ifname(key, "IFNAME", s)?;
                let (outer, bridge) = match tail {
                    "" => (None, None),
                    t => {
                        let t = t.strip_prefix(':').ok_or_else(|| {
                            format!("--external {s}: after veth[{key}] comes :OUTNAME[@BRIDGE]")
                        })?;
                        match t.split_once('@') {
                            Some((o, b)) => (
                                Some(ifname(o, "OUTNAME", s)?),
                                Some(ifname(b, "BRIDGE", s)?),
                            ),
                            None => (Some(ifname(t, "OUTNAME", s)?), None),
                        }
                    }
                };
                Ok(External::Veth {
                    inner,
                    outer,
                    bridge,
                })
            }
            "mnt" => match tail.strip_prefix(':') {
                Some(value) if !key.is_empty() && !value.is_empty() => Ok(External::Mnt {
                    id: key.to_string(),
                    value: value.to_string(),
                }),
                _ => Err(format!(
                    "--external {s}: expected mnt[ID]:VALUE (CRIU's spelling: \
                     mnt[MOUNTPOINT]:KEY at dump, mnt[KEY]:PATH at restore)"
                )),
            },
            _ => Err(format!(
                "--external {s}: external objects of kind {kind:?} are not supported \
                 (ckpt knows veth[IFNAME]:OUTNAME[@BRIDGE] and mnt[ID]:VALUE)"
            )),
        }
    }
}

impl fmt::Display for External {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            External::Veth {
                inner,
                outer,
                bridge,
            } => {
                write!(f, "veth[{inner}]")?;
                if let Some(o) = outer {
                    write!(f, ":{o}")?;
                }
                if let Some(b) = bridge {
                    write!(f, "@{b}")?;
                }
                Ok(())
            }
            External::Mnt { id, value } => write!(f, "mnt[{id}]:{value}"),
        }
    }
}

/// The veth declarations of `ext`: (inner, outer, bridge).
pub fn veths(ext: &[External]) -> impl Iterator<Item = (&str, Option<&str>, Option<&str>)> {
    ext.iter().filter_map(|e| match e {
        External::Veth {
            inner,
            outer,
            bridge,
        } => Some((inner.as_str(), outer.as_deref(), bridge.as_deref())),
        External::Mnt { .. } => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_spellings() {
        let e: External = "veth[eth0]".parse().unwrap();
        assert_eq!(
            e,
            External::Veth {
                inner: "eth0".into(),
                outer: None,
                bridge: None
            }
        );
        let e: External = "veth[eth0]:vhost0@br0".parse().unwrap();
        assert_eq!(e.to_string(), "veth[eth0]:vhost0@br0");
        let e: External = "veth[eth0]:vhost0".parse().unwrap();
        assert_eq!(veths(&[e]).next(), Some(("eth0", Some("vhost0"), None)));
        for bad in [
            "veth",
            "veth[eth0",
            "veth[]",
            "veth[eth0]vhost",
            "veth[eth0]:",
            "veth[eth0]:a@",
            "veth[eth0]:0123456789abcdef",
            "veth[a/b]",
            "mnt[x]",
            "mnt[]:/y",
            "mnt[x]:",
        ] {
            assert!(bad.parse::<External>().is_err(), "{bad}");
        }
        assert_eq!(
            "mnt[x]:/y:z".parse::<External>().unwrap(),
            External::Mnt {
                id: "x".into(),
                value: "/y:z".into()
            }
        );
        assert!("dev[x]:/y"
            .parse::<External>()
            .unwrap_err()
            .contains("not supported"));
    }
}
