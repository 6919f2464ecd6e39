//! Approvals: a call held for approval gets a pending approval bound to that exact call; only
//! a registered approver's key approves it; it is used once, before it expires, by that call.

use crate::common::*;
use ed25519_dalek::Signer as _;
use serde_json::json;
use warden::identity::keys;

/// tester may invoke anything, but deleting a note needs a person's approval.
const POLICIES: &str = r#"
@id("tester-invokes-anything")
permit(principal == Agent::"tester", action == Action::"invoke", resource);

@id("deletes-need-approval")
@reason("deleting a note needs a person's approval")
forbid(principal, action == Action::"invoke", resource == Tool::"delete-note")
unless { context.approved };
"#;

/// A deployment where carol approves.
fn fixture() -> Fixture {
    let f = Fixture::new();
    f.set_policies(&[("base.cedar", POLICIES)]);
    let carol = agent_key("carol");
    keys::write_private(&f.key_file("carol"), &carol).unwrap();
    keys::write_private(&f.key_file("bob"), &agent_key("bob")).unwrap();
    f.extend_deployment(&format!(
        "[approvers.carol]\npublic_key = \"{}\"\n",
        keys::format_public(&carol.verifying_key())
    ));
    for name in ["a", "b", "c", "d"] {
        std::fs::write(f.path().join("notes").join(name), name).unwrap();
    }
    f
}

fn delete(f: &Fixture, name: &str, approval: Option<&str>) -> std::process::Output {
    let input = json!({ "name": name }).to_string();
    let mut extra = vec!["--json"];
    if let Some(id) = approval {
        extra.extend(["--approval", id]);
    }
    f.call_cli("delete-note", &input, &extra)
}

fn envelope(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", stderr(out)))
}

/// Asks for an approval to delete `name` and returns its id.
fn pending(f: &Fixture, name: &str) -> String {
    let out = delete(f, name, None);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let envelope = envelope(&out);
    assert_eq!(envelope["decision"]["outcome"], "approval_required");
    envelope["approval"].as_str().unwrap().to_string()
}

fn approve(f: &Fixture, id: &str, key: &str) -> std::process::Output {
    f.run(&["approve", id, "--key", f.key_file(key).to_str().unwrap()])
}

/// The call with `approval` is refused (exit 3) with `reason`, and the note is still there.
fn refused(f: &Fixture, name: &str, approval: &str, reason: &str) {
    let out = delete(f, name, Some(approval));
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let message = envelope(&out)["error"]["message"].to_string();
    assert!(message.contains(reason), "{message}");
    assert!(f.path().join("notes").join(name).exists());
}

#[test]
fn an_approval_is_given_by_an_approver_and_used_once_by_that_exact_call() {
    let f = fixture();
    let id = pending(&f, "a");
    // Asking again for the same call finds the same pending approval.
    assert_eq!(pending(&f, "a"), id);
    let listed = stdout(&f.run(&["approvals", "list"]));
    assert!(
        listed.contains(&id) && listed.contains(r#""name":"a""#),
        "{listed}"
    );

    refused(&f, "a", &id, "has not been approved yet");
    refused(&f, "a", "no-such-approval", "no approval");

    // Neither the agent's key nor an unregistered key approves.
    let by_agent = approve(&f, &id, "tester");
    assert_eq!(by_agent.status.code(), Some(3));
    assert!(
        stderr(&by_agent).contains("an agent cannot approve"),
        "{}",
        stderr(&by_agent)
    );
    let by_stranger = approve(&f, &id, "bob");
    assert_eq!(by_stranger.status.code(), Some(3));
    assert!(
        stderr(&by_stranger).contains("no approver"),
        "{}",
        stderr(&by_stranger)
    );
    refused(&f, "a", &id, "has not been approved yet");

    let approved = approve(&f, &id, "carol");
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    assert!(stdout(&approved).contains("carol"));
    // Approved for deleting a, not b.
    refused(&f, "b", &id, "is for another call");

    let out = delete(&f, "a", Some(&id));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(envelope(&out)["approval"], id.as_str());
    assert!(!f.path().join("notes/a").exists());

    // Replay: the note is back, the approval is spent.
    std::fs::write(f.path().join("notes/a"), "a").unwrap();
    refused(&f, "a", &id, "has already been used");
    let all = stdout(&f.run(&["approvals", "list", "--all", "--json"]));
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all[0]["status"], "used");
    assert_eq!(all[0]["approver"], "carol");

    // A denied approval lets nothing run.
    let id = pending(&f, "c");
    assert_eq!(f.run(&["deny", &id]).status.code(), Some(0));
    refused(&f, "c", &id, "was denied");
    assert_eq!(approve(&f, &id, "carol").status.code(), Some(3));
}

