//! The sysctls of a network namespace CRIU keeps in netns-N.img and
//! netdev-N.img: net.ipv4.conf.TARGET.* and net.ipv6.conf.TARGET.*
//! (TARGET `all`, `default` or a device), net.unix.max_dgram_qlen, and
//! (ckpt's own) net.core.somaxconn. The images hold one entry per name of
//! the lists below, in their order (CRIU's devconfs4, devconfs6,
//! unix_conf_entries), an entry without a value for a sysctl this kernel
//! lacks. /proc/sys/net answers for the calling thread's network
//! namespace, so both sides call these from a thread in the tree's.

use crate::images::pb;

/// net.ipv4.conf.TARGET.*, CRIU's order.
pub const IPV4: &[&str] = &[
    "accept_local",
    "accept_redirects",
    "accept_source_route",
    "arp_accept",
    "arp_announce",
    "arp_filter",
    "arp_ignore",
    "arp_notify",
    "bootp_relay",
    "disable_policy",
    "disable_xfrm",
    "force_igmp_version",
    "forwarding",
    "igmpv2_unsolicited_report_interval",
    "igmpv3_unsolicited_report_interval",
    "log_martians",
    "medium_id",
    "promote_secondaries",
    "proxy_arp",
    "proxy_arp_pvlan",
    "route_localnet",
    "rp_filter",
    "secure_redirects",
    "send_redirects",
    "shared_media",
    "src_valid_mark",
    "tag",
    "ignore_routes_with_linkdown",
    "drop_gratuitous_arp",
    "drop_unicast_in_l2_multicast",
];

/// net.ipv6.conf.TARGET.*, CRIU's order.
pub const IPV6: &[&str] = &[
    "accept_dad",
    "accept_ra",
    "accept_ra_defrtr",
    "accept_ra_from_local",
    "accept_ra_min_hop_limit",
    "accept_ra_mtu",
    "accept_ra_pinfo",
    "accept_ra_rt_info_max_plen",
    "accept_ra_rtr_pref",
    "accept_redirects",
    "accept_source_route",
    "autoconf",
    "dad_transmits",
    "disable_ipv6",
    "drop_unicast_in_l2_multicast",
    "drop_unsolicited_na",
    "force_mld_version",
    "force_tllao",
    "forwarding",
    "hop_limit",
    "ignore_routes_with_linkdown",
    "keep_addr_on_down",
    "max_addresses",
    "max_desync_factor",
    "mldv1_unsolicited_report_interval",
    "mldv2_unsolicited_report_interval",
    "mtu",
    "ndisc_notify",
    "optimistic_dad",
    "proxy_ndp",
    "regen_max_retry",
    "router_probe_interval",
    "router_solicitation_delay",
    "router_solicitation_interval",
    "router_solicitations",
    "stable_secret",
    "suppress_frag_ndisc",
    "temp_prefered_lft",
    "temp_valid_lft",
    "use_oif_addrs_only",
    "use_optimistic",
    "use_tempaddr",
];

/// The one string sysctl of the lists (unset: reading it fails with EIO).
const STRING: &str = "stable_secret";

/// A group of sysctls: their directory under /proc/sys/net and names.
#[derive(Clone, Copy, Debug)]
pub struct Group {
    pub dir: &'static str,
    pub names: &'static [&'static str],
}

pub const UNIX: Group = Group {
    dir: "unix",
    names: &["max_dgram_qlen"],
};
pub const CORE: Group = Group {
    dir: "core",
    names: &["somaxconn"],
};

/// net.ipv4.conf.`target`.
pub fn ipv4(target: &str) -> (String, &'static [&'static str]) {
    (format!("ipv4/conf/{target}"), IPV4)
}

/// net.ipv6.conf.`target`.
pub fn ipv6(target: &str) -> (String, &'static [&'static str]) {
    (format!("ipv6/conf/{target}"), IPV6)
}

fn path(dir: &str, name: &str) -> String {
    format!("/proc/sys/net/{dir}/{name}")
}

/// One sysctl's value: None where this kernel lacks it (or, for
/// stable_secret, where it is unset).
fn read_one(dir: &str, name: &str) -> pb::SysctlEntry {
    let text = std::fs::read_to_string(path(dir, name)).ok();
    let text = text.as_deref().map(str::trim_end);
    if name == STRING {
        return pb::SysctlEntry {
            r#type: pb::SysctlType::CtlStr as i32,
            iarg: None,
            sarg: text.map(String::from),
        };
    }
    pb::SysctlEntry {
        r#type: pb::SysctlType::Ctl32 as i32,
        iarg: text.and_then(|t| t.parse().ok()),
        sarg: None,
    }
}

/// The sysctls `names` under net/`dir`, in order.
pub fn read(dir: &str, names: &[&str]) -> Vec<pb::SysctlEntry> {
    names.iter().map(|n| read_one(dir, n)).collect()
}

/// Sets the sysctls under net/`dir` to the image's `values` (entry i for
/// `names[i]`), each only where it differs from what the kernel has now
/// (most are the new namespace's defaults already); accept_redirects
/// last, as forwarding changes it. A value for a sysctl this kernel lacks
/// is skipped with a warning. Err names the sysctl, its value and why.
pub fn write(dir: &str, names: &[&str], values: &[pb::SysctlEntry]) -> Result<(), String> {
    let mut order: Vec<usize> = (0..names.len().min(values.len())).collect();
    order.sort_by_key(|&i| names[i] == "accept_redirects");
    for i in order {
        let (name, want) = (names[i], &values[i]);
        let value = match (&want.iarg, &want.sarg) {
            (Some(v), _) => v.to_string(),
            (None, Some(s)) => s.clone(),
            (None, None) => continue,
        };
        let p = path(dir, name);
        let now = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                warn!("sysctl net.{dir}/{name} = {value}: not on this kernel, skipped");
                continue;
            }
            // stable_secret unset reads EIO: write it.
            Err(_) => String::new(),
        };
        if now.trim_end() == value {
            continue;
        }
        std::fs::write(&p, &value).map_err(|e| {
            format!(
                "sysctl net/{dir}/{name} = {value} (was {:?}): {e}",
                now.trim_end()
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_lengths_and_order() {
        // Positional in the images: a change of order breaks every image.
        assert_eq!(IPV4.len(), 30);
        assert_eq!(IPV6.len(), 42);
        assert_eq!(IPV4[12], "forwarding");
        assert_eq!(IPV6[35], STRING);
    }

    #[test]
    fn missing_sysctl_reads_as_no_value() {
        let e = read("ipv4/conf/no-such-dev", &["forwarding", STRING]);
        assert_eq!(e[0].iarg, None);
        assert_eq!(e[1].sarg, None);
        assert_eq!(e[1].r#type, pb::SysctlType::CtlStr as i32);
        // Nothing to write for values the image does not hold.
        assert_eq!(
            write("ipv4/conf/no-such-dev", &["forwarding"], &e[..1]),
            Ok(())
        );
    }
}
