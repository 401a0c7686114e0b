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
mod tests;
