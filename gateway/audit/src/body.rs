//! Entry bodies at rest, encrypted per retention period so that retention can
//! destroy them without touching the tree (crypto-shredding).
//!
//! A Merkle leaf cannot be removed: every later checkpoint commits to it. So
//! the store keeps each entry's leaf hash in clear and its canonical bytes
//! sealed with AES-256-GCM under the key of its *period*, the UTC month of the
//! entry's time. Retention destroys the keys of the months that have fully
//! passed the retention limit; their bodies become unreadable while their
//! leaf hashes still rebuild the tree, so checkpoints, proofs and consistency
//! keep verifying. The leaf hash is over the plaintext, as before: receipts
//! and proofs handed out earlier stay valid, and an entry read back is
//! checked against it.
//!
//! Sealed body: `nonce (12) ‖ ciphertext ‖ tag (16)`; the associated data is
//! `period ‖ index (8 bytes, big endian)`, so a body moved to another index
//! or period does not open.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Length of a body key.
pub const KEY_LEN: usize = 32;

/// The period of an entry written at `time_micros` (UTC): `YYYY-MM`.
pub fn period_of(time_micros: i64) -> String {
    let date = cii_types::time::from_micros(time_micros)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date();
    format!("{:04}-{:02}", date.year(), u8::from(date.month()))
}

/// The first instant after `period` (`YYYY-MM`), in microseconds; `None` if it is not a period.
pub fn period_end_micros(period: &str) -> Option<i64> {
    let (year, month) = period.split_once('-')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    let (year, month): (i32, u8) = (year.parse().ok()?, month.parse().ok()?);
    let month = time::Month::try_from(month).ok()?;
    let (year, month) = if month == time::Month::December {
        (year + 1, time::Month::January)
    } else {
        (year, month.next())
    };
    let first = time::Date::from_calendar_date(year, month, 1).ok()?;
    Some(cii_types::time::micros(first.midnight().assume_utc()))
}

/// A fresh random body key.
pub fn new_key() -> Result<[u8; KEY_LEN], ring::error::Unspecified> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new().fill(&mut key)?;
    Ok(key)
}

fn aad(period: &str, index: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(period.len() + 8);
    aad.extend_from_slice(period.as_bytes());
    aad.extend_from_slice(&index.to_be_bytes());
    aad
}

fn aead_key(key: &[u8]) -> Option<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key).ok().map(LessSafeKey::new)
}

/// Seals the canonical bytes of entry `index` of `period`.
pub fn seal(key: &[u8; KEY_LEN], period: &str, index: u64, plain: &[u8]) -> Result<Vec<u8>, ring::error::Unspecified> {
    let key = aead_key(key).ok_or(ring::error::Unspecified)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce)?;
    let mut body = plain.to_vec();
    let tag = key.seal_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(period, index)),
        &mut body,
    )?;
    let mut out = Vec::with_capacity(NONCE_LEN + body.len() + AES_256_GCM.tag_len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens a sealed body; `None` if the key, period, index or bytes do not match.
pub fn open(key: &[u8], period: &str, index: u64, sealed: &[u8]) -> Option<Vec<u8>> {
    let key = aead_key(key)?;
    let (nonce, body) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut body = body.to_vec();
    let plain_len = key
        .open_in_place(nonce, Aad::from(aad(period, index)), &mut body)
        .ok()?
        .len();
    body.truncate(plain_len);
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_months() {
        // 2026-11-30T23:59:59Z and 2026-12-01T00:00:00Z.
        assert_eq!(period_of(1_796_083_199_000_000), "2026-11");
        assert_eq!(period_of(1_796_083_200_000_000), "2026-12");
        assert_eq!(period_end_micros("2026-11"), Some(1_796_083_200_000_000));
        assert_eq!(period_end_micros("2026-12"), Some(1_798_761_600_000_000));
        assert_eq!(period_of(0), "1970-01");
        for bad in ["", "2026", "2026-13", "2026-1", "26-11", "2026-11-01", "abcd-ef"] {
            assert_eq!(period_end_micros(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_body_opens_only_with_its_key_period_and_index() {
        let key = new_key().expect("key");
        let sealed = seal(&key, "2026-11", 7, b"entry bytes").expect("seal");
        assert_eq!(open(&key, "2026-11", 7, &sealed).as_deref(), Some(&b"entry bytes"[..]));
        assert_eq!(open(&key, "2026-11", 8, &sealed), None);
        assert_eq!(open(&key, "2026-12", 7, &sealed), None);
        assert_eq!(open(&new_key().expect("key"), "2026-11", 7, &sealed), None);
        let mut flipped = sealed.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        assert_eq!(open(&key, "2026-11", 7, &flipped), None);
        assert_eq!(open(&key, "2026-11", 7, &sealed[..5]), None);
        // Fresh nonces: the same entry seals differently each time.
        assert_ne!(seal(&key, "2026-11", 7, b"entry bytes").expect("seal"), sealed);
    }
}
