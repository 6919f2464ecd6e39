//! Keeps a call's secrets out of everything its tool reads from the network.
//!
//! A call holds one [`SecretSet`]: the static keys its tool may carry, and every token minted
//! for it so far (the egress hook adds each one as it injects it). Every response of the call
//! — whichever request carried a secret, and whichever host answers — is scrubbed with the
//! whole set, because a tool can send a token to an echo endpoint with one request and read it
//! back through another.
//!
//! An upstream may echo a secret in another form, or only part of it. The set therefore holds
//! the forms upstreams commonly produce (JSON-escaped, URL-encoded, base64 in both alphabets at
//! every alignment, hex), and matches any run of [`FRAGMENT`] consecutive bytes of any form:
//! an echo truncated at any point, or a body that ends mid-token, leaks at most
//! `FRAGMENT - 1` bytes of a secret.

use super::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

pub const MARKER: &[u8] = b"[REDACTED]";

/// The shortest run of a secret's bytes that counts as an echo of it. Shorter secrets (and
/// forms) match only whole.
pub const FRAGMENT: usize = 12;

/// An encoded form shorter than this is not matched: it would hide ordinary text.
const MIN_FORM: usize = 8;

/// The most secrets one call may hold. A minted token adds about 10,000 fragments (some
/// 200 KiB): a tool that made its upstream mint without end would grow the host's memory.
pub const MAX_SECRETS: usize = 32;

/// One call's secrets. Cloning shares the set: an addition is seen by every scrubber made
/// from any clone, also by one already running.
#[derive(Clone, Default)]
pub struct SecretSet(Arc<RwLock<Patterns>>);

/// Says how many secrets it holds, never which.
impl std::fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretSet({} secrets)", self.patterns().secrets.len())
    }
}

fn lowered(fragment: &[u8; FRAGMENT]) -> [u8; FRAGMENT] {
    let mut lower = *fragment;
    lower.make_ascii_lowercase();
    lower
}

/// What the scrubbers match.
#[derive(Clone, Default)]
struct Patterns {
    /// The secrets added so far (an addition of one already present changes nothing).
    secrets: HashSet<Vec<u8>>,
    /// Every run of `FRAGMENT` bytes of every form at least that long (fixed-size: no
    /// allocation per fragment).
    fragments: HashSet<[u8; FRAGMENT]>,
    /// The same fragments in lowercase, for text that arrives lowercased (header names).
    lower: HashSet<[u8; FRAGMENT]>,
    /// Shorter forms, matched whole, by length; longest first.
    short: Vec<(usize, HashSet<Vec<u8>>)>,
}

impl Patterns {
    fn longest(&self) -> usize {
        if self.fragments.is_empty() {
            self.short.first().map_or(0, |(len, _)| *len)
        } else {
            FRAGMENT
        }
    }

    /// The length of the longest pattern `text` starts with.
    fn match_at(&self, text: &[u8]) -> Option<usize> {
        let fragment = text
            .first_chunk::<FRAGMENT>()
            .filter(|head| self.fragments.contains(*head))
            .map(|_| FRAGMENT);
        fragment.or_else(|| {
            self.short.iter().find_map(|(len, set)| {
                text.get(..*len)
                    .filter(|head| set.contains(*head))
                    .map(|_| *len)
            })
        })
    }

    fn insert(&mut self, form: &[u8]) {
        if form.len() >= FRAGMENT {
            for window in form
                .windows(FRAGMENT)
                .filter_map(|w| w.first_chunk::<FRAGMENT>())
            {
                self.fragments.insert(*window);
                self.lower.insert(lowered(window));
            }
            return;
        }
        let len = form.len();
        match self.short.iter_mut().find(|(l, _)| *l == len) {
            Some((_, set)) => {
                set.insert(form.to_vec());
            }
            None => {
                self.short.push((len, HashSet::from([form.to_vec()])));
                self.short.sort_by_key(|s| std::cmp::Reverse(s.0));
            }
        }
    }
}

impl SecretSet {
    pub fn new() -> SecretSet {
        SecretSet::default()
    }

