//! Where tools live and how they are registered. File handling and digest pinning only; the
//! engine-side checks (compiles, links, describes itself) are in `runtime.rs`.
//!
//! A tool is a directory with `tool.toml` and the component it names. Tools are found in the
//! deployment's `tool_dirs` and in `<state>/tools`, where `warden tool add` puts them.

use crate::deployment::Deployment;
use crate::manifest::{Digest, MANIFEST_FILE, Manifest};
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};

/// A tool on disk whose component matches its pinned digest.
#[derive(Debug, Clone)]
pub struct ToolFiles {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// `tool.toml` as read (what a signature covers).
    pub manifest_text: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
    /// `tool.sig`, if the tool is signed (checked when the tool loads).
    pub signature: Option<crate::signing::ToolSignature>,
}

/// Reads a tool directory and checks the component against the manifest's digest. With
/// `require_digest`, a manifest without a pinned digest is refused.
pub fn read_tool(
    dir: &Path,
    require_digest: bool,
) -> Result<ToolFiles, crate::manifest::ManifestError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let file = manifest_path.display().to_string();
    let error = |message: String| crate::manifest::ManifestError {
        file: file.clone(),
        message,
    };
    // Read once: what is parsed is what a signature is checked against.
    let manifest_text =
        std::fs::read_to_string(&manifest_path).map_err(|e| error(format!("cannot read: {e}")))?;
    let manifest = Manifest::parse(&manifest_text, &file)?;
    let signature =
        crate::signing::read(dir).map_err(|message| crate::manifest::ManifestError {
            file: dir
                .join(crate::signing::SIGNATURE_FILE)
                .display()
                .to_string(),
            message,
        })?;
    let component_path = dir.join(&manifest.component);
    let bytes = std::fs::read(&component_path).map_err(|e| {
        error(format!(
            "field `component`: cannot read {}: {e}",
            component_path.display()
        ))
    })?;
    let digest = Digest::of(&bytes);
    match &manifest.digest {
        Some(pinned) if *pinned != digest => {
            return Err(error(format!(
                "field `digest`: {} has digest {digest}, the manifest pins {pinned}",
                manifest.component
            )));
        }
        None if require_digest => {
            return Err(error(
                "field `digest` is missing: registered tools must pin their component's digest"
                    .into(),
            ));
        }
        _ => {}
    }
    Ok(ToolFiles {
        dir: dir.to_path_buf(),
        manifest,
        manifest_text,
        digest,
        bytes,
        signature,
    })
}

/// Every tool directory the deployment knows, in search order.
pub fn tool_dirs(deployment: &Deployment) -> Vec<PathBuf> {
    let mut roots = deployment.tool_dirs.clone();
    roots.push(deployment.registered_tools_dir());
    let mut dirs = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        // Hidden entries are Warden's own work in progress (a copy being staged, one set
        // aside): never tools.
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .filter(|p| p.join(MANIFEST_FILE).is_file())
            .collect();
        found.sort();
        dirs.extend(found);
    }
    dirs
}

/// Finds the directory of the tool called `name`.
pub fn find_tool(deployment: &Deployment, name: &str) -> Option<PathBuf> {
    tool_dirs(deployment)
        .into_iter()
        .find(|dir| Manifest::load(&dir.join(MANIFEST_FILE)).is_ok_and(|m| m.name == name))
}

/// Copies a verified tool into `<state>/tools/<name>` with its digest pinned. The copy is
/// assembled in a temporary directory and renamed into place, so a failure leaves nothing.
/// With `replace`, a tool of that name registered before is replaced; without, it is
/// refused. `record` is told whether a tool is replaced and its digest (if it could still be
/// read) once the copy is ready and before it takes the name: a change it cannot record is
/// not made.
pub fn install(
    deployment: &Deployment,
    tool: &ToolFiles,
    replace: bool,
    record: impl FnOnce(bool, Option<&Digest>) -> Result<()>,
) -> Result<PathBuf> {
    let name = &tool.manifest.name;
    let previous = match find_tool(deployment, name) {
        None => None,
        Some(existing) if !replace => bail!(
            "a tool named `{name}` is already registered at {} (`warden tool add --replace` \
             replaces it)",
            existing.display()
        ),
        Some(existing) => Some(registered(deployment, name, &existing)?),
    };
    // A signed manifest is copied as signed: one that leaves its digest to be pinned here
    // would no longer verify.
    if tool.signature.is_some() && tool.manifest.digest.is_none() {
        bail!("`{name}` is signed but its tool.toml pins no digest (`warden tool sign` pins it)");
    }
    let root = deployment.registered_tools_dir();
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let staging = root.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()));
    let result = (|| -> Result<()> {
        std::fs::create_dir(&staging)?;
        std::fs::write(staging.join(&tool.manifest.component), &tool.bytes)?;
        std::fs::write(
            staging.join(MANIFEST_FILE),
            pin_digest(&tool.manifest_text, &tool.digest),
        )?;
        if let Some(signature) = &tool.signature {
            std::fs::write(
                staging.join(crate::signing::SIGNATURE_FILE),
                serde_json::to_string_pretty(signature)?,
            )?;
        }
        // Re-read what was written: the copy must verify exactly like the original, its
        // signature included.
        let copy = read_tool(&staging, true)?;
        crate::signing::check(
            deployment,
            name,
            &copy.digest,
            copy.manifest_text.as_bytes(),
            copy.signature.as_ref(),
        )
        .map_err(anyhow::Error::msg)?;
        record(
            previous.is_some(),
            previous.as_ref().and_then(Option::as_ref),
        )?;
        match previous {
            Some(_) => swap(&root, name, &staging),
            None => Ok(std::fs::rename(&staging, root.join(name))?),
        }
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e.context(format!("installing `{name}` into {}", root.display())));
    }
    Ok(root.join(name))
}

