//! Ed25519 keys: generation, private key files (PKCS#8 PEM, 0600), and the printable public
//! key form `ed25519:<base64url>` used in `warden.toml`.

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";

pub fn generate() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the operating system's random source");
    SigningKey::from_bytes(&seed)
}

/// `ed25519:<base64url of the 32 key bytes>`.
pub fn format_public(key: &VerifyingKey) -> String {
    format!("{PUBLIC_KEY_PREFIX}{}", public_to_base64url(key))
}

pub fn parse_public(text: &str) -> Result<VerifyingKey, String> {
    let encoded = text
        .strip_prefix(PUBLIC_KEY_PREFIX)
        .ok_or_else(|| format!("`{text}` is not a public key like ed25519:<base64url>"))?;
    public_from_base64url(encoded)
}

/// The raw form used in `warden.toml` after the prefix, and as a JWK's `x`.
pub fn public_to_base64url(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

pub fn public_from_base64url(encoded: &str) -> Result<VerifyingKey, String> {
    let bytes = B64
        .decode(encoded)
        .map_err(|_| "the public key is not base64url".to_string())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an Ed25519 public key has 32 bytes".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not a valid Ed25519 public key".to_string())
}

/// Writes a private key readable by its owner only, as PKCS#8 v1 (RFC 8410: the seed alone),
/// which every library reads (OpenSSL, Python's `cryptography`, WebCrypto); v2, with the
/// public key, is refused by some. Refuses to overwrite an existing file.
pub fn write_private(path: &Path, key: &SigningKey) -> Result<()> {
    let seed_only = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let pem = seed_only
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encoding the key: {e}"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("{}: cannot create the key file", path.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads a private key file, refusing one that others can read or write.
pub fn read_private(path: &Path) -> Result<SigningKey> {
    check_owner_only(path)?;
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the key", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|_| {
        anyhow::anyhow!(
            "{}: not an Ed25519 private key in PKCS#8 PEM form",
            path.display()
        )
    })
}

/// Secrets on disk must be readable by their owner only (0600 or stricter).
pub fn check_owner_only(path: &Path) -> Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{}: permissions are {mode:04o}; a secret file must be 0600 or stricter",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        let key = generate();
        write_private(&path, &key).unwrap();
        assert_eq!(read_private(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(write_private(&path, &key).is_err(), "overwrote a key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_private(&path).unwrap_err().to_string();
        assert!(e.contains("0644"), "{e}");
    }

    #[test]
    fn public_keys_round_trip() {
        let key = generate().verifying_key();
        assert_eq!(parse_public(&format_public(&key)).unwrap(), key);
        assert!(parse_public("ed25519:abc").is_err());
        assert!(parse_public("rsa:abc").is_err());
    }
}
