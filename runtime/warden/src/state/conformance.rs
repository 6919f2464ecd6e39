//! One suite every `StateStore` passes: each trait method, and the atomic ones under
//! concurrency, through two handles onto the same state (two processes, or two nodes).
//! `backends!` runs it against SQLite and against PostgreSQL (`warden_test_support::postgres`:
//! skipped loudly without a server, a failure under `CI=true`).

use super::*;
use std::sync::{Arc, Barrier};

/// Two handles onto one fresh state.
type Pair = (Arc<dyn StateStore>, Arc<dyn StateStore>);

fn sqlite() -> Option<(Pair, Box<dyn std::any::Any>)> {
    let dir = tempfile::tempdir().unwrap();
    let open = || sqlite::open(dir.path()).unwrap();
    Some(((open(), open()), Box::new(dir)))
}

fn postgres() -> Option<(Pair, Box<dyn std::any::Any>)> {
    let schema = warden_test_support::postgres::postgres()?.schema();
    let settings = postgres::PostgresSettings::of_test_schema(&schema, 8);
    let open = || postgres::open(&settings).unwrap();
    Some(((open(), open()), Box::new(schema.name)))
}

macro_rules! backends {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test]
            fn $test() {
                if let Some(((one, other), _keep)) = super::sqlite() {
                    super::$test(one, other);
                }
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $test() {
                if let Some(((one, other), _keep)) = super::postgres() {
                    super::$test(one, other);
                }
            })*
        }
    };
}

backends!(
    it_answers,
    a_nonce_is_used_once_by_any_handle,
    sessions_start_taint_and_are_capped,
    calls_are_counted_per_agent_and_session,
    a_call_counted_at_its_end_is_counted_with_its_records,
    a_failed_start_writes_nothing,
    concurrent_calls_are_counted_once_each_in_one_order,
    the_chain_links_every_record_of_every_writer,
    a_writer_overtaken_by_another_links_to_its_records,
    approvals_are_requested_decided_and_used_once,
    an_approval_raced_from_both_handles_is_used_once,
    revocations_are_seen_by_every_handle,
    failed_starts_and_appends_mixed_in_are_kept_apart,
    revocation_events_are_claimed_once_retried_and_delivered_once,
);

fn now() -> i64 {
    crate::identity::jwt::now()
}

pub(super) fn session(id: &str, agent: &str, expires: i64) -> Session {
    Session {
        id: id.into(),
        agent: agent.into(),
        user: Some("ada".into()),
        delegation: Some("d-1".into()),
        scope: vec!["hello".into()],
        expires,
        tainted: false,
        taint_reason: None,
        calls: 0,
    }
}

pub(super) fn approval(id: &str, agent: &str, expires: i64) -> Approval {
    Approval {
        id: id.into(),
        digest: format!("digest of {id}"),
        agent: agent.into(),
        user: None,
        tool: "t".into(),
        tool_digest: "sha256:0".into(),
        input_digest: "sha256:1".into(),
        input: serde_json::json!({"path": "/notes/a"}),
        reason: "held by policy p".into(),
        created: now(),
        expires,
        status: ApprovalStatus::Pending,
        approver: None,
        signature: None,
        used_by: None,
        session: Some("s1".into()),
        delegation: None,
    }
}

fn entry(call: &str, n: usize) -> AuditEntry {
    AuditEntry {
        call_id: call.into(),
        body: format!("{{\"call\":\"{call}\",\"n\":{n}}}"),
    }
}

