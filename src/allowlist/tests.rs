//! Tests of `allowlist`.

use super::*;
use ipnet::Ipv6Net;
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn set(entries: &[&str]) -> IpSet {
    IpSet::new(entries.iter().map(|e| parse_entry(e).unwrap()))
}

#[test]
fn entries_parse_and_host_bits_are_refused() {
    let table: [(&str, Option<&str>); 12] = [
        ("10.0.0.0/8", Some("10.0.0.0/8")),
        (" 192.0.2.10 ", Some("192.0.2.10/32")),
        ("2001:db8::/32", Some("2001:db8::/32")),
        ("2001:db8::1", Some("2001:db8::1/128")),
        ("0.0.0.0/0", Some("0.0.0.0/0")),
        ("::/0", Some("::/0")),
        ("::ffff:10.0.0.0/104", Some("10.0.0.0/8")),
        ("::ffff:192.0.2.1", Some("192.0.2.1/32")),
        ("10.0.0.1/8", None),
        ("10.0.0.0/33", None),
        ("github", None),
        ("", None),
    ];
    for (text, expected) in table {
        let got = parse_entry(text).map(|n| n.to_string()).ok();
        assert_eq!(got.as_deref(), expected, "{text:?}");
    }
    let message = parse_entry("10.0.0.1/8").unwrap_err();
    assert!(message.contains("\"10.0.0.0/8\""), "{message}");
    assert!(message.contains("10.0.0.1/32"), "{message}");
}

#[test]
fn contains_v4_v6_and_mapped() {
    let s = set(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]);
    assert!(s.contains(ip("10.1.2.3")));
    assert!(s.contains(ip("::ffff:10.1.2.3")));
    assert!(s.contains(ip("192.0.2.7")));
    assert!(!s.contains(ip("192.0.2.8")));
    assert!(!s.contains(ip("11.0.0.0")));
    assert!(!s.contains(ip("9.255.255.255")));
    assert!(s.contains(ip("2001:db8:ffff::1")));
    assert!(!s.contains(ip("2001:db9::")));
    // An IPv4 network never matches a non-mapped IPv6 address with the same low bits.
    assert!(!s.contains(ip("::10.1.2.3")));
    assert!(!IpSet::default().contains(ip("10.0.0.1")));
    assert_eq!(
        set(&["0.0.0.0/0", "::/0"]).to_string(),
        "0.0.0.0/0, ::/0".to_string()
    );
}

#[test]
fn overlapping_and_adjacent_networks_merge() {
    let s = set(&["10.0.0.0/25", "10.0.0.128/25", "10.0.0.0/24", "10.0.1.0/24"]);
    assert_eq!(s.to_string(), "10.0.0.0/23");
    assert!(s.contains(ip("10.0.1.255")));
    assert!(!s.contains(ip("10.0.2.0")));
    let edges = set(&["255.255.255.255", "0.0.0.0"]);
    assert!(edges.contains(ip("255.255.255.255")));
    assert!(edges.contains(ip("0.0.0.0")));
    assert!(!edges.contains(ip("0.0.0.1")));
}

fn v4_net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, p)| Ipv4Net::new(a.into(), p).unwrap().trunc())
}

fn v6_net() -> impl Strategy<Value = Ipv6Net> {
    (any::<u128>(), 0u8..=128).prop_map(|(a, p)| Ipv6Net::new(a.into(), p).unwrap().trunc())
}

fn host_mask_v4(p: u8) -> u32 {
    u32::MAX.checked_shr(u32::from(p)).unwrap_or(0)
}

fn host_mask_v6(p: u8) -> u128 {
    u128::MAX.checked_shr(u32::from(p)).unwrap_or(0)
}

/// Linear reference: canonical address against canonical networks.
fn oracle(nets: &[IpNet], addr: IpAddr) -> bool {
    let addr = addr.to_canonical();
    nets.iter().any(|n| canonical_net(*n).contains(&addr))
}

