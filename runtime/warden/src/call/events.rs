//! What a call does, told as it happens to a caller that follows it (an MCP server relays it
//! to its client as log notifications): the decision, a hold for approval, each outgoing
//! request and Warden's decision on it, and the lines the tool writes to stderr.
//!
//! A listener is called on the call's path, some events under the call's locks: it must not
//! block (queue and return). Nothing here holds a secret: requests are shown as the audit
//! shows them (no query, no credential), and a tool never sees a secret to print.

use std::sync::Arc;

/// The longest stderr line told (longer ones are cut), and how many lines one call tells.
pub const MAX_LINE: usize = 512;
pub const MAX_LINES: u32 = 100;

#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// Policies decided the call: `allow`, `deny` or `approval_required`, and why.
    Decided { outcome: String, summary: String },
    /// The call waits for a person's approval.
    Held { approval: String },
    /// An outgoing request (`scheme://host:port/path`), and what Warden decided.
    Egress {
        method: String,
        url: String,
        decision: String,
        rule: Option<String>,
        reason: Option<String>,
    },
    /// A line the tool wrote to stderr.
    Stderr(String),
}

/// Hears a call's events; must not block.
pub trait CallEvents: Send + Sync {
    fn event(&self, event: CallEvent);
}

impl std::fmt::Debug for dyn CallEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallEvents")
    }
}

pub type Listener = Option<Arc<dyn CallEvents>>;

/// Splits a stream into lines for a listener, each cut at `MAX_LINE` bytes, at most
/// `MAX_LINES` of them (then one that says the rest are not told).
pub struct Lines {
    partial: Vec<u8>,
    told: u32,
    listener: Arc<dyn CallEvents>,
}

impl Lines {
    pub fn new(listener: Arc<dyn CallEvents>) -> Lines {
        Lines {
            partial: Vec::new(),
            told: 0,
            listener,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.told > MAX_LINES {
            return;
        }
        for &byte in bytes {
            match byte {
                b'\n' => self.line(),
                _ if self.partial.len() < MAX_LINE => self.partial.push(byte),
                _ => {}
            }
        }
    }

    fn line(&mut self) {
        // A client may print it: escapes and bidi controls are shown, never acted on.
        let text = String::from_utf8_lossy(&self.partial);
        let text = crate::text::printable(text.trim_end()).into_owned();
        self.partial.clear();
        self.told += 1;
        match self.told {
            n if n <= MAX_LINES => self.listener.event(CallEvent::Stderr(text)),
            n if n == MAX_LINES + 1 => self.listener.event(CallEvent::Stderr(format!(
                "[the rest of the tool's stderr is not told: {MAX_LINES} lines were]"
            ))),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Heard(Mutex<Vec<CallEvent>>);

    impl CallEvents for Heard {
        fn event(&self, event: CallEvent) {
            self.0.lock().unwrap().push(event);
        }
    }

    #[test]
    fn lines_are_whole_cut_and_bounded_in_number() {
        let heard = Arc::new(Heard::default());
        let mut lines = Lines::new(heard.clone());
        lines.feed(b"first ha");
        lines.feed(b"lf\nsecond\x1b[2J\r\nno end yet");
        assert_eq!(
            *heard.0.lock().unwrap(),
            [
                CallEvent::Stderr("first half".into()),
                CallEvent::Stderr("second\\u{1b}[2J".into())
            ]
        );
        lines.feed(&vec![b'x'; 10 * MAX_LINE]);
        lines.feed(b"\n");
        let long = heard.0.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            long,
            CallEvent::Stderr(format!("no end yet{}", "x".repeat(MAX_LINE - 10)))
        );
        lines.feed(&b"again\n".repeat(1000));
        let heard = heard.0.lock().unwrap();
        assert_eq!(heard.len(), MAX_LINES as usize + 1);
        assert!(matches!(heard.last(), Some(CallEvent::Stderr(t)) if t.contains("not told")));
    }
}
