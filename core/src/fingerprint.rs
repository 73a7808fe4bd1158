//! Keyed fingerprints: HMAC-SHA256 (RFC 2104) of a normalized value, what is stored instead of it.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Hex HMAC-SHA256 of `normalized` under `key`.
pub fn fingerprint(normalized: &str, key: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(normalized.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// A key made ready once (its HMAC pads hashed): a body has thousands of values to fingerprint.
pub struct Keyed {
    key: Vec<u8>,
    mac: Hmac<Sha256>,
}

impl Keyed {
    pub fn new(key: &[u8]) -> Self {
        Keyed { key: key.to_vec(), mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length") }
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// `fingerprint(normalized, key)`.
    pub fn of(&self, normalized: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(normalized.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        assert_eq!(
            fingerprint("what do ya want for nothing?", b"Jefe"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            Keyed::new(b"Jefe").of("what do ya want for nothing?"),
            fingerprint("what do ya want for nothing?", b"Jefe")
        );
    }
}
