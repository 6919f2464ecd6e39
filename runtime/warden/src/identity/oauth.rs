//! Warden as the OAuth 2.1 authorization server of its own agents, as the MCP authorization
//! specification asks of a protected server: an agent is a client that authenticates with a
//! JWT signed by its own Ed25519 key (`private_key_jwt`, RFC 7523) in a `client_credentials`
//! grant, and gets a short-lived access token for one resource (RFC 8707), signed with
//! Warden's key (`warden jwks`). The token names the agent (`sub`), is typed `at+jwt` (RFC
//! 9068, so that no other token Warden signs passes for one), and is refused once its agent
//! or its `jti` is revoked.
//!
//! On behalf of a user, the agent exchanges (RFC 8693) the user's delegation (the subject
//! token) with its own signed assertion as the actor: the token then names the user (`sub`),
//! the agent (`act.sub`) and the delegation, and carries the delegation itself, so that every
//! call made with it is decided as a `--on-behalf-of` call is (the delegation checked again,
//! its scope, expiry and revocation). No HTTP here (the server crate serves it).

use crate::call::AuthenticatedAgent;
use crate::deployment::{Deployment, ExternalAuthorizationServer};
use crate::error::Error;
use crate::identity::{jwt, keys};
use crate::runtime::Runtime;
use crate::state::RevocationKind;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// RFC 7523's client assertion type.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub use super::issuance::MAX_TOKENS_PER_MINUTE;
pub use super::jwt::{ACCESS_TOKEN_TYPE, is_access_token_type};

/// How long an access token lives (seconds).
pub const ACCESS_TOKEN_LIFETIME: i64 = 300;
/// The longest a client assertion may live (seconds): it is a proof for one request.
pub const MAX_ASSERTION_LIFETIME: i64 = 300;
/// Clock skew allowed on `iat`.
const SKEW: i64 = 60;

/// RFC 8693's grant, and the one token type it takes here.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A token request's parameters (`application/x-www-form-urlencoded`).
#[derive(Debug, Default, Deserialize)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    /// Token exchange: the user's delegation.
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    /// Token exchange: the agent's own signed assertion (as a client assertion is).
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
}

/// A token endpoint's refusal (RFC 6749, section 5.2): its `error` code and a description.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    pub code: &'static str,
    pub description: String,
    /// For `slow_down`: seconds until the agent may have its next token (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl OAuthError {
    pub fn new(code: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            code,
            description: description.into(),
            retry_after: None,
        }
    }
}

/// `agent` had its share of tokens this minute; it may have the next in `wait`.
fn slow_down(agent: &str, wait: std::time::Duration) -> OAuthError {
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    OAuthError {
        retry_after: Some(seconds),
        ..OAuthError::new(
            "slow_down",
            format!(
                "`{agent}` was issued {MAX_TOKENS_PER_MINUTE} tokens in the last minute: use one \
                 it has (each lives {ACCESS_TOKEN_LIFETIME} s) or ask again in {seconds} s"
            ),
        )
    }
}

/// `aud`: one string or several.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    /// Whether it is exactly `wanted`, alone: an assertion that names other audiences too
    /// could be replayed at them (the audience-injection the RFC 7523 revision closes).
    fn is_only(&self, wanted: &str) -> bool {
        match self {
            Audience::One(one) => one == wanted,
            Audience::Many(many) => many.len() == 1 && many[0] == wanted,
        }
    }
}

/// What a client signs (RFC 7523, section 3).
#[derive(Debug, Deserialize)]
struct ClientAssertion {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    iat: Option<i64>,
    jti: String,
}

/// An access token's claims (RFC 9068).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The agent, or on behalf of a user the user.
    pub sub: String,
    pub aud: String,
    /// The agent.
    pub client_id: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// On behalf of a user: the agent that acts (RFC 8693, section 4.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// On behalf of a user: the delegation's id, its tools, and the delegation itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_token: Option<String>,
    /// The agent's registered key when the token was issued: a key changed since (one
    /// stolen, replaced) ends the token.
    pub agent_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
}

/// Who an access token's bearer is: the agent, and the delegation it acts under, if any.
pub struct Bearer {
    pub agent: AuthenticatedAgent,
    pub on_behalf_of: Option<crate::credentials::Secret>,
    pub expires: i64,
}

/// An issued token, as the token endpoint answers (RFC 6749, section 5.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
}

/// Where this authorization server and its one resource are.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The issuer identifier (`http://host:port`, no path).
    pub issuer: String,
    /// The protected resource: the MCP endpoint's URL.
    pub resource: String,
}

