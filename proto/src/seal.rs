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

/// Values sealed for whoever asked for them: a control reply that carries secrets (`config.get`)
/// travels over NATS, where anyone allowed to subscribe to reply inboxes would read it. The
/// requester sends an ephemeral X25519 public key; the host agrees a key with an ephemeral key
/// of its own and seals each value under ChaCha20-Poly1305, bound to the request and the
/// value's name. A value sealed so is `sealed1.` + base64url(host public key ‖ nonce ‖
/// ciphertext and tag).
pub mod reply {
    use base64::Engine as _;
    use ring::{
        aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
        agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519},
        rand::{SecureRandom as _, SystemRandom},
    };

    use crate::auth::{AuthError, MacKey};

    /// Prefix of a sealed value.
    pub const SEALED_PREFIX: &str = "sealed1.";
    const KEY_LEN: usize = 32;

    fn b64() -> base64::engine::GeneralPurpose {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
    }

    /// The cipher both sides derive from the agreed secret and both public keys.
    fn cipher(shared: &[u8], requester: &[u8], host: &[u8]) -> LessSafeKey {
        let mut secret = [0u8; KEY_LEN];
        let len = shared.len().min(KEY_LEN);
        secret[..len].copy_from_slice(&shared[..len]);
        let derived = MacKey::from_bytes(secret).mac(&[b"ferry/v1/sealed-reply", requester, host]);
        #[expect(clippy::expect_used, reason = "a 32-byte key is what ChaCha20-Poly1305 takes")]
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &derived).expect("chacha20 key"))
    }

    /// What binds a value to its request: the request id, the config and the value's name.
    fn aad(bound_to: &str, name: &str) -> Vec<u8> {
        let mut aad = bound_to.as_bytes().to_vec();
        aad.push(0);
        aad.extend_from_slice(name.as_bytes());
        aad
    }

    /// The requester's side: an ephemeral key pair, whose public half goes in the request.
    pub struct Opener {
        private: EphemeralPrivateKey,
        public: Vec<u8>,
    }

    impl std::fmt::Debug for Opener {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Opener").field("public", &self.public_key()).finish_non_exhaustive()
        }
    }

    impl Opener {
        /// A fresh key pair.
        ///
        /// # Errors
        /// [`AuthError::Sealing`] if the system's random source fails.
        pub fn new() -> Result<Self, AuthError> {
            let private =
                EphemeralPrivateKey::generate(&X25519, &SystemRandom::new()).map_err(|_| AuthError::Sealing)?;
            let public = private.compute_public_key().map_err(|_| AuthError::Sealing)?.as_ref().to_vec();
            Ok(Self { private, public })
        }

        /// The public key to send, base64url.
        pub fn public_key(&self) -> String {
            b64().encode(&self.public)
        }

        /// Open the sealed `values` (each by its name), bound to `bound_to`. Consumes the key
        /// pair: it opens one reply.
        ///
        /// # Errors
        /// [`AuthError::Sealing`] when a value is not sealed for this key pair and binding, or
        /// the values were sealed under different host keys.
        pub fn open(
            self,
            bound_to: &str,
            values: &std::collections::BTreeMap<String, String>,
        ) -> Result<std::collections::BTreeMap<String, String>, AuthError> {
            let mut parsed = Vec::with_capacity(values.len());
            for (name, value) in values {
                let bytes = value
                    .strip_prefix(SEALED_PREFIX)
                    .and_then(|body| b64().decode(body).ok())
                    .filter(|b| b.len() >= KEY_LEN + NONCE_LEN)
                    .ok_or(AuthError::Sealing)?;
                parsed.push((name, bytes));
            }
            let Some(host) = parsed.first().map(|(_, b)| b[..KEY_LEN].to_vec()) else {
                return Ok(std::collections::BTreeMap::new());
            };
            if parsed.iter().any(|(_, b)| b[..KEY_LEN] != host[..]) {
                return Err(AuthError::Sealing);
            }
            let requester = self.public.clone();
            let cipher = agreement::agree_ephemeral(self.private, &UnparsedPublicKey::new(&X25519, &host), |shared| {
                cipher(shared, &requester, &host)
            })
            .map_err(|_| AuthError::Sealing)?;
            let mut opened = std::collections::BTreeMap::new();
            for (name, bytes) in parsed {
                let (nonce, body) = bytes[KEY_LEN..].split_at(NONCE_LEN);
                let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| AuthError::Sealing)?;
                let mut body = body.to_vec();
                let plain = cipher
                    .open_in_place(nonce, Aad::from(aad(bound_to, name)), &mut body)
                    .map_err(|_| AuthError::Sealing)?;
                opened.insert(name.clone(), String::from_utf8(plain.to_vec()).map_err(|_| AuthError::Sealing)?);
            }
            Ok(opened)
        }
    }

    /// The host's side: `values` sealed for the requester's public key `requester` (base64url),
    /// bound to `bound_to`.
    ///
    /// # Errors
    /// [`AuthError::Sealing`] when `requester` is not an X25519 public key, or the system's
    /// random source fails.
    pub fn seal_values(
        requester: &str,
        bound_to: &str,
        values: &std::collections::BTreeMap<String, String>,
    ) -> Result<std::collections::BTreeMap<String, String>, AuthError> {
        let requester = b64().decode(requester.trim()).map_err(|_| AuthError::Sealing)?;
        if requester.len() != KEY_LEN {
            return Err(AuthError::Sealing);
        }
        let rng = SystemRandom::new();
        let private = EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| AuthError::Sealing)?;
        let host = private.compute_public_key().map_err(|_| AuthError::Sealing)?.as_ref().to_vec();
        let cipher = agreement::agree_ephemeral(private, &UnparsedPublicKey::new(&X25519, &requester), |shared| {
            cipher(shared, &requester, &host)
        })
        .map_err(|_| AuthError::Sealing)?;
        let mut sealed = std::collections::BTreeMap::new();
        for (name, value) in values {
            let mut nonce = [0u8; NONCE_LEN];
            rng.fill(&mut nonce).map_err(|_| AuthError::Sealing)?;
            let mut body = value.as_bytes().to_vec();
            cipher
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad(bound_to, name)),
                    &mut body,
                )
                .map_err(|_| AuthError::Sealing)?;
            let mut bytes = host.clone();
            bytes.extend_from_slice(&nonce);
            bytes.extend_from_slice(&body);
            sealed.insert(name.clone(), format!("{SEALED_PREFIX}{}", b64().encode(bytes)));
        }
        Ok(sealed)
    }
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

    #[test]
    fn a_sealed_reply_opens_for_its_requester_and_binding_only() {
        let values: std::collections::BTreeMap<String, String> =
            [("password".to_owned(), "hunter2".to_owned()), ("user".to_owned(), "app".to_owned())].into();
        let opener = reply::Opener::new().unwrap();
        let sealed = reply::seal_values(&opener.public_key(), "req\0db", &values).unwrap();
        assert!(sealed.values().all(|v| v.starts_with(reply::SEALED_PREFIX) && !v.contains("hunter2")));
        assert_eq!(opener.open("req\0db", &sealed).unwrap(), values);
        let other = reply::Opener::new().unwrap();
        assert_eq!(other.open("req\0db", &sealed), Err(AuthError::Sealing));
        let wrong_binding = reply::Opener::new().unwrap();
        let sealed = reply::seal_values(&wrong_binding.public_key(), "req\0db", &values).unwrap();
        assert_eq!(wrong_binding.open("other\0db", &sealed), Err(AuthError::Sealing));
        assert!(reply::seal_values("not a key", "x", &values).is_err());
    }
}
