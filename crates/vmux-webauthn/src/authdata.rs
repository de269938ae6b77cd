//! Authenticator data (WebAuthn §6.1) and the COSE key inside it.

use crate::{Error, Flags};
use minicbor::data::Type;
use minicbor::Decoder;

/// Longest credential id WebAuthn allows.
pub(crate) const MAX_CREDENTIAL_ID: usize = 1023;

/// Parsed authenticator data, borrowing the bytes.
#[derive(Debug)]
pub(crate) struct AuthData<'a> {
    pub rp_id_hash: [u8; 32],
    pub flags: Flags,
    pub counter: u32,
    pub attested: Option<Attested<'a>>,
}

/// Attested credential data.
#[derive(Debug)]
pub(crate) struct Attested<'a> {
    pub credential_id: &'a [u8],
    pub public_key: p256::ecdsa::VerifyingKey,
}

/// Parses authenticator data; every byte must be accounted for.
pub(crate) fn parse(data: &[u8]) -> Result<AuthData<'_>, Error> {
    let bad = || Error::AuthDataMalformed;
    let (rp_id_hash, rest) = data.split_first_chunk::<32>().ok_or_else(bad)?;
    let (&flags, rest) = rest.split_first().ok_or_else(bad)?;
    let (counter, mut rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
    let flags = Flags::from_bits(flags);
    let mut attested = None;
    if flags.bits() & Flags::AT != 0 {
        let (_aaguid, r) = rest.split_first_chunk::<16>().ok_or_else(bad)?;
        let (len, r) = r.split_first_chunk::<2>().ok_or_else(bad)?;
        let len = u16::from_be_bytes(*len) as usize;
        if len == 0 || len > MAX_CREDENTIAL_ID || r.len() < len {
            return Err(bad());
        }
        let (credential_id, r) = r.split_at(len);
        let mut d = Decoder::new(r);
        let public_key = cose_p256(&mut d)?;
        rest = r.get(d.position()..).ok_or_else(bad)?;
        attested = Some(Attested {
            credential_id,
            public_key,
        });
    }
    // Extensions (a CBOR map) must be exactly the rest when ED is set.
    if flags.bits() & Flags::ED != 0 {
        let mut d = Decoder::new(rest);
        if !matches!(d.datatype(), Ok(Type::Map)) || d.skip().is_err() || d.position() != rest.len()
        {
            return Err(bad());
        }
    } else if !rest.is_empty() {
        return Err(bad());
    }
    Ok(AuthData {
        rp_id_hash: *rp_id_hash,
        flags,
        counter: u32::from_be_bytes(*counter),
        attested,
    })
}

/// Whether a CBOR item of type `t` is an integer (of any width, either
/// sign): what a COSE label and an integer value are.
fn is_int(t: Type) -> bool {
    matches!(
        t,
        Type::U8 | Type::U16 | Type::U32 | Type::U64 | Type::I8 | Type::I16 | Type::I32 | Type::I64
    )
}

/// A COSE_Key (RFC 9053) that must be EC2 (kty 2), ES256 (alg -7), P-256
/// (crv 1) with 32-byte x and y on the curve. Unknown labels are skipped;
/// a repeated label is malformed.
fn cose_p256<'b>(d: &mut Decoder<'b>) -> Result<p256::ecdsa::VerifyingKey, Error> {
    let bad = |_| Error::AuthDataMalformed;
    let n = d.map().map_err(bad)?.ok_or(Error::AuthDataMalformed)?;
    let (mut kty, mut alg, mut crv) = (None, None, None);
    let (mut x, mut y): (Option<&'b [u8]>, Option<&'b [u8]>) = (None, None);
    let mut seen: Vec<i64> = Vec::new();
    for _ in 0..n {
        let label = match d.datatype().map_err(bad)? {
            t if is_int(t) => d.i64().map_err(bad)?,
            _ => {
                // Text labels are allowed by COSE; none matters here.
                d.skip().map_err(bad)?;
                d.skip().map_err(bad)?;
                continue;
            }
        };
        if seen.contains(&label) {
            return Err(Error::AuthDataMalformed);
        }
        seen.push(label);
        let int = |d: &mut Decoder<'_>| match d.datatype() {
            Ok(t) if is_int(t) => d.i64().map_err(bad),
            Ok(_) => Err(Error::UnsupportedKey),
            Err(e) => Err(bad(e)),
        };
        let bytes = |d: &mut Decoder<'b>| -> Result<Option<&'b [u8]>, Error> {
            match d.datatype() {
                Ok(Type::Bytes) => {
                    let b = d.bytes().map_err(bad)?;
                    Ok(Some(b))
                }
                Ok(_) => Err(Error::UnsupportedKey),
                Err(e) => Err(bad(e)),
            }
        };
        match label {
            1 => kty = Some(int(d)?),
            3 => alg = Some(int(d)?),
            -1 => crv = Some(int(d)?),
            -2 => x = bytes(d)?,
            -3 => y = bytes(d)?,
            _ => d.skip().map_err(bad)?,
        }
    }
    if kty != Some(2) || alg != Some(-7) || crv != Some(1) {
        return Err(Error::UnsupportedKey);
    }
    let (Some(x), Some(y)) = (x, y) else {
        return Err(Error::UnsupportedKey);
    };
    let (Ok(x), Ok(y)) = (<[u8; 32]>::try_from(x), <[u8; 32]>::try_from(y)) else {
        return Err(Error::UnsupportedKey);
    };
    let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
    p256::ecdsa::VerifyingKey::from_encoded_point(&point).map_err(|_| Error::UnsupportedKey)
}
