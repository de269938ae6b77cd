//! Reads SSH `string`s and integers (RFC 4251 §5) from a message body.

/// A cursor over SSH-encoded fields. Every read returns `None` when the
/// input is too short; nothing panics.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a>(pub &'a [u8]);

impl<'a> Fields<'a> {
    /// A `uint32`.
    pub fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }

    /// A `byte` (or `boolean`).
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A `string`: a `uint32` length and that many bytes.
    pub fn string(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        if self.0.len() < len {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(s)
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_refuses_short_input() {
        let mut f = Fields(&[0, 0, 0, 2, b'h', b'i', 7, 0, 0]);
        assert_eq!(f.string(), Some(&b"hi"[..]));
        assert_eq!(f.u8(), Some(7));
        assert_eq!(f.u32(), None);
        let mut long = Fields(&[0, 0, 0, 9, 1]);
        assert_eq!(long.string(), None);
    }
}
