//! Publisher signatures on plugin files.
//!
//! A publisher signs a plugin with `keel sign --key FILE PLUGIN`, which
//! writes `PLUGIN.sig`: an ed25519 signature over the string
//! `keel-plugin-signature-v1:` followed by the sha256 (hex) of the exact
//! plugin bytes, with the signer's public key and that sha256 alongside
//! (see [`SignatureFile`]). The operator trusts publishers by adding their
//! public keys to the workspace (`keel keys add`); `keel install` accepts a
//! plugin only if its signature verifies under a trusted key, unless the
//! operator passes `--allow-unsigned`, and then the plugin is marked
//! unsigned in `keel list`, `keel inspect` and the audit log.
//!
//! Threat model. Stopped: a plugin file changed after the publisher signed
//! it (on a mirror, in transit, in a download folder), including a single
//! flipped bit; a signature copied from another file; a file signed by
//! someone whose key the operator never trusted, including a key an index
//! names (an index cannot make a key trusted, and when it names one the
//! signature must be by that key); an unsigned file installed by accident.
//! Not stopped: a publisher's secret key that was stolen (remove the key
//! with `keel keys remove`; there is no revocation list or transparency
//! log), a trusted publisher shipping hostile code (the capability review
//! and the kernel's grants bound what it can do, not what it tries), a
//! rollback to an older version the same publisher signed (keel shows the
//! version and asks nothing more), and anyone who can write the workspace
//! database, which holds the trusted keys.

use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// The text a signature covers is this prefix and the plugin's sha256 (hex).
pub const SIGNED_PREFIX: &str = "keel-plugin-signature-v1:";
/// `format` of a signature file.
pub const SIGNATURE_FORMAT: &str = "keel-signature-v1";
/// First word of a secret key file.
pub const SECRET_KEY_PREFIX: &str = "keel-ed25519-secret-key";
/// Prefix of a public key as keel prints and reads it.
pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";
/// Extension of a detached signature next to a plugin file.
pub const SIGNATURE_EXTENSION: &str = "sig";

/// Why a key or a signature could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("{origin} is not a keel signature file ({detail}): sign the plugin with `keel sign --key KEY PLUGIN`")]
    Malformed { origin: String, detail: String },
    #[error(
        "the signature {origin} is for other bytes (sha256 {signed}), not this plugin (sha256 {actual}): the file was changed after signing, or the signature belongs to another file"
    )]
    OtherBytes { origin: String, signed: String, actual: String },
    #[error(
        "the signature {origin} does not verify under key {key}: the signature or the plugin was tampered with; do not install it"
    )]
    Invalid { origin: String, key: String },
    #[error(
        "the signature {origin} is by key {key}, which this workspace does not trust: if you trust the publisher, add their key with `keel keys add NAME {key}`, or pass --allow-unsigned"
    )]
    Untrusted { origin: String, key: String },
    #[error("the signature {origin} is by key {key}, but the index says the publisher's key is {expected}")]
    NotThePublisher { origin: String, key: String, expected: String },
    #[error("{0}")]
    Key(String),
}

/// A detached signature file (`PLUGIN.sig`, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// Always [`SIGNATURE_FORMAT`].
    pub format: String,
    /// The signer's public key, `ed25519:HEX`.
    pub key: String,
    /// sha256 (hex) of the signed plugin bytes.
    pub sha256: String,
    /// The ed25519 signature (hex) over [`signed_message`].
    pub signature: String,
}

/// The bytes a signature covers for a plugin with this sha256 (hex).
pub fn signed_message(sha256_hex: &str) -> Vec<u8> {
    format!("{SIGNED_PREFIX}{sha256_hex}").into_bytes()
}

/// A publisher's key pair (the 32-byte ed25519 seed).
pub struct SecretKey {
    seed: [u8; 32],
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("public", &self.public_key()).finish_non_exhaustive()
    }
}

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<SecretKey, SignatureError> {
        let mut seed = [0u8; 32];
        SystemRandom::new().fill(&mut seed).map_err(|_| SignatureError::Key("no random source".into()))?;
        SecretKey::from_seed(seed)
    }

    fn from_seed(seed: [u8; 32]) -> Result<SecretKey, SignatureError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| SignatureError::Key(format!("invalid ed25519 seed: {e}")))?;
        Ok(SecretKey { seed, pair })
    }

    /// Reads a key file written by [`SecretKey::to_file_text`].
    pub fn parse(text: &str, origin: &Path) -> Result<SecretKey, SignatureError> {
        let bad = |what: &str| {
            SignatureError::Key(format!(
                "{} is not a keel secret key ({what}): create one with `keel keys generate --out FILE`",
                origin.display()
            ))
        };
        let line = text.lines().find(|l| !l.trim().is_empty() && !l.starts_with('#')).unwrap_or_default();
        let hex_seed = line.trim().strip_prefix(SECRET_KEY_PREFIX).ok_or_else(|| bad("wrong first word"))?.trim();
        let seed: [u8; 32] = hex::decode(hex_seed)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("the seed is not 64 hex digits"))?;
        SecretKey::from_seed(seed)
    }

    /// The key file's text: a comment with the public key, then the seed.
    pub fn to_file_text(&self) -> String {
        format!(
            "# keel publisher key; public key {}. Keep this file secret.\n{SECRET_KEY_PREFIX} {}\n",
            self.public_key(),
            hex::encode(self.seed)
        )
    }

    /// The public key, `ed25519:HEX`.
    pub fn public_key(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX}{}", hex::encode(self.pair.public_key().as_ref()))
    }

    /// Signs the plugin whose sha256 (hex) is `sha256_hex`.
    pub fn sign(&self, sha256_hex: &str) -> SignatureFile {
        let signature = self.pair.sign(&signed_message(sha256_hex));
        SignatureFile {
            format: SIGNATURE_FORMAT.into(),
            key: self.public_key(),
            sha256: sha256_hex.to_owned(),
            signature: hex::encode(signature.as_ref()),
        }
    }
}

