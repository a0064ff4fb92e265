//! The network lock of `--tcp-established`: while a tree's connections are
//! dumped, and from a dump that kills the tree until the restore has made
//! them again, every packet of those connections is dropped, so that a
//! peer's segment finds no closed socket to be answered with a reset, and
//! the queues read in repair mode do not change. The rules live in an
//! nftables table of their own, `inet ckpt-PID` (PID the dumped root),
//! which the restore of the same tree removes; it is made with nft(8).
//! (PID is the root's pid as the images hold it: in the tree's own pid
//! namespace, if it has one.)

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};

use crate::sys::nftables::apply as nft;

/// The firewall mark of the packets the restore makes up for a locked
/// connection (a received FIN, the ACK of a sent one): the lock lets them
/// through. CRIU's value, so that either tool's lock passes the other's.
pub const MARK: u32 = 0xC114;

/// The name of the table that locks the connections of the tree rooted at
/// `root`.
pub fn table_name(root: i32) -> String {
    format!("ckpt-{root}")
}

/// An address as the packets carry it: a v4-mapped INET6 address is the
/// IPv4 one it stands for.
fn plain(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        ip => ip,
    }
}

/// The nft match of the packets from `from` to `to`.
fn flow(from: SocketAddr, to: SocketAddr) -> String {
    let (f, t) = (plain(from.ip()), plain(to.ip()));
    let l3 = if f.is_ipv4() { "ip" } else { "ip6" };
    format!(
        "{l3} saddr {f} tcp sport {} {l3} daddr {t} tcp dport {}",
        from.port(),
        to.port()
    )
}

/// The rules that drop both directions of a connection.
fn rules(table: &str, local: SocketAddr, peer: SocketAddr) -> String {
    let mut s = String::new();
    for chain in ["input", "output"] {
        for (a, b) in [(local, peer), (peer, local)] {
            s.push_str(&format!(
                "add rule inet {table} {chain} {} drop\n",
                flow(a, b)
            ));
        }
    }
    s
}

/// The lock a dump takes, connection by connection. Dropped, it lifts the
/// lock, unless `keep` handed it to the restore.
pub struct NetLock {
    table: String,
    made: bool,
}

impl NetLock {
    pub fn new(root: i32) -> NetLock {
        NetLock {
            table: table_name(root),
            made: false,
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Drops every packet between `local` and `peer` from now on.
    pub fn block(&mut self, local: SocketAddr, peer: SocketAddr) -> Result<(), String> {
        let mut script = String::new();
        if !self.made {
            // A table left by an earlier dump of the same pid that was
            // never restored would hold stale rules: start afresh.
            let t = &self.table;
            script.push_str(&format!(
                "add table inet {t}\ndelete table inet {t}\nadd table inet {t}\n\
                 add chain inet {t} input {{ type filter hook input priority -150 ; policy accept ; }}\n\
                 add chain inet {t} output {{ type filter hook output priority -150 ; policy accept ; }}\n\
                 add rule inet {t} input meta mark {MARK:#x} accept\n\
                 add rule inet {t} output meta mark {MARK:#x} accept\n"
            ));
        }
        script.push_str(&rules(&self.table, local, peer));
        nft(&script).map_err(|e| format!("network lock (table inet {}): {e}", self.table))?;
        self.made = true;
        Ok(())
    }

    /// Whether any connection is locked.
    pub fn is_taken(&self) -> bool {
        self.made
    }

    /// Lifts the lock now.
    pub fn release(&mut self) -> Result<(), String> {
        if !self.made {
            return Ok(());
        }
        self.made = false;
        unlock(&self.table)
    }

    /// Leaves the lock for the restore to lift.
    pub fn keep(mut self) {
        self.made = false;
    }
}

impl Drop for NetLock {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            crate::warn!("{e}");
        }
    }
}

/// Removes the table `table` if it is there.
pub fn unlock(table: &str) -> Result<(), String> {
    // Adding first makes the delete succeed whether or not it was there.
    nft(&format!(
        "add table inet {table}\ndelete table inet {table}\n"
    ))
    .map_err(|e| format!("lifting the network lock (table inet {table}): {e}"))
}

/// Whether the table `table` is there.
pub fn is_locked(table: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", table])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_drop_both_ways_in_both_hooks() {
        let l: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let p: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let r = rules("ckpt-1", l, p);
        assert_eq!(r.lines().count(), 4);
        assert!(r.contains(
            "add rule inet ckpt-1 input ip saddr 127.0.0.1 tcp sport 6000 ip daddr 127.0.0.1 tcp dport 5000 drop"
        ));
        let l6: SocketAddr = "[::1]:1".parse().unwrap();
        let p6: SocketAddr = "[::1]:2".parse().unwrap();
        assert!(
            rules("t", l6, p6).contains("ip6 saddr ::1 tcp sport 1 ip6 daddr ::1 tcp dport 2 drop")
        );
    }
}
