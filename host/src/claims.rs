//! Claims inside a component: the signed token ([`ferry_proto::claims`]) sits in a custom section
//! named `wasmcloud_jwt` (older wascap wrote `jwt`) at the end of the component, and the hash it
//! carries is taken over the component re-encoded without any such section — exactly as
//! wasmCloud's wascap does, so tokens signed by either are checked alike. And the host's policy
//! for which components it runs ([`ClaimsPolicy`]).

use ferry_proto::claims::{ClaimsError, ComponentClaims};
use sha2::{Digest as _, Sha256};
use wasmparser::{Encoding, Parser, Payload};

/// The section a signed component carries its token in.
pub const TOKEN_SECTION: &str = "wasmcloud_jwt";
/// The section wascap before 0.9 used; read, never written.
const LEGACY_TOKEN_SECTION: &str = "jwt";

const MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// Section ids of a nested core module and a nested component, in a component.
const NESTED_MODULE: u8 = 1;
const NESTED_COMPONENT: u8 = 4;

fn is_token_section(name: &str) -> bool {
    name == TOKEN_SECTION || name == LEGACY_TOKEN_SECTION
}

fn malformed(err: impl std::fmt::Display) -> ClaimsError {
    ClaimsError::Malformed(format!("not a WebAssembly binary: {err}"))
}

/// `bytes` re-encoded without token sections, at any depth: each section copied with its size
/// in the shortest LEB128, nested modules and components rebuilt the same way.
///
/// # Errors
/// [`ClaimsError::Malformed`] when `bytes` do not parse.
pub fn without_token(bytes: &[u8]) -> Result<Vec<u8>, ClaimsError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut outer: Vec<Vec<u8>> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(malformed)?;
        match &payload {
            Payload::Version { encoding, .. } => out.extend_from_slice(match encoding {
                Encoding::Component => &COMPONENT_HEADER,
                Encoding::Module => &MODULE_HEADER,
            }),
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => {
                outer.push(std::mem::take(&mut out));
                continue;
            }
            Payload::End(_) => {
                let Some(mut parent) = outer.pop() else { break };
                parent.push(if out.starts_with(&COMPONENT_HEADER) { NESTED_COMPONENT } else { NESTED_MODULE });
                leb128(&mut parent, out.len());
                parent.extend_from_slice(&out);
                out = parent;
            }
            Payload::CustomSection(section) if is_token_section(section.name()) => continue,
            _ => {}
        }
        if let Some((id, range)) = payload.as_section() {
            let content = bytes.get(range).ok_or_else(|| malformed("a section runs past the end"))?;
            out.push(id);
            leb128(&mut out, content.len());
            out.extend_from_slice(content);
        }
    }
    Ok(out)
}

/// The hash claims carry for `bytes`: SHA-256 of [`without_token`], upper-case hex.
///
/// # Errors
/// As [`without_token`].
pub fn module_hash(bytes: &[u8]) -> Result<String, ClaimsError> {
    Ok(Sha256::digest(without_token(bytes)?).iter().map(|b| format!("{b:02X}")).collect())
}