#[test]
fn a_forged_signature_is_refused() {
    let f = fixture();
    let id = pending(&f, "b");
    // Someone who can write the state file marks it approved by carol, signing with bob's
    // key: the signature is checked against carol's registered key.
    let conn = rusqlite::Connection::open(f.path().join("state/warden.db")).unwrap();
    let (digest, expires): (String, i64) = conn
        .query_row(
            "SELECT digest, expires FROM approvals WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let message = format!("warden-approval-v1\n{id}\n{digest}\n{expires}");
    use base64::Engine as _;
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(agent_key("bob").sign(message.as_bytes()).to_bytes());
    conn.execute(
        "UPDATE approvals SET status = 'approved', approver = 'carol', signature = ?2 WHERE id = ?1",
        [&id, &forged],
    )
    .unwrap();
    refused(&f, "b", &id, "does not verify");
    // Naming an approver who is not registered does not help either.
    conn.execute(
        "UPDATE approvals SET approver = 'mallory' WHERE id = ?1",
        [&id],
    )
    .unwrap();
    refused(&f, "b", &id, "not an approver");
}

#[test]
fn an_expired_approval_is_refused() {
    let f = fixture();
    // Expiry is in whole seconds: 2 s leaves at least one to approve in, and 3.1 s later it
    // has passed whenever within its first second the approval was made.
    f.extend_deployment("[approvals]\nlifetime = \"2s\"\n");
    let id = pending(&f, "d");
    assert_eq!(approve(&f, &id, "carol").status.code(), Some(0));
    std::thread::sleep(std::time::Duration::from_millis(3100));
    refused(&f, "d", &id, "has expired");
}

#[test]
fn concurrent_calls_with_one_approval_run_it_once() {
    let f = fixture();
    let id = pending(&f, "a");
    assert_eq!(approve(&f, &id, "carol").status.code(), Some(0));
    let racers: Vec<_> = (0..4)
        .map(|_| {
            f.call_cmd("delete-note", r#"{"name":"a"}"#)
                .args(["--json", "--approval", &id])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<Option<i32>> = racers
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code())
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == Some(0)).count(),
        1,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == Some(3)).count(),
        3,
        "{codes:?}"
    );
}

#[test]
fn an_agent_key_cannot_be_registered_as_an_approver() {
    let f = Fixture::new();
    f.extend_deployment(&format!(
        "[approvers.sneaky]\npublic_key = \"{}\"\n",
        keys::format_public(&agent_key("tester").verifying_key())
    ));
    let out = f.run(&["approvals", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("approvers.sneaky.public_key")
            && stderr(&out).contains("an agent cannot approve"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_agent_cannot_pile_up_pending_approvals() {
    let f = fixture();
    let max = warden::approval::MAX_PENDING_PER_AGENT;
    let ids: Vec<String> = (0..max).map(|n| pending(&f, &format!("n{n}"))).collect();
    // Asking again for a call already waiting is that approval, not one more.
    assert_eq!(pending(&f, "n0"), ids[0]);

    // One more call is refused with a clear error, and nothing is stored for it.
    let out = delete(&f, "one-too-many", None);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let refused = envelope(&out);
    assert!(refused["approval"].is_null(), "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("already has {max} approvals waiting")),
        "{message}"
    );
    let listed = f.run(&["approvals", "list", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    assert!(!stdout(&listed).contains("one-too-many"));

    // Once a person has decided on one, the agent may ask again.
    let denied = f.run(&["deny", &ids[0]]);
    assert_eq!(denied.status.code(), Some(0), "{}", stderr(&denied));
    pending(&f, "one-too-many");
}

/// `warden approvals watch`: the approvals pending when it starts, then each new one as a call
/// is held, once each; `--json` gives one object per line.
#[test]
fn approvals_watch_shows_each_held_call_as_it_comes() {
    use std::io::BufRead as _;
    /// The watch runs until stopped: stopped however the test ends.
    struct Stopped(std::process::Child);
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let f = fixture();
    let first = pending(&f, "a");
    let mut watch = Stopped(
        f.cli()
            .args(["approvals", "watch", "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(watch.0.stdout.take().unwrap()).lines();
    let mut next =
        || -> serde_json::Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    assert_eq!(next()["id"], first.as_str());
    let second = pending(&f, "b");
    let shown = next();
    assert_eq!(shown["id"], second.as_str());
    assert_eq!(shown["tool"], "delete-note");
    assert_eq!(shown["input"]["name"], "b");
    let third = pending(&f, "c");
    assert_eq!(
        next()["id"],
        third.as_str(),
        "the first two are not shown again"
    );
}

#[test]
fn an_approval_given_in_one_session_is_used_in_that_session_only() {
    let f = fixture();
    let session = |f: &Fixture| {
        let out = f.run(&["session", "start", "--agent", AGENT]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out).split_whitespace().next().unwrap().to_string()
    };
    let (first, second) = (session(&f), session(&f));
    let input = json!({ "name": "a" }).to_string();
    let held = f.call_cli("delete-note", &input, &["--json", "--session", &first]);
    assert_eq!(held.status.code(), Some(4), "{}", stderr(&held));
    let id = envelope(&held)["approval"].as_str().unwrap().to_string();
    assert_eq!(approve(&f, &id, "carol").status.code(), Some(0));
    // The approver was shown the call in `first`: from another session, or none, it is
    // another call.
    for elsewhere in [vec!["--session", second.as_str()], vec![]] {
        let mut extra = vec!["--json", "--approval", &id];
        extra.extend(elsewhere);
        let out = f.call_cli("delete-note", &input, &extra);
        assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
        assert!(
            envelope(&out)["error"]["message"]
                .to_string()
                .contains("another call")
        );
    }
    let out = f.call_cli(
        "delete-note",
        &input,
        &["--json", "--approval", &id, "--session", &first],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(!f.path().join("notes/a").exists());
}
