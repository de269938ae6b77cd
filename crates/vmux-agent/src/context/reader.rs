//! A bounds-checked reader for SSH wire encodings (RFC 4251 §5): bytes,
//! `uint32`, `boolean` and `string`. Every read borrows from the input and
//! fails with `None` when the input is short; a length field is only ever
//! compared with the bytes actually present, never used to allocate.

/// Reads SSH fields from the front of a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Reader { rest: input }
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.rest.split_first_chunk::<4>()?;
        self.rest = rest;
        Some(u32::from_be_bytes(*head))
    }

    /// An SSH `boolean`: any non-zero byte is TRUE (RFC 4251 §5).
    pub(crate) fn bool(&mut self) -> Option<bool> {
        self.u8().map(|b| b != 0)
    }

    /// An SSH `string`: a `uint32` length and that many bytes.
    pub(crate) fn string(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.bytes(len)
    }

    /// A `string` holding text: valid UTF-8 with no NUL byte (OpenSSH reads
    /// these fields as C strings and refuses an embedded NUL).
    pub(crate) fn text(&mut self) -> Option<&'a str> {
        let s = self.string()?;
        if s.contains(&0) {
            return None;
        }
        std::str::from_utf8(s).ok()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Appends an SSH `string` (tests and encoders).
#[cfg(test)]
pub(crate) fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_in_order() {
        let mut m = vec![7, 0, 0, 0, 9];
        put_string(&mut m, b"abc");
        m.push(2);
        put_string(&mut m, b"text");
        let mut r = Reader::new(&m);
        assert_eq!(r.u8(), Some(7));
        assert_eq!(r.u32(), Some(9));
        assert_eq!(r.string(), Some(&b"abc"[..]));
        assert_eq!(r.bool(), Some(true));
        assert_eq!(r.text(), Some("text"));
        assert!(r.is_empty());
        assert_eq!(r.u8(), None);
        assert_eq!(r.u32(), None);
        assert_eq!(r.string(), None);
        assert_eq!(r.bool(), None);
    }

    #[test]
    fn short_input_is_none_never_a_panic() {
        // A length field far larger than the input, including the maximum.
        for len in [4u32, 5, 1 << 20, u32::MAX] {
            let mut m = len.to_be_bytes().to_vec();
            m.extend_from_slice(b"abc");
            assert_eq!(Reader::new(&m).string(), None, "len {len}");
        }
        assert_eq!(Reader::new(&[0, 0, 0]).u32(), None);
        assert_eq!(Reader::new(&[]).bool(), None);
        assert_eq!(Reader::new(&[1, 2]).bytes(3), None);
        assert_eq!(Reader::new(&[1, 2]).bytes(2), Some(&[1u8, 2][..]));
    }

    #[test]
    fn text_refuses_nul_and_invalid_utf8() {
        let mut m = Vec::new();
        put_string(&mut m, b"a\0b");
        assert_eq!(Reader::new(&m).text(), None);
        let mut m = Vec::new();
        put_string(&mut m, &[0xff, 0xfe]);
        assert_eq!(Reader::new(&m).text(), None);
        let mut m = Vec::new();
        put_string(&mut m, "héllo".as_bytes());
        assert_eq!(Reader::new(&m).text(), Some("héllo"));
        let mut m = Vec::new();
        put_string(&mut m, b"");
        assert_eq!(Reader::new(&m).text(), Some(""));
    }
}
