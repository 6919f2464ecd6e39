//! The deployment (`warden.toml`): where tools and state live, which agents exist, and which
//! host directories back the mounts that tools ask for. No wasmtime here.

use crate::manifest::{ManifestError, is_tool_name, toml_error};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEPLOYMENT_FILE: &str = "warden.toml";

#[derive(Debug, Clone)]
pub struct Deployment {
    /// The file this was read from (for messages).
    pub file: PathBuf,
    pub state_dir: PathBuf,
    /// Directories holding one sub-directory per tool (`<dir>/<tool>/tool.toml`).
    pub tool_dirs: Vec<PathBuf>,
    pub agents: BTreeMap<String, Agent>,
    pub mounts: Vec<MountBinding>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    #[serde(default)]
    pub description: String,
    /// Tools this agent may invoke (`"*"` for all). Empty: none (deny by default).
    #[serde(default)]
    pub tools: Vec<String>,
}

impl Agent {
    pub fn may_invoke(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t == "*" || t == tool)
    }
}

/// The host directory that backs `guest` for `tool`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountBinding {
    pub tool: String,
    pub guest: String,
    pub host: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    #[serde(default = "default_state")]
    state_dir: PathBuf,
    #[serde(default)]
    tool_dirs: Vec<PathBuf>,
    #[serde(default)]
    agents: BTreeMap<String, Agent>,
    #[serde(default)]
    mounts: Vec<MountBinding>,
}

fn default_state() -> PathBuf {
    PathBuf::from("state")
}

impl Deployment {
    pub fn load(path: &Path) -> Result<Deployment, ManifestError> {
        let file = path.display().to_string();
        let error = |message: String| ManifestError {
            file: file.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        let raw: RawDeployment = toml::from_str(&text).map_err(|e| error(toml_error(&text, &e)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };

        for name in raw.agents.keys() {
            if !is_tool_name(name) {
                return Err(error(format!(
                    "field `agents.{name}`: agent names are 1-64 lowercase letters, digits or '-'"
                )));
            }
        }
        for (i, m) in raw.mounts.iter().enumerate() {
            if !m.guest.starts_with('/') {
                return Err(error(format!(
                    "field `mounts[{i}].guest`: `{}` must be absolute",
                    m.guest
                )));
            }
            if raw.mounts[..i]
                .iter()
                .any(|o| o.tool == m.tool && o.guest == m.guest)
            {
                return Err(error(format!(
                    "field `mounts[{i}]`: {} {} is bound twice",
                    m.tool, m.guest
                )));
            }
        }
        Ok(Deployment {
            file: path.to_path_buf(),
            state_dir: base.join(raw.state_dir),
            tool_dirs: raw.tool_dirs.iter().map(|d| base.join(d)).collect(),
            agents: raw.agents,
            mounts: raw
                .mounts
                .into_iter()
                .map(|m| MountBinding {
                    host: base.join(&m.host),
                    ..m
                })
                .collect(),
        })
    }

    /// The host directory bound to `guest` for `tool`, if the deployment binds one.
    pub fn mount_for(&self, tool: &str, guest: &str) -> Option<&Path> {
        self.mounts
            .iter()
            .find(|m| m.tool == tool && m.guest == guest)
            .map(|m| m.host.as_path())
    }

    /// Where `warden tool add` puts registered tools.
    pub fn registered_tools_dir(&self) -> PathBuf {
        self.state_dir.join("tools")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir.join("cache")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_resolves_paths_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.toml");
        std::fs::write(
            &path,
            r#"
tool_dirs = ["tools"]
[agents.bot]
tools = ["hello"]
[[mounts]]
tool = "read-file"
guest = "/data"
host = "data"
"#,
        )
        .unwrap();
        let d = Deployment::load(&path).unwrap();
        assert_eq!(d.state_dir, dir.path().join("state"));
        assert_eq!(d.tool_dirs, vec![dir.path().join("tools")]);
        assert_eq!(
            d.mount_for("read-file", "/data"),
            Some(dir.path().join("data").as_path())
        );
        assert_eq!(d.mount_for("read-file", "/other"), None);
        assert!(d.agents["bot"].may_invoke("hello"));
        assert!(!d.agents["bot"].may_invoke("write-note"));
    }

    #[test]
    fn unknown_fields_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.toml");
        std::fs::write(&path, "tool_dir = [\"tools\"]\n").unwrap();
        let e = Deployment::load(&path).unwrap_err().to_string();
        assert!(e.contains("warden.toml") && e.contains("tool_dir"), "{e}");
    }
}