/// Puts `staging` in the place of `<root>/<name>`: the old one moved aside, the new one
/// renamed in (the old one put back if that fails), then the old one deleted.
fn swap(root: &Path, name: &str, staging: &Path) -> Result<()> {
    let aside = set_aside(root, name)?;
    if let Err(e) = std::fs::rename(staging, root.join(name)) {
        let _ = std::fs::rename(&aside, root.join(name));
        return Err(e.into());
    }
    delete_aside(&aside);
    Ok(())
}

/// Removes the registered tool `name`, once `record` (told its digest, if it could still be
/// read) has recorded it. A tool in one of the deployment's `tool_dirs` is the operator's
/// directory, not Warden's: refused.
pub fn remove(
    deployment: &Deployment,
    name: &str,
    record: impl FnOnce(Option<&Digest>) -> Result<()>,
) -> Result<()> {
    let dir = find_tool(deployment, name)
        .with_context(|| format!("no tool named `{name}` (see `warden tool list`)"))?;
    let digest = registered(deployment, name, &dir)?;
    record(digest.as_ref())?;
    let aside = set_aside(&deployment.registered_tools_dir(), name)?;
    delete_aside(&aside);
    Ok(())
}

/// The digest of the registered tool `name` found at `dir` (none if it no longer reads), or
/// why Warden may not change it.
fn registered(deployment: &Deployment, name: &str, dir: &Path) -> Result<Option<Digest>> {
    if dir != deployment.registered_tools_dir().join(name) {
        bail!(
            "`{name}` is not a registered tool but the directory {} of `tool_dirs`: change or \
             remove that directory instead",
            dir.display()
        );
    }
    Ok(read_tool(dir, true).ok().map(|t| t.digest))
}

/// Moves `<root>/<name>` out of the way (one rename: the name is free at once, and
/// `tool_dirs` skips the hidden name it takes).
fn set_aside(root: &Path, name: &str) -> Result<PathBuf> {
    let aside = root.join(format!(".{name}.{}.old", uuid::Uuid::new_v4()));
    std::fs::rename(root.join(name), &aside)
        .with_context(|| format!("moving the registered `{name}` aside"))?;
    Ok(aside)
}

fn delete_aside(aside: &Path) {
    if let Err(e) = std::fs::remove_dir_all(aside) {
        tracing::warn!(dir = %aside.display(), "cannot delete a replaced or removed tool: {e}");
    }
}

/// Whether a manifest line sets the digest.
fn is_digest_line(line: &str) -> bool {
    line.trim_start()
        .strip_prefix("digest")
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

/// Adds `digest = "..."` to a manifest text that does not pin one yet.
pub fn pin_digest(manifest_text: &str, digest: &Digest) -> String {
    match manifest_text.lines().any(is_digest_line) {
        true => manifest_text.to_string(),
        false => set_digest(manifest_text, digest),
    }
}

/// The manifest text pinning `digest` (after `component`), whatever it pinned before (a
/// rebuilt tool, `warden tool build`).
pub fn set_digest(manifest_text: &str, digest: &Digest) -> String {
    let mut out = String::new();
    let mut pinned = false;
    for line in manifest_text.lines().filter(|l| !is_digest_line(l)) {
        out.push_str(line);
        out.push('\n');
        if !pinned && line.trim_start().starts_with("component") {
            out.push_str(&format!("digest = \"{digest}\"\n"));
            pinned = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_pinned_once_and_set_anew_after_a_rebuild() {
        let old = Digest::of(b"old");
        let new = Digest::of(b"new");
        let text = "name = \"t\"\ncomponent = \"t.wasm\"\nimpact = \"read\"\n";
        let pinned = pin_digest(text, &old);
        assert_eq!(
            pinned,
            format!(
                "name = \"t\"\ncomponent = \"t.wasm\"\ndigest = \"{old}\"\nimpact = \"read\"\n"
            )
        );
        // Pinning keeps what is pinned; setting replaces it, once.
        assert_eq!(pin_digest(&pinned, &new), pinned);
        let rebuilt = set_digest(&pinned, &new);
        assert_eq!(rebuilt, pinned.replace(old.as_str(), new.as_str()));
        assert_eq!(rebuilt.matches("digest").count(), 1);
    }
}
