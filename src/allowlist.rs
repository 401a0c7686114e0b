//! IP allowlists: CIDR sets, named sets from `[ip_sets]`, the trusted-proxy rule and the
//! client address.
//!
//! Owns: what an entry means (parsing CIDR entries and IP list text), the [`IpSet`]s and
//! [`Allowlist`]s that `[ip_sets]`, a route's `allow`, `[server] allow` and
//! `[server] trusted_proxies` compile into (the compiling, and reading list files, is
//! `config::ip_sets`), and deciding the client address of a request ([`client_addr`]).
//! Does not own: reading headers out of a Pingora session, answering 403 (the proxy does
//! that), the TOML structs of `[server]` and `[[routes]]` (the config module holds
//! `allow: Option<Vec<String>>` and passes the strings here), or rate limiting.
//!
//! # Entries
//! An entry is a CIDR (`"10.0.0.0/8"`, `"2001:db8::/32"`), a bare address (`"3.18.12.63"`,
//! meaning `/32` or `/128`), or, in a route's `allow` and in `trusted_proxies`, the name of a
//! set from `[ip_sets]`. A CIDR with host bits set (`"10.0.0.1/8"`) is **refused**, with the
//! network form in the message: it is usually a typo for a narrower prefix, and silently
//! widening it would let in more than the author meant. IPv4-mapped IPv6 networks
//! (`"::ffff:10.0.0.0/104"`) are stored as the IPv4 network they map.
//!
//! Addresses are always compared in canonical form: an IPv4-mapped IPv6 address such as
//! `::ffff:1.2.3.4` (what a dual-stack `[::]` listener reports for IPv4 peers) is the IPv4
//! address `1.2.3.4`: it matches IPv4 networks (and not `::/0`), and [`client_addr`] returns
//! `1.2.3.4` for it. To allow any address, write `["0.0.0.0/0", "::/0"]`.
//!
//! # Which address is the client
//! The rule, as it goes into the README:
//!
//! > hookgate uses the TCP peer address as the client address, unless the peer is in
//! > `trusted_proxies`. Only then does it look at `X-Forwarded-For` (all of its header lines,
//! > in order, read as one comma-separated list) and walk it **from the right**, skipping
//! > addresses that are themselves trusted proxies. The first untrusted address it meets is
//! > the client. If every entry is trusted, the client is the left-most entry. If the header is
//! > absent or empty, the client is the peer. If the walk meets an entry that is not an IP
//! > address (`unknown`, a hostname, garbage), it stops there and the client is the last
//! > address it reached: the trusted entry just right of the bad one, or the peer if the bad
//! > entry is the right-most. Entries may carry a port (`1.2.3.4:5678`, `[2001:db8::1]:443`);
//! > empty entries are skipped; at most 32 entries are examined.
//!
//! A client cannot spoof its address: what it writes into `X-Forwarded-For` lies to the left
//! of what the first trusted proxy appends, and the walk stops at the first untrusted hop.
//! `X-Forwarded-For` from an untrusted peer is ignored entirely. The `Forwarded` header
//! (RFC 7239) and `X-Real-IP` are not read.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};

/// At most this many `X-Forwarded-For` entries are examined per request.
pub const MAX_FORWARDED_HOPS: usize = 32;

// ---------------------------------------------------------------------------------------------
// IpSet

/// A set of IPv4 and IPv6 networks with a fast membership test.
///
/// Networks are merged into sorted, disjoint address ranges, so [`IpSet::contains`] is a binary
/// search (O(log n)) whatever the number or overlap of the entries.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    /// The networks, aggregated (overlaps and adjacent halves merged), for display.
    nets: Vec<IpNet>,
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    /// Builds a set from networks; duplicates and overlaps are fine.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> IpSet {
        let nets: Vec<IpNet> = nets.into_iter().map(canonical_net).collect();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in &nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        IpSet {
            nets: IpNet::aggregate(&nets),
            v4: merge_ranges(v4, |x| x.saturating_add(1)),
            v6: merge_ranges(v6, |x| x.saturating_add(1)),
        }
    }

    /// Whether `addr` lies in one of the networks. IPv4-mapped IPv6 addresses match IPv4
    /// networks.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr.to_canonical() {
            IpAddr::V4(a) => in_ranges(&self.v4, u32::from(a)),
            IpAddr::V6(a) => in_ranges(&self.v6, u128::from(a)),
        }
    }

    /// The networks of the set, aggregated and sorted (for `hookgate check` and logs).
    pub fn networks(&self) -> &[IpNet] {
        &self.nets
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

impl fmt::Debug for IpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.nets.iter().map(|n| n.to_string()))
            .finish()
    }
}

impl fmt::Display for IpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// Sorts inclusive ranges and merges the overlapping and adjacent ones (`next` is the
/// saturating successor).
fn merge_ranges<T: Copy + Ord>(mut ranges: Vec<(T, T)>, next: fn(T) -> T) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= next(last.1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged.shrink_to_fit();
    merged
}

fn in_ranges<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    let after = ranges.partition_point(|&(start, _)| start <= x);
    after > 0 && x <= ranges[after - 1].1
}

