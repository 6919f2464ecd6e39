//! Faults that Warden's own tests inject to prove that `warden drill isolation` can fail: each
//! switches one control off. They exist only with the `fault-injection` feature, which the
//! test build turns on (a dev-dependency of `warden-cli`) and a release build refuses to
//! compile; without it `injected` is a constant `false` and the checks compile away.
//!
//! With the feature, `WARDEN_INJECT_FAULTS` (comma-separated names) switches them on for a
//! whole process, so that a test can run the real `warden` binary with one control off.

#[cfg(all(feature = "fault-injection", not(debug_assertions)))]
compile_error!(
    "the `fault-injection` feature switches controls off: it is for Warden's own debug test builds, never a release"
);

/// One control switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Responses reach the tool unscrubbed.
    NoScrubbing,
    /// Read-only mounts are opened read-write.
    ReadOnlyMountsWritable,
    /// Any request a tool sends is taken as matching its first egress rule.
    NoEgressRuleCheck,
    /// The memory limit is not enforced.
    NoMemoryLimit,
}

impl Fault {
    pub const ALL: [Fault; 4] = [
        Fault::NoScrubbing,
        Fault::ReadOnlyMountsWritable,
        Fault::NoEgressRuleCheck,
        Fault::NoMemoryLimit,
    ];

    /// Its name in `WARDEN_INJECT_FAULTS`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::NoScrubbing => "no-scrubbing",
            Fault::ReadOnlyMountsWritable => "read-only-mounts-writable",
            Fault::NoEgressRuleCheck => "no-egress-rule-check",
            Fault::NoMemoryLimit => "no-memory-limit",
        }
    }
}

/// Whether `fault` is switched on in this process.
#[cfg(feature = "fault-injection")]
pub fn injected(fault: Fault) -> bool {
    static ON: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        std::env::var("WARDEN_INJECT_FAULTS")
            .unwrap_or_default()
            .split(',')
            .map(|name| name.trim().to_string())
            .collect()
    });
    ON.iter().any(|name| name == fault.name())
}

/// Whether `fault` is switched on in this process: never, in a build without the feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn injected(_: Fault) -> bool {
    false
}
