//! The two things of an X.509 certificate the pin check needs, read from its DER with bounds
//! checks at every step: the `SubjectPublicKeyInfo` (whose SHA-256 is the pin) and the
//! validity period. Anything malformed reads as `None`.

/// One TLV: (tag, content, the whole encoding, what follows).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((tag, &rest[..len], &input[..header + len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// What the pin check reads of a certificate.
pub(crate) struct Parsed<'a> {
    /// The DER of its `SubjectPublicKeyInfo`, tag and length included.
    pub spki: &'a [u8],
    /// Its validity, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

pub(crate) fn parse(cert: &[u8]) -> Option<Parsed<'_>> {
    let (SEQUENCE, cert, _, _) = tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, _, after) = tlv(rest)?;
    if tag == VERSION {
        rest = after;
    }
    // serial, signature algorithm, issuer
    for _ in 0..3 {
        rest = tlv(rest)?.3;
    }
    let (SEQUENCE, validity, _, after) = tlv(rest)? else {
        return None;
    };
    let (t1, b1, _, more) = tlv(validity)?;
    let (t2, b2, _, _) = tlv(more)?;
    let not_before = time(t1, b1)?;
    let not_after = time(t2, b2)?;
    // subject, then the key
    let rest = tlv(after)?.3;
    let (SEQUENCE, _, spki, _) = tlv(rest)? else {
        return None;
    };
    Some(Parsed {
        spki,
        not_before,
        not_after,
    })
}

const EXTENSIONS: u8 = 0xa3;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// 2.5.29.19, basicConstraints.
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];

/// Whether a certificate's basic constraints say it is a CA (`None`: it does not read).
pub(crate) fn is_ca(cert: &[u8]) -> Option<bool> {
    let (SEQUENCE, cert, _, _) = tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _, _) = tlv(cert)? else {
        return None;
    };
    // After the key come the optional unique ids ([1], [2]) and the extensions ([3]).
    let mut rest = tbs;
    while !rest.is_empty() {
        let (tag, content, _, after) = tlv(rest)?;
        if tag == EXTENSIONS {
            let (SEQUENCE, mut exts, _, _) = tlv(content)? else {
                return None;
            };
            while !exts.is_empty() {
                let (SEQUENCE, ext, _, next) = tlv(exts)? else {
                    return None;
                };
                let (OID, oid, _, fields) = tlv(ext)? else {
                    return None;
                };
                if oid == BASIC_CONSTRAINTS {
                    // `critical` may come before the value.
                    let (mut tag, mut value, _, more) = tlv(fields)?;
                    if tag == BOOLEAN {
                        (tag, value, _, _) = tlv(more)?;
                    }
                    if tag != OCTET_STRING {
                        return None;
                    }
                    let (SEQUENCE, bc, _, _) = tlv(value)? else {
                        return None;
                    };
                    return Some(match tlv(bc) {
                        Some((BOOLEAN, flag, _, _)) => flag.first().is_some_and(|b| *b != 0),
                        _ => false,
                    });
                }
                exts = next;
            }
            return Some(false);
        }
        rest = after;
    }
    Some(false)
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match tag {
        UTC_TIME if text.len() == 13 => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 15 => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let (h, m, s) = (
        digits(&rest[4..6])?,
        digits(&rest[6..8])?,
        digits(&rest[8..10])?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_to_unix_seconds() {
        assert_eq!(time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(
            time(GENERALIZED_TIME, b"20261203120000Z"),
            Some(1_796_299_200)
        );
        assert_eq!(time(UTC_TIME, b"701301000000Z"), None);
        assert_eq!(time(UTC_TIME, b"7001010000Z"), None);
    }

    #[test]
    fn truncated_and_lying_lengths_read_as_none() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x82, 0xff, 0xff, 0],
            &[0x30, 0x03, 0x30, 0x01],
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
