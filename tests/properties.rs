//! Property tests: the properties of `properties/checks.rs` on generated input, on every
//! `cargo test`. The cargo-fuzz targets in `runtime/fuzz/` check the same properties,
//! coverage-guided, for as long as one lets them run (README, "Fuzzing").

#[path = "properties/checks.rs"]
mod checks;

use proptest::prelude::*;

/// Methods as tools write them, right and wrong.
const METHOD: &str = "(GET|get|Post|DELETE|HEAD|options|PATCH|put|CONNECT|TRACE|G ET|)";
/// URLs with the parts attackers play with: odd hosts and ports, escapes of every kind,
/// dot segments, doubled slashes, parameters, backslashes, user info, bare queries.
const URL: &str = "(https?|HTTP|ftp)://([a-zA-Z0-9.\\-]{1,20}|\\[[0-9a-f:.]{2,20}\\]|[0-9.]{7,15}|user@[a-z.]{1,10})(:[0-9]{0,6})?(/([a-zA-Z0-9._~\\-]|%[0-9a-fA-F]{2}|%[0-9a-fA-F]|[;\\\\:@!$&'()*+,=]|\\.\\.?){0,8}){0,6}(\\?[ -~]{0,12})?";
/// Rules as manifests write them.
const RULE: &str =
    "https?://(\\*\\.)?[a-z.]{1,12}(:[0-9]{1,5})?(/[a-zA-Z0-9._~%\\-]{0,6}){0,3}(/\\*)?";
/// Paths, with every spelling trick.
const PATH: &str = "(/([a-zA-Z0-9._~\\-]|%[0-9a-fA-F]{2}|[:@!$&'()*+,=]){0,8}){1,6}/?";
/// Tokens: three dot-separated base64url parts, or anything.
const TOKEN: &str =
    "([A-Za-z0-9_\\-]{0,40}\\.[A-Za-z0-9_\\-]{0,60}\\.[A-Za-z0-9_\\-]{0,90})|[ -~]{0,80}";
/// Manifests: TOML-ish lines with the keys a manifest has.
const MANIFEST: &str = "((\\[tool\\]|\\[limits\\]|\\[\\[egress\\]\\]|\\[\\[mounts\\]\\]|name = \"[a-z\\-]{0,10}\"|kind = \"(function|command|x)\"|memory = \"[0-9]{1,12}(B|KiB|MiB|GiB|x)?\"|timeout = \"[0-9]{1,12}(ms|s|m|h|x)?\"|cpu = \"[0-9]{1,6}(ms|s|m)\"|disk = \"[0-9]{1,6}(KiB|MiB|GiB)\"|url = \"[ -~]{0,30}\"|methods = \\[\"[A-Za-z]{0,6}\"\\]|host = \"[ -~]{0,20}\"|guest = \"[ -~]{0,20}\"|mode = \"(ro|rw|x)\"|component = \"[a-z./]{0,20}\"|[ -~]{0,20})\n){0,12}";
/// Deployments: TOML-ish lines with the keys a deployment has.
const DEPLOYMENT: &str = "((\\[state\\]|\\[audit\\]|\\[agents\\.[a-z]{1,6}\\]|\\[credentials\\.[a-z]{1,6}\\]|\\[\\[mounts\\]\\]|tool_dirs = \\[\"[a-z./]{0,12}\"\\]|dir = \"[a-z./]{0,12}\"|policy_dir = \"[a-z./]{0,12}\"|public_key = \"[ -~]{0,50}\"|kind = \"(static|minted|x)\"|audience = \"[ -~]{0,30}\"|host = \"[ -~]{0,20}\"|ttl = \"[0-9]{1,20}(s|m|h|d)?\"|[ -~]{0,20})\n){0,12}";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn egress_targets_have_one_normal_form(
        method in METHOD,
        uri in URL,
        rule in RULE,
        rule_methods in prop::collection::vec(METHOD, 0..3),
    ) {
        checks::egress(&method, &uri, &rule, &rule_methods);
    }

    #[test]
    fn every_spelling_of_a_path_is_decided_as_one(
        path in PATH,
        choices in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        checks::path_spellings(&path, &choices);
    }

    #[test]
    fn no_chunking_lets_a_secret_through(
        secrets in prop::collection::vec("[A-Za-z0-9._\\-]{6,40}", 0..4),
        body in prop::collection::vec(any::<u8>(), 0..300),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        checks::scrubber(&secrets, &body, &cuts);
    }

    #[test]
    fn any_manifest_text_is_a_manifest_or_one_error_line(text in MANIFEST) {
        checks::manifest(&text);
    }

    #[test]
    fn any_token_text_parses_or_is_refused_and_none_verifies_without_its_key(text in TOKEN) {
        checks::token(&text);
    }
}

proptest! {
    // Each case writes a file and loads a deployment: fewer, still every `cargo test`.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_deployment_text_is_a_deployment_or_one_error_line(text in DEPLOYMENT) {
        checks::deployment(&text);
    }
}

/// Inputs that once broke these properties, or that the fuzzers should keep trying.
#[test]
fn known_hostile_inputs_hold() {
    checks::egress("GET", "http://127.0.0.1:9/?x", "http://127.0.0.1/*", &[]);
    checks::egress(
        "get",
        "https://api.example.com/v1/%61dmin",
        "https://api.example.com/v1/admin",
        &[],
    );
    checks::egress(
        "GET",
        "https://API.example.com.:443/v1//a",
        "https://api.example.com/*",
        &[],
    );
    checks::egress(
        "GET",
        "http://[::ffff:169.254.169.254]/",
        "http://*.example.com/*",
        &[],
    );
    checks::path_spellings("/v1/admin/", &[0, 1, 2]);
    checks::scrubber(&["sk-live-0123456789abcdef".into()], b"x", &[1, 5, 13]);
    // A secret spelled like part of the marker (found by the fuzzer).
    checks::scrubber(&["REDACTED".into()], b"[REDACTED]", &[3]);
    checks::manifest("[tool]\nname = \"\u{202e}x\"\n");
    checks::token("e30.e30.");
}
