//! Writes SSH `string`s and integers (RFC 4251 §5), the other half of
//! [`Fields`](crate::Fields).

/// Appends a `uint32`.
pub fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_be_bytes());
}

/// Appends a `string`: its length as a `uint32`, then its bytes. Every
/// string vmux writes is bounded far below 4 GiB (by a message cap); a
/// longer one would be cut in its length, so none is written.
pub fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fields;

    #[test]
    fn what_is_written_reads_back() {
        let mut out = vec![7];
        put_string(&mut out, b"hi");
        put_u32(&mut out, 0x0102_0304);
        put_string(&mut out, b"");
        assert_eq!(out, [7, 0, 0, 0, 2, b'h', b'i', 1, 2, 3, 4, 0, 0, 0, 0]);
        let mut f = Fields(&out);
        assert_eq!(f.u8(), Some(7));
        assert_eq!(f.string(), Some(&b"hi"[..]));
        assert_eq!(f.u32(), Some(0x0102_0304));
        assert_eq!(f.string(), Some(&b""[..]));
        assert!(f.is_empty());
    }
}
