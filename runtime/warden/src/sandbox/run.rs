//! Running a tool: a fresh `Store` per call with the call's limits installed, the guest run
//! under every bound (its deadline, the caller's cancellation, its budget of denied
//! requests, CPU, memory, handles, output, disk), and whatever stopped it named.

use super::fs::DiskQuota;
use super::http::EgressGate;
use super::limits::{CpuExhausted, CpuMeter, MAX_FIELDS_BYTES, MAX_HANDLES};
use super::{CallState, Grants, Observed};
use crate::bindings::ToolError;
use crate::credentials::mint::Minter;
use crate::engine::Prepared;
use crate::identity::CallContext;
use crate::manifest::Limits;
use crate::report::{CallFailure, ErrorKind};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTableError;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::FieldMapError;

/// The result of running the component, before it is put into a report.
pub struct Ran {
    pub result: Result<serde_json::Value, CallFailure>,
    pub observed: Option<Observed>,
}

/// A fresh `Store` with the call's limits installed. Used for every instantiation.
pub fn new_store(engine: &wasmtime::Engine, state: CallState, limits: &Limits) -> Store<CallState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // CPU: at every epoch tick the guest yields to the executor (other calls run, and the
    // call's timeout and cancellation take effect) and its running time is charged.
    let mut meter = CpuMeter::new(
        limits.cpu_budget(),
        crate::engine::EPOCH_TICK,
        Instant::now(),
    );
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        let resumed = meter.tick(Instant::now())?;
        // tokio's own yield (not a plain self-wake) also lets the runtime drive its timers
        // and I/O before the guest resumes.
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                resumed.at(Instant::now());
            }),
        ))
    });
    store
}

/// How the caller follows a run: when the call was accepted (its timeout counts from then),
/// its cancellation, and who hears its egress and stderr as they happen.
pub struct Following<'a> {
    pub accepted: tokio::time::Instant,
    pub cancel: Option<&'a tokio_util::sync::CancellationToken>,
    pub events: crate::call::events::Listener,
}

/// Runs `prepared` with `input` in a fresh sandbox with exactly `grants`, under every limit,
/// until it is done, its timeout passes or the caller cancels it.
pub async fn run(
    prepared: &Prepared,
    grants: &Grants,
    gate: Arc<dyn EgressGate>,
    minter: Option<Arc<Minter>>,
    context: CallContext,
    input: &serde_json::Value,
    following: Following<'_>,
) -> Ran {
    let limits = &grants.limits;
    let input_text = input.to_string();
    let deadline = following.accepted + limits.timeout;
    let cancel = following.cancel;
    let stdin = matches!(prepared, Prepared::Command(_)).then(|| input_text.clone().into_bytes());
    let sandbox = CallState::new(
        grants,
        Some(gate),
        minter,
        context,
        stdin,
        deadline,
        following.events,
    );
    let (state, observed) = match sandbox {
        Ok(built) => built,
        Err(e) => {
            return Ran {
                result: Err(CallFailure::new(
                    ErrorKind::Internal,
                    format!("preparing the sandbox: {e:#}"),
                )),
                observed: None,
            };
        }
    };
    let mut store = new_store(prepared.engine(), state, limits);

    let outcome = match prepared {
        Prepared::Tool(pre) => {
            let invoke = async {
                let instance = pre.instantiate_async(&mut store).await?;
                instance.call_invoke(&mut store, &input_text).await
            };
            match guarded(invoke, &observed, deadline, limits.timeout, cancel).await {
                Err(stopped) => Err(stopped),
                Ok(Err(trap)) => Err(trapped(&trap, &store, &observed)),
                Ok(Ok(Err(ToolError::InvalidInput(m)))) => Err(CallFailure::new(
                    ErrorKind::InvalidInput,
                    format!("the tool rejected its input: {m}"),
                )),
                Ok(Ok(Err(ToolError::Failed(m)))) => Err(CallFailure::new(ErrorKind::ToolError, m)),
                Ok(Ok(Ok(output))) => Ok(output),
            }
        }
        Prepared::Command(pre) => {
            let main = async {
                let command = pre.instantiate_async(&mut store).await?;
                command.wasi_cli_run().call_run(&mut store).await
            };
            let exit = match guarded(main, &observed, deadline, limits.timeout, cancel).await {
                Err(stopped) => Err(stopped),
                Ok(Ok(Ok(()))) => Ok(0),
                Ok(Ok(Err(()))) => Ok(1),
                Ok(Err(e)) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    Some(exit) => Ok(exit.0),
                    None => Err(trapped(&e, &store, &observed)),
                },
            };
            match exit {
                Ok(0) if observed.stdout.total() > limits.output.0 => Err(output_limit(limits)),
                Ok(0) => Ok(observed.stdout.contents().0),
                Ok(code) => {
                    let (stderr, _) = observed.stderr.contents();
                    let last = stderr.lines().last().unwrap_or("").to_string();
                    Err(CallFailure::new(
                        ErrorKind::ToolError,
                        format!("the command exited with status {code}: {last}"),
                    ))
                }
                Err(f) => Err(f),
            }
        }
    };
    drop(store);

    let result = outcome.and_then(|text| {
        if text.len() as u64 > limits.output.0 {
            return Err(output_limit(limits));
        }
        serde_json::from_str(&text).map_err(|e| {
            CallFailure::new(
                ErrorKind::InvalidOutput,
                format!("the tool's output is not JSON: {e}"),
            )
        })
    });
    // The tool saw `insufficient-space` and did not write all it meant to, whatever it made
    // of that: the call says so.
    let result = match observed.disk.exhausted() {
        true => Err(disk_limit(&observed.disk)),
        false => result,
    };
    let observed = Some(observed);
    Ran { result, observed }
}

