//! Filesystem grants: a tool's mounts (what its manifest asks for, backed by the host
//! directories the deployment binds: `Deployment::grant_mounts`); what a call may add to them (its disk quota); and
//! when two host paths overlap. No wasmtime here (the `wasi:filesystem` host that enforces the
//! quota is `sandbox/filesystem.rs`).

use crate::manifest::MountMode;
use crate::units::ByteSize;
use serde::Serialize;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Clone, Serialize)]
pub struct Mount {
    pub guest: String,
    pub host: PathBuf,
    pub mode: MountMode,
}

/// Every file or directory a tool creates counts as one filesystem block, so that a tool
/// cannot exhaust the host's inodes with empty files.
pub const ENTRY_COST: u64 = 4096;

/// What one call may add to its read-write mounts, and what it has added so far. Cloned into
/// the call's filesystem host and every output stream it opens on a file, and kept by the
/// pipeline to report a quota that was hit. Counts only additions (bytes written past a
/// file's end, files and directories created): removing or truncating gives nothing back, so
/// the count bounds what the mounts can grow by during the call.
#[derive(Debug, Clone)]
pub struct DiskQuota(Arc<QuotaState>);

#[derive(Debug)]
struct QuotaState {
    limit: u64,
    used: AtomicU64,
    refused: AtomicBool,
}

/// An addition the quota refused. The tool sees `insufficient-space`.
#[derive(Debug, thiserror::Error)]
#[error("the disk quota of {limit} on the read-write mounts is used up")]
pub struct DiskFull {
    pub limit: ByteSize,
}

impl DiskQuota {
    pub fn new(limit: ByteSize) -> DiskQuota {
        DiskQuota(Arc::new(QuotaState {
            limit: limit.0,
            used: AtomicU64::new(0),
            refused: AtomicBool::new(false),
        }))
    }

    /// Reserves `bytes` before they are added; refuses if that would pass the quota (the
    /// whole addition: nothing of a refused write may reach the disk).
    pub fn charge(&self, bytes: u64) -> Result<(), DiskFull> {
        let limit = self.0.limit;
        let reserved = self
            .0
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&total| total <= limit)
            });
        reserved.map(|_| ()).map_err(|_| {
            self.0.refused.store(true, Ordering::SeqCst);
            DiskFull {
                limit: ByteSize(limit),
            }
        })
    }

    /// Gives back the part of a reservation that the operation did not add after all.
    pub fn release(&self, bytes: u64) {
        // The closure always returns Some, so this cannot fail.
        let _ = self
            .0
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    pub fn used(&self) -> u64 {
        self.0.used.load(Ordering::SeqCst)
    }

    pub fn limit(&self) -> ByteSize {
        ByteSize(self.0.limit)
    }

    /// Whether the call tried to add more than its quota.
    pub fn exhausted(&self) -> bool {
        self.0.refused.load(Ordering::SeqCst)
    }
}

/// How much writing `len` bytes at `offset` adds to a file of `size` bytes (a write far past
/// the end adds the hole too: a sparse file still counts at its full length).
pub fn growth(size: u64, offset: u64, len: u64) -> u64 {
    offset.saturating_add(len).saturating_sub(size)
}

/// `path` with every symlink resolved, even when it does not exist yet (a state directory
/// created on first use): the longest existing ancestor is canonicalised (a dangling symlink
/// is followed to its target) and the rest, which contains no symlink because it does not
/// exist, is appended with `.` and `..` applied.
pub fn resolved(path: &Path) -> std::io::Result<PathBuf> {
    resolved_within(path, 40)
}

fn resolved_within(path: &Path, links_left: u32) -> std::io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    let mut real = loop {
        match existing.canonicalize() {
            Ok(real) => break real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (Some(parent), Some(last)) =
                    (existing.parent(), existing.components().next_back())
                else {
                    return Err(e);
                };
                if existing.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
                    // A link to where something will be: where it will be.
                    if links_left == 0 {
                        return Err(std::io::Error::other("too many levels of symbolic links"));
                    }
                    let target = parent.join(existing.read_link()?);
                    break resolved_within(&target, links_left - 1)?;
                }
                missing.push(last);
                existing = parent;
            }
            Err(e) => return Err(e),
        }
    };
    for part in missing.iter().rev() {
        match part {
            Component::ParentDir => {
                real.pop();
            }
            Component::CurDir => {}
            other => real.push(other),
        }
    }
    Ok(real)
}

/// Whether one of two resolved paths is inside the other (or both are the same).
pub fn overlap(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_refuses_a_whole_addition_that_would_pass_it() {
        let quota = DiskQuota::new(ByteSize(10));
        assert!(quota.charge(6).is_ok());
        assert!(!quota.exhausted());
        let refused = quota.charge(5).unwrap_err();
        assert_eq!(refused.limit, ByteSize(10));
        assert_eq!(quota.used(), 6, "a refused charge reserves nothing");
        assert!(quota.exhausted());
        assert!(quota.charge(4).is_ok(), "what is left can still be used");
        assert!(quota.charge(1).is_err());
        assert!(quota.charge(0).is_ok());
        assert!(quota.charge(u64::MAX).is_err(), "no overflow");
    }

    #[test]
    fn released_reservations_can_be_used_again() {
        let quota = DiskQuota::new(ByteSize(10));
        quota.charge(10).unwrap();
        quota.release(4);
        assert_eq!(quota.used(), 6);
        quota.release(100);
        assert_eq!(quota.used(), 0, "never below zero");
        let shared = quota.clone();
        shared.charge(7).unwrap();
        assert_eq!(quota.used(), 7, "clones share one account");
    }

    #[test]
    fn growth_counts_what_lies_past_the_end() {
        assert_eq!(growth(0, 0, 100), 100);
        assert_eq!(growth(100, 0, 100), 0, "overwriting adds nothing");
        assert_eq!(growth(100, 50, 100), 50);
        assert_eq!(
            growth(100, 1 << 30, 1),
            (1 << 30) + 1 - 100,
            "the hole counts"
        );
        assert_eq!(growth(0, u64::MAX, 10), u64::MAX, "no overflow");
    }

    #[test]
    fn overlap_is_containment_either_way_by_whole_components() {
        let p = Path::new;
        assert!(overlap(p("/srv/state"), p("/srv/state")));
        assert!(overlap(p("/srv/state/cache"), p("/srv/state")));
        assert!(overlap(p("/srv"), p("/srv/state/keys")));
        assert!(!overlap(p("/srv/state2"), p("/srv/state")));
        assert!(!overlap(p("/srv/data"), p("/srv/state")));
    }

    #[test]
    fn resolved_follows_symlinks_even_below_paths_that_do_not_exist_yet() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("link")).unwrap();
        assert_eq!(resolved(&root.join("link")).unwrap(), root.join("real"));
        assert_eq!(
            resolved(&root.join("link/not-yet/../state")).unwrap(),
            root.join("real/state")
        );
        assert_eq!(
            resolved(&root.join("real/./a/b")).unwrap(),
            root.join("real/a/b")
        );
        std::os::unix::fs::symlink("real/later", root.join("dangling")).unwrap();
        assert_eq!(
            resolved(&root.join("dangling/x")).unwrap(),
            root.join("real/later/x")
        );
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(resolved(&root.join("loop")).is_err());
    }
}
