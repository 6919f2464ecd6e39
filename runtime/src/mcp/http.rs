//! The streamable HTTP transport (`warden mcp --http ADDR`): every request carries a signed
//! agent assertion as its bearer token (`warden assert`); requests without one, or with one
//! that does not verify, get 401 before any MCP handling. The first use of an assertion
//! records its nonce, so it is bound to this server; it is then accepted from this server's
//! memory until it expires.

use super::{Principal, WardenMcp};
use crate::call::AuthenticatedAgent;
use crate::credentials::Secret;
use crate::identity::{assertion, jwt};
use crate::runtime::Runtime;
use anyhow::{Context as _, Result};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The header that carries a delegation token: the request acts for that user.
pub const DELEGATION_HEADER: &str = "x-warden-delegation";

/// Serves MCP at `http://ADDR/mcp` until the process ends. `bound` hears the address
/// actually bound (ADDR may ask for port 0).
pub async fn serve(
    runtime: Arc<Runtime>,
    addr: SocketAddr,
    bound: impl FnOnce(SocketAddr),
) -> Result<()> {
    let handlers = runtime.clone();
    let service = StreamableHttpService::new(
        move || Ok(WardenMcp::new(handlers.clone(), None)),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let auth = Arc::new(Bearers {
        runtime,
        verified: Mutex::default(),
    });
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(auth, authenticate));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    bound(listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// Assertions this server has verified: sha256 of the token → (agent, expiry).
struct Bearers {
    runtime: Arc<Runtime>,
    verified: Mutex<HashMap<[u8; 32], (AuthenticatedAgent, i64)>>,
}

impl Bearers {
    fn verify(&self, token: &str) -> Result<AuthenticatedAgent, String> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = jwt::now();
        let mut verified = self.verified.lock().unwrap();
        verified.retain(|_, (_, expires)| *expires > now);
        if let Some((agent, _)) = verified.get(&key) {
            return Ok(agent.clone());
        }
        let agent = self.runtime.authenticate(&Secret::new(token))?;
        let expires = jwt::peek_claims::<assertion::CallAssertion>(token)
            .map_err(|e| format!("the assertion: {e}"))?
            .exp;
        verified.insert(key, (agent.clone(), expires));
        Ok(agent)
    }
}

async fn authenticate(
    State(bearers): State<Arc<Bearers>>,
    mut request: Request,
    next: Next,
) -> Response {
    // Owned copies: the request's body is not `Sync`, so no borrow of it may live across
    // an await.
    let (token, delegation) = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        (
            header(http::header::AUTHORIZATION.as_str())
                .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string)),
            header(DELEGATION_HEADER).map(Secret::new),
        )
    };
    let Some(token) = token else {
        return unauthorized(
            "a signed agent assertion is required: `Authorization: Bearer` with the output of \
             `warden assert`",
        );
    };
    // Verifying may touch the state file: off the async threads.
    let verified = tokio::task::spawn_blocking({
        let bearers = bearers.clone();
        move || bearers.verify(&token)
    })
    .await
    .unwrap_or_else(|e| Err(format!("verifying the assertion failed: {e}")));
    match verified {
        Ok(agent) => {
            request.extensions_mut().insert(Principal {
                agent,
                on_behalf_of: delegation,
                session: None,
            });
            next.run(request).await
        }
        Err(reason) => {
            tracing::info!(%reason, "MCP request refused");
            unauthorized(&format!("authentication failed: {reason}"))
        }
    }
}

fn unauthorized(reason: &str) -> Response {
    (
        http::StatusCode::UNAUTHORIZED,
        [(http::header::WWW_AUTHENTICATE, "Bearer")],
        reason.to_string(),
    )
        .into_response()
}
