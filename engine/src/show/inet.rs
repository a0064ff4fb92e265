//! How `show` prints an INET socket's file entry.

use super::names;
use super::FileView;
use crate::images::inet::{addrs, proto_name, state_name};
use crate::images::pb;
use crate::images::set::{Part, TcpStream};
use crate::sys::tcp_repair as tr;

pub fn describe(i: &pb::InetSkEntry, v: &mut FileView) {
    v.path = format!("socket:[{}]", i.ino);
    v.flags = Some(i.flags);
    v.extra.push(("inet socket".into(), proto_name(i)));
    v.extra.push(("state".into(), state_name(i.state)));
    match addrs(i) {
        Some((local, peer)) => {
            v.extra.push(("local".into(), local.to_string()));
            if let Some(p) = peer {
                v.extra.push(("peer".into(), p.to_string()));
            }
        }
        None => v.extra.push(("addresses".into(), "(not valid)".into())),
    }
    if i.state == crate::images::inet::TCP_LISTEN {
        v.extra.push(("backlog".into(), i.backlog.to_string()));
    }
    let o = &i.opts;
    let mut on: Vec<&str> = Vec::new();
    let flags = [
        (o.reuseaddr, "SO_REUSEADDR"),
        (o.so_reuseport, "SO_REUSEPORT"),
        (o.so_broadcast, "SO_BROADCAST"),
        (o.so_keepalive, "SO_KEEPALIVE"),
        (i.v6only, "IPV6_V6ONLY"),
        (i.ip_opts.as_ref().and_then(|p| p.freebind), "IP_FREEBIND"),
        (i.tcp_opts.as_ref().and_then(|t| t.nodelay), "TCP_NODELAY"),
        (i.tcp_opts.as_ref().and_then(|t| t.cork), "TCP_CORK"),
    ];
    for (f, name) in flags {
        if f == Some(true) {
            on.push(name);
        }
    }
    if !on.is_empty() {
        v.extra.push(("options".into(), on.join(" ")));
    }
    if o.so_keepalive == Some(true) {
        if let Some(t) = &i.tcp_opts {
            v.extra.push((
                "keepalive".into(),
                format!(
                    "idle {}s, interval {}s, {} probes",
                    t.keepidle.unwrap_or(0),
                    t.keepintvl.unwrap_or(0),
                    t.keepcnt.unwrap_or(0)
                ),
            ));
        }
    }
    if let Some(tos) = i.ip_opts.as_ref().and_then(|p| p.tos).filter(|&t| t != 0) {
        v.extra.push(("tos".into(), format!("{tos:#04x}")));
    }
    let lock = o.so_buf_lock.unwrap_or(3);
    let buf = |size: u32, bit: u32| {
        let how = if lock & bit != 0 { "" } else { " (tuned)" };
        format!("{}{how}", names::human(size as u64))
    };
    v.extra.push((
        "buffers".into(),
        format!(
            "send {}, receive {}",
            buf(o.so_sndbuf, 1),
            buf(o.so_rcvbuf, 2)
        ),
    ));
}

/// A TCP connection's stream (tcp-stream-INO.img): its sequence numbers,
/// queued bytes, negotiated options and window.
pub fn describe_stream(t: &Part<TcpStream>, v: &mut FileView) {
    let t = match t {
        Ok(t) => t,
        Err(e) => {
            v.extra.push(("tcp stream".into(), format!("({e})")));
            return;
        }
    };
    let e = &t.entry;
    let unsent = e.unsq_len.unwrap_or(0) as u64;
    v.extra.push((
        "receive queue".into(),
        format!(
            "{}, next sequence number {}",
            names::count(e.inq_len as u64, "byte"),
            e.inq_seq
        ),
    ));
    v.extra.push((
        "send queue".into(),
        format!(
            "{} ({} never sent), next sequence number {}",
            names::count(e.outq_len as u64, "byte"),
            unsent,
            e.outq_seq
        ),
    ));
    let mut opts = vec![format!("mss {}", e.mss_clamp)];
    if e.opt_mask & tr::TCPI_OPT_WSCALE != 0 {
        opts.push(format!(
            "window scale {} (send) {} (receive)",
            e.snd_wscale,
            e.rcv_wscale.unwrap_or(0)
        ));
    }
    if e.opt_mask & tr::TCPI_OPT_SACK != 0 {
        opts.push("sack".into());
    }
    if e.opt_mask & tr::TCPI_OPT_TIMESTAMPS != 0 {
        opts.push(format!("timestamps (now {})", e.timestamp.unwrap_or(0)));
    }
    v.extra.push(("tcp options".into(), opts.join(", ")));
    if let (Some(snd), Some(rcv)) = (e.snd_wnd, e.rcv_wnd) {
        v.extra.push((
            "window".into(),
            format!(
                "send {snd}, receive {rcv}, largest {}",
                e.max_window.unwrap_or(0)
            ),
        ));
    }
}

