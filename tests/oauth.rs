//! MCP over HTTP with the specification's own authorization: the official Python SDK's
//! `PrivateKeyJWTOAuthProvider`, given only the agent's key, finds Warden's authorization
//! server from a 401, gets an access token and lists and calls tools as that agent; what an
//! attacker tries at the token endpoint and with tokens is refused, each with its reason.

use crate::common::*;
use crate::mcp::{client, fixture};
use serde_json::{Value, json};
use warden::identity::jwt;

/// `warden mcp --http 127.0.0.1:0`: (node, its origin).
fn node(f: &Fixture) -> (Node, String) {
    let mut cli = f.cli();
    cli.args(["mcp", "--http", "127.0.0.1:0"]);
    let node = Node::start(cli);
    let origin = node.base().to_string();
    (node, origin)
}

/// A client assertion (RFC 7523) signed by the key named `key`, claiming `agent`.
fn assertion(key: &str, agent: &str, aud: &str, exp_in: i64) -> String {
    let now = jwt::now();
    let claims = json!({
        "iss": agent, "sub": agent, "aud": aud, "iat": now, "exp": now + exp_in,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    jwt::sign(&agent_key(key), None, &claims)
}

/// Asks `/mcp` at `origin` without a token: the 401 names the resource's metadata under
/// `issuer`; returns that metadata.
fn discovered(origin: &str, issuer: &str) -> Value {
    let (status, head, _) = http_request(origin, "POST", "/mcp", &[], Some(&json!({})));
    assert_eq!(status, 401);
    let metadata = format!("{issuer}/.well-known/oauth-protected-resource/mcp");
    assert!(
        head.contains(&format!("resource_metadata=\"{metadata}\"")),
        "{head}"
    );
    let path = "/.well-known/oauth-protected-resource/mcp";
    let (_, _, prm) = http_request(origin, "GET", path, &[], None);
    serde_json::from_str(&prm).unwrap()
}

/// `POST /oauth/token` with these form fields: (status, answer).
fn token_request(origin: &str, fields: &[(&str, &str)]) -> (u16, Value) {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let (status, _, body) = http_raw(origin, "POST", "/oauth/token", &headers, &body);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn grant<'a>(assertion: &'a str, resource: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
        ("resource", resource),
    ]
}

/// The status of an MCP `initialize` carrying `token`.
fn initialize(origin: &str, token: &str) -> (u16, String) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}});
    let bearer = format!("Bearer {token}");
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("authorization", bearer.as_str()),
    ];
    let (status, _, body) = http_request(origin, "POST", "/mcp", &headers, Some(&body));
    (status, body)
}

#[test]
fn the_python_sdk_gets_a_token_with_the_agents_key_and_calls_as_that_agent() {
    let f = fixture();
    let (node, origin) = node(&f);
    let out = client(json!({
        "transport": "http",
        "url": node.url,
        "oauth": { "client_id": AGENT, "key": f.key_file(AGENT), "issuer": origin },
        "steps": [
            { "op": "list" },
            { "op": "call", "tool": "hello", "arguments": { "name": "oauth" } },
        ],
    }));
    let tools: Vec<&str> = out[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"hello"), "{tools:?}");
    assert_eq!(out[1]["is_error"], false, "{}", out[1]);
    // The audit says who: the agent whose key signed the client assertion.
    let call = out[1]["call"].as_str().unwrap();
    let shown = stdout(&f.run(&["audit", "show", call]));
    assert!(shown.contains(AGENT) && shown.contains("mcp"), "{shown}");
    // And the token it was given, before the call.
    let tail = stdout(&f.run(&["audit", "tail", "-n", "1000"]));
    assert!(
        tail.contains(&format!("issued to `{AGENT}` for {}", node.url)),
        "{tail}"
    );
    assert_exit(&f.run(&["audit", "verify"]), 0);
}

/// The README's Python snippet, run as written: only the key file, the agent and the address
/// are this test's (and its `MyTokenStorage` is the client's `MemoryStorage`).
#[test]
fn the_readmes_python_snippet_connects_as_written() {
    let f = fixture();
    let (_node, origin) = node(&f);
    let readme = include_str!("../README.md");
    let start = readme
        .find("```python\nfrom mcp import ClientSession")
        .expect("README.md: the Python snippet");
    let snippet = &readme[start + "```python\n".len()..];
    let snippet = &snippet[..snippet.find("```").unwrap()];
    let key = f.key_file(AGENT);
    let snippet = snippet
        .replace("keys/ops-agent.key", key.to_str().unwrap())
        .replace("ops-agent", AGENT)
        .replace("http://127.0.0.1:8931", &origin);
    let body: String = snippet.lines().map(|l| format!("    {l}\n")).collect();
    let script = format!(
        "import asyncio, sys\nsys.path.insert(0, {dir:?})\n\
         from client import MemoryStorage as MyTokenStorage\n\
         async def main():\n{body}\nasyncio.run(main())\n",
        dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/mcp"),
    );
    let out = std::process::Command::new(crate::mcp::python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("Hello, world!"), "{}", stdout(&out));
}

