//! QEMU's "modified UTF-8": UTF-8 where U+0000 is written `C0 80`, and
//! where surrogates, noncharacters and code points past U+10FFFF are
//! invalid. The parser uses it to validate strings; the writer to render
//! error texts, which hold raw input bytes.

/// Whether QEMU accepts a code point in a string.
pub(crate) fn is_valid_codepoint(cp: u32) -> bool {
    cp <= 0x10FFFF
        && !(0xFDD0..=0xFDEF).contains(&cp)
        && (cp & 0xFFFE) != 0xFFFE
        && !(0xD800..=0xDFFF).contains(&cp)
}

/// Decodes one sequence at the start of `s`: the code point (`None` when
/// invalid) and how many bytes were used. Past the end reads as NUL, as in
/// C. `s` must not be empty.
pub(crate) fn decode(s: &[u8]) -> (Option<u32>, usize) {
    const MIN: [u32; 5] = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];
    let first = s[0];
    if first < 0x80 {
        return (Some(first as u32), 1);
    }
    if first >= 0xFE || first & 0x40 == 0 {
        // impossible byte, or a continuation byte where a sequence starts
        return (None, 1);
    }
    let len = first.leading_ones() as usize;
    let mut cp = (first & (0x7F >> len)) as u32;
    for i in 1..len {
        let byte = s.get(i).copied().unwrap_or(0);
        if byte & 0xC0 != 0x80 {
            return (None, i);
        }
        cp = (cp << 6) | (byte & 0x3F) as u32;
    }
    let overlong = cp < MIN[len - 2] && !(cp == 0 && len == 2);
    if !is_valid_codepoint(cp) || overlong {
        return (None, len);
    }
    (Some(cp), len)
}

/// Renders raw bytes as QEMU's writer would read them: up to the first NUL
/// (the bytes are a C string there), invalid sequences as U+FFFD.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    let bytes = match bytes.iter().position(|&b| b == 0) {
        Some(nul) => &bytes[..nul],
        None => bytes,
    };
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let (cp, used) = decode(&bytes[i..]);
        out.push(cp.and_then(char::from_u32).unwrap_or('\u{FFFD}'));
        i += used;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_follows_qemu() {
        assert_eq!(decode(b"a"), (Some(0x61), 1));
        assert_eq!(decode("é".as_bytes()), (Some(0xE9), 2));
        assert_eq!(decode(b"\xC0\x80"), (Some(0), 2)); // modified UTF-8 NUL
        assert_eq!(decode(b"\xC1\x81"), (None, 2)); // overlong
        assert_eq!(decode(b"\xEF\xBF\xBF"), (None, 3)); // U+FFFF noncharacter
        assert_eq!(decode(b"\xED\xA0\x80"), (None, 3)); // surrogate
        assert_eq!(decode(b"\x80"), (None, 1));
        assert_eq!(decode(b"\xFF"), (None, 1));
        assert_eq!(decode(b"\xE2\x82"), (None, 2)); // cut short
        assert_eq!(decode("😀".as_bytes()), (Some(0x1F600), 4));
        assert_eq!(lossy(b"a\xFFb\x00c"), "a\u{FFFD}b");
    }
}
