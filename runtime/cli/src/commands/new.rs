//! `warden new NAME --lang rust|python|js`: a tool directory that builds as it is — source
//! with `describe` and `invoke` for a typed input and its JSON Schema declared once, a
//! mounted-file read, `tool.toml` named as `describe` names it, the WIT it targets (and for
//! Rust the SDK) vendored in, the build tool pinned, a short README and a test input. It
//! prints the Cedar permit and the `warden call` line to try it.

use crate::UsageError;
use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct NewArgs {
    /// The tool's name: 1-64 lowercase letters, digits or '-'.
    name: String,
    #[arg(long, value_enum)]
    lang: Lang,
    /// Where to make it (default ./NAME); it must not exist yet.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    fn builder(self) -> &'static str {
        match self {
            Lang::Rust => "cargo, target wasm32-wasip2",
            Lang::Python => "componentize-py 0.25.1, `pip install -r requirements.txt`",
            Lang::Js => "componentize-js 0.23.0 from npm, installed on the first build",
        }
    }

    /// Python's and JavaScript's interpreters live in the component's memory.
    fn memory(self) -> &'static str {
        match self {
            Lang::Rust => "64MiB",
            Lang::Python | Lang::Js => "128MiB",
        }
    }
}

/// The WIT the tool targets, as this Warden has it: the `warden:tool` package and, in `deps/`,
/// the WASI packages the host implements (which the `tool-wasi` world imports).
const WIT: [(&str, &str); 8] = [
    (
        "world.wit",
        include_str!("../../../../host-api/wit/world.wit"),
    ),
    (
        "deps/cli.wit",
        include_str!("../../../../host-api/wit/deps/cli.wit"),
    ),
    (
        "deps/clocks.wit",
        include_str!("../../../../host-api/wit/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../../../host-api/wit/deps/filesystem.wit"),
    ),
    (
        "deps/http.wit",
        include_str!("../../../../host-api/wit/deps/http.wit"),
    ),
    (
        "deps/io.wit",
        include_str!("../../../../host-api/wit/deps/io.wit"),
    ),
    (
        "deps/random.wit",
        include_str!("../../../../host-api/wit/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../../../host-api/wit/deps/sockets.wit"),
    ),
];

/// (path in the tool directory, template) for a language; `{{…}}` are filled in.
fn files(lang: Lang) -> Vec<(String, &'static str)> {
    let mut files = vec![
        ("tool.toml", include_str!("../../templates/tool.toml")),
        ("input.json", include_str!("../../templates/input.json")),
        ("README.md", include_str!("../../templates/README.md")),
    ];
    files.extend(match lang {
        Lang::Rust => vec![
            (
                "Cargo.toml",
                include_str!("../../templates/rust/Cargo.toml"),
            ),
            (
                "src/lib.rs",
                include_str!("../../templates/rust/src/lib.rs"),
            ),
            // The SDK, as this Warden has it: no registry needed, and no version skew.
            (
                "host-api/Cargo.toml",
                include_str!("../../../../host-api/Cargo.toml"),
            ),
            (
                "host-api/src/lib.rs",
                include_str!("../../../../host-api/src/lib.rs"),
            ),
        ],
        Lang::Python => vec![
            ("app.py", include_str!("../../templates/python/app.py")),
            (
                "requirements.txt",
                include_str!("../../templates/python/requirements.txt"),
            ),
        ],
        Lang::Js => vec![
            ("app.js", include_str!("../../templates/js/app.js")),
            (
                "package.json",
                include_str!("../../templates/js/package.json"),
            ),
            (
                "package-lock.json",
                include_str!("../../templates/js/package-lock.json"),
            ),
        ],
    });
    let wit_dir = match lang {
        Lang::Rust => "host-api/wit",
        Lang::Python | Lang::Js => "wit",
    };
    let mut files: Vec<(String, &'static str)> = files
        .into_iter()
        .map(|(path, t)| (path.to_string(), t))
        .collect();
    files.extend(WIT.map(|(path, wit)| (format!("{wit_dir}/{path}"), wit)));
    files
}

/// `hello-world` → `HelloWorldTool`: a Rust type name, never a keyword nor a name the
/// template imports (`Tool`, `Value`, `Input`).
fn type_name(name: &str) -> String {
    let camel: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    match camel.starts_with(|c: char| c.is_ascii_digit()) {
        true => format!("T{camel}Tool"),
        false => format!("{camel}Tool"),
    }
}

/// Why cargo would refuse `name` as a package (it names the crate), if it would.
fn not_a_crate_name(name: &str) -> Option<&'static str> {
    const RESERVED: &[&str] = &[
        "abstract",
        "alloc",
        "as",
        "async",
        "await",
        "become",
        "box",
        "break",
        "const",
        "continue",
        "core",
        "crate",
        "do",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "final",
        "fn",
        "for",
        "gen",
        "host-api",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "macro",
        "match",
        "mod",
        "move",
        "mut",
        "override",
        "priv",
        "proc-macro",
        "pub",
        "ref",
        "return",
        "schemars",
        "self",
        "serde",
        "static",
        "std",
        "struct",
        "super",
        "test",
        "trait",
        "true",
        "try",
        "type",
        "typeof",
        "unsafe",
        "unsized",
        "use",
        "virtual",
        "warden-host-api",
        "where",
        "while",
        "yield",
    ];
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Some("a Rust crate's name cannot start with a digit");
    }
    RESERVED
        .contains(&name)
        .then_some("it is a Rust keyword or the name of a crate the tool uses")
}

