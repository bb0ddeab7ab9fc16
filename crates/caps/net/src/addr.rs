//! Which IP addresses an extension may connect to: a pure function of the address and the
//! operator's `allow_networks`.
//!
//! Only globally reachable unicast addresses are allowed by default. IPv6 forms that carry an
//! IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
//! `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo `2001::/32`) are unwrapped and
//! the embedded IPv4 address is checked too, so `::ffff:127.0.0.1` or the NAT64 form of
//! `169.254.169.254` cannot slip through as "IPv6".
//!
//! A non-public address is allowed only when every non-public part of it (the address itself
//! and any embedded IPv4 address) lies inside one of the policy's `allow_networks`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is not public: a short, stable name for messages and audit records.
pub type NonPublic = &'static str;

/// Whether `ip` may be connected to under a policy naming `allow`.
///
/// `Err` names the first non-public range found (e.g. `"loopback"`).
pub fn check(ip: IpAddr, allow: &[IpNet]) -> Result<(), NonPublic> {
    let allowed = |ip: IpAddr| allow.iter().any(|n| n.contains(&ip));
    // IPv4-mapped addresses are IPv4 addresses on the wire: check them as such.
    let ip = ip.to_canonical();
    if let Err(why) = classify(ip)
        && !allowed(ip)
    {
        return Err(why);
    }
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = embedded_v4(v6)
        && let Err(why) = classify_v4(v4)
        && !allowed(IpAddr::V4(v4))
    {
        return Err(why);
    }
    Ok(())
}

/// Classifies one address on its own (without unwrapping embedded IPv4 addresses).
pub fn classify(ip: IpAddr) -> Result<(), NonPublic> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    (u128::from(ip) & mask) == (u128::from(Ipv6Addr::from(net)) & mask)
}