/// A netlink socket's file entry.
pub fn describe_netlink(n: &pb::NetlinkSkEntry, v: &mut FileView) {
    v.path = format!("socket:[{}]", n.ino);
    v.flags = Some(n.flags);
    let proto = match n.protocol as i32 {
        libc::NETLINK_ROUTE => "ROUTE".to_string(),
        libc::NETLINK_AUDIT => "AUDIT".to_string(),
        libc::NETLINK_KOBJECT_UEVENT => "KOBJECT_UEVENT".to_string(),
        libc::NETLINK_GENERIC => "GENERIC".to_string(),
        libc::NETLINK_SOCK_DIAG => "SOCK_DIAG".to_string(),
        p => format!("protocol {p}"),
    };
    v.extra.push(("netlink socket".into(), proto));
    v.extra.push(("port id".into(), n.portid.to_string()));
    let groups: Vec<String> = n
        .groups
        .iter()
        .enumerate()
        .flat_map(|(w, bits)| {
            (0..32)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| (w * 32 + b + 1).to_string())
        })
        .collect();
    if !groups.is_empty() {
        v.extra.push(("groups".into(), groups.join(" ")));
    }
    if n.state != 0 {
        v.extra.push((
            "peer".into(),
            format!("port id {}, group {}", n.dst_portid, n.dst_group),
        ));
    }
}

/// A packet socket's file entry.
pub fn describe_packet(p: &pb::PacketSockEntry, v: &mut FileView) {
    v.path = match p.ino {
        Some(ino) => format!("socket:[{ino}]"),
        None => "packet socket".into(),
    };
    v.flags = Some(p.flags);
    let ty = match p.r#type as i32 {
        libc::SOCK_RAW => "raw".to_string(),
        libc::SOCK_DGRAM => "datagram".to_string(),
        t => format!("type {t}"),
    };
    let proto = match p.protocol {
        0 => "none".to_string(),
        3 => "ETH_P_ALL".to_string(),
        0x0800 => "ETH_P_IP".to_string(),
        0x0806 => "ETH_P_ARP".to_string(),
        0x86dd => "ETH_P_IPV6".to_string(),
        n => format!("{n:#06x}"),
    };
    v.extra
        .push(("packet socket".into(), format!("{ty}, protocol {proto}")));
    v.extra.push((
        "interface".into(),
        if p.ifindex == 0 {
            "any".into()
        } else {
            format!("index {}", p.ifindex)
        },
    ));
    v.extra
        .push(("version".into(), format!("TPACKET_V{}", p.version + 1)));
    let mut on: Vec<&str> = Vec::new();
    for (f, name) in [
        (p.aux_data, "PACKET_AUXDATA"),
        (p.orig_dev, "PACKET_ORIGDEV"),
        (p.vnet_hdr, "PACKET_VNET_HDR"),
        (p.loss, "PACKET_LOSS"),
    ] {
        if f {
            on.push(name);
        }
    }
    if !on.is_empty() {
        v.extra.push(("options".into(), on.join(" ")));
    }
    if p.reserve != 0 {
        v.extra.push(("reserve".into(), p.reserve.to_string()));
    }
    if p.timestamp != 0 {
        v.extra
            .push(("timestamp".into(), format!("{:#x}", p.timestamp)));
    }
    if p.copy_thresh != 0 {
        v.extra
            .push(("copy threshold".into(), p.copy_thresh.to_string()));
    }
    let members: Vec<String> = p
        .mclist
        .iter()
        .map(|m| {
            let ty = match m.r#type {
                0 => "multicast",
                1 => "promisc",
                2 => "allmulti",
                3 => "unicast",
                _ => "type?",
            };
            let addr: Vec<String> = m.addr.iter().map(|b| format!("{b:02x}")).collect();
            if addr.is_empty() {
                format!("{ty} on index {}", m.index)
            } else {
                format!("{ty} {} on index {}", addr.join(":"), m.index)
            }
        })
        .collect();
    if !members.is_empty() {
        v.extra.push(("memberships".into(), members.join("; ")));
    }
    if let Some(f) = p.fanout.filter(|&f| f != 0xffff_ffff) {
        let ty = match (f >> 16) & 0xff {
            0 => "hash".to_string(),
            1 => "lb".to_string(),
            2 => "cpu".to_string(),
            3 => "rollover".to_string(),
            4 => "rnd".to_string(),
            5 => "qm".to_string(),
            6 => "cbpf".to_string(),
            7 => "ebpf".to_string(),
            t => format!("type {t}"),
        };
        let flags = f >> 24;
        v.extra.push((
            "fanout".into(),
            if flags == 0 {
                format!("group {}, {ty}", f & 0xffff)
            } else {
                format!("group {}, {ty}, flags {flags:#x}", f & 0xffff)
            },
        ));
    }
    for (r, name) in [(&p.rx_ring, "rx ring"), (&p.tx_ring, "tx ring")] {
        if let Some(r) = r {
            v.extra.push((
                name.into(),
                format!(
                    "{} blocks of {}, {} frames of {}",
                    r.block_nr, r.block_size, r.frame_nr, r.frame_size
                ),
            ));
        }
    }
}
