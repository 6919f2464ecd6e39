//! What several hostile tools need: the directory a mount is preopened as.
use wasip2::filesystem::types::Descriptor;

/// The preopen of the guest path `mount`.
pub fn preopen(mount: &str) -> Result<Descriptor, String> {
    wasip2::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == mount)
        .map(|(dir, _)| dir)
        .ok_or_else(|| format!("{mount} is not mounted"))
}