/// Runs `work(store, t)` for each `t` below `threads`, all at once, the even ones on `one` and
/// the odd ones on `other`; their results, in order.
fn at_once<R: Send>(
    one: &Arc<dyn StateStore>,
    other: &Arc<dyn StateStore>,
    threads: usize,
    work: impl Fn(&dyn StateStore, usize) -> R + Sync,
) -> Vec<R> {
    let start = Barrier::new(threads);
    std::thread::scope(|scope| {
        let running: Vec<_> = (0..threads)
            .map(|t| {
                let store = if t % 2 == 0 { one } else { other };
                let (start, work) = (&start, &work);
                scope.spawn(move || {
                    start.wait();
                    work(store.as_ref(), t)
                })
            })
            .collect();
        running.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

/// The chain, checked link by link from the first record.
pub(super) fn whole_chain(store: &dyn StateStore) -> Vec<AuditLink> {
    let chain = store.audit_records(0, 100_000).unwrap();
    let mut prev = GENESIS.to_string();
    for (i, link) in chain.iter().enumerate() {
        assert_eq!((link.seq, &link.prev_hash), (i as u64 + 1, &prev));
        assert_eq!(
            link.hash,
            link_hash(&prev, link.seq, &link.call_id, &link.body)
        );
        prev = link.hash.clone();
    }
    chain
}

fn it_answers(one: Arc<dyn StateStore>, _: Arc<dyn StateStore>) {
    one.ping().unwrap();
}

fn a_nonce_is_used_once_by_any_handle(one: Arc<dyn StateStore>, other: Arc<dyn StateStore>) {
    let expires = now() + 60;
    assert!(one.use_nonce("n1", expires).unwrap());
    assert!(!other.use_nonce("n1", expires).unwrap());
    assert!(!one.use_nonce("n1", expires).unwrap());
    assert!(other.use_nonce("n2", expires).unwrap());
    // Raced from many threads of both handles: exactly one wins.
    let won = at_once(&one, &other, 8, |store, _| {
        store.use_nonce("raced", expires).unwrap()
    });
    assert_eq!(won.iter().filter(|won| **won).count(), 1);
}

fn sessions_start_taint_and_are_capped(one: Arc<dyn StateStore>, other: Arc<dyn StateStore>) {
    let later = now() + 600;
    one.start_session(&session("s1", "a", later)).unwrap();
    let seen = other.session("s1").unwrap().unwrap();
    assert_eq!(
        (
            seen.agent.as_str(),
            seen.user.as_deref(),
            seen.delegation.as_deref()
        ),
        ("a", Some("ada"), Some("d-1"))
    );
    assert_eq!(
        (seen.scope, seen.expires, seen.tainted),
        (vec!["hello".to_string()], later, false)
    );
    assert!(other.session("nope").unwrap().is_none());
    // The first reason is kept.
    other.taint("s1", "first").unwrap();
    one.taint("s1", "second").unwrap();
    let tainted = one.session("s1").unwrap().unwrap();
    assert!(tainted.tainted);
    assert_eq!(tainted.taint_reason.as_deref(), Some("first"));
    // The cap holds when both handles start sessions at once.
    let started: u64 = at_once(&one, &other, 4, |store, t| {
        (0..MAX_LIVE_SESSIONS)
            .filter(|i| {
                store
                    .start_session(&session(&format!("c{t}-{i}"), "capped", later))
                    .is_ok()
            })
            .count() as u64
    })
    .into_iter()
    .sum();
    assert_eq!(started, MAX_LIVE_SESSIONS);
    let e = one
        .start_session(&session("one-more", "capped", later))
        .unwrap_err();
    assert!(e.downcast_ref::<TooManySessions>().is_some(), "{e:#}");
    // A revoked session leaves room; another agent has its own count.
    let live = (0..4)
        .flat_map(|t| (0..MAX_LIVE_SESSIONS).map(move |i| format!("c{t}-{i}")))
        .find(|id| one.session(id).unwrap().is_some())
        .unwrap();
    other
        .revoke(
            &Revocation {
                kind: RevocationKind::Session,
                id: live,
                at: now(),
                reason: String::new(),
            },
            &[],
        )
        .unwrap();
    one.start_session(&session("one-more", "capped", later))
        .unwrap();
    one.start_session(&session("b-1", "b", later)).unwrap();
}

fn calls_are_counted_per_agent_and_session(one: Arc<dyn StateStore>, other: Arc<dyn StateStore>) {
    one.start_session(&session("s", "a", now() + 600)).unwrap();
    let count = |store: &Arc<dyn StateStore>, agent: &str, session: Option<&str>, at: i64| {
        store
            .record_call(agent, session, at, &mut |_| Ok(vec![]))
            .unwrap()
    };
    let base = now() * 1000;
    assert_eq!(count(&one, "a", Some("s"), base).last_minute, 0);
    let second = count(&other, "a", Some("s"), base + 10_000);
    assert_eq!((second.last_minute, second.in_session), (1, 1));
    assert_eq!(count(&one, "b", None, base + 10_000).last_minute, 0);
    let third = count(&one, "a", None, base + 20_000);
    assert_eq!((third.last_minute, third.in_session), (2, 0));
    // The first call is more than a minute old by now; calls within one second add up.
    assert_eq!(count(&other, "a", None, base + 65_000).last_minute, 2);
    assert_eq!(count(&one, "a", None, base + 65_500).last_minute, 3);
    assert_eq!(one.recent_calls("a", base + 65_900).unwrap(), 4);
    assert_eq!(other.session("s").unwrap().unwrap().calls, 2);
    // A session that does not exist is an error, and counts nothing.
    assert!(
        one.record_call("a", Some("nope"), base + 66_000, &mut |_| Ok(vec![]))
            .is_err()
    );
    assert_eq!(one.recent_calls("a", base + 66_000).unwrap(), 4);
}

/// A call counted at its end: counted as `record_call` counts, its records in the same commit.
fn a_call_counted_at_its_end_is_counted_with_its_records(
    one: Arc<dyn StateStore>,
    other: Arc<dyn StateStore>,
) {
    one.start_session(&session("s", "a", now() + 600)).unwrap();
    let at = now() * 1000;
    one.count_call("a", Some("s"), at, &[entry("end-1", 0)])
        .unwrap();
    other.count_call("a", None, at, &[]).unwrap();
    assert_eq!(one.recent_calls("a", at).unwrap(), 2);
    assert_eq!(other.session("s").unwrap().unwrap().calls, 1);
    assert_eq!(other.audit_of_call("end-1").unwrap().len(), 1);
    let counts = one
        .record_call("a", Some("s"), at, &mut |_| Ok(vec![]))
        .unwrap();
    assert_eq!((counts.last_minute, counts.in_session), (2, 1));
    // A session that does not exist is an error, and writes nothing.
    assert!(
        one.count_call("a", Some("nope"), at, &[entry("end-2", 1)])
            .is_err()
    );
    assert_eq!(one.recent_calls("a", at).unwrap(), 3);
    assert!(other.audit_of_call("end-2").unwrap().is_empty());
}

fn a_failed_start_writes_nothing(one: Arc<dyn StateStore>, other: Arc<dyn StateStore>) {
    let at = now() * 1000;
    let e = one
        .record_call("a", None, at, &mut |_| {
            anyhow::bail!("refused by the caller")
        })
        .unwrap_err();
    assert!(format!("{e:#}").contains("refused by the caller"), "{e:#}");
    assert_eq!(other.recent_calls("a", at).unwrap(), 0);
    assert!(other.audit_tail(10).unwrap().is_empty());
    // What it returns is written with the count, in the same commit.
    let counts = one
        .record_call("a", None, at, &mut |counts| {
            Ok(vec![entry("c1", counts.last_minute as usize)])
        })
        .unwrap();
    assert_eq!(counts.last_minute, 0);
    assert_eq!(other.audit_of_call("c1").unwrap().len(), 1);
    assert_eq!(other.recent_calls("a", at).unwrap(), 1);
}

/// Calls from many threads of both handles: each is counted once, and each was decided with
/// a distinct count (the calls before it), in the order its records are chained.
fn concurrent_calls_are_counted_once_each_in_one_order(
    one: Arc<dyn StateStore>,
    other: Arc<dyn StateStore>,
) {
    const THREADS: usize = 8;
    const CALLS: usize = 25;
    let at = now() * 1000;
    let mut seen: Vec<u64> = at_once(&one, &other, THREADS, |store, t| {
        (0..CALLS)
            .map(|i| {
                let call = format!("t{t}-c{i}");
                store
                    .record_call("busy", None, at, &mut |counts| {
                        Ok(vec![AuditEntry {
                            call_id: call.clone(),
                            body: counts.last_minute.to_string(),
                        }])
                    })
                    .unwrap()
                    .last_minute
            })
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    seen.sort();
    let total = (THREADS * CALLS) as u64;
    assert_eq!(
        seen,
        (0..total).collect::<Vec<_>>(),
        "each call saw the calls before it"
    );
    assert_eq!(one.recent_calls("busy", at).unwrap(), total);
    // The chain holds them in the order they were counted.
    let chained: Vec<u64> = other
        .audit_records(0, 10_000)
        .unwrap()
        .iter()
        .map(|link| link.body.parse().unwrap())
        .collect();
    assert_eq!(chained, (0..total).collect::<Vec<_>>());
}

/// A writer that appended last and was then overtaken by another links its next records to
/// the other's: what it kept of the chain's head is never trusted over the chain (PostgreSQL
/// links to the head it left without reading it, `postgres::Head`), and calls counted in a
/// write that had to be redone are counted once.
fn a_writer_overtaken_by_another_links_to_its_records(
    one: Arc<dyn StateStore>,
    other: Arc<dyn StateStore>,
) {
    let at = now() * 1000;
    one.append_audit(&[entry("o1", 0)]).unwrap();
    one.count_call("a", None, at, &[entry("o2", 0)]).unwrap();
    one.append_audit(&[entry("o3", 0)]).unwrap();
    other
        .append_audit(&[entry("x1", 0), entry("x1", 1)])
        .unwrap();
    one.count_call("a", None, at, &[entry("o4", 0)]).unwrap();
    other.count_call("a", None, at, &[entry("x2", 0)]).unwrap();
    one.append_audit(&[entry("o5", 0)]).unwrap();
    one.count_call("a", None, at, &[entry("o6", 0)]).unwrap();
    let chain = whole_chain(other.as_ref());
    assert_eq!(
        chain.iter().map(|l| l.call_id.as_str()).collect::<Vec<_>>(),
        ["o1", "o2", "o3", "x1", "x1", "o4", "x2", "o5", "o6"]
    );
    assert_eq!(other.recent_calls("a", at).unwrap(), 4);
}

fn the_chain_links_every_record_of_every_writer(
    one: Arc<dyn StateStore>,
    other: Arc<dyn StateStore>,
) {
    assert!(one.audit_records(0, 10).unwrap().is_empty());
    one.append_audit(&[entry("c0", 0), entry("c0", 1)]).unwrap();
    let first = other.audit_records(0, 10).unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!((first[0].seq, first[0].prev_hash.as_str()), (1, GENESIS));
    assert_eq!(
        first[0].hash,
        link_hash(GENESIS, 1, "c0", &entry("c0", 0).body)
    );
    assert_eq!(first[1].prev_hash, first[0].hash);
    // Writers on both handles at once: no record lost, one valid chain.
    const THREADS: usize = 8;
    const APPENDS: usize = 30;
    at_once(&one, &other, THREADS, |store, t| {
        for i in 0..APPENDS {
            let call = format!("w{t}-{i}");
            store
                .append_audit(&[entry(&call, 0), entry(&call, 1)])
                .unwrap();
        }
    });
    let total = 2 + THREADS * APPENDS * 2;
    assert_eq!(whole_chain(one.as_ref()).len(), total);
    // Each call's records are adjacent: an append is one unit.
    let records = one.audit_of_call("w3-7").unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].seq, records[0].seq + 1);
    // Paging, and the tail.
    let page = other.audit_records(10, 5).unwrap();
    assert_eq!(
        page.iter().map(|l| l.seq).collect::<Vec<_>>(),
        vec![11, 12, 13, 14, 15]
    );
    let tail = other.audit_tail(3).unwrap();
    let last = total as u64;
    assert_eq!(
        tail.iter().map(|l| l.seq).collect::<Vec<_>>(),
        vec![last - 2, last - 1, last]
    );
    assert!(one.audit_of_call("nobody").unwrap().is_empty());
}

fn approvals_are_requested_decided_and_used_once(
    one: Arc<dyn StateStore>,
    other: Arc<dyn StateStore>,
) {
    let later = now() + 600;
    let stored = one.request_approval(&approval("1", "a", later), 2).unwrap();
    assert_eq!(stored.id, "1");
    // The same call again is the pending one, not a new one.
    let again = Approval {
        id: "1b".into(),
        digest: "digest of 1".into(),
        ..approval("1b", "a", later)
    };
    assert_eq!(other.request_approval(&again, 2).unwrap().id, "1");
    other
        .request_approval(&approval("2", "a", later), 2)
        .unwrap();
    let e = one
        .request_approval(&approval("3", "a", later), 2)
        .unwrap_err();
    assert!(e.downcast_ref::<TooManyPending>().is_some(), "{e:#}");
    assert!(one.approval("3").unwrap().is_none(), "not stored");
    one.request_approval(&approval("4", "b", later), 2).unwrap();
    let read = other.approval("1").unwrap().unwrap();
    assert_eq!(read.input, serde_json::json!({"path": "/notes/a"}));
    assert_eq!(
        (read.status, read.reason.as_str()),
        (ApprovalStatus::Pending, "held by policy p")
    );
    assert_eq!(one.approvals(false).unwrap().len(), 3);
    // Decided once; used once.
    let approve = ApprovalDecision::Approved {
        approver: "carol".into(),
        signature: "sig".into(),
    };
    assert!(other.decide_approval("1", &approve).unwrap());
    assert!(
        !one.decide_approval(
            "1",
            &ApprovalDecision::Denied {
                by: "dan".into(),
                signature: None
            }
        )
        .unwrap()
    );
    assert!(
        one.decide_approval(
            "2",
            &ApprovalDecision::Denied {
                by: "dan".into(),
                signature: Some("no".into())
            }
        )
        .unwrap()
    );
    assert!(
        !one.use_approval("2", "call-x").unwrap(),
        "a denied approval is not used"
    );
    assert!(one.use_approval("1", "call-1").unwrap());
    assert!(!other.use_approval("1", "call-2").unwrap());
    let used = other.approval("1").unwrap().unwrap();
    assert_eq!(
        (
            used.status,
            used.approver.as_deref(),
            used.signature.as_deref(),
            used.used_by.as_deref()
        ),
        (
            ApprovalStatus::Used,
            Some("carol"),
            Some("sig"),
            Some("call-1")
        )
    );
    assert_eq!(one.approvals(false).unwrap().len(), 1);
    assert_eq!(one.approvals(true).unwrap().len(), 3);
    // The decided ones, newest first, as many as asked for; a deny keeps its signature.
    let decided = one.decided_approvals(10).unwrap();
    assert_eq!(decided.len(), 2);
    assert!(decided.iter().all(|a| a.status != ApprovalStatus::Pending));
    assert_eq!(one.decided_approvals(1).unwrap().len(), 1);
    let denied = decided
        .iter()
        .find(|a| a.status == ApprovalStatus::Denied)
        .unwrap();
    assert_eq!(denied.signature.as_deref(), Some("no"));
    // A decided approval leaves room for another request.
    one.request_approval(&approval("5", "a", later), 2).unwrap();
}

fn an_approval_raced_from_both_handles_is_used_once(
    one: Arc<dyn StateStore>,
    other: Arc<dyn StateStore>,
) {
    for round in 0..20 {
        let id = format!("raced-{round}");
        one.request_approval(&approval(&id, &format!("agent-{round}"), now() + 600), 10)
            .unwrap();
        let approve = ApprovalDecision::Approved {
            approver: "carol".into(),
            signature: "sig".into(),
        };
        assert!(other.decide_approval(&id, &approve).unwrap());
        let won = at_once(&one, &other, 6, |store, i| {
            store.use_approval(&id, &format!("call-{i}")).unwrap()
        });
        assert_eq!(won.iter().filter(|won| **won).count(), 1, "round {round}");
    }
}

fn revocations_are_seen_by_every_handle(one: Arc<dyn StateStore>, other: Arc<dyn StateStore>) {
    let ids = [
        (RevocationKind::Agent, "a"),
        (RevocationKind::Tool, "sha256:t"),
    ];
    assert!(one.revoked(&ids).unwrap().is_none());
    assert!(one.revoked(&[]).unwrap().is_none());
    let revoke = |store: &Arc<dyn StateStore>, kind, id: &str, at| {
        store
            .revoke(
                &Revocation {
                    kind,
                    id: id.into(),
                    at,
                    reason: format!("because {id}"),
                },
                &[],
            )
            .unwrap()
    };
    assert!(revoke(&other, RevocationKind::Tool, "sha256:t", 20));
    assert!(
        !revoke(&one, RevocationKind::Tool, "sha256:t", 21),
        "revoked before"
    );
    let seen = one.revoked(&ids).unwrap().unwrap();
    assert_eq!(
        (seen.kind, seen.id.as_str(), seen.at),
        (RevocationKind::Tool, "sha256:t", 20)
    );
    assert_eq!(seen.reason, "because sha256:t");
    // The earliest of several; a kind is part of the name.
    assert!(revoke(&one, RevocationKind::Agent, "a", 10));
    assert_eq!(other.revoked(&ids).unwrap().unwrap().id, "a");
    assert!(
        other
            .revoked(&[(RevocationKind::Session, "a")])
            .unwrap()
            .is_none()
    );
    // An id no store can hold (PostgreSQL text holds no NUL) cannot be checked: its check
    // refuses (revocation fails closed), and fails no other check read with it.
    let odd = [
        (RevocationKind::Session, "a\0b"),
        (RevocationKind::Agent, "a"),
    ];
    let e = other.revoked(&odd).unwrap_err();
    assert!(format!("{e:#}").contains("NUL"), "{e:#}");
    // Both kinds on both handles (`at_once` alternates handles by `t % 2`).
    let answers = at_once(&one, &other, 8, |store, t| match (t / 2) % 2 {
        0 => store.revoked(&odd).is_err(),
        _ => store.revoked(&ids).unwrap().is_some_and(|r| r.id == "a"),
    });
    assert!(answers.into_iter().all(|holds| holds));
    let unholdable = Revocation {
        kind: RevocationKind::Session,
        id: "a\0b".into(),
        at: 30,
        reason: "a NUL".into(),
    };
    assert!(one.revoke(&unholdable, &[]).is_err());
    let all = other.revocations().unwrap();
    assert_eq!(
        all.iter()
            .map(|r| (r.kind, r.id.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (RevocationKind::Agent, "a"),
            (RevocationKind::Tool, "sha256:t")
        ]
    );
}

/// Calls that start, calls whose start fails and appends, from both handles at once (on
/// PostgreSQL: in shared group commits): only what started is counted and chained, and the
/// chain is whole.
fn failed_starts_and_appends_mixed_in_are_kept_apart(
    one: Arc<dyn StateStore>,
    other: Arc<dyn StateStore>,
) {
    const THREADS: usize = 8;
    const EACH: usize = 30;
    let at = now() * 1000;
    at_once(&one, &other, THREADS, |store, t| {
        for i in 0..EACH {
            let call = format!("m{t}-{i}");
            match i % 3 {
                0 => {
                    let failed = store.record_call("mixed", None, at, &mut |_| {
                        anyhow::bail!("the caller failed")
                    });
                    assert!(failed.is_err());
                }
                1 => {
                    store
                        .record_call("mixed", None, at, &mut |_| Ok(vec![entry(&call, 0)]))
                        .unwrap();
                }
                _ => store
                    .append_audit(&[entry(&call, 0), entry(&call, 1)])
                    .unwrap(),
            }
        }
    });
    let started = (THREADS * EACH / 3) as u64;
    assert_eq!(one.recent_calls("mixed", at).unwrap(), started);
    let chain = whole_chain(other.as_ref());
    assert_eq!(chain.len() as u64, started + 2 * started);
    assert!(
        one.audit_of_call("m0-0").unwrap().is_empty(),
        "a failed start wrote nothing"
    );
    assert_eq!(one.audit_of_call("m0-1").unwrap().len(), 1);
    assert_eq!(one.audit_of_call("m0-2").unwrap().len(), 2);
}

/// A new revocation owes each receiver one event (a repeated one, none); handles claiming at
/// once get each event once; a failed attempt waits for its retry time, an acknowledged one
/// is never handed out again; a claim that ran out records nothing; only the receivers asked
/// for are handed out and counted.
fn revocation_events_are_claimed_once_retried_and_delivered_once(
    one: Arc<dyn StateStore>,
    other: Arc<dyn StateStore>,
) {
    let revocation = |id: &str| Revocation {
        kind: RevocationKind::Agent,
        id: id.into(),
        at: 7,
        reason: "leaked".into(),
    };
    let receivers = ["idp", "cache"];
    for i in 0..10 {
        assert!(
            one.revoke(&revocation(&format!("a{i}")), &receivers)
                .unwrap()
        );
    }
    assert!(!other.revoke(&revocation("a0"), &receivers).unwrap());
    assert_eq!(one.pending_events(&receivers).unwrap(), 20);
    assert_eq!(one.pending_events(&["idp", "gone"]).unwrap(), 10);

    // Claimed from both handles at once: every event once, held for a minute.
    let now = 1_000_000;
    let claimed: Vec<RevocationEvent> = at_once(&one, &other, 4, |store, _| {
        store.claim_events(&receivers, now, 60_000, 8).unwrap()
    })
    .into_iter()
    .flatten()
    .collect();
    let mut jtis: Vec<&str> = claimed.iter().map(|e| e.jti.as_str()).collect();
    jtis.sort();
    jtis.dedup();
    assert_eq!((claimed.len(), jtis.len()), (20, 20), "each event once");
    assert!(
        one.claim_events(&receivers, now + 1, 60_000, 100)
            .unwrap()
            .is_empty()
    );
    let event = claimed
        .iter()
        .find(|e| e.receiver == "idp" && e.revocation.id == "a3")
        .unwrap();
    assert_eq!(
        (
            event.revocation.at,
            event.revocation.reason.as_str(),
            event.attempts
        ),
        (7, "leaked", 0)
    );

    // Every event fails once, to be retried a second later; the idp's are then acknowledged.
    for e in &claimed {
        let failed = Attempt::Failed {
            retry_at_ms: now + 1000,
            error: "503".into(),
        };
        assert!(other.event_attempted(e, &failed).unwrap());
    }
    assert!(
        one.claim_events(&receivers, now + 999, 60_000, 100)
            .unwrap()
            .is_empty()
    );
    let again = one.claim_events(&["idp"], now + 1000, 60_000, 100).unwrap();
    assert_eq!(again.len(), 10, "only the receiver asked for");
    assert!(again.iter().all(|e| e.attempts == 1 && e.receiver == "idp"));
    let same = again.iter().find(|e| e.seq == event.seq).unwrap();
    assert_eq!(same.jti, event.jti, "a retry is the same event");
    // The first claim's token no longer holds: its late word changes nothing.
    let late = Attempt::Failed {
        retry_at_ms: now,
        error: "late".into(),
    };
    assert!(!one.event_attempted(event, &late).unwrap());
    for e in &again {
        let delivered = Attempt::Delivered { at_ms: now + 1001 };
        assert!(other.event_attempted(e, &delivered).unwrap());
    }
    assert!(
        !one.event_attempted(same, &late).unwrap(),
        "delivered stays delivered"
    );
    assert_eq!(one.pending_events(&receivers).unwrap(), 10);
    assert!(
        other
            .claim_events(&["idp"], now + 9_999_999, 60_000, 100)
            .unwrap()
            .is_empty()
    );
    // A claim whose holder went away is handed out again once its hold is over.
    let held = other
        .claim_events(&["cache"], now + 2000, 1000, 100)
        .unwrap();
    assert_eq!(held.len(), 10);
    assert!(
        one.claim_events(&["cache"], now + 2999, 1000, 100)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        one.claim_events(&["cache"], now + 3000, 1000, 100)
            .unwrap()
            .len(),
        10
    );
    assert!(
        one.claim_events(&[], now + 9_999_999, 1000, 100)
            .unwrap()
            .is_empty()
    );
}