/// The token in the component's own (outermost) token section, if it has one.
///
/// # Errors
/// [`ClaimsError::Malformed`] when `bytes` do not parse or the token is not UTF-8.
pub fn embedded_token(bytes: &[u8]) -> Result<Option<String>, ClaimsError> {
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(section) if depth == 0 && is_token_section(section.name()) => {
                let token = std::str::from_utf8(section.data())
                    .map_err(|_| ClaimsError::Malformed("the token section is not UTF-8".into()))?;
                return Ok(Some(token.to_owned()));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// `bytes` signed: any earlier token removed, `claims` given the component's hash, signed by
/// `issuer` and appended in a [`TOKEN_SECTION`].
///
/// # Errors
/// [`ClaimsError::Malformed`] when `bytes` do not parse or `issuer` is not the claims' issuer.
pub fn sign(bytes: &[u8], mut claims: ComponentClaims, issuer: &nkeys::KeyPair) -> Result<Vec<u8>, ClaimsError> {
    let mut signed = without_token(bytes)?;
    let hash = Sha256::digest(&signed).iter().map(|b| format!("{b:02X}")).collect();
    claims.metadata.get_or_insert_with(Default::default).module_hash = hash;
    let token = claims.encode(issuer)?;
    let mut section = Vec::with_capacity(token.len() + TOKEN_SECTION.len() + 5);
    leb128(&mut section, TOKEN_SECTION.len());
    section.extend_from_slice(TOKEN_SECTION.as_bytes());
    section.extend_from_slice(token.as_bytes());
    signed.push(0);
    leb128(&mut signed, section.len());
    signed.extend_from_slice(&section);
    Ok(signed)
}

/// The verified claims of a component, if it carries any: signature checked, not yet against
/// the bytes, time or issuers ([`ClaimsPolicy::admit`] does that).
///
/// # Errors
/// [`ClaimsError::Malformed`] or [`ClaimsError::BadSignature`].
pub fn read(bytes: &[u8]) -> Result<Option<ComponentClaims>, ClaimsError> {
    embedded_token(bytes)?.map(|token| ComponentClaims::decode_verified(&token)).transpose()
}

fn leb128(out: &mut Vec<u8>, value: usize) {
    let mut value = value as u64;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Which components a host runs, by their claims.
#[derive(Debug, Clone, Default)]
pub struct ClaimsPolicy {
    /// Refuse components that carry no claims.
    pub require_signed: bool,
    /// Issuers (account public keys) whose claims are accepted; any issuer when empty.
    pub allowed_issuers: Vec<String>,
}

impl ClaimsPolicy {
    /// The claims that admit `bytes` to run here, `None` for an unsigned component the policy
    /// lets run.
    ///
    /// # Errors
    /// Why the component may not run: unreadable, forged or tampered claims, outside their time
    /// window, from an issuer not allowed, or none where they are required.
    pub fn admit(&self, bytes: &[u8]) -> Result<Option<ComponentClaims>, ClaimsError> {
        let Some(claims) = read(bytes)? else {
            return if self.require_signed { Err(ClaimsError::Unsigned) } else { Ok(None) };
        };
        claims.admit(&module_hash(bytes)?, ferry_proto::time::now_ms() / 1000, &self.allowed_issuers)?;
        Ok(Some(claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::claims::ComponentMetadata;

    /// The smallest core module with a padded (5-byte) section size, as some linkers write.
    fn module() -> Vec<u8> {
        let mut bytes = MODULE_HEADER.to_vec();
        // A custom section "x" with one byte, its size padded.
        bytes.extend_from_slice(&[0, 0x83, 0x80, 0x80, 0x80, 0x00, 1, b'x', 7]);
        bytes
    }

    fn claims(issuer: &nkeys::KeyPair) -> ComponentClaims {
        let metadata = ComponentMetadata { name: Some("m".into()), ..Default::default() };
        ComponentClaims::new(&issuer.public_key(), &nkeys::KeyPair::new_module().public_key(), metadata)
    }

    #[test]
    fn signing_twice_keeps_one_token_and_the_hash_ignores_it() {
        let issuer = nkeys::KeyPair::new_account();
        let once = sign(&module(), claims(&issuer), &issuer).unwrap();
        let twice = sign(&once, claims(&issuer), &issuer).unwrap();
        assert_eq!(module_hash(&once).unwrap(), module_hash(&module()).unwrap());
        assert_eq!(without_token(&twice).unwrap(), without_token(&module()).unwrap());
        let read = read(&twice).unwrap().unwrap();
        assert_eq!(read.metadata.unwrap().module_hash, module_hash(&module()).unwrap());
        assert_eq!(ClaimsPolicy::default().admit(&twice).map(|c| c.is_some()), Ok(true));
    }

    #[test]
    fn a_changed_byte_or_a_missing_token_is_refused_with_its_reason() {
        let issuer = nkeys::KeyPair::new_account();
        let mut signed = sign(&module(), claims(&issuer), &issuer).unwrap();
        signed[MODULE_HEADER.len() + 4] ^= 1;
        assert_eq!(ClaimsPolicy::default().admit(&signed).unwrap_err().reason(), "tampered");
        let strict = ClaimsPolicy { require_signed: true, allowed_issuers: vec![] };
        assert_eq!(strict.admit(&module()).unwrap_err().reason(), "unsigned");
        assert_eq!(ClaimsPolicy::default().admit(&module()), Ok(None));
        assert_eq!(ClaimsPolicy::default().admit(b"not wasm").unwrap_err().reason(), "malformed");
    }
}
