//! Faults that Warden's own tests inject to prove that `warden drill isolation` can fail: each
//! switches one control off. They exist only in a debug build with the `fault-injection`
//! feature, which the test build turns on (a dev-dependency of `warden-cli`); in any other
//! build `injected` is a constant `false` and the checks compile away, so no release build can
//! switch a control off.
//!
//! With them, `WARDEN_INJECT_FAULTS` (comma-separated names) switches them on for a whole
//! process, so that a test can run the real `warden` binary with one control off; the process
//! says so on stderr. (`cargo test` leaves such a binary in `target/debug/`; `cargo build`
//! makes a normal one again.)

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
#[cfg(all(feature = "fault-injection", debug_assertions))]
pub fn injected(fault: Fault) -> bool {
    static ON: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let on: Vec<String> = std::env::var("WARDEN_INJECT_FAULTS")
            .unwrap_or_default()
            .split(',')
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .collect();
        if !on.is_empty() {
            // Loud, so that a test build's binary is never mistaken for a real one.
            eprintln!(
                "warden: a test build with controls switched off: {}",
                on.join(", ")
            );
        }
        on
    });
    ON.iter().any(|name| name == fault.name())
}

/// Whether `fault` is switched on in this process: never, in a release build or one without
/// the feature.
#[cfg(not(all(feature = "fault-injection", debug_assertions)))]
#[inline(always)]
pub fn injected(_: Fault) -> bool {
    false
}