/// Runs the guest under every bound of its call: its deadline, the caller's cancellation and
/// its budget of denied requests.
async fn guarded<T>(
    guest: impl Future<Output = T>,
    observed: &Observed,
    deadline: tokio::time::Instant,
    timeout: Duration,
    cancel: Option<&tokio_util::sync::CancellationToken>,
) -> Result<T, CallFailure> {
    match observed
        .egress
        .until_spent(bounded(guest, deadline, timeout, cancel))
        .await
    {
        Ok(done) => done,
        Err(spent) => Err(CallFailure::new(
            ErrorKind::DeniedRequestLimit,
            spent.to_string(),
        )),
    }
}

/// Runs the guest until it is done, its `deadline` (`timeout` after the call was accepted)
/// passes, or the caller cancels the call. A guest running wasm yields at every epoch tick,
/// so both take effect even while it computes.
async fn bounded<T>(
    guest: impl Future<Output = T>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    cancel: Option<&tokio_util::sync::CancellationToken>,
) -> Result<T, CallFailure> {
    let cancelled = async {
        match cancel {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        done = tokio::time::timeout_at(deadline, guest) => done.map_err(|_| timeout_failure(timeout)),
        () = cancelled => Err(CallFailure::new(ErrorKind::Cancelled, "the caller cancelled the call".into())),
    }
}

fn output_limit(limits: &Limits) -> CallFailure {
    CallFailure::new(
        ErrorKind::OutputLimit,
        format!("the output exceeds the limit of {}", limits.output),
    )
}

fn disk_limit(quota: &DiskQuota) -> CallFailure {
    CallFailure::new(
        ErrorKind::DiskLimit,
        format!(
            "the tool tried to write past its disk quota of {} on its read-write mounts and was refused (insufficient-space)",
            quota.limit()
        ),
    )
}

fn timeout_failure(limit: Duration) -> CallFailure {
    CallFailure::new(
        ErrorKind::Timeout,
        format!(
            "the call did not finish within its timeout of {}",
            crate::units::format_duration(limit)
        ),
    )
}

/// Names the limit or fault behind a trap.
fn classify(error: &wasmtime::Error, store: &Store<CallState>) -> CallFailure {
    if store.data().limiter.exceeded() {
        return CallFailure::new(
            ErrorKind::MemoryLimit,
            format!("the tool exceeded its memory limit: {error}"),
        );
    }
    if let Some(spent) = error.downcast_ref::<CpuExhausted>() {
        return CallFailure::new(ErrorKind::CpuLimit, spent.to_string());
    }
    if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        return CallFailure::new(
            ErrorKind::ResourceLimit,
            format!(
                "the tool held more than {MAX_HANDLES} host handles (open files, streams, HTTP \
                 fields…) at once"
            ),
        );
    }
    if let Some(FieldMapError::TotalSizeTooBig | FieldMapError::TooManyFields) =
        error.downcast_ref::<FieldMapError>()
    {
        return CallFailure::new(
            ErrorKind::ResourceLimit,
            format!("the tool made HTTP fields larger than {MAX_FIELDS_BYTES} bytes"),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => CallFailure::new(
            ErrorKind::StackOverflow,
            "the tool overflowed its stack".into(),
        ),
        Some(trap) => CallFailure::new(ErrorKind::Trap, format!("the tool trapped: {trap}")),
        None => CallFailure::new(
            ErrorKind::Trap,
            format!("the tool failed: {}", one_line(error)),
        ),
    }
}

/// Why the guest stopped (`classify`), and for a trap — a panic, an interpreter's uncaught
/// exception — the last lines it wrote to stderr, which say what the author needs to know
/// (a traceback, a panic message) where the trap says only `unreachable`.
fn trapped(error: &wasmtime::Error, store: &Store<CallState>, observed: &Observed) -> CallFailure {
    let failure = classify(error, store);
    match (failure.kind, observed.stderr.tail()) {
        (ErrorKind::Trap, Some(tail)) => CallFailure::new(
            ErrorKind::Trap,
            format!("{}; its stderr ended with:\n{tail}", failure.message),
        ),
        _ => failure,
    }
}

fn one_line(error: &wasmtime::Error) -> String {
    format!("{error:#}").replace('\n', " ")
}