/// `template` with this tool's names in it.
fn fill(template: &str, name: &str, lang: Lang) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .replace("{{type}}", &type_name(name))
        .replace("{{memory}}", lang.memory())
        .replace("{{builder}}", lang.builder())
}

pub fn run(config: &Path, args: NewArgs) -> Result<i32> {
    if !warden::manifest::is_tool_name(&args.name) {
        return Err(UsageError(format!(
            "`{}`: a tool's name is 1-64 lowercase letters, digits or '-'",
            args.name
        ))
        .into());
    }
    if args.lang == Lang::Rust
        && let Some(why) = not_a_crate_name(&args.name)
    {
        return Err(UsageError(format!(
            "`{}`: not a name for a Rust tool: {why}",
            args.name
        ))
        .into());
    }
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        return Err(UsageError(format!("{}: already exists", dir.display())).into());
    }
    // Written beside it and renamed into place: no half-made tool directory is left.
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("{}: cannot create it", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".warden-new-")
        .tempdir_in(&parent)
        .with_context(|| format!("{}: cannot write in it", parent.display()))?;
    for (path, template) in files(args.lang) {
        let target = staging.path().join(&path);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&target, fill(template, &args.name, args.lang))
            .with_context(|| format!("writing {path}"))?;
    }
    std::fs::rename(staging.path(), &dir)
        .with_context(|| format!("{}: cannot create it", dir.display()))?;
    // Renamed away: nothing is left for the guard to delete.
    let _ = staging.keep();
    let name = &args.name;
    let config = config.display();
    println!(
        "made {} ({}): build it, register it, permit it, call it:\n\
         \n  warden tool build {dir}\
         \n  warden --config {config} tool add --replace {dir}\
         \n\n  # in the deployment's policy directory, for the agent that calls it:\
         \n  permit(principal == Agent::\"AGENT\", action == Action::\"invoke\", resource == Tool::\"{name}\");\
         \n\n  warden --config {config} call {name} --agent AGENT --agent-key AGENT.key --input-file {dir}/input.json",
        dir.display(),
        args.lang
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        dir = dir.display(),
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fill_every_template() {
        assert_eq!(type_name("hello-big-world"), "HelloBigWorldTool");
        assert_eq!(type_name("tool"), "ToolTool");
        assert_eq!(type_name("9-lives"), "T9LivesTool");
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for (path, template) in files(lang) {
                let filled = fill(template, "my-tool", lang);
                assert!(!filled.contains("{{"), "{path} keeps a placeholder");
                if path == "src/lib.rs" {
                    assert!(filled.contains("struct MyToolTool;"), "{filled}");
                }
            }
        }
    }

    /// The README's Rust example is the template (which the tests build and call), so it
    /// compiles as written.
    #[test]
    fn the_readme_shows_the_rust_template_as_it_is() {
        let readme = include_str!("../../../../README.md");
        let template = include_str!("../../templates/rust/src/lib.rs");
        let example = format!("```rust\n{}```", fill(template, "hello", Lang::Rust));
        assert!(
            readme.contains(&example),
            "README.md: its Rust example differs from templates/rust/src/lib.rs"
        );
    }

    #[test]
    fn names_cargo_refuses_are_refused_for_rust() {
        for bad in [
            "9-lives", "self", "std", "test", "serde", "schemars", "core",
        ] {
            assert!(not_a_crate_name(bad).is_some(), "{bad}");
        }
        for good in ["greeter", "my-tool", "tool", "selfie"] {
            assert!(not_a_crate_name(good).is_none(), "{good}");
        }
    }
}
