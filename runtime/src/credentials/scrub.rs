//! Replaces every occurrence of secret values in a byte stream, also when an occurrence is
//! split across chunks: up to `longest - 1` trailing bytes are held back until the next chunk
//! shows whether they start a secret.

pub const MARKER: &[u8] = b"[REDACTED]";

pub struct Scrubber {
    secrets: Vec<Vec<u8>>,
    held: Vec<u8>,
    /// Occurrences replaced so far.
    pub replaced: usize,
}

impl Scrubber {
    pub fn new(secrets: Vec<Vec<u8>>) -> Scrubber {
        Scrubber {
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
            held: Vec::new(),
            replaced: 0,
        }
    }

    fn longest(&self) -> usize {
        self.secrets.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Feeds a chunk; returns what can be passed on now.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(chunk);
        let text = std::mem::take(&mut self.held);
        let (mut out, rest) = self.replace(&text, false);
        self.held = rest;
        out.shrink_to_fit();
        out
    }

    /// The end of the stream: passes on what was held back.
    pub fn finish(&mut self) -> Vec<u8> {
        let text = std::mem::take(&mut self.held);
        self.replace(&text, true).0
    }

    /// Replaces complete occurrences; unless `last`, keeps back a tail that could be the start
    /// of a secret.
    fn replace(&mut self, text: &[u8], last: bool) -> (Vec<u8>, Vec<u8>) {
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        let keep_from = if last {
            text.len()
        } else {
            text.len().saturating_sub(self.longest().saturating_sub(1))
        };
        while i < text.len() {
            if let Some(secret) = self.secrets.iter().find(|s| text[i..].starts_with(s)) {
                out.extend_from_slice(MARKER);
                i += secret.len();
                self.replaced += 1;
                continue;
            }
            if i >= keep_from && self.secrets.iter().any(|s| s.starts_with(&text[i..])) {
                return (out, text[i..].to_vec());
            }
            out.push(text[i]);
            i += 1;
        }
        (out, Vec::new())
    }
}

/// Scrubs a whole value at once (headers).
pub fn scrub_all(secrets: &[Vec<u8>], value: &[u8]) -> (Vec<u8>, usize) {
    let mut s = Scrubber::new(secrets.to_vec());
    let mut out = s.feed(value);
    out.extend(s.finish());
    (out, s.replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(secret: &str, chunks: &[&str]) -> String {
        let mut s = Scrubber::new(vec![secret.as_bytes().to_vec()]);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(s.feed(c.as_bytes()));
        }
        out.extend(s.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn replaces_whole_and_split_occurrences() {
        assert_eq!(run("SECRET", &["a SECRET b"]), "a [REDACTED] b");
        assert_eq!(
            run("SECRET", &["a SEC", "RET b SECRET"]),
            "a [REDACTED] b [REDACTED]"
        );
        assert_eq!(
            run("SECRET", &["S", "E", "C", "R", "E", "T", "!"]),
            "[REDACTED]!"
        );
        assert_eq!(run("SECRET", &["SECRE"]), "SECRE");
        assert_eq!(run("SECRET", &["SSECRET"]), "S[REDACTED]");
        assert_eq!(run("SECRET", &["no match here"]), "no match here");
    }

    #[test]
    fn every_split_point_is_caught() {
        let body = "xxSECRETyySECRETzz";
        for cut in 0..body.len() {
            let out = run("SECRET", &[&body[..cut], &body[cut..]]);
            assert_eq!(out, "xx[REDACTED]yy[REDACTED]zz", "cut at {cut}");
        }
    }
}
