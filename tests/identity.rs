//! Principals, delegation and credentials, with real keys and real servers on loopback: the
//! upstream checks Warden's minted tokens with an ordinary JWT library against `warden jwks`,
//! and a hostile tool looks for the credential everywhere and finds nothing.

use crate::common::*;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use warden::ErrorKind;
use warden::identity::{delegation, jwt};
use warden_test_support::loopback::LoopbackServer;

/// The static API key of the `legacy` upstream; it lives in a 0600 file.
const API_KEY: &str = "sk-live-static-api-key-0123456789";

/// A deployment where `hostile-spy` and `http-get` may reach `minted` (with a token minted
/// per call), `legacy` (with a static key) and `own` (a host the tool controls, no credential).
struct Upstreams {
    f: Fixture,
    minted: LoopbackServer,
    legacy: LoopbackServer,
    own: LoopbackServer,
}

impl Upstreams {
    /// `http-get` of `url` by the tester, on nobody's behalf.
    async fn fetch(&self, url: String) -> warden::CallReport {
        call(&self.f.runtime(), "http-get", json!({ "url": url })).await
    }
}

/// Grants `tool` the minted credential `tracker` (for `tracker_tools`, lasting `lifetime`)
/// on the first server and the static key `key` as `legacy` on the second, and installs it
/// with a rule for each and one without a credential for the third; returns the rules.
fn grant_credentials(
    f: &Fixture,
    tool: &str,
    tracker_tools: &[&str],
    key: &str,
    lifetime: &str,
    [minted, legacy, plain]: [&LoopbackServer; 3],
) -> String {
    let key_file = f.path().join("legacy.key");
    std::fs::write(&key_file, key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    f.extend_deployment(&format!(
        r#"
[secrets.legacy-key]
file = "legacy.key"

[credentials.tracker]
kind = "minted"
audience = "{minted}"
lifetime = "{lifetime}"
scope = "issues:read"
tools = {tracker_tools:?}

[credentials.legacy]
kind = "static"
audience = "{legacy}"
secret = "legacy-key"
header = "x-api-key"
prefix = ""
tools = ["{tool}"]
"#,
        minted = minted.url(""),
        legacy = legacy.url(""),
    ));
    let rules = [
        loopback_rule(&minted.url(""), &[], Some("tracker")),
        loopback_rule(&legacy.url(""), &[], Some("legacy")),
        loopback_rule(&plain.url(""), &[], None),
    ]
    .join("\n");
    f.install_tool(tool, Some(&rules));
    rules
}

async fn upstreams(lifetime: &str) -> Upstreams {
    let (minted, legacy, own) = (
        LoopbackServer::start().await.unwrap(),
        LoopbackServer::start().await.unwrap(),
        LoopbackServer::start().await.unwrap(),
    );
    let f = Fixture::new();
    let rules = grant_credentials(
        &f,
        "hostile-spy",
        &["hostile-spy", "http-get"],
        API_KEY,
        lifetime,
        [&minted, &legacy, &own],
    );
    let http_get_rules = rules.replace("credential = \"legacy\"\n", "");
    f.install_tool("http-get", Some(&http_get_rules));
    Upstreams {
        f,
        minted,
        legacy,
        own,
    }
}

/// A delegation from alice to the tester that expired a minute ago.
fn expired_delegation() -> String {
    let now = jwt::now();
    let claims = json!({
        "iss": "user:alice", "sub": "alice", "act": { "sub": AGENT }, "azp": AGENT,
        "scope": "hello", "iat": now - 120, "exp": now - 60, "jti": "d-old",
    });
    jwt::sign(&agent_key("alice"), None, &claims)
}

fn delegation_from_alice(agent: &str, tools: &[&str]) -> String {
    let tools: Vec<String> = tools.iter().map(|t| t.to_string()).collect();
    delegation::issue(
        &agent_key("alice"),
        "alice",
        agent,
        &tools,
        std::time::Duration::from_secs(600),
    )
}

/// `warden jwks`, as an upstream would fetch it.
fn jwks(f: &Fixture) -> Value {
    serde_json::from_slice(&f.run(&["jwks"]).stdout).unwrap()
}

/// Verifies a token the way an upstream would: jsonwebtoken, Warden's JWKS, leeway 0.
fn verify_as_upstream(
    token: &str,
    jwks: &Value,
    audience: &str,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let kid = jsonwebtoken::decode_header(token)?.kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    let key = DecodingKey::from_ed_components(jwk["x"].as_str().unwrap())?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["warden"]);
    validation.leeway = 0;
    Ok(jsonwebtoken::decode::<Value>(token, &key, &validation)?.claims)
}

