//! nftables of the calling thread's network namespace: its tables and
//! rules over nfnetlink, read only (the kernel itself, so that a dump
//! learns whether there is a ruleset to keep even where nft(8) is
//! missing); and the ruleset as nft(8) prints and reads it, which a
//! network namespace of the tree's own keeps as text (CRIU's
//! nftables-N.img) and the network lock is written in.

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use nix::errno::Errno;

use super::netlink::{self, NLMSG_HDRLEN};
/// NETLINK_NETFILTER's subsystem of nftables, and its requests.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETRULE: u16 = 7;
/// The first attribute of a table (its name) and of a rule (its table).
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;

/// One table, or the place of one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// nft's name of the family (`inet`, `ip`, `ip6`, ...).
    pub family: &'static str,
    pub table: String,
    /// The rule's chain (for a rule).
    pub chain: Option<String>,
}

/// nft's name for an NFPROTO_* family.
pub fn family_name(f: u8) -> &'static str {
    match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "unknown",
    }
}

/// Runs `nft -f -` on `script` in the calling thread's network namespace
/// (the child inherits it); Err with what nft said.
pub fn apply(script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (the nftables package): {e}"))?;
    let wrote = child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes());
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    wrote.map_err(|e| format!("nft: writing its rules: {e}"))
}

/// `nft list ruleset` of the calling thread's network namespace: the
/// text `nft -f` reads back (CRIU's nftables-N.img); Err with what nft
/// said.
pub fn list_ruleset() -> Result<String, String> {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run nft (the nftables package): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft list ruleset failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("nft list ruleset: not text: {e}"))
}

fn request(msg: u16, seq: u32) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + 4) as u32;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
    b.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: every family (NFPROTO_UNSPEC), NFNETLINK_V0, res_id 0.
    b.extend_from_slice(&[0, 0, 0, 0]);
    b
}

/// The string attribute `want` of an nfnetlink message body (after its
/// nfgenmsg).
fn attr(a: &[u8], want: u16) -> Option<String> {
    let (_, v) = netlink::attrs(a)
        .ok()?
        .into_iter()
        .find(|(t, _)| *t == want)?;
    let v = v.split(|&c| c == 0).next().unwrap_or(v);
    Some(String::from_utf8_lossy(v).into_owned())
}

/// The objects of a dump's replies in `msgs`; true once it is done.
fn parse(msgs: &[u8], rules: bool, out: &mut Vec<Found>) -> nix::Result<bool> {
    netlink::walk(msgs, |body| {
        if body.len() < 4 {
            return;
        }
        let (family, attrs) = (body[0], &body[4..]);
        let name = if rules {
            NFTA_RULE_TABLE
        } else {
            NFTA_TABLE_NAME
        };
        if let Some(table) = attr(attrs, name) {
            out.push(Found {
                family: family_name(family),
                table,
                chain: rules.then(|| attr(attrs, NFTA_RULE_CHAIN)).flatten(),
            });
        }
    })
}

fn dump(nl: &OwnedFd, msg: u16, seq: u32) -> nix::Result<Vec<Found>> {
    netlink::send(nl, &request(msg, seq))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = netlink::recv(nl, &mut buf)?;
        if n == 0 || parse(&buf[..n], msg == NFT_MSG_GETRULE, &mut out)? {
            return Ok(out);
        }
    }
}

/// The rules of the calling thread's network namespace (each as its table
/// and chain), and its tables. A kernel without nfnetlink
/// (EPROTONOSUPPORT) or without its nftables subsystem (EINVAL for a
/// well-formed request) has none.
pub fn ruleset() -> nix::Result<(Vec<Found>, Vec<Found>)> {
    let nl = match netlink::socket(libc::NETLINK_NETFILTER) {
        Err(Errno::EPROTONOSUPPORT) => return Ok((vec![], vec![])),
        r => r?,
    };
    let got = dump(&nl, NFT_MSG_GETRULE, 1)
        .and_then(|rules| Ok((rules, dump(&nl, NFT_MSG_GETTABLE, 2)?)));
    match got {
        Err(Errno::EINVAL) => Ok((vec![], vec![])),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(family: u8, attrs: &[(u16, &str)]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        for (ty, s) in attrs {
            let v = [s.as_bytes(), &[0]].concat();
            body.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&ty.to_ne_bytes());
            body.extend_from_slice(&v);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut b = Vec::new();
        b.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        b.extend_from_slice(&[0; 12]);
        b.extend(body);
        b
    }

    #[test]
    fn rules_and_tables_parsed() {
        let mut m = msg(
            1,
            &[(NFTA_RULE_TABLE, "filter"), (NFTA_RULE_CHAIN, "input")],
        );
        m.extend(msg(10, &[(NFTA_RULE_TABLE, "t6")]));
        let mut done = vec![0u8; 20];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
        m.extend(done);
        let mut out = Vec::new();
        assert_eq!(parse(&m, true, &mut out), Ok(true));
        assert_eq!(
            out[0],
            Found {
                family: "inet",
                table: "filter".into(),
                chain: Some("input".into())
            }
        );
        assert_eq!((out[1].family, out[1].table.as_str()), ("ip6", "t6"));
        let mut tables = Vec::new();
        let t = msg(2, &[(NFTA_TABLE_NAME, "nat")]);
        assert_eq!(parse(&t, false, &mut tables), Ok(false));
        assert_eq!((tables[0].family, tables[0].chain.clone()), ("ip", None));
    }
}
