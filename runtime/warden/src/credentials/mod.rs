//! Secrets and credentials. Secrets stay in the host: a tool never holds one. Per request,
//! the egress mediator adds the credential its rule names — a token minted for this call and
//! audience, or a static key — after the rule and the address checks passed, and scrubs any
//! echo of it from the response before the tool reads it.

pub mod inject;
pub mod mint;
pub mod scrub;

use crate::deployment::{CredentialDef, CredentialKind, Deployment, SecretSource};
use crate::manifest::Manifest;
use crate::sandbox::egress::Origin;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A secret value. Redacts itself in `Debug` and `Display`; read it with `expose`.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Reads a secret from where the deployment says it is. Errors never contain the value.
pub fn load_secret(name: &str, source: &SecretSource) -> Result<Secret, String> {
    let value = match source {
        SecretSource::File(path) => {
            crate::identity::keys::check_owner_only(path)
                .map_err(|e| format!("secret `{name}`: {e:#}"))?;
            std::fs::read_to_string(path)
                .map_err(|e| format!("secret `{name}`: cannot read {}: {e}", path.display()))?
        }
        SecretSource::Env(var) => std::env::var(var)
            .map_err(|_| format!("secret `{name}`: environment variable {var} is not set"))?,
    };
    let value = value.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(format!("secret `{name}` is empty"));
    }
    Ok(Secret::new(value))
}

/// A credential a tool's rule may carry, with everything needed to produce it.
#[derive(Debug)]
pub struct Granted {
    pub name: String,
    pub kind: CredentialKind,
    pub audience: String,
    pub origin: Origin,
    pub lifetime: std::time::Duration,
    pub scope: String,
    pub header: http::HeaderName,
    pub prefix: String,
    /// Static credentials only.
    pub secret: Option<Secret>,
}

/// The credentials `manifest`'s egress rules name, checked against the deployment: each must
/// be defined, granted to this tool, and bound to exactly the rule's origin.
pub fn grant(
    manifest: &Manifest,
    deployment: &Deployment,
) -> Result<HashMap<String, Arc<Granted>>, String> {
    let mut granted = HashMap::new();
    for (i, rule) in manifest.egress.iter().enumerate() {
        let Some(name) = &rule.credential else {
            continue;
        };
        let at = format!("tool `{}` egress[{i}] ({})", manifest.name, rule.url);
        let def: &CredentialDef = deployment.credentials.get(name).ok_or_else(|| {
            format!(
                "{at}: credential `{name}` is not defined in {}",
                deployment.file.display()
            )
        })?;
        if !def.tools.iter().any(|t| t == &manifest.name) {
            return Err(format!(
                "{at}: credential `{name}` is not granted to this tool (credentials.{name}.tools)"
            ));
        }
        let origin =
            Origin::parse(&def.audience).map_err(|e| format!("credential `{name}`: {e}"))?;
        if rule.origin().as_ref() != Some(&origin) {
            return Err(format!(
                "{at}: credential `{name}` may only be sent to {}",
                def.audience
            ));
        }
        let secret = match def.kind {
            CredentialKind::Static => {
                let secret_name = def.secret.as_deref().unwrap_or_default();
                let source = deployment
                    .secrets
                    .get(secret_name)
                    .ok_or_else(|| format!("credential `{name}`: no secret `{secret_name}`"))?;
                Some(load_secret(secret_name, source)?)
            }
            CredentialKind::Minted => None,
        };
        granted.insert(
            name.clone(),
            Arc::new(Granted {
                name: name.clone(),
                kind: def.kind,
                audience: def.audience.clone(),
                origin,
                lifetime: def.lifetime,
                scope: def.scope.clone().unwrap_or_else(|| manifest.name.clone()),
                header: http::HeaderName::from_bytes(def.header.as_bytes())
                    .map_err(|e| e.to_string())?,
                prefix: def.prefix.clone(),
                secret,
            }),
        );
    }
    Ok(granted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_redact_themselves() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "[REDACTED]");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secret_files_must_be_owner_only_and_errors_do_not_echo_values() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "hunter2\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_secret("k", &SecretSource::File(path.clone())).unwrap_err();
        assert!(e.contains("0644") && !e.contains("hunter2"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            load_secret("k", &SecretSource::File(path))
                .unwrap()
                .expose(),
            "hunter2"
        );
    }
}