    /// Adds `secret` in every form an upstream may echo it in. False, and nothing added, when
    /// the set holds `MAX_SECRETS` already: the caller must not send the secret.
    pub fn add(&self, secret: &Secret) -> bool {
        let raw = secret.expose().as_bytes();
        let mut next = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if raw.is_empty() || next.secrets.contains(raw) {
            return true;
        }
        if next.secrets.len() >= MAX_SECRETS {
            return false;
        }
        next.secrets.insert(raw.to_vec());
        for form in forms(raw) {
            next.insert(&form);
        }
        true
    }

    /// A set of its own that starts with what this one holds: a tool's static keys are put in
    /// forms once, when it is loaded, and each call starts from a copy.
    pub fn fork(&self) -> SecretSet {
        SecretSet(Arc::new(RwLock::new(self.patterns().clone())))
    }

    fn patterns(&self) -> RwLockReadGuard<'_, Patterns> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `name`, text an upstream chose that arrives lowercased (a header's name), holds
    /// any fragment or short form of a secret in any case: such text cannot be rewritten, only
    /// dropped.
    pub fn names_a_secret(&self, name: &[u8]) -> bool {
        let p = self.patterns();
        name.windows(FRAGMENT)
            .filter_map(|w| w.first_chunk::<FRAGMENT>())
            .any(|w| p.lower.contains(&lowered(w)))
            || p.short.iter().any(|(len, forms)| {
                forms
                    .iter()
                    .any(|f| name.windows(*len).any(|w| w.eq_ignore_ascii_case(f)))
            })
    }

    /// A scrubber for one byte stream; it sees secrets added later too.
    pub fn scrubber(&self) -> Scrubber {
        Scrubber {
            set: self.clone(),
            held: Vec::new(),
            covered: 0,
            replaced: 0,
        }
    }

    /// Scrubs a whole value at once (a header or trailer value); returns it and the number
    /// of echoes replaced.
    pub fn scrub_all(&self, value: &[u8]) -> (Vec<u8>, usize) {
        let mut s = self.scrubber();
        let mut out = s.feed(value);
        out.extend(s.finish());
        (out, s.replaced)
    }
}

/// The forms of `secret` that upstreams commonly echo, longest-lived first. Minted tokens are
/// base64url already: their JSON-escaped and URL-encoded forms are themselves, and drop out.
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![secret.to_vec()];
    if let Ok(text) = std::str::from_utf8(secret) {
        // JSON: serde_json's escaping, and the `\/` some encoders add.
        let json = serde_json::Value::from(text).to_string();
        let json = json
            .strip_prefix('"')
            .and_then(|j| j.strip_suffix('"'))
            .unwrap_or(&json)
            .to_string();
        forms.push(json.replace('/', "\\/").into_bytes());
        forms.push(json.into_bytes());
    }
    // URL-encoded: upper- and lower-case escapes, and form encoding's `+` for a space.
    let upper = percent_encode(secret);
    forms.push(lower_escapes(&upper));
    forms.push(upper.replace("%20", "+").into_bytes());
    forms.push(upper.into_bytes());
    // base64 at each of the three alignments a secret can have inside a longer encoded value
    // (`Basic base64(user:key)`): only the characters that depend on the secret's bytes alone.
    for offset in 0..3 {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(secret);
        let first = (8 * offset).div_ceil(6);
        let end = 8 * padded.len() / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&padded);
            if let Some(core) = encoded.as_bytes().get(first..end) {
                forms.push(core.to_vec());
            }
        }
    }
    forms.push(hex::encode(secret).into_bytes());
    forms.push(hex::encode_upper(secret).into_bytes());

    let mut seen = HashSet::new();
    forms
        .into_iter()
        .enumerate()
        .filter(|(i, form)| (*i == 0 || form.len() >= MIN_FORM) && seen.insert(form.clone()))
        .map(|(_, form)| form)
        .collect()
}

