//! IP address literals, read by hand: `core::net`'s parser and its `Display` cost the wasm
//! about 2 KB gzipped, for two callers (the webhook host policy, the per-IP throttles).
//! Checked against `core::net` on every input a property test makes (tests/hostile_parsers.rs).

/// A dotted-quad IPv4 address, strictly decimal (`127.0.0.1`; not `0177.0.0.1`).
pub fn parse_v4(text: &str) -> Option<[u8; 4]> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        let digits_only = !part.is_empty() && part.len() <= 3 && part.bytes().all(|b| b.is_ascii_digit());
        if !digits_only || (part.len() > 1 && part.starts_with('0')) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then_some(octets)
}

/// An IPv6 address's eight groups (RFC 4291 text: hex groups, one `::` for a run of
/// zeros, an IPv4 dotted quad as the last 32 bits). No zone identifiers.
pub fn parse_v6(text: &str) -> Option<[u16; 8]> {
    let (head, tail) = match text.split_once("::") {
        Some((head, tail)) => (head, Some(tail)),
        None => (text, None),
    };
    let mut front = Vec::with_capacity(8);
    groups(head, tail.is_none(), &mut front)?;
    let mut back = Vec::with_capacity(8);
    if let Some(tail) = tail {
        groups(tail, true, &mut back)?;
    }
    let count = front.len() + back.len();
    // `::` stands for at least one group; without it there are exactly eight.
    if (tail.is_some() && count > 7) || (tail.is_none() && count != 8) {
        return None;
    }
    let mut address = [0u16; 8];
    address[..front.len()].copy_from_slice(&front);
    address[8 - back.len()..].copy_from_slice(&back);
    Some(address)
}

/// The `:`-separated groups of `part` (empty: none); the last may be a dotted quad when
/// `quad_last` (it then counts as two groups).
fn groups(part: &str, quad_last: bool, out: &mut Vec<u16>) -> Option<()> {
    if part.is_empty() {
        return Some(());
    }
    let mut pieces = part.split(':').peekable();
    while let Some(piece) = pieces.next() {
        if out.len() >= 8 {
            return None;
        }
        if quad_last && pieces.peek().is_none() && piece.contains('.') {
            let [a, b, c, d] = parse_v4(piece)?;
            out.extend([u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])]);
        } else {
            if piece.is_empty() || piece.len() > 4 || !piece.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u16::from_str_radix(piece, 16).ok()?);
        }
    }
    Some(())
}

/// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
pub fn mapped_v4(groups: [u16; 8]) -> Option<[u8; 4]> {
    (groups[..5] == [0; 5] && groups[5] == 0xffff).then(|| embedded_v4(groups))
}

/// The last 32 bits of an IPv6 address, as IPv4.
pub fn embedded_v4(groups: [u16; 8]) -> [u8; 4] {
    let [a, b] = groups[6].to_be_bytes();
    let [c, d] = groups[7].to_be_bytes();
    [a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_of_rfc_4291() {
        assert_eq!(parse_v4("203.0.113.7"), Some([203, 0, 113, 7]));
        for bad in ["1.2.3", "1.2.3.4.5", "256.0.0.1", "01.2.3.4", "1.2.3.", "a.b.c.d", "", "1..2.3"] {
            assert_eq!(parse_v4(bad), None, "{bad}");
        }
        assert_eq!(parse_v6("::1"), Some([0, 0, 0, 0, 0, 0, 0, 1]));
        assert_eq!(parse_v6("::"), Some([0; 8]));
        assert_eq!(parse_v6("2001:db8::8:800:200c:417a"), Some([0x2001, 0xdb8, 0, 0, 8, 0x800, 0x200c, 0x417a]));
        assert_eq!(parse_v6("::ffff:127.0.0.1"), Some([0, 0, 0, 0, 0, 0xffff, 0x7f00, 1]));
        assert_eq!(parse_v6("1:2:3:4:5:6:7:8"), Some([1, 2, 3, 4, 5, 6, 7, 8]));
        for bad in
            ["1:2:3:4:5:6:7:8:9", "1::2::3", ":1::", "1:::2", "12345::", "::g", "1:2:3:4:5:6:7::8", "fe80::1%eth0"]
        {
            assert_eq!(parse_v6(bad), None, "{bad}");
        }
        assert_eq!(mapped_v4(parse_v6("::ffff:a9fe:a9fe").unwrap()), Some([169, 254, 169, 254]));
        assert_eq!(mapped_v4(parse_v6("::1").unwrap()), None);
    }
}
