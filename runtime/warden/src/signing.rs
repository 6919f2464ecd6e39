//! Signed tools: a publisher signs a tool's component digest and manifest with Ed25519
//! (`warden tool sign`), the signature travels beside them (`tool.sig`), and a deployment that
//! lists the publisher (`[publishers.NAME]`) checks it at every load: a signature that does
//! not verify is refused; where the deployment requires one (`[signing]`), a tool unsigned or
//! signed by a key it does not list is refused. No wasmtime here.

use crate::deployment::Deployment;
use crate::identity::keys;
use crate::manifest::Digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::Path;

/// The file beside `tool.toml` that holds the signature.
pub const SIGNATURE_FILE: &str = "tool.sig";
/// A signature file is small; a bigger one is refused unread.
const MAX_SIGNATURE_FILE: u64 = 4096;

/// `tool.sig`: who signed, and the signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSignature {
    /// `ed25519:<base64url>`.
    pub public_key: String,
    /// base64url of the Ed25519 signature of `message`.
    pub signature: String,
}

/// What is signed: the component's digest and the manifest's bytes, so that neither can
/// change without the signature failing (the manifest grants mounts, egress and credentials).
fn message(digest: &Digest, manifest: &[u8]) -> Vec<u8> {
    format!(
        "warden-tool-signature-v1\n{digest}\n{}",
        hex::encode(Sha256::digest(manifest))
    )
    .into_bytes()
}

/// Signs a tool whose manifest reads `manifest` (its digest pinned) and whose component has
/// `digest`.
pub fn sign(key: &SigningKey, digest: &Digest, manifest: &[u8]) -> ToolSignature {
    ToolSignature {
        public_key: keys::format_public(&key.verifying_key()),
        signature: B64.encode(key.sign(&message(digest, manifest)).to_bytes()),
    }
}

