//! Payloads only their provider may read: a link put carries resolved config (passwords,
//! tokens), and anyone who can subscribe on the bus would otherwise read it. The sender seals the
//! payload with ChaCha20-Poly1305 under a key derived from the provider's MAC key of the hour
//! (so hosts can seal to any provider and only that provider can open), bound to the
//! invocation id; the envelope's MAC still covers the sealed bytes.
//!
//! Sealed form: a 12-byte random nonce, then the ciphertext with its 16-byte tag.

use ring::{
    aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom as _, SystemRandom},
};

use crate::auth::{AuthError, MacKey};

/// The encryption key under `key`: a key of its own, never the MAC key itself.
fn cipher(key: &MacKey) -> LessSafeKey {
    let derived = key.mac(&[b"ferry/v1/seal"]);
    #[expect(clippy::expect_used, reason = "a 32-byte key is what ChaCha20-Poly1305 takes")]
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &derived).expect("chacha20 key"))
}

/// Seal `plaintext` for the holder of `key`, bound to invocation `id`.
///
/// # Errors
/// [`AuthError::Sealing`] if the system's random source fails (never in practice).
pub fn seal(key: &MacKey, id: &str, plaintext: &[u8]) -> Result<Vec<u8>, AuthError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| AuthError::Sealing)?;
    let mut body = plaintext.to_vec();
    cipher(key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id.as_bytes()), &mut body)
        .map_err(|_| AuthError::Sealing)?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&body);
    Ok(sealed)
}

/// Open what [`seal`] sealed for `key` and invocation `id`.
///
/// # Errors
/// [`AuthError::Sealing`] when it was sealed under another key or id, or tampered with.
pub fn open(key: &MacKey, id: &str, sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
    if sealed.len() < NONCE_LEN {
        return Err(AuthError::Sealing);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| AuthError::Sealing)?;
    let mut body = body.to_vec();
    let plain =
        cipher(key).open_in_place(nonce, Aad::from(id.as_bytes()), &mut body).map_err(|_| AuthError::Sealing)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_key_and_id_open_it() {
        let key = MacKey::from_bytes([7; 32]);
        let sealed = seal(&key, "id1", b"password=hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "sealed bytes show the plaintext");
        assert_eq!(open(&key, "id1", &sealed).unwrap(), b"password=hunter2");
        assert_eq!(open(&MacKey::from_bytes([8; 32]), "id1", &sealed), Err(AuthError::Sealing));
        assert_eq!(open(&key, "id2", &sealed), Err(AuthError::Sealing));
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert_eq!(open(&key, "id1", &tampered), Err(AuthError::Sealing));
        assert_eq!(open(&key, "id1", b"short"), Err(AuthError::Sealing));
        assert_ne!(seal(&key, "id1", b"x").unwrap(), seal(&key, "id1", b"x").unwrap(), "nonces must differ");
    }
}
