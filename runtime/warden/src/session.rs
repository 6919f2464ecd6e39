//! Sessions: the calls of one agent (for one user) whose provenance is tracked together. A
//! session starts clean; a tool that ingests untrusted content, or a call whose caller marks
//! its input as untrusted, taints it, and every later decision of the session sees the taint.

use crate::credentials::Secret;
use crate::error::Error;
use crate::identity::delegation::Delegation;
use crate::identity::jwt;
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::policy::{Access, CallFacts, Origin, SessionFacts, UserFacts};
use crate::registry;
use crate::runtime::Runtime;
use crate::state::{RevocationKind, Session, TooManySessions};

/// How long a session without a delegation lives.
pub const SESSION_LIFETIME: i64 = 24 * 3600;

/// The user a call acts for: from its own delegation, or from its session's.
#[derive(Debug, Clone)]
pub struct ActingFor {
    pub user: String,
    pub delegation: String,
    pub scope: Vec<String>,
}

impl From<Delegation> for ActingFor {
    fn from(d: Delegation) -> ActingFor {
        ActingFor {
            user: d.user,
            delegation: d.id,
            scope: d.tools,
        }
    }
}

impl ActingFor {
    pub fn allows(&self, tool: &str) -> bool {
        self.scope.iter().any(|t| t == tool || t == "*")
    }
}

impl Runtime {
    /// Starts a session for an authenticated `agent`, on behalf of the user of
    /// `on_behalf_of` if given (verified now; the session ends when the delegation expires).
    pub fn start_session(
        &self,
        agent: &str,
        on_behalf_of: Option<&Secret>,
    ) -> Result<Session, Error> {
        let delegation = on_behalf_of
            .map(|token| self.verify_delegation(token, agent))
            .transpose()?;
        let now = jwt::now();
        let session = Session {
            id: uuid::Uuid::new_v4().to_string(),
            agent: agent.to_string(),
            user: delegation.as_ref().map(|d| d.user.clone()),
            delegation: delegation.as_ref().map(|d| d.id.clone()),
            scope: delegation
                .as_ref()
                .map(|d| d.tools.clone())
                .unwrap_or_default(),
            expires: delegation.as_ref().map_or(now + SESSION_LIFETIME, |d| {
                d.expires.min(now + SESSION_LIFETIME)
            }),
            tainted: false,
            taint_reason: None,
            calls: 0,
        };
        let state = self.state()?;
        state
            .start_session(&session)
            .map_err(|e| match e.downcast::<TooManySessions>() {
                Ok(full) => Error::Refused(full.to_string()),
                Err(e) => Error::Internal(e.context("recording the session")),
            })?;
        Ok(session)
    }

    /// A delegation token, verified and checked to be issued to `agent`.
    pub fn verify_delegation(&self, token: &Secret, agent: &str) -> Result<Delegation, Error> {
        let d = self
            .delegations
            .verify(token.expose(), &self.deployment())
            .map_err(Error::Refused)?;
        if d.agent != agent {
            return Err(Error::Refused(format!(
                "delegation {} was issued to agent `{}`, not `{agent}`",
                d.id, d.agent
            )));
        }
        Ok(d)
    }

    /// The tools `agent` may call (for `acting`'s user, within the delegation's scope), and
    /// how, as far as policies tell before any input: what an MCP server lists. Tools that
    /// cannot be read are left out (a call to them would fail); of two tools with one name,
    /// the first found is the one a call would run.
    pub fn callable_tools(
        &self,
        agent: &str,
        acting: Option<&ActingFor>,
        origin: Origin,
    ) -> Vec<(String, Access)> {
        let mut names: Vec<String> = registry::tool_dirs(&self.deployment())
            .iter()
            .filter_map(|dir| Manifest::load(&dir.join(MANIFEST_FILE)).ok())
            .map(|manifest| manifest.name)
            .filter(|name| acting.is_none_or(|a| a.allows(name)))
            .collect();
        names.sort();
        names.dedup();
        let mut callable = Vec::new();
        for name in names {
            // The tool a call by that name would run: warm, or read (and its digest checked).
            let Ok(found) = self.find(&name) else {
                continue;
            };
            // Nor one revoked, or whose publisher is (or whose revocations cannot be read): a
            // call would be refused, and listing it would load and run revoked code.
            let digest = found.facts().digest;
            let signer = found.signer();
            let mut ids = vec![(RevocationKind::Tool, digest.as_str())];
            ids.extend(signer.as_deref().map(|s| (RevocationKind::Publisher, s)));
            if !self
                .state()
                .is_ok_and(|store| matches!(store.revoked(&ids), Ok(None)))
            {
                continue;
            }
            let facts = CallFacts {
                agent: agent.to_string(),
                tool: found.facts(),
                user: acting.map(|a| UserFacts {
                    name: a.user.clone(),
                    scope: a.scope.clone(),
                }),
                origin: origin.clone(),
                session: SessionFacts::default(),
                calls_last_minute: 0,
                time: jwt::now(),
            };
            if let Some(access) = self.policies().access(&facts) {
                callable.push((name, access));
            }
        }
        callable
    }

    /// The session `id` for a call by `agent`, and the user the call acts for: from its own
    /// delegation `on_behalf_of` (verified now, and then the session's), or from the
    /// session's.
    pub fn resolve_session(
        &self,
        id: Option<&str>,
        agent: &str,
        on_behalf_of: Option<&Secret>,
    ) -> Result<(Option<Session>, Option<ActingFor>), Error> {
        let own = on_behalf_of
            .map(|token| self.verify_delegation(token, agent))
            .transpose()?;
        let Some(id) = id else {
            return Ok((None, own.map(ActingFor::from)));
        };
        let session = self
            .state()?
            .session(id)
            .map_err(Error::internal("reading the session"))?
            .ok_or_else(|| {
                Error::Refused(format!(
                    "no session `{id}` (start one with `warden session start`)"
                ))
            })?;
        if session.agent != agent {
            return Err(Error::Refused(format!(
                "session {id} belongs to another agent"
            )));
        }
        if session.expires <= jwt::now() {
            return Err(Error::Refused(format!("session {id} has expired")));
        }
        let acting = match (own, &session.delegation) {
            (Some(d), Some(theirs)) if &d.id != theirs => {
                return Err(Error::Refused(format!(
                    "delegation {} is not the one session {id} was started with",
                    d.id
                )));
            }
            (Some(d), _) => Some(ActingFor::from(d)),
            (None, Some(delegation)) => Some(ActingFor {
                user: session.user.clone().unwrap_or_default(),
                delegation: delegation.clone(),
                scope: session.scope.clone(),
            }),
            (None, None) => None,
        };
        Ok((Some(session), acting))
    }
}