/// Checks a public key (`ed25519:HEX` or bare HEX) and returns it in the
/// `ed25519:HEX` form.
pub fn normalize_public_key(text: &str) -> Result<String, SignatureError> {
    let hex_key = text.trim().strip_prefix(PUBLIC_KEY_PREFIX).unwrap_or(text.trim());
    match hex::decode(hex_key) {
        Ok(bytes) if bytes.len() == 32 => Ok(format!("{PUBLIC_KEY_PREFIX}{}", hex::encode(bytes))),
        _ => Err(SignatureError::Key(format!(
            "{text:?} is not an ed25519 public key: expected `ed25519:` and 64 hex digits, as `keel keys generate` prints"
        ))),
    }
}

impl SignatureFile {
    /// Parses a signature file; `origin` names it in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<SignatureFile, SignatureError> {
        let malformed = |detail: String| SignatureError::Malformed { origin: origin.into(), detail };
        let sig: SignatureFile = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if sig.format != SIGNATURE_FORMAT {
            return Err(malformed(format!("format {:?}, expected {SIGNATURE_FORMAT:?}", sig.format)));
        }
        Ok(sig)
    }

    /// The file's text (pretty JSON).
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(self).expect("signature files always serialize") + "\n"
    }

    /// Checks this signature against the plugin bytes' sha256 and the
    /// trusted keys (`ed25519:HEX`); `publisher`, when an index names one,
    /// must be the signer. Returns the signer's key.
    pub fn verify(
        &self,
        actual_sha256: &str,
        trusted: &[String],
        publisher: Option<&str>,
        origin: &str,
    ) -> Result<String, SignatureError> {
        let key = normalize_public_key(&self.key)
            .map_err(|e| SignatureError::Malformed { origin: origin.into(), detail: e.to_string() })?;
        if !self.sha256.eq_ignore_ascii_case(actual_sha256) {
            return Err(SignatureError::OtherBytes {
                origin: origin.into(),
                signed: self.sha256.clone(),
                actual: actual_sha256.into(),
            });
        }
        let invalid = || SignatureError::Invalid { origin: origin.into(), key: key.clone() };
        let raw_key = hex::decode(&key[PUBLIC_KEY_PREFIX.len()..]).map_err(|_| invalid())?;
        let raw_sig = hex::decode(&self.signature).map_err(|_| invalid())?;
        UnparsedPublicKey::new(&ED25519, &raw_key)
            .verify(&signed_message(&actual_sha256.to_ascii_lowercase()), &raw_sig)
            .map_err(|_| invalid())?;
        if let Some(expected) = publisher {
            let expected = normalize_public_key(expected)?;
            if expected != key {
                return Err(SignatureError::NotThePublisher { origin: origin.into(), key, expected });
            }
        }
        if !trusted.contains(&key) {
            return Err(SignatureError::Untrusted { origin: origin.into(), key });
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        crate::runtime::sha256_hex(bytes)
    }

    #[test]
    fn a_signature_verifies_under_its_trusted_key() {
        let key = SecretKey::generate().unwrap();
        let sig = key.sign(&sha(b"plugin"));
        let trusted = vec![key.public_key()];
        assert_eq!(sig.verify(&sha(b"plugin"), &trusted, None, "t").unwrap(), key.public_key());
        let reparsed = SignatureFile::parse(sig.to_text().as_bytes(), "t").unwrap();
        assert_eq!(reparsed, sig);
    }

    #[test]
    fn other_bytes_untrusted_keys_and_forgeries_are_refused() {
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let sig = key.sign(&sha(b"plugin"));
        let trusted = vec![key.public_key()];
        let err = sig.verify(&sha(b"plugin!"), &trusted, None, "t").unwrap_err();
        assert!(matches!(err, SignatureError::OtherBytes { .. }), "{err}");
        let err = sig.verify(&sha(b"plugin"), &[other.public_key()], None, "t").unwrap_err();
        assert!(matches!(err, SignatureError::Untrusted { .. }), "{err}");
        // The sha256 field edited to match other bytes: the signature fails.
        let mut forged = sig.clone();
        forged.sha256 = sha(b"evil");
        let err = forged.verify(&sha(b"evil"), &trusted, None, "t").unwrap_err();
        assert!(matches!(err, SignatureError::Invalid { .. }), "{err}");
        let err = sig.verify(&sha(b"plugin"), &trusted, Some(&other.public_key()), "t").unwrap_err();
        assert!(matches!(err, SignatureError::NotThePublisher { .. }), "{err}");
    }

    #[test]
    fn key_files_round_trip() {
        let key = SecretKey::generate().unwrap();
        let again = SecretKey::parse(&key.to_file_text(), Path::new("k")).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert!(SecretKey::parse("nonsense", Path::new("k")).is_err());
        assert!(normalize_public_key("ed25519:00").is_err());
    }
}