proptest! {
    #[test]
    fn v4_inside_and_outside(net in v4_net(), bits in any::<u32>(), other in any::<u32>()) {
        let s = IpSet::new([IpNet::V4(net)]);
        let inside = Ipv4Addr::from(u32::from(net.network()) | (bits & host_mask_v4(net.prefix_len())));
        prop_assert!(s.contains(IpAddr::V4(inside)));
        prop_assert!(s.contains(IpAddr::V6(inside.to_ipv6_mapped())));
        let other = Ipv4Addr::from(other);
        prop_assert_eq!(s.contains(IpAddr::V4(other)), net.contains(&other));
    }

    #[test]
    fn v6_inside_and_outside(net in v6_net(), bits in any::<u128>(), other in any::<u128>()) {
        let s = IpSet::new([IpNet::V6(net)]);
        let inside = Ipv6Addr::from(u128::from(net.network()) | (bits & host_mask_v6(net.prefix_len())));
        // A network inside ::ffff:0:0/96 is stored as IPv4; compare canonical forms.
        prop_assert!(s.contains(IpAddr::V6(inside)));
        let other = IpAddr::V6(Ipv6Addr::from(other));
        prop_assert_eq!(s.contains(other), oracle(&[IpNet::V6(net)], other));
    }

    #[test]
    fn many_networks_match_linear_oracle(
        v4 in proptest::collection::vec(v4_net(), 0..20),
        v6 in proptest::collection::vec(v6_net(), 0..20),
        probes4 in proptest::collection::vec(any::<u32>(), 20),
        probes6 in proptest::collection::vec(any::<u128>(), 20),
    ) {
        let nets: Vec<IpNet> = v4.iter().copied().map(IpNet::V4)
            .chain(v6.iter().copied().map(IpNet::V6)).collect();
        let s = IpSet::new(nets.clone());
        // Probe random addresses and every network's first and last address.
        let mut probes: Vec<IpAddr> = probes4.into_iter().map(|a| IpAddr::V4(a.into()))
            .chain(probes6.into_iter().map(|a| IpAddr::V6(a.into()))).collect();
        for n in &nets {
            probes.push(n.network());
            probes.push(n.broadcast());
        }
        for p in probes {
            prop_assert_eq!(s.contains(p), oracle(&nets, p), "{}", p);
        }
    }

    #[test]
    fn garbage_xff_never_panics(
        peer in any::<[u8; 4]>(),
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..4),
    ) {
        let trusted = set(&["0.0.0.0/0", "::/0"]);
        let peer = IpAddr::from(peer);
        let got = client_addr(peer, values.iter().map(|v| v.as_slice()), &trusted);
        // Whatever comes back is the peer or an address written in the header.
        let written: Vec<IpAddr> = values
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .filter_map(|e| parse_forwarded_entry(e.trim_ascii()))
            .collect();
        prop_assert!(got == peer || written.contains(&got));
    }

    #[test]
    fn untrusted_peer_ignores_any_xff(
        peer in any::<[u8; 4]>(),
        values in proptest::collection::vec("[0-9a-f.:, \\[\\]]{0,60}", 0..4),
    ) {
        let trusted = set(&["10.0.0.0/8"]);
        let peer = Ipv4Addr::from(peer);
        prop_assume!(!trusted.contains(IpAddr::V4(peer)));
        let got = client_addr(IpAddr::V4(peer), values.iter().map(|v| v.as_bytes()), &trusted);
        prop_assert_eq!(got, IpAddr::V4(peer));
    }

    #[test]
    fn chain_through_trusted_proxies_finds_client(
        spoofed in proptest::collection::vec(any::<[u8; 4]>(), 0..4),
        client in any::<[u8; 4]>(),
        proxies in proptest::collection::vec(0u32..(1 << 24), 0..5),
        ports in any::<bool>(),
    ) {
        let trusted = set(&["10.0.0.0/8"]);
        let client = Ipv4Addr::from(client);
        prop_assume!(!trusted.contains(IpAddr::V4(client)));
        let proxy_addrs: Vec<Ipv4Addr> = proxies.iter().map(|p| Ipv4Addr::from((10 << 24) | p)).collect();
        let mut entries: Vec<String> = spoofed.iter().map(|a| Ipv4Addr::from(*a).to_string()).collect();
        entries.push(if ports { format!("{client}:4711") } else { client.to_string() });
        entries.extend(proxy_addrs.iter().map(|p| p.to_string()));
        let header = entries.join(", ");
        let peer = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
        let got = client_addr(peer, [header.as_bytes()], &trusted);
        prop_assert_eq!(got, IpAddr::V4(client));
    }
}

