//! How many access tokens one node issues an agent (`identity::oauth`'s token endpoint).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The most access tokens one node issues one agent in a minute. A client needs one every
/// five minutes; each is a nonce and an audit record, so an agent asking without end is
/// refused (`slow_down`) rather than let fill the store.
pub const MAX_TOKENS_PER_MINUTE: usize = 30;

const WINDOW: Duration = Duration::from_secs(60);

/// When this node issued each agent its tokens of the last minute, on the monotonic clock (a
/// wall clock stepped back would lock agents out). Only agents that proved their key get an
/// entry, dropped once empty: the map is at most as large as the deployment's agents.
#[derive(Default)]
pub struct IssuedTokens(Mutex<HashMap<String, VecDeque<Instant>>>);

impl IssuedTokens {
    /// How long `agent` must wait for its next token, if it had its share of the last minute.
    /// Counts nothing: asked before anything is written for a request.
    pub(crate) fn wait(&self, agent: &str, now: Instant) -> Option<Duration> {
        let mut issued = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let times = issued.get_mut(agent)?;
        let wait = wait(times, now);
        if times.is_empty() {
            issued.remove(agent);
        }
        wait
    }

    /// Counts a token for `agent` issued at `now`, unless it had its share: then how long it
    /// must wait.
    pub(crate) fn admit(&self, agent: &str, now: Instant) -> Result<(), Duration> {
        let mut issued = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let times = issued.entry(agent.to_string()).or_default();
        if let Some(wait) = wait(times, now) {
            return Err(wait);
        }
        times.push_back(now);
        Ok(())
    }
}

/// Forgets the times a minute old; if as many remain as the limit, the time until the oldest
/// is a minute old.
fn wait(times: &mut VecDeque<Instant>, now: Instant) -> Option<Duration> {
    let age = |t: &Instant| now.saturating_duration_since(*t);
    while times.front().is_some_and(|t| age(t) >= WINDOW) {
        times.pop_front();
    }
    (times.len() >= MAX_TOKENS_PER_MINUTE).then(|| {
        times
            .front()
            .map_or(WINDOW, |t| WINDOW.saturating_sub(age(t)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_gets_so_many_tokens_a_minute_and_no_more() {
        let issued = IssuedTokens::default();
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        for _ in 0..MAX_TOKENS_PER_MINUTE {
            assert_eq!(issued.wait("bot", at(0)), None);
            assert_eq!(issued.admit("bot", at(0)), Ok(()));
        }
        let thirty = Duration::from_secs(30);
        assert_eq!(issued.wait("bot", at(30)), Some(thirty), "one too many");
        assert_eq!(issued.admit("bot", at(30)), Err(thirty), "nothing counted");
        assert_eq!(
            issued.admit("other", at(30)),
            Ok(()),
            "another's are its own"
        );
        assert_eq!(issued.admit("bot", at(60)), Ok(()), "a minute later");
        assert_eq!(issued.wait("other", at(200)), None);
        assert!(
            !issued.0.lock().unwrap().contains_key("other"),
            "an agent with no token in the last minute has no entry"
        );
    }
}