impl Endpoints {
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth/token", self.issuer)
    }
}

impl Runtime {
    /// The token endpoint: a `client_credentials` grant authenticated by an agent's
    /// `private_key_jwt`, for `endpoints.resource` only.
    pub fn issue_access_token(
        &self,
        request: &TokenRequest,
        endpoints: &Endpoints,
    ) -> Result<TokenResponse, OAuthError> {
        let exchange = match request.grant_type.as_deref() {
            Some("client_credentials") => false,
            Some(TOKEN_EXCHANGE) => true,
            Some(other) => {
                return Err(OAuthError::new(
                    "unsupported_grant_type",
                    format!(
                        "grant type `{other}` is not supported: use client_credentials, or \
                         {TOKEN_EXCHANGE} on behalf of a user"
                    ),
                ));
            }
            None => return Err(OAuthError::new("invalid_request", "no grant_type")),
        };
        // The agent proves itself with its own signed JWT: the client assertion, or in an
        // exchange the actor token.
        let assertion = match (exchange, &request.actor_token) {
            (true, Some(actor)) => {
                if request.actor_token_type.as_deref() != Some(JWT_TOKEN_TYPE) {
                    return Err(OAuthError::new(
                        "invalid_request",
                        format!("actor_token_type must be {JWT_TOKEN_TYPE}"),
                    ));
                }
                actor.as_str()
            }
            _ => {
                if request.client_assertion_type.as_deref() != Some(CLIENT_ASSERTION_TYPE) {
                    return Err(OAuthError::new(
                        "invalid_client",
                        format!(
                            "clients authenticate with private_key_jwt ({CLIENT_ASSERTION_TYPE})"
                        ),
                    ));
                }
                request
                    .client_assertion
                    .as_deref()
                    .ok_or_else(|| OAuthError::new("invalid_client", "no client_assertion"))?
            }
        };
        if let Some(resource) = &request.resource
            && resource.trim_end_matches('/') != endpoints.resource
        {
            return Err(OAuthError::new(
                "invalid_target",
                format!("this server issues tokens for {} only", endpoints.resource),
            ));
        }
        let now = jwt::now();
        let agent = self.verify_client_assertion(assertion, request, endpoints, now)?;
        let acting = match exchange {
            true => Some(self.exchanged_delegation(request, &agent)?),
            false => None,
        };
        let signer = self.access_token_key().map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "loading the access tokens' key failed");
            OAuthError::new("server_error", "Warden could not issue a token; try again")
        })?;
        let agent_key = self
            .deployment()
            .agents
            .get(&agent)
            .and_then(|a| a.public_key.clone())
            .unwrap_or_default();
        let mut claims = AccessClaims {
            iss: endpoints.issuer.clone(),
            sub: agent.clone(),
            aud: endpoints.resource.clone(),
            client_id: agent.clone(),
            iat: now,
            exp: now + ACCESS_TOKEN_LIFETIME,
            jti: uuid::Uuid::new_v4().to_string(),
            act: None,
            delegation: None,
            scope: None,
            delegation_token: None,
            agent_key,
        };
        if let Some((delegation, token)) = acting {
            claims.sub = delegation.user;
            claims.act = Some(Actor { sub: agent });
            claims.exp = claims.exp.min(delegation.expires);
            claims.delegation = Some(delegation.id);
            claims.scope = Some(delegation.tools.join(" "));
            claims.delegation_token = Some(token);
        }
        tracing::info!(agent = %claims.client_id, user = ?claims.act.as_ref().map(|_| &claims.sub), jti = %claims.jti, "access token issued");
        // On the audit chain before it is handed out: its `jti` is what `warden revoke
        // credential` ends it by.
        let record = crate::audit::TokenRecord {
            id: format!("token-{}", claims.jti),
            time_ms: jwt::now_ms(),
            agent: claims.client_id.clone(),
            user: claims.act.as_ref().map(|_| claims.sub.clone()),
            delegation: claims.delegation.clone(),
            jti: claims.jti.clone(),
            resource: claims.aud.clone(),
            expires: claims.exp,
        };
        // Counted where it is issued, so that a request refused on the way (a delegation, the
        // signing key) costs the agent nothing.
        self.issued_tokens
            .admit(&record.agent, Instant::now())
            .map_err(|wait| slow_down(&record.agent, wait))?;
        let recorded = match self.state() {
            Ok(state) => crate::audit::entry(&crate::audit::Record::Token(record))
                .and_then(|entry| state.append_audit(&[entry])),
            Err(e) => Err(anyhow::anyhow!("{e}")),
        };
        if let Err(e) = recorded {
            tracing::error!("cannot record an access token on the audit chain: {e:#}");
            return Err(OAuthError::new(
                "server_error",
                "Warden could not record the token; try again",
            ));
        }
        Ok(TokenResponse {
            access_token: signer.sign_typed(ACCESS_TOKEN_TYPE, &claims),
            token_type: "Bearer",
            expires_in: claims.exp - now,
        })
    }

    /// The user's delegation a token exchange brings: issued to `agent`, not expired, not
    /// revoked; with its token, which every call made with the access token checks again.
    fn exchanged_delegation(
        &self,
        request: &TokenRequest,
        agent: &str,
    ) -> Result<(crate::identity::delegation::Delegation, String), OAuthError> {
        if request.subject_token_type.as_deref() != Some(JWT_TOKEN_TYPE) {
            return Err(OAuthError::new(
                "invalid_request",
                format!("subject_token_type must be {JWT_TOKEN_TYPE} (a delegation)"),
            ));
        }
        let token = request.subject_token.clone().ok_or_else(|| {
            OAuthError::new(
                "invalid_request",
                "no subject_token (the user's delegation)",
            )
        })?;
        let delegation = self
            .verify_delegation(&crate::credentials::Secret::new(token.clone()), agent)
            .map_err(|e| match e {
                Error::Refused(reason) => OAuthError::new("invalid_grant", reason),
                _ => OAuthError::new(
                    "server_error",
                    "Warden could not check the delegation; try again",
                ),
            })?;
        let revoked = self
            .state()
            .map_err(|_| {
                OAuthError::new(
                    "server_error",
                    "Warden could not check revocations; try again",
                )
            })?
            .revoked(&[(RevocationKind::Delegation, delegation.id.as_str())]);
        match revoked {
            Ok(None) => Ok((delegation, token)),
            Ok(Some(_)) => Err(OAuthError::new(
                "invalid_grant",
                format!("delegation {} is revoked", delegation.id),
            )),
            Err(_) => Err(OAuthError::new(
                "server_error",
                "Warden could not check revocations; try again",
            )),
        }
    }

    /// Checks a client assertion: signed by the registered key of the agent it names (as
    /// `iss`, `sub` and `client_id` alike), for this authorization server, short-lived, and
    /// used once (its `jti` is recorded as call nonces are, for every node).
    fn verify_client_assertion(
        &self,
        token: &str,
        request: &TokenRequest,
        endpoints: &Endpoints,
        now: i64,
    ) -> Result<String, OAuthError> {
        let invalid = |why: String| OAuthError::new("invalid_client", why);
        let claimed: ClientAssertion =
            jwt::peek_claims(token).map_err(|e| invalid(format!("the client assertion: {e}")))?;
        if claimed.iss != claimed.sub
            || request
                .client_id
                .as_deref()
                .is_some_and(|id| id != claimed.sub)
        {
            return Err(invalid(
                "the client assertion's iss, sub and the client_id must all name the agent".into(),
            ));
        }
        let deployment = self.deployment();
        // One answer for an unknown client and a bad signature: names are not for probing.
        let unverified = || {
            invalid("the client assertion does not verify against a registered agent's key".into())
        };
        let key = deployment
            .agents
            .get(&claimed.sub)
            .and_then(|a| a.public_key.as_deref())
            .and_then(|k| keys::parse_public(k).ok())
            .ok_or_else(unverified)?;
        let claims: ClientAssertion = jwt::verify(token, &key).map_err(|_| unverified())?;
        // Before the assertion's `jti` is written: an agent refused for asking too often
        // writes nothing.
        if let Some(wait) = self.issued_tokens.wait(&claims.sub, Instant::now()) {
            return Err(slow_down(&claims.sub, wait));
        }
        if !claims.aud.is_only(&endpoints.issuer) {
            return Err(invalid(format!(
                "the client assertion is not for this server (aud must be {})",
                endpoints.issuer
            )));
        }
        if claims.exp <= now {
            return Err(invalid("the client assertion has expired".into()));
        }
        if claims.exp - now > MAX_ASSERTION_LIFETIME
            || claims.iat.is_some_and(|iat| iat > now + SKEW)
        {
            return Err(invalid(format!(
                "the client assertion must live at most {MAX_ASSERTION_LIFETIME} s"
            )));
        }
        let state = self.state().map_err(|_| {
            OAuthError::new(
                "server_error",
                "Warden could not check the assertion; try again",
            )
        })?;
        // Per agent: one agent cannot spend another's `jti`.
        match state.use_nonce(&format!("oauth:{}:{}", claims.sub, claims.jti), claims.exp) {
            Ok(true) => {}
            Ok(false) => {
                return Err(invalid(
                    "the client assertion was already used (replay)".into(),
                ));
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "recording a client assertion failed");
                return Err(OAuthError::new(
                    "server_error",
                    "Warden could not check the assertion; try again",
                ));
            }
        }
        match state.revoked(&[(RevocationKind::Agent, claims.sub.as_str())]) {
            Ok(None) => Ok(claims.sub),
            Ok(Some(_)) => Err(invalid(format!("agent `{}` is revoked", claims.sub))),
            Err(_) => Err(OAuthError::new(
                "server_error",
                "Warden could not check revocations; try again",
            )),
        }
    }

    /// Authenticates the bearer of an access token for `endpoints.resource`: issued here,
    /// for this resource, not expired, its agent still registered and neither it nor the
    /// token revoked. A refusal's reason is safe to show.
    pub fn authenticate_access_token(
        &self,
        token: &str,
        endpoints: &Endpoints,
    ) -> Result<Bearer, Error> {
        let header = jwt::peek_header(token).map_err(Error::Refused)?;
        if !header.typ.as_deref().is_some_and(is_access_token_type) {
            return Err(Error::Refused("the token is not an access token".into()));
        }
        // The unverified `iss` only picks whose keys check the token; the verified one is
        // then checked again.
        let deployment = self.deployment();
        if let Some(server) = &deployment.oauth_authorization_server
            && jwt::peek_claims::<Issued>(token).is_ok_and(|c| c.iss == server.issuer)
        {
            return self.authenticate_external_token(
                token,
                header.kid.as_deref(),
                &deployment,
                server,
                endpoints,
            );
        }
        // Access tokens have a key of their own (no upstream's JWKS lists it), held in memory:
        // a token naming another key is refused without reading anything.
        let signer = self.access_token_key().map_err(Error::Internal)?;
        if header.kid.as_deref() != Some(signer.kid()) {
            return Err(Error::Refused(
                "the access token was not signed by Warden".into(),
            ));
        }
        let claims: AccessClaims =
            jwt::verify(token, &signer.verifying_key()).map_err(Error::Refused)?;
        if claims.iss != endpoints.issuer {
            return Err(Error::Refused(
                "the access token is from another issuer".into(),
            ));
        }
        if claims.aud != endpoints.resource {
            return Err(Error::Refused(format!(
                "the access token is for another resource ({}), not {}",
                claims.aud, endpoints.resource
            )));
        }
        if claims.exp <= jwt::now() {
            return Err(Error::Refused("the access token has expired".into()));
        }
        let agent = claims.act.as_ref().map_or(&claims.client_id, |a| &a.sub);
        if agent != &claims.client_id {
            return Err(Error::Refused(
                "the access token's actor is not its client".into(),
            ));
        }
        let registered = deployment
            .agents
            .get(agent)
            .and_then(|a| a.public_key.as_deref());
        if registered != Some(claims.agent_key.as_str()) {
            return Err(Error::Refused(format!(
                "`{agent}` is no longer an agent with the key the token was issued to"
            )));
        }
        let authenticated = self.bearer_agent(
            &deployment,
            agent,
            Some(&claims.jti),
            claims.delegation.as_deref(),
        )?;
        Ok(Bearer {
            agent: authenticated,
            on_behalf_of: claims.delegation_token.map(crate::credentials::Secret::new),
            expires: claims.exp,
        })
    }

    /// An access token of the external authorization server (`[oauth.authorization_server]`):
    /// signed by one of its keys, issued by it, for this resource alone, current, and naming
    /// in its agent claim an agent that is registered and not revoked. It carries no
    /// delegation: a user's comes as for any agent's bearer (exchanged at Warden's own token
    /// endpoint, or the delegation header), verified as issued to this agent.
    fn authenticate_external_token(
        &self,
        token: &str,
        kid: Option<&str>,
        deployment: &Deployment,
        server: &ExternalAuthorizationServer,
        endpoints: &Endpoints,
    ) -> Result<Bearer, Error> {
        let key = server.keys.key(kid).ok_or_else(|| {
            Error::Refused(format!(
                "the access token was not signed by a key of {}",
                server.issuer
            ))
        })?;
        let claims: serde_json::Value = jwt::verify(token, &key).map_err(Error::Refused)?;
        let checked = ExternalClaims::deserialize(&claims)
            .map_err(|e| Error::Refused(format!("the access token's claims: {e}")))?;
        if checked.iss != server.issuer {
            return Err(Error::Refused(
                "the access token is from another issuer".into(),
            ));
        }
        if !checked.aud.is_only(&endpoints.resource) {
            return Err(Error::Refused(format!(
                "the access token is not for {} alone",
                endpoints.resource
            )));
        }
        let iat = checked
            .iat
            .ok_or_else(|| Error::Refused("the access token has no `iat`".into()))?;
        jwt::check_times(iat, checked.exp, MAX_EXTERNAL_LIFETIME, SKEW)
            .map_err(|e| Error::Refused(format!("the access token: {e}")))?;
        if checked.nbf.is_some_and(|nbf| nbf > jwt::now() + SKEW) {
            return Err(Error::Refused(
                "the access token is not valid yet (nbf)".into(),
            ));
        }
        // Acting for someone else is a delegation, which Warden's own exchange decides.
        if checked.act.is_some() {
            return Err(Error::Refused(
                "the access token acts for another (`act`): exchange a delegation at Warden's \
                 token endpoint"
                    .into(),
            ));
        }
        let agent = claims[server.agent_claim.as_str()]
            .as_str()
            .ok_or_else(|| {
                Error::Refused(format!(
                    "the access token names no agent in `{}`",
                    server.agent_claim
                ))
            })?;
        if !server.agents.contains(agent) {
            return Err(Error::Refused(format!(
                "`{agent}` is not an agent {} may authenticate",
                server.issuer
            )));
        }
        let jti = checked
            .jti
            .as_deref()
            .filter(|j| !j.is_empty())
            .ok_or_else(|| {
                Error::Refused("the access token has no `jti` (nothing could revoke it)".into())
            })?;
        let agent = self.bearer_agent(deployment, agent, Some(jti), None)?;
        Ok(Bearer {
            agent,
            on_behalf_of: None,
            expires: checked.exp,
        })
    }

    /// The agent an access token names, if it is registered and neither it, the token (`jti`)
    /// nor the delegation it acts under is revoked.
    fn bearer_agent(
        &self,
        deployment: &Deployment,
        agent: &str,
        jti: Option<&str>,
        delegation: Option<&str>,
    ) -> Result<AuthenticatedAgent, Error> {
        let mut ids = vec![(RevocationKind::Agent, agent)];
        ids.extend(jti.map(|jti| (RevocationKind::Credential, jti)));
        ids.extend(delegation.map(|d| (RevocationKind::Delegation, d)));
        let revoked = self.state()?.revoked(&ids);
        if let Some(r) = revoked.map_err(Error::Internal)? {
            return Err(Error::Refused(format!(
                "the access token's {} `{}` is revoked",
                r.kind.as_str(),
                r.id
            )));
        }
        AuthenticatedAgent::registered(deployment, agent)
            .ok_or_else(|| Error::Refused(format!("`{agent}` is not an agent")))
    }
}

/// Who says they issued a token (read unverified, to pick the keys that check it).
#[derive(Deserialize)]
struct Issued {
    iss: String,
}

/// The claims Warden checks in an external authorization server's access token (RFC 9068,
/// section 2.2); the agent's claim is read by name.
#[derive(Deserialize)]
struct ExternalClaims {
    iss: String,
    aud: Audience,
    exp: i64,
    /// Required: the lifetime is `exp - iat`.
    iat: Option<i64>,
    nbf: Option<i64>,
    /// What `warden revoke credential` ends it by: required.
    jti: Option<String>,
    act: Option<serde_json::Value>,
}

/// The longest an external authorization server's access token may live (`exp - iat`).
const MAX_EXTERNAL_LIFETIME: i64 = 3600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assertion_is_for_this_server_alone() {
        let audience = |v| serde_json::from_value::<Audience>(v).unwrap();
        assert!(audience(serde_json::json!("a")).is_only("a"));
        assert!(audience(serde_json::json!(["a"])).is_only("a"));
        assert!(!audience(serde_json::json!(["b", "a"])).is_only("a"));
        assert!(!audience(serde_json::json!("b")).is_only("a"));
        assert!(is_access_token_type("AT+JWT") && !is_access_token_type("JWT"));
    }
}
