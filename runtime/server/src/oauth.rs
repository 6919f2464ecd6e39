//! The MCP endpoint as an OAuth-protected resource, and Warden as its authorization server
//! (MCP authorization, 2025-06-18 and later): Protected Resource Metadata (RFC 9728), the
//! authorization server's metadata (RFC 8414), and the token endpoint for agents'
//! `client_credentials` grants with `private_key_jwt` (`warden::identity::oauth`). Any MCP
//! client that speaks the specification's authorization finds its way from a 401.

use crate::json_response as json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use std::sync::Arc;
use warden::identity::oauth::{
    ACCESS_TOKEN_TYPE, CLIENT_ASSERTION_TYPE, Endpoints, OAuthError, TOKEN_EXCHANGE, TokenRequest,
};
use warden::runtime::Runtime;

/// The most a token request's body may be.
pub const MAX_FORM: usize = 16 * 1024;

/// Where the protected resource's metadata is, for `WWW-Authenticate` (RFC 9728, section 3.1:
/// the well-known path with the resource's path after it).
pub fn resource_metadata_url(endpoints: &Endpoints) -> String {
    format!(
        "{}/.well-known/oauth-protected-resource/mcp",
        endpoints.issuer
    )
}

struct Served {
    runtime: Arc<Runtime>,
    endpoints: Endpoints,
}

/// The metadata and token routes (outside the bearer check: they are how a client gets one).
pub fn router(runtime: Arc<Runtime>, endpoints: Endpoints) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(authorization_server),
        )
        .route(
            "/oauth/token",
            post(token).layer(axum::extract::DefaultBodyLimit::max(MAX_FORM)),
        )
        .route("/oauth/authorize", get(authorize))
        .with_state(Arc::new(Served { runtime, endpoints }))
}

/// RFC 9728: this resource, and who issues its tokens: the external authorization server the
/// deployment names, if any, and Warden itself.
async fn protected_resource(State(served): State<Arc<Served>>) -> Response {
    let e = &served.endpoints;
    // The external one first: the one a client configured for neither is meant to use.
    let mut issuers = vec![e.issuer.clone()];
    if let Some(server) = &served.runtime.deployment().oauth_authorization_server {
        issuers.insert(0, server.issuer.clone());
    }
    json(
        StatusCode::OK,
        serde_json::json!({
            "resource": e.resource,
            "authorization_servers": issuers,
            "bearer_methods_supported": ["header"],
            "resource_name": "Warden",
        }),
    )
}

/// RFC 8414: how to get a token here.
async fn authorization_server(State(served): State<Arc<Served>>) -> Response {
    let e = &served.endpoints;
    json(
        StatusCode::OK,
        serde_json::json!({
            "issuer": e.issuer,
            "token_endpoint": e.token_endpoint(),
            // Required by RFC 8414 (and by clients that read it); it refuses every request.
            "authorization_endpoint": format!("{}/oauth/authorize", e.issuer),
            "grant_types_supported": ["client_credentials", TOKEN_EXCHANGE],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
            "response_types_supported": [],
            "access_token_types": [ACCESS_TOKEN_TYPE],
            "client_assertion_types": [CLIENT_ASSERTION_TYPE],
        }),
    )
}

/// `GET /oauth/authorize`: there is no interactive authorization; agents are clients.
async fn authorize() -> Response {
    json(
        StatusCode::BAD_REQUEST,
        serde_json::json!({
            "error": "unsupported_response_type",
            "error_description": "Warden's agents authenticate as clients: the \
                client_credentials grant with private_key_jwt at the token endpoint",
        }),
    )
}

/// The form's parameters, each at most once (RFC 6749, section 3.2).
fn form(bytes: &Bytes) -> Result<TokenRequest, OAuthError> {
    let invalid = |description: &str| OAuthError::new("invalid_request", description);
    if bytes.len() > MAX_FORM {
        return Err(invalid("the request is too large"));
    }
    let mut request = TokenRequest::default();
    for (name, value) in form_urlencoded::parse(bytes) {
        let slot = match name.as_ref() {
            "grant_type" => &mut request.grant_type,
            "client_id" => &mut request.client_id,
            "client_assertion_type" => &mut request.client_assertion_type,
            "client_assertion" => &mut request.client_assertion,
            "resource" => &mut request.resource,
            "scope" => &mut request.scope,
            "subject_token" => &mut request.subject_token,
            "subject_token_type" => &mut request.subject_token_type,
            "actor_token" => &mut request.actor_token,
            "actor_token_type" => &mut request.actor_token_type,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(invalid("a parameter is repeated"));
        }
    }
    Ok(request)
}

/// `POST /oauth/token`.
async fn token(State(served): State<Arc<Served>>, bytes: Bytes) -> Response {
    let issued = match form(&bytes) {
        Ok(request) => {
            let served = served.clone();
            tokio::task::spawn_blocking(move || {
                served
                    .runtime
                    .issue_access_token(&request, &served.endpoints)
            })
            .await
            .unwrap_or_else(|_| Err(OAuthError::new("server_error", "Warden failed")))
        }
        Err(e) => Err(e),
    };
    match issued {
        Ok(token) => json(
            StatusCode::OK,
            serde_json::to_value(token).unwrap_or_default(),
        ),
        Err(e) => {
            tracing::info!(error = %e, "a token request was refused");
            let status = match e.code {
                "invalid_client" => StatusCode::UNAUTHORIZED,
                "slow_down" => StatusCode::TOO_MANY_REQUESTS,
                "server_error" => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            let mut response = json(
                status,
                serde_json::json!({ "error": e.code, "error_description": e.description }),
            );
            if let Some(seconds) = e.retry_after {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, seconds.into());
            }
            response
        }
    }
}
