//! Egress target parsing, normalisation and rule matching (`checks::egress`), and path
//! spellings (`checks::path_spellings`).
#![no_main]

// Each target runs some of the shared checks.
#[allow(dead_code)]
#[path = "../../../tests/properties/checks.rs"]
mod checks;

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    method: String,
    uri: String,
    rule: String,
    rule_methods: Vec<String>,
    choices: Vec<u8>,
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    checks::egress(&input.method, &input.uri, &input.rule, &input.rule_methods);
    let path = input.uri.split('?').next().unwrap_or_default();
    checks::path_spellings(path, &input.choices);
});