#[test]
fn xff_rule() {
    let trusted = set(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
    let proxy = ip("10.0.0.2");
    let internet = ip("198.51.100.7");
    let cases: [(IpAddr, &[&str], &str); 17] = [
        // Untrusted peer: XFF ignored, even when it claims something.
        (internet, &["1.2.3.4"], "198.51.100.7"),
        (ip("::ffff:198.51.100.7"), &["1.2.3.4"], "198.51.100.7"),
        // Trusted peer, no XFF or empty XFF: the peer.
        (proxy, &[], "10.0.0.2"),
        (proxy, &[""], "10.0.0.2"),
        // One trusted proxy.
        (proxy, &["203.0.113.9"], "203.0.113.9"),
        // Spoofed left part is ignored: right-most untrusted wins.
        (proxy, &["6.6.6.6, 203.0.113.9"], "203.0.113.9"),
        // Two trusted proxies: client -> 10.0.0.1 -> 10.0.0.2 (peer).
        (proxy, &["203.0.113.9, 10.0.0.1"], "203.0.113.9"),
        // Several header lines read as one list.
        (proxy, &["6.6.6.6", "203.0.113.9, 10.0.0.1"], "203.0.113.9"),
        // All trusted: the left-most.
        (proxy, &["10.1.1.1, 10.0.0.1"], "10.1.1.1"),
        // Ports and brackets.
        (proxy, &["[2001:db8::5]:443"], "2001:db8::5"),
        (proxy, &["203.0.113.9:5678"], "203.0.113.9"),
        (proxy, &["[2001:db8::5]"], "2001:db8::5"),
        (proxy, &["::ffff:203.0.113.9"], "203.0.113.9"),
        // Garbage stops the walk at the last address reached.
        (proxy, &["203.0.113.9, unknown, 10.0.0.1"], "10.0.0.1"),
        (proxy, &["203.0.113.9, unknown"], "10.0.0.2"),
        (proxy, &["203.0.113.9, \u{0}\u{ff}"], "10.0.0.2"),
        // Empty entries are skipped.
        (proxy, &["203.0.113.9,, 10.0.0.1 ,"], "203.0.113.9"),
    ];
    for (peer, values, expected) in cases {
        let got = client_addr(peer, values.iter().map(|v| v.as_bytes()), &trusted);
        assert_eq!(got, ip(expected), "peer {peer}, xff {values:?}");
    }
    // IPv6 trusted proxy.
    let got = client_addr(ip("2001:db8:ffff::1"), [&b"2001:db8::9"[..]], &trusted);
    assert_eq!(got, ip("2001:db8::9"));
    // Non-UTF-8 bytes never panic.
    let got = client_addr(proxy, [&[0xff, 0xfe, b',', 0x80][..]], &trusted);
    assert_eq!(got, proxy);
}

#[test]
fn xff_walk_is_bounded() {
    let trusted = set(&["10.0.0.0/8"]);
    let mut entries = vec!["203.0.113.9".to_string()];
    entries.extend((0..100).map(|i| format!("10.0.0.{}", i % 250)));
    let header = entries.join(",");
    let got = client_addr(ip("10.0.0.2"), [header.as_bytes()], &trusted);
    // README, "Client address": the walk stops after MAX_FORWARDED_HOPS
    // entries, at the 32nd from the right (10.0.0.99 is the first), a trusted
    // hop, never the sender-written 203.0.113.9 further left.
    assert_eq!(got, ip("10.0.0.68"));
    // Empty entries count: 40 of them end the walk at the trusted hop reached.
    let header = format!("203.0.113.9{}10.0.0.1", ",".repeat(41));
    let got = client_addr(ip("10.0.0.2"), [header.as_bytes()], &trusted);
    assert_eq!(got, ip("10.0.0.1"));
}

#[test]
fn forwarded_entry_forms() {
    let table: [(&[u8], Option<&str>); 10] = [
        (b"1.2.3.4", Some("1.2.3.4")),
        (b" 1.2.3.4 ", Some("1.2.3.4")),
        (b"1.2.3.4:80", Some("1.2.3.4")),
        (b"[::1]:80", Some("::1")),
        (b"[::1]", Some("::1")),
        (b"::1", Some("::1")),
        (b"unknown", None),
        (b"1.2.3.4:", None),
        (b"[::1", None),
        (b"1.2.3.4.5", None),
    ];
    for (entry, expected) in table {
        assert_eq!(
            parse_forwarded_entry(entry),
            expected.map(ip),
            "{:?}",
            String::from_utf8_lossy(entry)
        );
    }
    assert_eq!(parse_forwarded_entry(&[b'1'; 200]), None);
}

/// Every shipped list in `conf/ip/` parses and is non-empty.
#[test]
fn ip_list_file_lines() {
    let text = "# GitHub hooks\n\n192.30.252.0/22\n  185.199.108.0/22  # pages\n10.0.0.1/8\nnope\n2606:50c0::/32\n";
    let errors = parse_ip_list(text).unwrap_err();
    let lines: Vec<usize> = errors.iter().map(|(line, _)| *line).collect();
    assert_eq!(lines, vec![5, 6]);
    assert!(errors[0].1.contains("10.0.0.0/8"));
    let ok = parse_ip_list("# only\n1.2.3.4\n\n::1 # loopback\n").unwrap();
    assert_eq!(ok.len(), 2);
}