/// IPv4 special-purpose ranges (IANA registry) that are not globally reachable.
pub fn classify_v4(ip: Ipv4Addr) -> Result<(), NonPublic> {
    const RANGES: &[([u8; 4], u32, NonPublic)] = &[
        ([255, 255, 255, 255], 32, "broadcast"),
        ([0, 0, 0, 0], 8, "unspecified"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local (incl. cloud metadata)"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "reserved (IETF protocol assignments)"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "reserved (6to4 relay anycast)"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    match RANGES.iter().find(|(net, len, _)| in_v4(ip, *net, *len)) {
        Some((_, _, why)) => Err(why),
        None => Ok(()),
    }
}

/// IPv6 ranges that are not globally reachable. Everything outside global unicast `2000::/3`
/// is refused, except the well-known NAT64 prefix (whose embedded IPv4 is checked separately).
pub fn classify_v6(ip: Ipv6Addr) -> Result<(), NonPublic> {
    const RANGES: &[([u16; 8], u32, NonPublic)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified"),
        ([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback"),
        ([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, "IPv4-mapped"),
        ([0, 0, 0, 0, 0, 0, 0, 0], 96, "IPv4-compatible (deprecated)"),
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "local-use NAT64"),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only"),
        ([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48, "benchmarking"),
        ([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, "reserved (ORCHID)"),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
        ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "reserved (SRv6 SIDs)"),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local (private)"),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local (deprecated)"),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
    ];
    if let Some((_, _, why)) = RANGES.iter().find(|(net, len, _)| in_v6(ip, *net, *len)) {
        return Err(why);
    }
    // The well-known NAT64 prefix is global; what it carries is checked by `check`.
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return Ok(());
    }
    // 2001::/23 is IETF protocol assignments: not global except Teredo (checked through its
    // embedded client address) and the few assignments IANA marks globally reachable.
    if in_v6(ip, [0x2001, 0, 0, 0, 0, 0, 0, 0], 23) {
        let global = in_v6(ip, [0x2001, 0, 0, 0, 0, 0, 0, 0], 32)
            || in_v6(ip, [0x2001, 1, 0, 0, 0, 0, 0, 1], 128)
            || in_v6(ip, [0x2001, 1, 0, 0, 0, 0, 0, 2], 128)
            || in_v6(ip, [0x2001, 1, 0, 0, 0, 0, 0, 3], 128)
            || in_v6(ip, [0x2001, 3, 0, 0, 0, 0, 0, 0], 32)
            || in_v6(ip, [0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48)
            || in_v6(ip, [0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28)
            || in_v6(ip, [0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28);
        return if global {
            Ok(())
        } else {
            Err("reserved (IETF protocol assignments)")
        };
    }
    if !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return Err("reserved (not global unicast)");
    }
    Ok(())
}

/// The IPv4 address an IPv6 address carries, for the forms that route to or stand for one.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    // IPv4-mapped ::ffff:a.b.c.d, and IPv4-compatible ::a.b.c.d (not :: or ::1).
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)
        || (in_v6(ip, [0, 0, 0, 0, 0, 0, 0, 0], 96) && bits > 1)
    {
        return Some(low32);
    }
    // NAT64: well-known 64:ff9b::/96 and local-use 64:ff9b:1::/48 (RFC 8215; the /96 layout
    // in the low 32 bits is the one in use).
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
        || in_v6(ip, [0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48)
    {
        return Some(low32);
    }
    // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    // Teredo: 2001:0:SERVER:FLAGS:PORT:CLIENT, the client address obfuscated (XOR all ones).
    if in_v6(ip, [0x2001, 0, 0, 0, 0, 0, 0, 0], 32) {
        return Some(Ipv4Addr::from(((bits & 0xffff_ffff) as u32) ^ 0xffff_ffff));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}")))
            .collect()
    }

    #[test]
    fn public_addresses_are_allowed() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81b::200e",
            "2001:4860:4860::8888",
            // NAT64 / 6to4 / Teredo carrying public IPv4 addresses.
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7", // Teredo client 8.8.8.8
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(check(ip(s), &[]), Ok(()), "{s} should be public");
        }
    }

    #[test]
    fn every_non_public_ipv4_range_is_refused() {
        for (s, why) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("169.254.169.254", "link-local (incl. cloud metadata)"),
            ("169.254.0.1", "link-local (incl. cloud metadata)"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("100.127.255.255", "shared address space (CGNAT)"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.0.8", "reserved (IETF protocol assignments)"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("192.88.99.1", "reserved (6to4 relay anycast)"),
        ] {
            assert_eq!(check(ip(s), &[]), Err(why), "{s}");
        }
    }

    #[test]
    fn every_non_public_ipv6_range_is_refused() {
        for s in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "100::1",
            "2001:2::1",
            "2001:10::1",
            "3fff::1",
            "5f00::1",
            "4000::1",
            "::2",
            "64:ff9b:1::808:808", // local-use NAT64 is not global even for a public address
        ] {
            assert!(check(ip(s), &[]).is_err(), "{s} should be refused");
        }
    }

    #[test]
    fn embedded_ipv4_forms_are_unwrapped() {
        for (s, v4) in [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::ffff:169.254.169.254", "169.254.169.254"),
            ("::127.0.0.1", "127.0.0.1"),
            ("64:ff9b::7f00:1", "127.0.0.1"),
            ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
            ("64:ff9b:1::a00:1", "10.0.0.1"),
            ("2002:a00:1::1", "10.0.0.1"),
            ("2002:7f00:1::", "127.0.0.1"),
            // Teredo: client 127.0.0.1 obfuscated is 80ff:fffe.
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
            ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1"),
        ] {
            let IpAddr::V6(v6) = ip(s) else {
                panic!("{s} is not IPv6")
            };
            assert_eq!(embedded_v4(v6), Some(v4.parse().unwrap()), "{s}");
            assert!(check(ip(s), &[]).is_err(), "{s} should be refused");
        }
        let IpAddr::V6(plain) = ip("2606:4700::1") else {
            panic!()
        };
        assert_eq!(embedded_v4(plain), None);
        let IpAddr::V6(one) = ip("::1") else { panic!() };
        assert_eq!(embedded_v4(one), None);
    }

    #[test]
    fn the_security_cases_are_refused_with_their_reason() {
        assert_eq!(check(ip("::ffff:127.0.0.1"), &[]), Err("loopback"));
        assert_eq!(check(ip("64:ff9b::7f00:1"), &[]), Err("loopback"));
        assert_eq!(check(ip("2002:a00:1::1"), &[]), Err("private"));
        assert_eq!(
            check(ip("2001:0:4136:e378:8000:63bf:80ff:fffe"), &[]),
            Err("loopback")
        );
        assert_eq!(
            check(ip("::ffff:169.254.169.254"), &[]),
            Err("link-local (incl. cloud metadata)")
        );
    }

    #[test]
    fn allow_networks_open_exactly_what_they_name() {
        let allow = nets(&["127.0.0.0/8", "10.1.0.0/16", "fd00::/8"]);
        assert_eq!(check(ip("127.0.0.1"), &allow), Ok(()));
        assert_eq!(check(ip("::ffff:127.0.0.1"), &allow), Ok(()));
        assert_eq!(check(ip("64:ff9b::7f00:1"), &allow), Ok(()));
        assert_eq!(check(ip("10.1.2.3"), &allow), Ok(()));
        assert_eq!(check(ip("fd00::5"), &allow), Ok(()));
        assert!(check(ip("10.2.0.1"), &allow).is_err());
        assert!(check(ip("169.254.169.254"), &allow).is_err());
        assert!(check(ip("::1"), &allow).is_err());
        assert!(check(ip("fc00::1"), &allow).is_err());
        // 6to4 of an allowed IPv4 is still an IPv6 route through a relay: allowed only because
        // its IPv6 range is global and its IPv4 part is named.
        assert_eq!(check(ip("2002:a01:203::1"), &allow), Ok(()));
        // An allowed IPv6 range does not open a forbidden IPv4 inside it.
        let v6only = nets(&["64:ff9b::/96"]);
        assert!(check(ip("64:ff9b::7f00:1"), &v6only).is_err());
    }
}
