//! The properties that hold for any input a guest, an upstream, an agent or an operator can
//! hand Warden's parsers and matchers. One definition, two drivers: `tests/properties.rs`
//! runs them under proptest on every `cargo test`, and the cargo-fuzz targets in
//! `runtime/fuzz/` run them under libFuzzer, coverage-guided. Each function panics when its
//! property fails.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use warden::credentials::Secret;
use warden::credentials::scrub::{FRAGMENT, MARKER, SecretSet};
use warden::identity::{jwks::KeySet, jwt, keys};
use warden::sandbox::egress::{EgressRule, Target, match_rule, normalize_path};

/// A request line and a rule: no input panics; the target a request is decided on is a fixed
/// point (what is recorded and what is sent parse back to the same target, which the rules
/// decide on the same way); and its path has no second meaning left in it.
pub fn egress(method: &str, uri: &str, rule: &str, rule_methods: &[String]) {
    let rules: Vec<EgressRule> = [
        EgressRule::new("https://api.example.com/v1/*", &["GET".into()], false, None),
        EgressRule::new(rule, rule_methods, false, None),
    ]
    .into_iter()
    .flatten()
    .collect();
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return;
    };
    let Ok(target) = Target::from_uri(method, &uri) else {
        return;
    };
    let decided = match_rule(&rules, &target).map(|r| r.url.clone());
    // Records leave the query out (it may carry data).
    let recorded = reparse(&target, &target.display());
    let unqueried = Target {
        query: None,
        ..target.clone()
    };
    assert_eq!(
        recorded,
        Some(unqueried),
        "the recorded form is not a fixed point"
    );
    let sent = format!(
        "{}://{}{}",
        target.scheme,
        target.authority(),
        target.path_and_query()
    );
    let sent = reparse(&target, &sent);
    assert_eq!(
        sent.as_ref(),
        Some(&target),
        "the sent form is not a fixed point"
    );
    let again = sent.map(|t| match_rule(&rules, &t).map(|r| r.url.clone()));
    assert_eq!(again, Some(decided), "the sent form is decided differently");
    normal_path(&target.path);
}

fn reparse(target: &Target, url: &str) -> Option<Target> {
    let uri = url.parse::<http::Uri>().ok()?;
    Target::from_uri(&target.method, &uri).ok()
}

/// A path in normal form has one meaning: no dot segments, no empty segment but a trailing
/// one, no parameters or backslashes, no escaped separator, escapes in uppercase.
fn normal_path(path: &str) {
    assert!(path.starts_with('/'), "{path:?} does not start with /");
    let inner = path.strip_suffix('/').unwrap_or(path);
    assert!(
        !inner.get(1..).unwrap_or("").contains("//"),
        "{path:?} has an empty segment"
    );
    for segment in path.split('/') {
        assert!(
            segment != "." && segment != "..",
            "{path:?} has a dot segment"
        );
    }
    assert!(!path.contains(';') && !path.contains('\\'), "{path:?}");
    let upper = path.to_ascii_uppercase();
    for escaped in ["%2F", "%5C", "%3B", "%25"] {
        assert!(!upper.contains(escaped), "{path:?} keeps {escaped}");
    }
    for (i, _) in path.match_indices('%') {
        let hex = path.get(i + 1..i + 3).unwrap_or("");
        assert_eq!(
            hex,
            hex.to_ascii_uppercase(),
            "{path:?} has a lowercase escape"
        );
    }
}

/// Any way of writing a path that servers read as the same path (unreserved bytes escaped in
/// either case, escapes in lowercase, `/` repeated) normalises to the same form, so that a
/// rule or policy decided on one spelling holds for all of them. `choices` picks the spelling.
pub fn path_spellings(path: &str, choices: &[u8]) {
    let Ok(normal) = normalize_path(path) else {
        return;
    };
    let mut choice = choices.iter().copied().cycle();
    let mut pick = || choice.next().unwrap_or(0);
    let mut spelled = String::new();
    let mut bytes = normal.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                // An escape the normal form kept: its case does not matter.
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                spelled.push('%');
                spelled.push_str(&if pick() % 2 == 0 {
                    hex.to_ascii_lowercase()
                } else {
                    hex
                });
            }
            b'/' if pick() % 3 == 0 => spelled.push_str("//"),
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => match pick() % 3 {
                0 => spelled.push_str(&format!("%{b:02X}")),
                1 => spelled.push_str(&format!("%{b:02x}")),
                _ => spelled.push(char::from(b)),
            },
            b => spelled.push(char::from(b)),
        }
    }
    assert_eq!(
        normalize_path(&spelled).as_deref(),
        Ok(normal.as_str()),
        "{spelled:?} is another spelling of {normal:?}"
    );
}

