//! `warden revoke`, `warden revocations`, `warden introspect`.

use crate::read_token;
use anyhow::Result;
use clap::Args;
use std::path::Path;
use warden::deployment::Deployment;
use warden::runtime::Runtime;
use warden::state::{self, RevocationKind};
use warden::units::format_unix;

#[derive(Args)]
pub struct RevokeArgs {
    /// What to revoke: an agent (by name), a delegation (by id), a tool (by digest or name),
    /// a credential (by name: every use of it, or a minted token's `jti`), a session (by id),
    /// a publisher (by name: every tool it signed).
    #[arg(value_parser = kind_parser())]
    kind: RevocationKind,
    /// Agent name, delegation id, tool digest (or name: its current digest), credential
    /// name or minted token `jti`, session id, publisher name.
    id: String,
    /// Why (recorded, and given in every refusal it causes).
    #[arg(long, default_value = "")]
    reason: String,
}

#[derive(Args)]
pub struct IntrospectArgs {
    /// A token Warden minted, or @FILE holding one.
    token: String,
}

fn kind_parser() -> impl clap::builder::TypedValueParser<Value = RevocationKind> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(RevocationKind::ALL.map(RevocationKind::as_str))
        .try_map(|text| text.parse::<RevocationKind>())
}

pub async fn revoke(config: &Path, args: RevokeArgs) -> Result<i32> {
    let runtime = Runtime::new(Deployment::load(config)?)?;
    let (revocation, new) = runtime.revoke(args.kind, &args.id, &args.reason)?;
    let already = if new { "" } else { " (it was already)" };
    println!(
        "revoked {} {}{already}",
        revocation.kind.as_str(),
        revocation.id
    );
    tell_receivers(&runtime).await;

    Ok(0)
}

/// How long `warden revoke` waits for receivers before leaving them to `warden serve`.
const TELL_FOR: std::time::Duration = std::time::Duration::from_secs(15);

/// Delivers the revocation events due now (this one's, and any a receiver has not taken
/// yet) and says what became of each. The revocation holds whatever they answer: an event
/// not acknowledged stays in the store, and `warden serve` nodes retry it.
async fn tell_receivers(runtime: &Runtime) {
    let delivering = runtime.deliver_revocation_events();
    let delivered = match tokio::time::timeout(TELL_FOR, delivering).await {
        Ok(delivered) => delivered,
        Err(_) => Err(anyhow::anyhow!(
            "the receivers did not all answer within {} s",
            TELL_FOR.as_secs()
        )),
    };
    match delivered {
        Ok(deliveries) => {
            for d in deliveries {
                match d.error {
                    None => println!("told `{}` (revocation event for {})", d.receiver, d.revoked),
                    Some(e) => println!(
                        "not yet told `{}` of {}: {e}; `warden serve` retries",
                        d.receiver, d.revoked
                    ),
                }
            }
        }
        Err(e) => eprintln!(
            "warning: revocation events not delivered now ({e:#}); `warden serve` delivers them"
        ),
    }
}

pub fn list(config: &Path) -> Result<i32> {
    let deployment = Deployment::load(config)?;
    for r in state::open(&deployment)?.revocations()? {
        println!(
            "{}  {:<10} {}  {}",
            format_unix(r.at),
            r.kind.as_str(),
            r.id,
            r.reason
        );
    }
    Ok(0)
}

/// Prints RFC 7662's answer; exit 0 when active, 3 when not.
pub fn introspect(config: &Path, args: IntrospectArgs) -> Result<i32> {
    let token = read_token(&args.token)?;
    let runtime = Runtime::new(Deployment::load(config)?)?;
    let answer = runtime.introspect(token.expose())?;
    println!("{}", serde_json::to_string(&answer)?);
    Ok(if answer.active { 0 } else { 3 })
}