/// Percent-encodes every byte outside RFC 3986's unreserved set, with upper-case escapes.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The same percent-encoding with lower-case hex digits in its escapes.
fn lower_escapes(encoded: &str) -> Vec<u8> {
    let mut out = encoded.as_bytes().to_vec();
    let mut i = 0;
    while i < out.len() {
        if out[i] == b'%' {
            for digit in out.iter_mut().skip(i + 1).take(2) {
                digit.make_ascii_lowercase();
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

/// Scrubs one byte stream fed in chunks. A byte is passed on once every pattern that could
/// cover it has been checked, so up to `longest - 1` bytes are held back between chunks; a
/// run of covered bytes becomes one [`MARKER`].
pub struct Scrubber {
    set: SecretSet,
    held: Vec<u8>,
    /// How many bytes at the start of `held` an echo already found covers.
    covered: usize,
    /// Echoes replaced so far.
    pub replaced: usize,
}

impl Scrubber {
    /// Feeds a chunk; returns what can be passed on now.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(chunk);
        self.scan(false)
    }

    /// The end of the stream: passes on what was held back, scrubbed.
    pub fn finish(&mut self) -> Vec<u8> {
        self.scan(true)
    }

    fn scan(&mut self, last: bool) -> Vec<u8> {
        let set = self.set.clone();
        let patterns = set.patterns();
        let text = std::mem::take(&mut self.held);
        let mut out = Vec::with_capacity(text.len());
        let mut covered = self.covered;
        let mut i = 0;
        while let Some(&byte) = text.get(i) {
            let rest = &text[i..];
            if !last && rest.len() < patterns.longest() {
                break;
            }
            if let Some(len) = patterns.match_at(rest) {
                if i >= covered {
                    out.extend_from_slice(MARKER);
                    self.replaced += 1;
                }
                covered = covered.max(i + len);
            }
            if i >= covered {
                out.push(byte);
            }
            i += 1;
        }
        self.held = text[i..].to_vec();
        self.covered = covered.saturating_sub(i);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(secrets: &[&str]) -> SecretSet {
        let set = SecretSet::new();
        for s in secrets {
            set.add(&Secret::new(*s));
        }
        set
    }

    fn run(set: &SecretSet, chunks: &[&[u8]]) -> String {
        let mut s = set.scrubber();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(s.feed(c));
        }
        out.extend(s.finish());
        String::from_utf8(out).unwrap()
    }

    fn whole(secret: &str, body: &str) -> String {
        run(&set(&[secret]), &[body.as_bytes()])
    }

    #[test]
    fn replaces_whole_and_split_occurrences() {
        let s = set(&["SECRET"]);
        assert_eq!(run(&s, &[b"a SECRET b"]), "a [REDACTED] b");
        assert_eq!(
            run(&s, &[b"a SEC", b"RET b SECRET"]),
            "a [REDACTED] b [REDACTED]"
        );
        assert_eq!(
            run(&s, &[b"S", b"E", b"C", b"R", b"E", b"T", b"!"]),
            "[REDACTED]!"
        );
        assert_eq!(run(&s, &[b"SSECRET"]), "S[REDACTED]");
        assert_eq!(run(&s, &[b"no match here"]), "no match here");
    }

    #[test]
    fn every_split_point_is_caught() {
        let s = set(&["SECRET"]);
        let body = b"xxSECRETyySECRETzz";
        for cut in 0..body.len() {
            let out = run(&s, &[&body[..cut], &body[cut..]]);
            assert_eq!(out, "xx[REDACTED]yy[REDACTED]zz", "cut at {cut}");
        }
    }

    const KEY: &str = "sk-live/static+key 0123456789\"quoted\"";
    const TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVzLWhlcmU";

    /// A body ending in the first `n` bytes of the token leaks fewer than `FRAGMENT` of them.
    #[test]
    fn a_body_that_ends_mid_token_keeps_no_fragment_of_it() {
        for n in FRAGMENT..TOKEN.len() {
            let out = whole(TOKEN, &format!("{{\"auth\":\"Bearer {}", &TOKEN[..n]));
            assert_eq!(out, "{\"auth\":\"Bearer [REDACTED]", "prefix of {n}");
        }
        // Truncated in the middle of a body, or only its tail: the same.
        let out = whole(TOKEN, &format!("a {}… b", &TOKEN[..40]));
        assert_eq!(out, "a [REDACTED]… b");
        let out = whole(TOKEN, &format!("a {} b", &TOKEN[30..]));
        assert_eq!(out, "a [REDACTED] b");
    }

    #[test]
    fn the_forms_an_upstream_echoes_are_scrubbed() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let json = serde_json::Value::from(KEY).to_string();
        let encoded = [
            KEY.to_string(),
            json.clone(),
            json.replace('/', "\\/"),
            percent_encode(KEY.as_bytes()),
            percent_encode(KEY.as_bytes()).to_lowercase(),
            percent_encode(KEY.as_bytes()).replace("%20", "+"),
            STANDARD.encode(KEY),
            STANDARD_NO_PAD.encode(KEY),
            URL_SAFE.encode(KEY),
            URL_SAFE_NO_PAD.encode(KEY),
            // Inside a longer encoded value, at every alignment.
            STANDARD.encode(format!("user:{KEY}")),
            STANDARD.encode(format!("u:{KEY}")),
            STANDARD.encode(format!("xu:{KEY}")),
            hex::encode(KEY),
            hex::encode_upper(KEY),
        ];
        let s = set(&[KEY]);
        for form in encoded {
            let out = run(&s, &[format!("<{form}>").as_bytes()]);
            assert!(out.contains("[REDACTED]"), "{form} -> {out}");
            // What is left of the form is at most a few boundary characters on each side.
            let left = out.len() - MARKER.len() - 2;
            assert!(left < 2 * FRAGMENT, "{form} -> {out}");
        }
    }

    #[test]
    fn ordinary_text_passes_untouched() {
        let s = set(&[KEY, TOKEN]);
        let text = "{\"service\":\"warden-loopback\",\"path\":\"/echo\",\"ok\":true} \
                    eyJhbGciOiJSUzI1NiJ9 0123456789 sk-live/";
        assert_eq!(run(&s, &[text.as_bytes()]), text);
    }

    /// A secret added while a stream is being scrubbed is caught in what follows.
    #[test]
    fn a_secret_added_later_is_seen_by_running_scrubbers() {
        let s = set(&[KEY]);
        let mut scrubber = s.scrubber();
        let mut out = scrubber.feed(b"before ");
        assert!(s.add(&Secret::new(TOKEN)));
        out.extend(scrubber.feed(format!("{TOKEN} after").as_bytes()));
        out.extend(scrubber.finish());
        assert_eq!(String::from_utf8(out).unwrap(), "before [REDACTED] after");
    }

    #[test]
    fn a_set_holds_a_bounded_number_of_secrets() {
        let s = SecretSet::new();
        for i in 0..MAX_SECRETS {
            assert!(s.add(&Secret::new(format!("secret-number-{i:04}"))));
        }
        // One already held is no addition; one more is refused, and not matched.
        assert!(s.add(&Secret::new("secret-number-0000")));
        assert!(!s.add(&Secret::new("one-secret-too-many")));
        assert_eq!(s.scrub_all(b"one-secret-too-many").1, 0);
        assert_eq!(s.scrub_all(b"secret-number-0031").1, 1);
    }

    /// Property: for many bodies and every way of cutting them into chunks, the output is the
    /// same as scrubbing the whole body, and no fragment of any secret survives.
    #[test]
    fn chunking_never_changes_the_result() {
        let s = set(&[KEY, TOKEN]);
        let mut seed: u64 = 0x5eed;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let pieces = [
            KEY.to_string(),
            TOKEN.to_string(),
            TOKEN[..20].to_string(),
            base64::engine::general_purpose::STANDARD.encode(KEY),
            "filler text ".to_string(),
            "\"".to_string(),
            "S".to_string(),
        ];
        for _ in 0..300 {
            let body: String = (0..next(8) + 1)
                .map(|_| pieces[next(pieces.len())].as_str())
                .collect();
            let expected = run(&s, &[body.as_bytes()]);
            for secret in [KEY, TOKEN] {
                for window in secret.as_bytes().windows(FRAGMENT) {
                    assert!(
                        !expected.as_bytes().windows(FRAGMENT).any(|w| w == window),
                        "{body} -> {expected}"
                    );
                }
            }
            for _ in 0..10 {
                let mut cuts: Vec<usize> = (0..next(6)).map(|_| next(body.len() + 1)).collect();
                cuts.sort();
                let mut chunks = Vec::new();
                let mut from = 0;
                for cut in cuts.into_iter().chain([body.len()]) {
                    chunks.push(&body.as_bytes()[from..cut]);
                    from = cut;
                }
                assert_eq!(run(&s, &chunks), expected, "{chunks:?}");
            }
        }
    }
}