#[tokio::test]
async fn the_upstream_verifies_a_token_minted_per_call_for_the_user_and_agent() {
    let u = upstreams("30s").await;
    let runtime = u.f.runtime();
    let on_behalf = delegation_from_alice(AGENT, &["http-get"]);
    for _ in 0..2 {
        let report = runtime
            .call(request(
                AGENT,
                "http-get",
                json!({ "url": u.minted.url("/echo-headers") }),
                Some(&on_behalf),
            ))
            .await;
        let out = ok(&report);
        assert!(
            out["body"].as_str().unwrap().contains("Bearer [REDACTED]"),
            "{out}"
        );
        assert_eq!(report.record.user.as_deref(), Some("alice"));
        let used = report.egress[0].credential.as_ref().unwrap();
        assert_eq!(used.name, "tracker");
        assert!(report.egress[0].scrubbed >= 1);
        assert!(!used.long_lived);
    }
    let jwks = jwks(&u.f);
    let tokens = tokens(&u.minted);
    assert_eq!(tokens.len(), 2);
    let mut ids = Vec::new();
    for token in &tokens {
        let claims = verify_as_upstream(token, &jwks, &u.minted.url(""))
            .expect("the upstream accepts the token");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["act"]["sub"], AGENT);
        assert_eq!(claims["aud"], u.minted.url(""));
        assert_eq!(claims["scope"], "issues:read");
        assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 30);
        ids.push(claims["jti"].as_str().unwrap().to_string());
        // A token for this upstream is useless anywhere else.
        assert!(verify_as_upstream(token, &jwks, &u.legacy.url("")).is_err());
    }
    assert_ne!(ids[0], ids[1], "jti must be fresh per call");
}

#[tokio::test]
async fn without_a_user_the_token_names_the_agent() {
    let u = upstreams("30s").await;
    let report = u.fetch(u.minted.url("/x")).await;
    ok(&report);
    let jwks = jwks(&u.f);
    let claims = verify_as_upstream(&tokens(&u.minted)[0], &jwks, &u.minted.url("")).unwrap();
    assert_eq!(claims["sub"], AGENT);
    assert_eq!(claims["act"]["sub"], AGENT);
}

#[tokio::test]
async fn a_token_presented_after_its_lifetime_is_rejected_by_the_upstream() {
    let u = upstreams("1s").await;
    ok(&u.fetch(u.minted.url("/x")).await);
    let jwks = jwks(&u.f);
    let token = tokens(&u.minted).remove(0);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let error = verify_as_upstream(&token, &jwks, &u.minted.url("")).unwrap_err();
    assert_eq!(
        *error.kind(),
        jsonwebtoken::errors::ErrorKind::ExpiredSignature
    );
}

// Multi-threaded: the test blocks on the CLI while its loopback servers must keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spy_finds_no_credential_anywhere_and_cannot_send_one_to_its_own_host() {
    let u = upstreams("60s").await;
    // Even a copy of the key file inside the tool's mount would be found: there is none.
    let urls = [
        u.minted.url("/echo-headers"),
        u.legacy.url("/echo-headers"),
        u.own.url("/echo-headers"),
        u.minted.url("/redirect"),
    ];
    let on_behalf = delegation_from_alice(AGENT, &["hostile-spy"]);
    let input = json!({ "urls": urls }).to_string();
    let out =
        u.f.call_cmd("hostile-spy", &input)
            .args(["--json", "--on-behalf-of", &on_behalf])
            .env("WARDEN_LOG", "debug")
            .env("LEGACY_KEY_IN_ENV", API_KEY)
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let envelope: Value = serde_json::from_slice(&out.stdout).unwrap();
    let seen = &envelope["output"];
    assert_eq!(seen["env"], json!([]));
    assert_eq!(seen["context"]["user"], "alice");
    let bodies: Vec<&str> = seen["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["body"].as_str().unwrap_or(""))
        .collect();
    assert!(bodies[0].contains("Bearer [REDACTED]"), "{bodies:?}");
    assert!(bodies[1].contains("[REDACTED]"), "{bodies:?}");

    // The credentialed upstreams got their credentials; the tool's own host got none.
    let minted = tokens(&u.minted);
    assert_eq!(minted.len(), 2, "one token per credentialed request");
    assert!(
        u.legacy.received()[0]
            .headers
            .iter()
            .any(|(k, v)| k == "x-api-key" && v == API_KEY)
    );
    for request in u.own.received() {
        assert!(
            !request
                .headers
                .iter()
                .any(|(k, _)| k == "authorization" || k == "x-api-key"),
            "{request:?}"
        );
    }

    // No secret and no minted token in anything the tool or the caller sees, in the logs, or
    // in any file Warden wrote.
    let mut haystacks = vec![stdout(&out), stderr(&out)];
    for file in files_under(&u.f.path().join("state")) {
        haystacks.push(String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned());
    }
    for needle in minted.iter().map(String::as_str).chain([API_KEY]) {
        for (i, hay) in haystacks.iter().enumerate() {
            assert!(!hay.contains(needle), "haystack {i} contains a secret");
        }
    }
    assert!(
        stderr(&out).contains("credential added"),
        "the debug log was captured"
    );
    let egress = envelope["egress"].as_array().unwrap();
    assert_eq!(egress[1]["credential"]["long_lived"], true);
    assert_eq!(egress[2]["credential"], Value::Null);
}

