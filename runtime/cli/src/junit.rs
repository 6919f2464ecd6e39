//! JUnit XML, the report format CI systems read: one `<testsuite>` per tool, one
//! `<testcase>` per row of a drill or case of `warden test`.

use anyhow::{Context as _, Result};
use std::fmt::Write as _;
use std::path::Path;

/// One test case.
pub struct Case<'a> {
    /// The suite it belongs to (a tool's name).
    pub suite: &'a str,
    pub name: String,
    pub outcome: Outcome,
    /// Evidence, written as the case's `system-out`.
    pub detail: &'a str,
    pub seconds: f64,
}

pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// The cases as a JUnit XML document named `name`.
pub fn xml(name: &str, cases: &[Case]) -> String {
    let all: Vec<&Case> = cases.iter().collect();
    let mut suites: Vec<&str> = Vec::new();
    for case in cases {
        if !suites.contains(&case.suite) {
            suites.push(case.suite);
        }
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" {}>",
        escape(name),
        counts(&all)
    );
    for suite in suites {
        let members: Vec<&Case> = cases.iter().filter(|c| c.suite == suite).collect();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" {}>",
            escape(suite),
            counts(&members)
        );
        for case in members {
            let _ = writeln!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
                escape(case.suite),
                escape(&case.name),
                case.seconds
            );
            match &case.outcome {
                Outcome::Passed => {}
                Outcome::Failed(message) => {
                    let _ = writeln!(
                        out,
                        "      <failure message=\"{}\">{}</failure>",
                        escape(message),
                        escape(case.detail)
                    );
                }
                Outcome::Skipped(message) => {
                    let _ = writeln!(out, "      <skipped message=\"{}\"/>", escape(message));
                }
            }
            let _ = writeln!(
                out,
                "      <system-out>{}</system-out>",
                escape(case.detail)
            );
            out.push_str("    </testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// The attributes that count a suite's cases.
fn counts(cases: &[&Case]) -> String {
    let failed = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
        .count();
    let skipped = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Skipped(_)))
        .count();
    format!(
        "tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\"",
        cases.len(),
        cases.iter().map(|c| c.seconds).sum::<f64>()
    )
}

/// Writes the document whole or not at all (a temporary file renamed into place).
pub fn write(file: &Path, name: &str, cases: &[Case]) -> Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| {
        format!(
            "--junit {}: cannot write in {}",
            file.display(),
            dir.display()
        )
    })?;
    std::io::Write::write_all(&mut tmp, xml(name, cases).as_bytes())?;
    tmp.persist(file)
        .with_context(|| format!("--junit {}: cannot write it", file.display()))?;
    Ok(())
}

/// Text as XML 1.0 character data or attribute value: markup escaped, and the control
/// characters XML cannot hold (a tool's output may have any) replaced.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_control_characters_in_evidence_stay_data() {
        let detail = "<x a=\"1\">&\u{0}\u{1b}]]></x>";
        let doc = xml(
            "t",
            &[Case {
                suite: "s<",
                name: "n&".into(),
                outcome: Outcome::Failed("m\"".into()),
                detail,
                seconds: 0.5,
            }],
        );
        assert!(doc.contains("&lt;x a=&quot;1&quot;&gt;&amp;\u{FFFD}\u{FFFD}]]&gt;&lt;/x&gt;"));
        assert!(doc.contains("failures=\"1\""));
        assert!(!doc.contains('\u{0}'));
    }
}
