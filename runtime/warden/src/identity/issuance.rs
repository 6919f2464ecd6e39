//! How many access tokens one node issues an agent (`identity::oauth`'s token endpoint).

/// The most access tokens one node issues one agent in a minute. A client needs one every
/// five minutes; each is a nonce and an audit record, so an agent asking without end is
/// refused (`slow_down`) rather than let fill the store.
pub const MAX_TOKENS_PER_MINUTE: usize = 30;

/// When this node issued each agent its tokens of the last minute. Only agents that proved
/// their key get an entry: the map is as large as the deployment's agents.
#[derive(Default)]
pub struct IssuedTokens(
    std::sync::Mutex<std::collections::HashMap<String, std::collections::VecDeque<i64>>>,
);

impl IssuedTokens {
    /// Counts a token for `agent` at `now` if it is within the limit.
    pub(crate) fn admit(&self, agent: &str, now: i64) -> bool {
        let mut issued = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let times = issued.entry(agent.to_string()).or_default();
        while times.front().is_some_and(|t| *t <= now - 60) {
            times.pop_front();
        }
        if times.len() >= MAX_TOKENS_PER_MINUTE {
            return false;
        }
        times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_gets_so_many_tokens_a_minute_and_no_more() {
        let issued = IssuedTokens::default();
        for _ in 0..MAX_TOKENS_PER_MINUTE {
            assert!(issued.admit("bot", 1000));
        }
        assert!(!issued.admit("bot", 1030), "one too many within the minute");
        assert!(
            issued.admit("other", 1030),
            "another agent's tokens are its own"
        );
        assert!(issued.admit("bot", 1060), "a minute later");
    }
}
