//! Text that agents, tools and upstreams chose, made safe to print: a terminal shows it as the
//! characters it is and never acts on it (ANSI escapes that clear the screen or recolour it,
//! a carriage return that overwrites the line, bidi overrides that reorder what a person reads).
//! Every place the CLI prints stored text goes through `printable` (human lines) or
//! `printable_json` (JSON).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters a terminal acts on, or that change how the text around them reads or hide
/// text in it: C0 and C1 controls and DEL, the soft hyphen, the Arabic letter and Mongolian
/// vowel separators, zero-width characters and directional marks, line and paragraph
/// separators, bidi embeddings, overrides and isolates, word joiners and invisible operators,
/// variation selectors, interlinear annotation marks, the byte order mark, and tag characters.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
                | '\u{E0100}'..='\u{E01EF}'
        )
}

/// `text` as one line a person can trust: each unsafe character written as an escape (`\n`,
/// `\r`, `\t`, else `\u{1b}`), and the backslash doubled so that no escape can be faked.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || is_unsafe(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// JSON text with every unsafe character but the line feed written as a `\uXXXX` escape: the
/// same JSON value (serde_json escapes C0 controls in strings but leaves DEL, C1 controls and
/// bidi characters as they are), safe to print. Line feeds are kept: outside strings they are
/// the layout of pretty-printed JSON, and inside strings serde_json has escaped them already.
pub fn printable_json(json: &str) -> Cow<'_, str> {
    if !json.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c != '\n' && is_unsafe(c) {
            // Outside the Basic Multilingual Plane (tag characters): a surrogate pair.
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_and_bidi_characters_are_escaped() {
        let hostile = "ok\u{1b}[2J\rforged\nline\u{202e}txt.exe\u{9b}31m\u{7f}\\u{1b}";
        let shown = printable(hostile);
        assert_eq!(
            shown,
            "ok\\u{1b}[2J\\rforged\\nline\\u{202e}txt.exe\\u{9b}31m\\u{7f}\\\\u{1b}"
        );
        assert!(!shown.chars().any(is_unsafe));
        assert!(matches!(printable("plain ünïcode ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_keeps_its_value_and_loses_its_controls() {
        let value = serde_json::json!({ "label": "a\u{1b}[2J\r\u{9b}\u{202e}\u{2066}\u{ad}\u{e0041}\u{fe0f}b" });
        for json in [
            serde_json::to_string(&value).unwrap(),
            serde_json::to_string_pretty(&value).unwrap(),
        ] {
            let shown = printable_json(&json);
            assert!(!shown.chars().any(|c| c != '\n' && is_unsafe(c)), "{shown}");
            let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
            assert_eq!(back, value);
        }
    }
}
