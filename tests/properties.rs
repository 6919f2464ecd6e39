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

/// A runtime with an agent and an external authorization server, for the OAuth properties.
struct OAuth {
    runtime: warden::runtime::Runtime,
    endpoints: warden::identity::oauth::Endpoints,
    _dir: tempfile::TempDir,
}

fn oauth() -> &'static OAuth {
    static OAUTH: std::sync::OnceLock<OAuth> = std::sync::OnceLock::new();
    OAUTH.get_or_init(|| {
        use warden::identity::{jwks::KeySet, keys};
        let dir = tempfile::tempdir().unwrap();
        let key = keys::generate().verifying_key();
        let jwks = KeySet::new(vec![(Some("k".into()), key)]).to_json();
        std::fs::write(dir.path().join("idp.json"), jwks.to_string()).unwrap();
        let file = dir.path().join("warden.toml");
        let text = format!(
            "[agents.bot]\npublic_key = \"{}\"\n[oauth.authorization_server]\n\
             issuer = \"https://idp.example\"\njwks = \"idp.json\"\nagents = [\"bot\"]\n",
            keys::format_public(&key)
        );
        std::fs::write(&file, text).unwrap();
        let runtime =
            warden::runtime::Runtime::new(warden::Deployment::load(&file).unwrap()).unwrap();
        let endpoints = warden::identity::oauth::Endpoints {
            issuer: "http://127.0.0.1:1".into(),
            resource: "http://127.0.0.1:1/mcp".into(),
        };
        OAuth {
            runtime,
            endpoints,
            _dir: dir,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The token endpoint and the bearer check, on what an agent or a client can send: a
    /// refusal, never a token, a bearer or a panic, whichever issuer a token claims.
    #[test]
    fn no_form_or_bearer_nobodys_key_signed_gets_through(
        grant in "(client_credentials|urn:ietf:params:oauth:grant-type:token-exchange|[ -~]{0,12})",
        assertion in TOKEN,
        subject in TOKEN,
        kid in "(k|[ -~]{0,6})",
        typ in "(at\\+jwt|AT\\+JWT|application/at\\+jwt|JWT|[ -~]{0,8})",
        iss in "(https://idp\\.example|http://127\\.0\\.0\\.1:1|[ -~]{0,10})",
        claims in "[ -~]{0,80}",
        signature in "[A-Za-z0-9_\\-]{0,90}",
    ) {
        use base64::Engine as _;
        let o = oauth();
        let request = warden::identity::oauth::TokenRequest {
            grant_type: Some(grant),
            client_id: Some("bot".into()),
            client_assertion_type: Some(warden::identity::oauth::CLIENT_ASSERTION_TYPE.into()),
            client_assertion: Some(assertion.clone()),
            resource: Some(o.endpoints.resource.clone()),
            scope: None,
            subject_token: Some(subject),
            subject_token_type: Some(warden::identity::oauth::JWT_TOKEN_TYPE.into()),
            actor_token: Some(assertion.clone()),
            actor_token_type: Some(warden::identity::oauth::JWT_TOKEN_TYPE.into()),
        };
        prop_assert!(o.runtime.issue_access_token(&request, &o.endpoints).is_err());
        let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let header = serde_json::json!({ "alg": "EdDSA", "typ": typ, "kid": kid });
        let body = serde_json::json!({
            "iss": iss, "sub": "bot", "client_id": "bot", "aud": o.endpoints.resource,
            "iat": 0, "exp": i64::MAX, "jti": "j", "agent_key": "", "junk": claims,
        });
        let shaped = format!("{}.{}.{signature}", b64(&header), b64(&body));
        for token in [shaped.as_str(), assertion.as_str()] {
            prop_assert!(o.runtime.authenticate_access_token(token, &o.endpoints).is_err());
        }
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