/// Maps `::ffff:a.b.c.d/n` (n >= 96) to `a.b.c.d/(n-96)`; other networks are unchanged.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net {
        if n.prefix_len() >= 96 {
            if let Some(v4) = n.network().to_ipv4_mapped() {
                if let Ok(v4net) = Ipv4Net::new(v4, n.prefix_len() - 96) {
                    return IpNet::V4(v4net);
                }
            }
        }
    }
    net
}

/// Parses one entry: a CIDR or a bare address. A CIDR with host bits set is an error whose
/// message names the network form.
pub fn parse_entry(text: &str) -> Result<IpNet, String> {
    let entry = text.trim();
    if entry.is_empty() {
        return Err("empty entry; write a CIDR such as \"10.0.0.0/8\" or an address".into());
    }
    if entry.contains('/') {
        let net: IpNet = entry.parse().map_err(|_| {
            format!(
                "{entry:?} is not a valid CIDR; write a network such as \"10.0.0.0/8\" or \
                 \"2001:db8::/32\", or a single address"
            )
        })?;
        let network = net.trunc();
        if network != net {
            return Err(format!(
                "{entry:?} has host bits set; write the network \"{network}\", or \"{}/{}\" \
                 for the single address",
                net.addr(),
                net.max_prefix_len()
            ));
        }
        return Ok(canonical_net(net));
    }
    let addr: IpAddr = entry.parse().map_err(|_| {
        format!(
            "{entry:?} is not an IP address or CIDR; write e.g. \"192.0.2.10\", \
             \"10.0.0.0/8\" or \"2001:db8::/32\""
        )
    })?;
    Ok(canonical_net(IpNet::from(addr)))
}

/// Parses the text of an IP list file: one entry per line, `#` starts a comment (whole line
/// or after an entry), blank lines are ignored. Errors carry the 1-based line number.
pub fn parse_ip_list(text: &str) -> Result<Vec<IpNet>, Vec<(usize, String)>> {
    let mut nets = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        match parse_entry(content) {
            Ok(net) => nets.push(net),
            Err(message) => errors.push((index + 1, message)),
        }
    }
    if errors.is_empty() {
        Ok(nets)
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------------------------
// Allowlists (`[ip_sets]` and the `allow` lists are compiled by `config::ip_sets`)

/// A compiled allowlist: either any address, or only the addresses of a set.
///
/// Cheap to clone (the set is shared), so routes without `allow` share the server default.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Allowlist(Option<Arc<IpSet>>);

impl Allowlist {
    /// Permits every address (no `allow` anywhere).
    pub fn any() -> Allowlist {
        Allowlist(None)
    }

    /// Permits only addresses in `set`.
    pub fn only(set: IpSet) -> Allowlist {
        Allowlist(Some(Arc::new(set)))
    }

    /// Whether the client address may use the route (else 403 `ip_not_allowed`).
    pub fn permits(&self, client: IpAddr) -> bool {
        self.0.as_ref().is_none_or(|set| set.contains(client))
    }

    /// `None` when every address is permitted.
    pub fn set(&self) -> Option<&IpSet> {
        self.0.as_deref()
    }
}

impl fmt::Debug for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Allowlist(any)"),
            Some(set) => write!(f, "Allowlist({set:?})"),
        }
    }
}

impl fmt::Display for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("any"),
            Some(set) => write!(f, "{set}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client address

/// The client address of a request: see the module documentation for the rule.
///
/// `x_forwarded_for` yields the raw values of every `X-Forwarded-For` header line, in the
/// order received (e.g. `headers.get_all("x-forwarded-for").iter().map(|v| v.as_bytes())`).
/// It is not looked at unless `peer` is trusted. Never panics, whatever the bytes.
/// The result is canonical (`::ffff:1.2.3.4` becomes `1.2.3.4`).
pub fn client_addr<'a>(
    peer: IpAddr,
    x_forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    trusted: &IpSet,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let values: Vec<&[u8]> = x_forwarded_for.into_iter().collect();
    let mut reached = peer;
    let mut examined = 0;
    for value in values.iter().rev() {
        for entry in value.rsplit(|&b| b == b',') {
            examined += 1;
            if examined > MAX_FORWARDED_HOPS {
                return reached;
            }
            let entry = entry.trim_ascii();
            if entry.is_empty() {
                continue;
            }
            let Some(addr) = parse_forwarded_entry(entry) else {
                return reached;
            };
            reached = addr;
            if !trusted.contains(addr) {
                return addr;
            }
        }
    }
    reached
}

/// Parses one `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, `1.2.3.4:5678`,
/// `[2001:db8::1]:443` or `[2001:db8::1]`. Returns the canonical address, or `None`.
pub fn parse_forwarded_entry(entry: &[u8]) -> Option<IpAddr> {
    // The longest valid form, `[ffff:...:255.255.255.255%scope]:65535`, is well under 64.
    if entry.len() > 64 {
        return None;
    }
    let text = std::str::from_utf8(entry).ok()?.trim();
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some(addr.to_canonical());
    }
    if let Ok(sock) = text.parse::<SocketAddr>() {
        return Some(sock.ip().to_canonical());
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<Ipv6Addr>()
        .ok()
        .map(|a| IpAddr::V6(a).to_canonical())
}

#[cfg(test)]
mod tests {
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
        // The walk stops after MAX_FORWARDED_HOPS entries, at a trusted hop.
        assert!(trusted.contains(got));
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
}
