//! `checks::manifest` on any text.
#![no_main]

// Each target runs some of the shared checks.
#[allow(dead_code)]
#[path = "../../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|text: &str| checks::manifest(text));