#[test]
fn tokens_and_assertions_an_attacker_brings_are_refused_each_with_its_reason() {
    let f = fixture();
    let (_node, origin) = node(&f);
    let resource = format!("{origin}/mcp");

    // Discovery: a 401 names the resource's metadata, which names the authorization server.
    let prm = discovered(&origin, &origin);
    assert_eq!(
        (&prm["resource"], &prm["authorization_servers"][0]),
        (&json!(resource), &json!(origin))
    );
    let (_, _, asm) = http_request(
        &origin,
        "GET",
        "/.well-known/oauth-authorization-server",
        &[],
        None,
    );
    let asm: Value = serde_json::from_str(&asm).unwrap();
    assert_eq!(
        asm["token_endpoint"],
        format!("{origin}/oauth/token").as_str()
    );
    assert_eq!(
        asm["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );

    let refused = |fields: &[(&str, &str)], status: u16, error: &str, reason: &str| {
        let (got, answer) = token_request(&origin, fields);
        assert_eq!(got, status, "{answer}");
        assert_eq!(answer["error"], error, "{answer}");
        let description = answer["error_description"].as_str().unwrap();
        assert!(description.contains(reason), "{description}");
    };
    // Signed by another key than the agent's.
    let forged = assertion("bob", AGENT, &origin, 60);
    refused(
        &grant(&forged, &resource),
        401,
        "invalid_client",
        "does not verify",
    );
    // An unknown client gets the same answer (names are not for probing).
    let stranger = assertion("mallory", "mallory", &origin, 60);
    refused(
        &grant(&stranger, &resource),
        401,
        "invalid_client",
        "does not verify",
    );
    // An assertion for this server and others too.
    let now = jwt::now();
    let wide = jwt::sign(
        &agent_key(AGENT),
        None,
        &json!({ "iss": AGENT, "sub": AGENT, "aud": [origin, "http://other.example"],
                 "iat": now, "exp": now + 60, "jti": "wide" }),
    );
    refused(
        &grant(&wide, &resource),
        401,
        "invalid_client",
        "not for this server",
    );
    // Expired; too long-lived; for another server.
    refused(
        &grant(&assertion(AGENT, AGENT, &origin, -5), &resource),
        401,
        "invalid_client",
        "expired",
    );
    refused(
        &grant(&assertion(AGENT, AGENT, &origin, 3600), &resource),
        401,
        "invalid_client",
        "at most",
    );
    refused(
        &grant(
            &assertion(AGENT, AGENT, "http://other.example", 60),
            &resource,
        ),
        401,
        "invalid_client",
        "not for this server",
    );
    // Another grant, another client authentication, another resource.
    let good = assertion(AGENT, AGENT, &origin, 60);
    let mut password = grant(&good, &resource);
    password[0] = ("grant_type", "password");
    refused(
        &password,
        400,
        "unsupported_grant_type",
        "client_credentials",
    );
    let mut secret = grant(&good, &resource);
    secret[1] = ("client_assertion_type", "client_secret");
    refused(&secret, 401, "invalid_client", "private_key_jwt");
    refused(
        &grant(&good, "http://other.example/mcp"),
        400,
        "invalid_target",
        "tokens for",
    );
    // The good one, once; replayed, refused.
    let (status, issued) = token_request(&origin, &grant(&good, &resource));
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["token_type"], "Bearer");
    refused(&grant(&good, &resource), 401, "invalid_client", "replay");
    let token = issued["access_token"].as_str().unwrap();
    assert_eq!(initialize(&origin, token).0, 200);

    // A token Warden signed for another resource is refused here.
    let signer = warden::credentials::mint::KeyStore::new(&f.path().join("state/oauth"))
        .current()
        .unwrap();
    let mut claims = jwt::peek_claims::<Value>(token).unwrap();
    claims["aud"] = json!("http://other.example/mcp");
    let (status, body) = initialize(&origin, &signer.sign_typed("at+jwt", &claims));
    assert_eq!(status, 401);
    assert!(body.contains("another resource"), "{body}");
    // The same claims signed by anyone else, or by the key Warden mints credentials with
    // (which upstreams trust), are refused.
    let claims = jwt::peek_claims::<Value>(token).unwrap();
    let mallory = jwt::sign_typed(&agent_key("mallory"), Some(signer.kid()), "at+jwt", &claims);
    assert_eq!(initialize(&origin, &mallory).0, 401);
    let minter = warden::credentials::mint::KeyStore::new(&f.path().join("state"))
        .current()
        .unwrap();
    assert_eq!(
        initialize(&origin, &minter.sign_typed("at+jwt", &claims)).0,
        401
    );

    // Revoking the agent ends the token at its next request.
    assert_exit(&f.run(&["revoke", "agent", AGENT]), 0);
    let (status, body) = initialize(&origin, token);
    assert_eq!(status, 401);
    assert!(body.contains("revoked"), "{body}");
    // And no new one is issued.
    let again = assertion(AGENT, AGENT, &origin, 60);
    refused(&grant(&again, &resource), 401, "invalid_client", "revoked");
}

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Whatever form a client posts, the token endpoint answers an OAuth error (RFC 6749,
/// section 5.2) as JSON, never a token, a server error or a hang.
#[test]
fn the_token_endpoint_answers_any_form_with_an_oauth_error() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let f = fixture();
    let (_node, origin) = node(&f);
    let names = "(grant_type|client_id|client_assertion_type|client_assertion|resource|scope|\
                 subject_token|subject_token_type|actor_token|actor_token_type|[a-z_%]{0,8})";
    let values = "(client_credentials|urn:ietf:params:oauth:[a-z:-]{0,30}|[ -~]{0,40})";
    let form = proptest::collection::vec((names, values), 0..8);
    let mut runner = TestRunner::new(Config {
        cases: 128,
        ..Config::default()
    });
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    runner
        .run(&form, |pairs| {
            let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let (status, _, answer) =
                http_raw(&origin, "POST", "/oauth/token", &headers, &body.join("&"));
            let json: Value = serde_json::from_str(&answer)
                .map_err(|e| TestCaseError::fail(format!("{status} {answer}: {e}")))?;
            if !matches!(status, 400 | 401) || !json["error"].is_string() {
                return Err(TestCaseError::fail(format!("{status} {answer}")));
            }
            Ok(())
        })
        .unwrap();
    // A form past the limit is refused before it is read whole.
    let big = format!("grant_type={}", "x".repeat(warden_server::oauth::MAX_FORM));
    let (status, _, _) = http_raw(&origin, "POST", "/oauth/token", &headers, &big);
    assert_eq!(status, 413);
}

#[test]
fn an_agent_asking_for_tokens_without_end_is_told_to_slow_down() {
    let f = fixture();
    let (_node, origin) = node(&f);
    let resource = format!("{origin}/mcp");
    let limit = warden::identity::oauth::MAX_TOKENS_PER_MINUTE;
    // Whoever cannot sign as the agent spends none of its tokens.
    for _ in 0..=limit {
        let forged = assertion("bob", AGENT, &origin, 60);
        let (status, _) = token_request(&origin, &grant(&forged, &resource));
        assert_eq!(status, 401);
    }
    let statuses: Vec<_> = (0..limit)
        .map(|_| {
            let own = assertion(AGENT, AGENT, &origin, 60);
            token_request(&origin, &grant(&own, &resource))
        })
        .collect();
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    let own = assertion(AGENT, AGENT, &origin, 60);
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(grant(&own, &resource))
        .finish();
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let (status, head, answer) = http_raw(&origin, "POST", "/oauth/token", &headers, &body);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        (status, &answer["error"]),
        (429, &json!("slow_down")),
        "{answer}"
    );
    let retry_after = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(retry_after.is_some_and(|s| (1..=60).contains(&s)), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    // Refused before anything is recorded: the chain holds one record per token issued.
    let tail = stdout(&f.run(&["audit", "tail", "-n", "1000"]));
    let issued = tail.lines().filter(|l| l.contains("access token")).count();
    assert_eq!(
        issued,
        warden::identity::oauth::MAX_TOKENS_PER_MINUTE,
        "{tail}"
    );
}

#[test]
fn an_agent_exchanges_a_users_delegation_and_its_calls_are_decided_for_that_user() {
    let f = fixture();
    let (node, origin) = node(&f);
    let resource = format!("{origin}/mcp");
    let delegation = |agent: &str, ttl: &str| {
        let out = f
            .cli()
            .args([
                "delegate", "--user", "alice", "--agent", agent, "--tools", "hello",
            ])
            .args(["--ttl", ttl, "--user-key"])
            .arg(f.key_file("alice"))
            .output()
            .unwrap();
        assert_exit(&out, 0);
        stdout(&out).trim().to_string()
    };
    let exchange = |subject: &str| {
        let actor = assertion(AGENT, AGENT, &origin, 60);
        token_request(
            &origin,
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", subject),
                ("subject_token_type", JWT_TYPE),
                ("actor_token", &actor),
                ("actor_token_type", JWT_TYPE),
                ("resource", &resource),
            ],
        )
    };
    let (status, issued) = exchange(&delegation(AGENT, "5m"));
    assert_eq!(status, 200, "{issued}");
    let token = issued["access_token"].as_str().unwrap().to_string();
    let claims: Value = jwt::peek_claims(&token).unwrap();
    assert_eq!(
        (&claims["sub"], &claims["act"]["sub"]),
        (&json!("alice"), &json!(AGENT))
    );
    assert_eq!(claims["scope"], "hello");
    // The audit names the token: to whom, for whom, what ends it.
    let tail = stdout(&f.run(&["audit", "tail", "-n", "1000"]));
    let jti = claims["jti"].as_str().unwrap();
    assert!(
        tail.lines().any(|l| l.contains(&format!(
            "access token {jti} issued to `{AGENT}` on behalf of `alice`"
        ))),
        "{tail}"
    );
    // Its calls are the agent's for alice, within the delegation's tools.
    let out = client(json!({
        "transport": "http", "url": node.url, "token": token,
        "steps": [
            { "op": "call", "tool": "hello", "arguments": { "name": "x" } },
            { "op": "call", "tool": "read-file", "arguments": { "path": "/data/hello.txt" } },
        ],
    }));
    assert_eq!(out[0]["is_error"], false, "{}", out[0]);
    let shown = stdout(&f.run(&["audit", "show", out[0]["call"].as_str().unwrap()]));
    assert!(shown.contains("alice") && shown.contains(AGENT), "{shown}");
    assert!(
        out[1]["is_error"] == true || out[1]["rpc_error"].is_string(),
        "a tool outside the delegation ran: {}",
        out[1]
    );
    // Another agent's delegation, or an expired one, gets no token.
    let invalid_grant = |subject: &str, reason: &str| {
        let (status, refused) = exchange(subject);
        assert_eq!(
            (status, &refused["error"]),
            (400, &json!("invalid_grant")),
            "{refused}"
        );
        let description = refused["error_description"].as_str().unwrap();
        assert!(description.contains(reason), "{refused}");
    };
    invalid_grant(&delegation("limited", "5m"), "issued to agent");
    let short = delegation(AGENT, "1s");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    invalid_grant(&short, "expired");
}

