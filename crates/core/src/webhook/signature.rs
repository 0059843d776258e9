//! The Stripe-style signature: the receiver's proof that a request came from this node and
//! was sent recently, so a forged or replayed POST can be refused.

use std::fmt::Write as _;

use aws_lc_rs::hmac;

use crate::UnixTime;

/// The request header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Townhall-Signature";

/// Signs a body sent at `t`: the header value `t=<unix secs>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>">` with `key` (the node's API secret). Signing the time with the body lets
/// receivers refuse old requests replayed at them.
pub fn sign(key: &[u8], t: UnixTime, body: &[u8]) -> String {
    format!("t={},v1={}", t.0, hex(mac(key, t.0, body).as_ref()))
}

fn mac(key: &[u8], t: u64, body: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    ctx.sign()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=<secs>,v1=<hex>`.
    #[error("malformed signature header")]
    Malformed,
    /// No `v1` matches the body and key.
    #[error("signature does not match")]
    Mismatch,
    /// The signed time is further than the tolerance from now (a replay, or a skewed clock).
    #[error("signature timestamp outside the tolerance")]
    Stale,
}

/// Checks a signature header against the body and key, and that its time is within
/// `tolerance_secs` of `now` (Stripe uses 300). Any of several `v1=` entries may match (key
/// rotation). Returns the signed time. The comparison is constant-time.
pub fn verify(
    key: &[u8],
    header: &str,
    body: &[u8],
    now: UnixTime,
    tolerance_secs: u64,
) -> Result<UnixTime, SignatureError> {
    let mut t = None;
    let mut macs = Vec::new();
    for part in header.split(',') {
        let (name, value) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match name {
            "t" => t = Some(value.parse::<u64>().map_err(|_| SignatureError::Malformed)?),
            "v1" => macs.push(unhex(value).ok_or(SignatureError::Malformed)?),
            _ => {} // other schemes, for forward compatibility
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if macs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut signed = Vec::with_capacity(body.len() + 21);
    signed.extend_from_slice(t.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    if !macs.iter().any(|m| hmac::verify(&key, &signed, m).is_ok()) {
        return Err(SignatureError::Mismatch);
    }
    if t.abs_diff(now.0) > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    Ok(UnixTime(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::fixtures::started;

    const KEY: &[u8] = b"townhall-development-secret-change-me";

    #[test]
    fn signatures_verify_and_refuse_tampering_replays_and_garbage() {
        let body = started("evt_1").to_json();
        let t = UnixTime(1_000_000);
        let header = sign(KEY, t, &body);
        assert!(header.starts_with("t=1000000,v1="));
        assert_eq!(header.len(), "t=1000000,v1=".len() + 64);
        assert_eq!(verify(KEY, &header, &body, t, 300), Ok(t));
        assert_eq!(verify(KEY, &header, &body, t.plus(300), 300), Ok(t));
        assert_eq!(verify(KEY, &header, &body, t.plus(301), 300), Err(SignatureError::Stale));
        assert_eq!(verify(KEY, &header, &body, UnixTime(999_000), 300), Err(SignatureError::Stale));
        let mut tampered = body.clone();
        tampered[5] ^= 1;
        assert_eq!(verify(KEY, &header, &tampered, t, 300), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(b"another key of enough length", &header, &body, t, 300),
            Err(SignatureError::Mismatch)
        );
        // The time is signed: moving it breaks the signature.
        let moved = header.replacen("t=1000000", "t=1000100", 1);
        assert_eq!(
            verify(KEY, &moved, &body, UnixTime(1_000_100), 300),
            Err(SignatureError::Mismatch)
        );
        // Several v1 (key rotation): any may match.
        let v1 = header.split_once(",v1=").unwrap().1;
        let rotated = format!("t=1000000,v1={},v1={v1}", "00".repeat(32));
        assert_eq!(verify(KEY, &rotated, &body, t, 300), Ok(t));
        for bad in
            ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=0", "t=1,v1=zz", "garbage", "t=1;v1=00"]
        {
            assert_eq!(verify(KEY, bad, &body, t, 300), Err(SignatureError::Malformed), "{bad}");
        }
        // Known answer: HMAC-SHA256(key "key", "1.{}"), computed with Python's hmac module.
        assert_eq!(
            sign(b"key", UnixTime(1), b"{}"),
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