/// The streaming scrubber on a body that holds each secret raw, in base64 and in hex, cut into
/// chunks anywhere: no run of `FRAGMENT` bytes of any of those forms survives (a secret
/// shorter than that survives in none of them whole), and the output does not depend on the
/// chunking. Secrets are tokens: at least 8 bytes of `[A-Za-z0-9._-]`.
pub fn scrubber(secrets: &[String], body: &[u8], cuts: &[usize]) {
    let set = SecretSet::new();
    let secrets: Vec<&String> = secrets
        .iter()
        .filter(|s| {
            s.len() >= 8
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .take(4)
        .collect();
    let mut body = body.to_vec();
    let mut forms = Vec::new();
    for secret in &secrets {
        set.add(&Secret::new(secret.as_str()));
        let raw = secret.as_bytes();
        let base64 = STANDARD_NO_PAD.encode(raw);
        // The characters that depend on the secret's bytes alone.
        let base64 = base64.as_bytes()[..8 * raw.len() / 6].to_vec();
        for form in [raw.to_vec(), base64, hex::encode(raw).into_bytes()] {
            body.extend_from_slice(&form);
            body.push(b' ');
            forms.push(form);
        }
    }
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut scrubber = set.scrubber();
    let mut out = Vec::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([body.len()]) {
        out.extend(scrubber.feed(&body[from..cut]));
        from = cut;
    }
    out.extend(scrubber.finish());
    // Between the markers: a secret may be spelled like part of the marker itself, and no form
    // has the marker's brackets, so no echo spans one.
    let pieces: Vec<&[u8]> = split(&out, MARKER);
    for form in &forms {
        let run = form.len().min(FRAGMENT);
        assert!(
            !form
                .windows(run)
                .any(|w| pieces.iter().any(|p| p.windows(run).any(|o| o == w))),
            "part of {:?} survived in {:?}",
            String::from_utf8_lossy(form),
            String::from_utf8_lossy(&out)
        );
    }
    assert_eq!(
        out,
        set.scrub_all(&body).0,
        "the chunking changed the result"
    );
}

fn split<'a>(mut text: &'a [u8], separator: &[u8]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    while let Some(at) = text.windows(separator.len()).position(|w| w == separator) {
        pieces.push(&text[..at]);
        text = &text[at + separator.len()..];
    }
    pieces.push(text);
    pieces
}

/// A tool manifest, as a tool author (or an attacker shipping a tool) may write it: any text
/// is a manifest or a one-line error naming the file.
pub fn manifest(text: &str) {
    if let Err(e) = warden::manifest::Manifest::parse(text, "tool.toml") {
        let e = e.to_string();
        assert!(e.starts_with("tool.toml: "), "{e}");
        assert!(!e.contains('\n'), "a multi-line error: {e}");
    }
}

/// A deployment file: any text is a deployment or a one-line error.
pub fn deployment(text: &str) {
    // Paths in the file are resolved against its directory: keep them inside a throwaway one.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("warden.toml");
    std::fs::write(&file, text).expect("writing the input");
    if let Err(e) = warden::Deployment::load(&file) {
        let e = e.to_string();
        assert!(!e.contains('\n'), "a multi-line error: {e}");
    }
}

/// Tokens and keys an agent or an upstream hands Warden (assertions, delegations, minted
/// credentials, public keys, JWKS): nothing panics, and no token verifies without its key.
pub fn token(text: &str) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    let _ = jwt::peek_header(text);
    let _ = jwt::peek_claims::<serde_json::Value>(text);
    assert!(
        jwt::verify::<serde_json::Value>(text, &key).is_err(),
        "{text:?} verified without the key"
    );
    let _ = keys::parse_public(text);
    let _ = keys::public_from_base64url(text);
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = KeySet::from_json(&json);
    }
}
