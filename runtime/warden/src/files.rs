//! Files Warden writes for itself (compiled components, signing keys): written whole or not
//! at all, so that a process reading one at the same time never sees half of it.

use anyhow::{Context as _, Result};
use std::path::Path;

/// Writes through a temporary file and a rename, so readers never see half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .context("path has no file name")?
            .to_string_lossy(),
        uuid::Uuid::new_v4()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}