#[test]
fn behind_a_proxy_the_configured_issuer_names_the_resource_and_its_tokens() {
    let f = fixture();
    f.extend_deployment("[oauth]\nissuer = \"https://warden.example\"\n");
    let (_node, origin) = node(&f);
    let prm = discovered(&origin, "https://warden.example");
    assert_eq!(prm["resource"], "https://warden.example/mcp");
    // An assertion for the node's own address is not for this issuer; one for it is.
    let resource = "https://warden.example/mcp";
    let own = assertion(AGENT, AGENT, &origin, 60);
    let (status, _) = token_request(&origin, &grant(&own, resource));
    assert_eq!(status, 401);
    let named = assertion(AGENT, AGENT, "https://warden.example", 60);
    let (status, issued) = token_request(&origin, &grant(&named, resource));
    assert_eq!(status, 200, "{issued}");
    let token = issued["access_token"].as_str().unwrap();
    assert_eq!(jwt::peek_claims::<Value>(token).unwrap()["aud"], resource);
    assert_eq!(initialize(&origin, token).0, 200);
}

#[test]
fn an_external_authorization_servers_tokens_are_accepted_for_its_registered_agents() {
    let f = fixture();
    // The external server's key, published to Warden as a JWKS file.
    let idp = warden::identity::keys::generate();
    let other = warden::identity::keys::generate();
    let jwks =
        warden::identity::jwks::KeySet::new(vec![(Some("idp-1".into()), idp.verifying_key())]);
    std::fs::write(f.path().join("idp-jwks.json"), jwks.to_json().to_string()).unwrap();
    let issuer = "https://idp.example/realms/agents";
    f.extend_deployment(&format!(
        "[oauth.authorization_server]\nissuer = \"{issuer}\"\njwks = \"idp-jwks.json\"\n\
         agent_claim = \"client_id\"\nagents = [\"{AGENT}\"]\n"
    ));
    let (_node, origin) = node(&f);
    // The metadata sends clients to it.
    let prm = discovered(&origin, &origin);
    // First the external server, then Warden's own (which keeps working).
    assert_eq!(
        prm["authorization_servers"],
        json!([issuer, origin]),
        "{prm}"
    );
    let resource = format!("{origin}/mcp");
    let now = jwt::now();
    let claims = |changes: Value| {
        let mut claims = json!({
            "iss": issuer, "sub": "a1b2-service-account", "client_id": AGENT,
            "aud": resource, "iat": now, "exp": now + 300, "jti": uuid::Uuid::new_v4().to_string(),
        });
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let token = |key: &ed25519_dalek::SigningKey, kid: &str, claims: Value| {
        jwt::sign_typed(key, Some(kid), "at+jwt", &claims)
    };
    let good = token(&idp, "idp-1", claims(json!({})));
    assert_eq!(initialize(&origin, &good).0, 200);
    // Refused, each with its reason.
    for (bad, reason) in [
        (token(&other, "idp-1", claims(json!({}))), "signature"),
        (
            token(&idp, "idp-2", claims(json!({}))),
            "not signed by a key of",
        ),
        (
            token(
                &idp,
                "idp-1",
                claims(json!({"aud": "https://elsewhere.example/mcp"})),
            ),
            "alone",
        ),
        (
            token(
                &idp,
                "idp-1",
                claims(json!({"aud": [resource, "https://elsewhere.example"]})),
            ),
            "alone",
        ),
        (
            token(&idp, "idp-1", claims(json!({"exp": now - 1}))),
            "expired",
        ),
        (
            token(&idp, "idp-1", claims(json!({"nbf": now + 3600}))),
            "not valid yet",
        ),
        (
            token(&idp, "idp-1", claims(json!({"client_id": "mallory"}))),
            "not an agent https://idp.example/realms/agents may authenticate",
        ),
        (
            token(&idp, "idp-1", claims(json!({"exp": now + 7200}))),
            "lives longer",
        ),
        (token(&idp, "idp-1", claims(json!({"jti": null}))), "jti"),
        (token(&idp, "idp-1", claims(json!({"jti": ""}))), "jti"),
        (
            token(
                &idp,
                "idp-1",
                claims(json!({"iat": i64::MIN, "exp": i64::MAX})),
            ),
            "lives longer",
        ),
        (
            token(&idp, "idp-1", claims(json!({"iat": now + 3600}))),
            "not valid yet",
        ),
        (token(&idp, "idp-1", claims(json!({"iat": null}))), "iat"),
        (
            token(&idp, "idp-1", claims(json!({"act": {"sub": "alice"}}))),
            "acts for another",
        ),
        (
            token(&idp, "idp-1", claims(json!({"client_id": null}))),
            "names no agent",
        ),
    ] {
        let (status, body) = initialize(&origin, &bad);
        assert_eq!(status, 401, "{reason}: {body}");
        assert!(body.contains(reason), "{reason}: {body}");
    }
    // Another issuer's token is Warden's to check, and it is not Warden's.
    let (status, body) = initialize(
        &origin,
        &token(&idp, "idp-1", claims(json!({"iss": "https://idp.example"}))),
    );
    assert_eq!(status, 401);
    assert!(body.contains("not signed by Warden"), "{body}");
    // One of its tokens that is no access token is no bearer either.
    let plain = jwt::sign_typed(&idp, Some("idp-1"), "JWT", &claims(json!({})));
    assert_eq!(initialize(&origin, &plain).0, 401);
    // Warden's own tokens keep working beside it.
    let own = assertion(AGENT, AGENT, &origin, 60);
    let (status, issued) = token_request(&origin, &grant(&own, &resource));
    assert_eq!(status, 200, "{issued}");
    assert_eq!(
        initialize(&origin, issued["access_token"].as_str().unwrap()).0,
        200
    );
    // Revoking one of its tokens (by `jti`) ends that token alone.
    let jti = uuid::Uuid::new_v4().to_string();
    let revocable = token(&idp, "idp-1", claims(json!({ "jti": jti })));
    assert_eq!(initialize(&origin, &revocable).0, 200);
    assert_exit(&f.run(&["revoke", "credential", &jti]), 0);
    let (status, body) = initialize(&origin, &revocable);
    assert_eq!(status, 401);
    assert!(body.contains("revoked"), "{body}");
    assert_eq!(initialize(&origin, &good).0, 200);
    // Revoking the agent ends its tokens at the next request.
    assert_exit(&f.run(&["revoke", "agent", AGENT]), 0);
    let (status, body) = initialize(&origin, &good);
    assert_eq!(status, 401);
    assert!(body.contains("revoked"), "{body}");
}
