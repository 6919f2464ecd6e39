//! The streaming scrubber fed any body in any chunking (`checks::scrubber`).
#![no_main]

// Each target runs some of the shared checks.
#[allow(dead_code)]
#[path = "../../../tests/properties/checks.rs"]
mod checks;

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    secrets: Vec<String>,
    body: Vec<u8>,
    cuts: Vec<u16>,
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    let cuts: Vec<usize> = input.cuts.iter().map(|&c| usize::from(c)).collect();
    checks::scrubber(&input.secrets, &input.body, &cuts);
});