#[tokio::test]
async fn the_tool_learns_who_it_runs_for() {
    let f = Fixture::new();
    let on_behalf = delegation_from_alice(AGENT, &["hello"]);
    let report = f
        .runtime()
        .call(request(
            AGENT,
            "hello",
            json!({ "name": "x" }),
            Some(&on_behalf),
        ))
        .await;
    let out = ok(&report);
    assert_eq!(out["user"], "alice");
    assert_eq!(out["agent"], AGENT);
}

// ---- refusals ----------------------------------------------------------------------------

fn denied_because(report: &warden::CallReport, reason: &str) {
    assert_eq!(failed(report), ErrorKind::Denied);
    let message = &report.record.error.as_ref().unwrap().message;
    assert!(message.contains(reason), "`{reason}` not in: {message}");
}

#[test]
fn a_wrong_agent_key_is_refused() {
    let f = Fixture::new();
    let out = f
        .call_cmd("hello", r#"{"name":"x"}"#)
        .arg("--agent-key")
        .arg(f.key_file("limited"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("signature does not verify"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_replayed_assertion_is_refused_even_by_another_process() {
    let f = Fixture::new();
    let req = request(AGENT, "hello", json!({ "name": "x" }), None);
    ok(&f.runtime().call(req.clone()).await);
    // A second runtime on the same state directory stands for another `warden` process.
    denied_because(&f.runtime().call(req).await, "replay");
}

#[tokio::test]
async fn an_assertion_for_another_call_or_an_expired_one_is_refused() {
    let f = Fixture::new();
    let runtime = f.runtime();
    let mut req = request(AGENT, "hello", json!({ "name": "x" }), None);
    req.input = json!({ "name": "changed" });
    denied_because(&runtime.call(req).await, "different input");

    let now = jwt::now();
    let expired = jwt::sign(
        &agent_key(AGENT),
        None,
        &json!({ "sub": AGENT, "aud": "warden", "tool": "hello", "input_sha256": warden::identity::assertion::input_digest(&json!({"name":"x"})), "iat": now - 120, "exp": now - 60, "jti": "old" }),
    );
    let mut req = request(AGENT, "hello", json!({ "name": "x" }), None);
    req.caller = warden::call::Caller::Assertion(warden::credentials::Secret::new(expired));
    denied_because(&runtime.call(req).await, "expired");
}

#[tokio::test]
async fn delegations_are_checked() {
    let f = Fixture::new();
    let runtime = f.runtime();
    let hello = |on_behalf: &str| request(AGENT, "hello", json!({ "name": "x" }), Some(on_behalf));

    let for_another_agent = delegation_from_alice("limited", &["hello"]);
    denied_because(
        &runtime.call(hello(&for_another_agent)).await,
        "issued to agent `limited`",
    );

    let out_of_scope = delegation_from_alice(AGENT, &["read-file"]);
    denied_because(
        &runtime.call(hello(&out_of_scope)).await,
        "not in the scope",
    );

    let expired = expired_delegation();
    denied_because(&runtime.call(hello(&expired)).await, "expired");

    // Signed by someone who is not alice.
    let forged = delegation::issue(
        &agent_key("bob"),
        "alice",
        AGENT,
        &["hello".into()],
        std::time::Duration::from_secs(60),
    );
    denied_because(&runtime.call(hello(&forged)).await, "signature");

    // A delegation never widens the agent's own rights: `limited` may only call hello.
    let wide = delegation_from_alice("limited", &["write-note"]);
    let report = runtime
        .call(request(
            "limited",
            "write-note",
            json!({ "name": "x", "text": "y" }),
            Some(&wide),
        ))
        .await;
    denied_because(&report, "deny by default");
}

#[test]
fn an_expired_delegation_is_refused_by_the_cli_with_exit_3() {
    let f = Fixture::new();
    let expired = expired_delegation();
    let file = f.path().join("delegation.jwt");
    std::fs::write(&file, expired).unwrap();
    let out = f
        .call_cmd("hello", r#"{"name":"x"}"#)
        .arg("--on-behalf-of")
        .arg(format!("@{}", file.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_secret_file_readable_by_others_is_refused() {
    let u = upstreams("60s").await;
    std::fs::set_permissions(
        u.f.path().join("legacy.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = u.f.call_cli("hostile-spy", r#"{"urls":[]}"#, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("0644") && err.contains("legacy-key"), "{err}");
    assert!(!err.contains(API_KEY));
}

#[tokio::test]
async fn a_credential_goes_only_where_the_deployment_binds_it() {
    // A manifest that attaches `tracker` to the tool's own host cannot be loaded.
    let u = upstreams("60s").await;
    u.f.install_tool(
        "http-get",
        Some(&loopback_rule(&u.own.url(""), &[], Some("tracker"))),
    );
    let report = u.fetch(u.own.url("/x")).await;
    assert_eq!(failed(&report), ErrorKind::InvalidTool);
    assert!(
        report
            .record
            .error
            .unwrap()
            .message
            .contains("may only be sent to")
    );
    assert!(u.own.received().is_empty());
}

#[test]
fn keygen_and_delegate_from_the_cli() {
    let f = Fixture::new();
    let key = f.path().join("new.key");
    let out = f
        .cli()
        .arg("keygen")
        .arg("--out")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("ed25519:"));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = f
        .cli()
        .arg("keygen")
        .arg("--out")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(2),
        "a key file is never overwritten"
    );

    let out = f
        .cli()
        .args([
            "delegate",
            "--user",
            "alice",
            "--agent",
            AGENT,
            "--tools",
            "hello,read-file",
            "--ttl",
            "5m",
            "--user-key",
        ])
        .arg(f.key_file("alice"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let token = stdout(&out).trim().to_string();
    let call = f.call_cli(
        "hello",
        r#"{"name":"x"}"#,
        &["--on-behalf-of", &token, "--json"],
    );
    assert_eq!(call.status.code(), Some(0), "{}", stderr(&call));
    let envelope: Value = serde_json::from_slice(&call.stdout).unwrap();
    assert_eq!(envelope["user"], "alice");
    assert_eq!(envelope["output"]["user"], "alice");
}

#[test]
fn rotation_keeps_tokens_verifiable() {
    let f = Fixture::new();
    let before = jwks(&f);
    assert_eq!(f.run(&["keys", "rotate"]).status.code(), Some(0));
    let after = jwks(&f);
    let old_kid = &before["keys"][0]["kid"];
    assert!(
        after["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| &k["kid"] == old_kid)
    );
    assert_eq!(after["keys"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn an_echo_split_across_chunks_is_scrubbed_too() {
    let u = upstreams("60s").await;
    let report = u.fetch(u.minted.url("/echo-headers-split")).await;
    let body = ok(&report)["body"].as_str().unwrap().to_string();
    assert!(body.contains("Bearer [REDACTED]"), "{body}");
    assert!(!body.contains(&tokens(&u.minted)[0]));
    assert_eq!(report.egress[0].scrubbed, 1);
}

#[tokio::test]
async fn a_trusted_issuer_can_delegate_for_its_users() {
    use base64::Engine as _;
    let f = Fixture::new();
    let idp = agent_key("bob");
    let jwks = json!({ "keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "idp-1",
        "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(idp.verifying_key().as_bytes()),
    }]});
    std::fs::write(f.path().join("idp.jwks.json"), jwks.to_string()).unwrap();
    f.extend_deployment("[issuers.corp-idp]\njwks = \"idp.jwks.json\"\n");
    let now = jwt::now();
    let claims = |iss: &str| {
        json!({ "iss": iss, "sub": "carol@corp", "act": { "sub": AGENT }, "azp": AGENT,
                "scope": "hello", "iat": now, "exp": now + 300, "jti": format!("{iss}-1") })
    };
    let token = jwt::sign(&idp, Some("idp-1"), &claims("corp-idp"));
    let runtime = f.runtime();
    let call = |token: String| {
        runtime.call(request(
            AGENT,
            "hello",
            json!({ "name": "x" }),
            Some(&token),
        ))
    };
    assert_eq!(ok(&call(token).await)["user"], "carol@corp");

    // The same claims from an issuer nobody trusts, or signed with another key, are refused.
    let untrusted = jwt::sign(&idp, Some("idp-1"), &claims("evil-idp"));
    denied_because(&call(untrusted).await, "not trusted");
    let wrong_key = jwt::sign(&agent_key("limited"), Some("idp-1"), &claims("corp-idp"));
    denied_because(&call(wrong_key).await, "signature");
    // The issuer's access token with a delegation's claims is no delegation.
    let access = jwt::sign_typed(&idp, Some("idp-1"), "at+jwt", &claims("corp-idp"));
    denied_because(&call(access).await, "an access token is not a delegation");
}

// ---- what a tool can read back ----------------------------------------------------------

/// A static key with characters that JSON- and URL-encoding change.
const ODD_KEY: &str = "sk-live/static+key \"0123456789\"";

/// `hostile-exfil` may reach `minted` (a token minted per call), `legacy` (the static
/// `ODD_KEY`) and `beside` (no credential; it shares `minted`'s memo: what a request stores on
/// one, `/stored` answers with on the other).
struct Exfil {
    f: Fixture,
    minted: LoopbackServer,
    legacy: LoopbackServer,
    beside: LoopbackServer,
}

async fn exfil_upstreams() -> Exfil {
    let minted = LoopbackServer::start().await.unwrap();
    let legacy = LoopbackServer::start().await.unwrap();
    let beside = minted.start_beside().await.unwrap();
    let f = Fixture::new();
    grant_credentials(
        &f,
        "hostile-exfil",
        &["hostile-exfil"],
        ODD_KEY,
        "60s",
        [&minted, &legacy, &beside],
    );
    Exfil {
        f,
        minted,
        legacy,
        beside,
    }
}

impl Exfil {
    /// Runs `hostile-exfil` with `requests`; returns the report and what the tool saw of each
    /// response: its header values and body bytes, decoded as the tool could (gzip inflated).
    async fn exfil(&self, requests: Value) -> (warden::CallReport, Vec<Value>, Vec<Vec<u8>>) {
        let report = call(
            &self.f.runtime(),
            "hostile-exfil",
            json!({ "requests": requests }),
        )
        .await;
        let responses = ok(&report)["responses"].as_array().unwrap().clone();
        let seen = responses.iter().map(seen_by_tool).collect();
        (report, responses, seen)
    }

    /// Every secret the deployment used: the tokens `minted` received and the static key.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = tokens(&self.minted);
        assert!(!secrets.is_empty());
        secrets.push(ODD_KEY.to_string());
        secrets
    }
}

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap()
}

fn seen_by_tool(response: &Value) -> Vec<u8> {
    let mut seen = Vec::new();
    for header in response["headers"].as_array().into_iter().flatten() {
        seen.extend(unhex(header[1].as_str().unwrap()));
        seen.push(b'\n');
    }
    let body = unhex(response["body_hex"].as_str().unwrap_or(""));
    if body.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read as _;
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut seen)
            .unwrap();
    } else {
        seen.extend(body);
    }
    seen
}

/// Whether `seen` holds any 12 consecutive bytes of `secret`.
fn holds_part_of(seen: &[u8], secret: &str) -> bool {
    secret
        .as_bytes()
        .windows(warden::credentials::scrub::FRAGMENT)
        .any(|w| seen.windows(w.len()).any(|s| s == w))
}

fn assert_nothing_leaked(e: &Exfil, seen: &[Vec<u8>]) {
    for secret in e.secrets() {
        for (i, s) in seen.iter().enumerate() {
            assert!(
                !holds_part_of(s, &secret),
                "response {i} leaks a secret: {}",
                String::from_utf8_lossy(s)
            );
        }
    }
}

#[tokio::test]
async fn a_tool_cannot_inflate_a_credential_out_of_a_compressed_echo() {
    let e = exfil_upstreams().await;
    let gzip = json!([["accept-encoding", "gzip"]]);
    let (report, responses, seen) = e
        .exfil(json!([
            { "url": e.minted.url("/echo-headers-gzip"), "headers": gzip },
            { "url": e.legacy.url("/echo-headers-gzip"), "headers": gzip },
            { "url": e.minted.url("/echo-headers-gzip-always") },
        ]))
        .await;
    assert_nothing_leaked(&e, &seen);
    // The host asked for the identity encoding whatever the tool said, and was answered so.
    for server in [&e.minted, &e.legacy] {
        for request in server.received() {
            let asked: Vec<&str> = request
                .headers
                .iter()
                .filter(|(k, _)| k == "accept-encoding")
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(asked, ["identity"], "{request:?}");
        }
    }
    let first = String::from_utf8_lossy(&seen[0]);
    assert!(first.contains("Bearer [REDACTED]"), "{first}");
    assert!(String::from_utf8_lossy(&seen[1]).contains("[REDACTED]"));
    // An upstream that encodes anyway is refused: the tool gets an error, not the bytes.
    assert!(responses[2]["error"].is_string(), "{}", responses[2]);
    assert!(
        report.egress[2]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("content-encoding")),
        "{:?}",
        report.egress[2]
    );
}

#[tokio::test]
async fn a_credential_echoed_back_through_another_request_is_scrubbed() {
    let e = exfil_upstreams().await;
    let (report, _, seen) = e
        .exfil(json!([
            { "url": e.minted.url("/store") },
            { "url": e.beside.url("/stored") },
        ]))
        .await;
    assert_nothing_leaked(&e, &seen);
    let stored = String::from_utf8_lossy(&seen[1]);
    assert!(stored.contains("Bearer [REDACTED]"), "{stored}");
    assert!(report.egress[1].credential.is_none());
    assert!(report.egress[1].scrubbed >= 1);
}

/// A call carries one token per credential however many requests it makes: a tool cannot
/// have the host mint (and keep, for scrubbing) a token per request without end.
#[tokio::test]
async fn a_call_carries_one_token_per_credential_however_many_requests_it_makes() {
    let e = exfil_upstreams().await;
    let requests: Vec<Value> = (0..6)
        .map(|_| json!({ "url": e.minted.url("/store") }))
        .collect();
    let (report, _, seen) = e.exfil(json!(requests)).await;
    assert_nothing_leaked(&e, &seen);
    let jtis: std::collections::HashSet<&str> = report
        .egress
        .iter()
        .map(|r| r.credential.as_ref().unwrap().jti.as_deref().unwrap())
        .collect();
    assert_eq!(
        (report.egress.len(), jtis.len()),
        (6, 1),
        "{:?}",
        report.egress
    );
    let received: std::collections::HashSet<String> = tokens(&e.minted).into_iter().collect();
    assert_eq!(received.len(), 1, "the upstream saw one token");
}

#[tokio::test]
async fn a_static_key_is_scrubbed_in_the_forms_upstreams_echo() {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let e = exfil_upstreams().await;
    let (_, responses, _) = e
        .exfil(json!([{ "url": e.legacy.url("/echo-key-forms") }]))
        .await;
    let body: Value =
        serde_json::from_slice(&unhex(responses[0]["body_hex"].as_str().unwrap())).unwrap();
    let encoded_key = [
        STANDARD.encode(ODD_KEY),
        URL_SAFE_NO_PAD.encode(ODD_KEY),
        STANDARD.encode(format!("user:{ODD_KEY}")),
        "sk-live%2Fstatic%2Bkey%20%220123456789%22".to_string(),
        // JSON-escaped in the body; as it is once parsed.
        ODD_KEY.to_string(),
    ];
    for (field, form) in ["base64", "base64url", "basic", "url", "json"]
        .into_iter()
        .zip(encoded_key)
    {
        let echoed = body[field].as_str().unwrap();
        assert!(echoed.contains("[REDACTED]"), "{field}: {echoed}");
        assert!(
            !echoed.contains(&form[4..form.len() - 4]),
            "{field}: {echoed}"
        );
    }
}

#[tokio::test]
async fn an_echo_cut_off_mid_token_keeps_no_fragment_of_it() {
    let e = exfil_upstreams().await;
    let (_, _, seen) = e
        .exfil(json!([{ "url": e.minted.url("/echo-headers-truncated") }]))
        .await;
    let body = String::from_utf8_lossy(&seen[0]);
    assert!(body.ends_with("Bearer [REDACTED]"), "{body}");
    assert_nothing_leaked(&e, &seen);
}
