//! Filesystem grants: a tool sees exactly the mounts its manifest asks for, backed by the
//! host directories the deployment binds. No wasmtime here.

use crate::deployment::Deployment;
use crate::manifest::{Manifest, MountMode};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize)]
pub struct Mount {
    pub guest: String,
    pub host: PathBuf,
    pub mode: MountMode,
}

/// The intersection of what the manifest asks for and what the deployment binds. A requested
/// mount with no binding is an error naming both, rather than a tool that fails obscurely.
pub fn grant_mounts(manifest: &Manifest, deployment: &Deployment) -> Result<Vec<Mount>, String> {
    manifest
        .fs
        .iter()
        .map(|request| {
            let host = deployment.mount_for(&manifest.name, &request.guest).ok_or_else(|| {
                format!(
                    "{}: tool `{}` asks for mount `{}` but no [[mounts]] entry binds it to a host directory",
                    deployment.file.display(),
                    manifest.name,
                    request.guest
                )
            })?;
            if !host.is_dir() {
                return Err(format!(
                    "{}: mount `{}` of tool `{}`: host directory {} does not exist",
                    deployment.file.display(),
                    request.guest,
                    manifest.name,
                    host.display()
                ));
            }
            Ok(Mount { guest: request.guest.clone(), host: host.to_path_buf(), mode: request.mode })
        })
        .collect()
}