/// The signature beside a tool, if there is one; an unreadable one is an error.
pub fn read(dir: &Path) -> Result<Option<ToolSignature>, String> {
    use std::io::Read as _;
    let path = dir.join(SIGNATURE_FILE);
    // Not followed if a link, read only if a plain file, and never past the bound (a link to
    // /dev/zero or a FIFO would otherwise fill memory or hang the load).
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Err(format!("{SIGNATURE_FILE} is not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_SIGNATURE_FILE + 1).read_to_string(&mut text))
        .map_err(|e| format!("{SIGNATURE_FILE}: {e}"))?;
    if text.len() as u64 > MAX_SIGNATURE_FILE {
        return Err(format!(
            "{SIGNATURE_FILE} is larger than {MAX_SIGNATURE_FILE} bytes"
        ));
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{SIGNATURE_FILE} is not a tool signature: {e}"))
}

/// The key `signature` claims to be made with, in its one written form: what a publisher's
/// revocation names (unverified here: it serves to refuse a call before the tool loads).
pub fn signer(signature: &ToolSignature) -> Option<String> {
    keys::parse_public(&signature.public_key)
        .ok()
        .map(|key| keys::format_public(&key))
}

/// The deployment's name for the publisher whose key `signature` claims.
fn publisher_of(deployment: &Deployment, signature: &ToolSignature) -> Option<String> {
    let key = keys::parse_public(&signature.public_key).ok()?;
    deployment
        .publishers
        .iter()
        .find(|(_, p)| keys::parse_public(&p.public_key).ok() == Some(key))
        .map(|(name, _)| name.clone())
}

/// Checks the tool `name` (component `digest`, manifest bytes `manifest`, signature
/// `signature`) against what `deployment` requires. Returns its publisher, if it is signed
/// by one the deployment lists; the reason it is refused otherwise.
pub fn check(
    deployment: &Deployment,
    name: &str,
    digest: &Digest,
    manifest: &[u8],
    signature: Option<&ToolSignature>,
) -> Result<Option<String>, String> {
    let required = deployment.signing.signed_by.get(name);
    let needed = deployment.signing.required || required.is_some();
    let Some(signature) = signature else {
        return match needed {
            true => Err(format!(
                "`{name}` is not signed ({SIGNATURE_FILE}), and the deployment requires a \
                 signature by {}",
                required.map_or("a listed publisher".into(), |p| format!("`{p}`"))
            )),
            false => Ok(None),
        };
    };
    let key = keys::parse_public(&signature.public_key)
        .map_err(|e| format!("{SIGNATURE_FILE}: field `public_key`: {e}"))?;
    let bytes = B64
        .decode(&signature.signature)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or_else(|| {
            format!("{SIGNATURE_FILE}: field `signature` is not an Ed25519 signature")
        })?;
    // A signature that does not verify is a tool changed since it was signed: always refused.
    key.verify_strict(&message(digest, manifest), &bytes)
        .map_err(|_| {
            format!(
                "`{name}`'s signature does not verify: its manifest or component changed since \
                 it was signed"
            )
        })?;
    let publisher = publisher_of(deployment, signature);
    match (publisher, required) {
        (Some(p), Some(want)) if p != *want => Err(format!(
            "`{name}` is signed by `{p}`, and the deployment requires `{want}`"
        )),
        (None, _) if needed => Err(format!(
            "`{name}` is signed by {}, which no [publishers] entry lists",
            signature.public_key
        )),
        (publisher, _) => Ok(publisher),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(extra: &str) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::format_public(&SigningKey::from_bytes(&[3; 32]).verifying_key());
        let path = dir.path().join("warden.toml");
        std::fs::write(
            &path,
            format!("[publishers.acme]\npublic_key = \"{key}\"\n{extra}"),
        )
        .unwrap();
        Deployment::load(&path).unwrap()
    }

    #[test]
    fn signatures_bind_digest_and_manifest_to_a_listed_publisher() {
        let acme = SigningKey::from_bytes(&[3; 32]);
        let other = SigningKey::from_bytes(&[4; 32]);
        let digest = Digest::of(b"component");
        let manifest = b"name = \"t\"\n";
        let signed = sign(&acme, &digest, manifest);
        let open = deployment("");
        let check = |d: &Deployment, digest: &Digest, manifest: &[u8], s| {
            check(d, "t", digest, manifest, s)
        };
        assert_eq!(
            check(&open, &digest, manifest, Some(&signed)),
            Ok(Some("acme".into()))
        );
        assert_eq!(check(&open, &digest, manifest, None), Ok(None));
        // Changed after signing: refused, required or not.
        let err = check(&open, &Digest::of(b"other"), manifest, Some(&signed)).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        assert!(check(&open, &digest, b"name = \"u\"\n", Some(&signed)).is_err());
        // Signed by a key nobody listed: unsigned where nothing is required.
        let stranger = sign(&other, &digest, manifest);
        assert_eq!(check(&open, &digest, manifest, Some(&stranger)), Ok(None));

        let all = deployment("[signing]\nrequired = true\n");
        assert!(
            check(&all, &digest, manifest, None)
                .unwrap_err()
                .contains("not signed")
        );
        let err = check(&all, &digest, manifest, Some(&stranger)).unwrap_err();
        assert!(err.contains("no [publishers] entry"), "{err}");
        assert_eq!(
            check(&all, &digest, manifest, Some(&signed)),
            Ok(Some("acme".into()))
        );

        let named = deployment(&format!(
            "[publishers.other]\npublic_key = \"{}\"\n[signing.signed_by]\nt = \"acme\"\n",
            keys::format_public(&other.verifying_key())
        ));
        let err = check(&named, &digest, manifest, Some(&stranger)).unwrap_err();
        assert!(err.contains("requires `acme`"), "{err}");
        assert!(check(&named, &digest, manifest, Some(&signed)).is_ok());
        let mut forged = signed.clone();
        forged.signature = "AAAA".into();
        assert!(check(&named, &digest, manifest, Some(&forged)).is_err());
    }
}
