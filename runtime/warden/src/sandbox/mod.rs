//! The per-call sandbox: everything a tool can reach during one call, built fresh each time.
//!
//! One file per capability: `fs` (mounts, disk quota, pure) and `filesystem` (the
//! `wasi:filesystem` host that enforces the quota), `egress` (rules, pure) and `http` (the
//! `wasi:http` hook that enforces them), `limits` (memory, stdio). This module assembles them into the
//! `Store` data of one call.

pub mod egress;
pub mod filesystem;
pub mod fs;
pub mod http;
pub mod limits;
pub mod run;

use crate::credentials::Granted;
use crate::credentials::inject::Credentials;
use crate::credentials::mint::Minter;
use crate::credentials::scrub::SecretSet;
use crate::faults::{Fault, injected};
use crate::identity::CallContext;
use crate::manifest::{Limits, MountMode};
use anyhow::{Context as _, Result};
use egress::EgressRule;
use fs::{DiskQuota, Mount};
use http::{EgressGate, EgressHooks, EgressLog};
use limits::{Capture, MemoryLimiter};
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// What a tool was granted: computed once when the tool is loaded, used by every call.
#[derive(Debug, Clone)]
pub struct Grants {
    pub mounts: Vec<Mount>,
    pub egress: Arc<[EgressRule]>,
    /// The credentials the egress rules name, as the deployment defines them.
    pub credentials: Arc<HashMap<String, Arc<Granted>>>,
    /// The static keys among them, in every form a response is scrubbed of (computed once;
    /// each call forks it).
    pub static_secrets: SecretSet,
    pub limits: Limits,
}

impl Grants {
    /// Can the tool change anything outside its call while it runs (send a request, write
    /// to a mount)? One that cannot has done nothing anyone sees until its result is returned.
    /// (Reading a read-only mount changes nothing there, unless an operator mounted a pipe
    /// or a device, whose reads take what another process would have read.)
    pub fn can_act_outside(&self) -> bool {
        !self.egress.is_empty()
            || self
                .mounts
                .iter()
                .any(|m| m.mode == crate::manifest::MountMode::Rw)
    }
}

/// The data of one call's `Store`.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: EgressHooks,
    pub(crate) limiter: MemoryLimiter,
    disk: DiskQuota,
    context: CallContext,
}

/// The host's handles on a running call's observable effects.
pub struct Observed {
    pub stdout: Capture,
    pub stderr: Capture,
    pub egress: EgressLog,
    /// What the call added to its read-write mounts, and whether it hit its quota.
    pub disk: DiskQuota,
}

impl CallState {
    /// A sandbox with exactly `grants`: the granted mounts, an empty environment, no sockets
    /// and no name lookups, captured stdio, and the egress mediator asking `gate`.
    pub fn new(
        grants: &Grants,
        gate: Option<Arc<dyn EgressGate>>,
        minter: Option<Arc<Minter>>,
        context: CallContext,
        stdin: Option<Vec<u8>>,
        deadline: tokio::time::Instant,
        events: crate::call::events::Listener,
    ) -> Result<(CallState, Observed)> {
        // A command's stdout is its output, so it is kept up to the output limit.
        let stdout_cap = if stdin.is_some() {
            grants.limits.output.0
        } else {
            grants.limits.stdio.0
        };
        let observed = Observed {
            stdout: Capture::new(stdout_cap),
            stderr: Capture::new(grants.limits.stdio.0).told_to(events.clone()),
            egress: EgressLog::told_to(events),
            disk: DiskQuota::new(grants.limits.disk),
        };
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(observed.stdout.clone())
            .stderr(observed.stderr.clone())
            .args(&[context.tool.as_str()])
            // Raw sockets and DNS are never granted: egress is HTTP through the mediator only.
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        if let Some(stdin) = stdin {
            wasi.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(stdin));
        }
        for mount in &grants.mounts {
            let perms = match mount.mode {
                MountMode::Ro if !injected(Fault::ReadOnlyMountsWritable) => FsPerms::ReadOnly,
                _ => FsPerms::ReadWrite,
            };
            wasi.preopened_dir(&mount.host, &mount.guest, perms)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("opening mount {} ({})", mount.guest, mount.host.display())
                })?;
        }
        let credentials = Credentials::new(
            grants.credentials.clone(),
            grants.static_secrets.fork(),
            minter,
            context.clone(),
        );
        let hooks = EgressHooks::new(
            grants.egress.clone(),
            gate,
            credentials,
            grants.limits.egress_requests,
            grants.limits.response_bytes.0,
            deadline,
            observed.egress.clone(),
        );
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits::MAX_HANDLES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(limits::MAX_FIELDS_BYTES);
        let state = CallState {
            wasi: wasi.build(),
            table,
            http,
            hooks,
            limiter: MemoryLimiter::new(grants.limits.memory.0),
            disk: observed.disk.clone(),
            context,
        };
        Ok((state, observed))
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl crate::bindings::warden::tool::context::Host for CallState {
    fn current(&mut self) -> crate::bindings::warden::tool::context::CallContext {
        let CallContext {
            call_id,
            tool,
            agent,
            user,
        } = self.context.clone();
        crate::bindings::warden::tool::context::CallContext {
            call_id,
            tool,
            agent,
            user,
        }
    }
}
