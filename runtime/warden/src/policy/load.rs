//! Reading a policy directory: every `*.cedar` file in it, each policy named by its `@id`
//! annotation (else `<file>:<index>`), the whole set validated against Warden's schema in
//! strict mode. Nothing here runs a decision.

use cedar_policy::{
    Policy, PolicyId, PolicySet, Schema, SchemaFragment, ValidationMode, Validator,
};
use miette::Diagnostic;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The schema Warden ships (`schema.cedarschema`).
pub const SCHEMA: &str = include_str!("schema.cedarschema");
/// The deployment's declaration of the input fields its policies read.
pub const INPUT_SCHEMA_FILE: &str = "input.cedarschema";
const NO_INPUT: &str = "type Input = {};";

/// One thing wrong with a policy directory, located as precisely as Cedar allows.
#[derive(Debug, Clone)]
pub struct PolicyProblem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Why a policy directory cannot be used. Shows the first problem on one line.
#[derive(Debug, Clone)]
pub struct PolicyError(pub Vec<PolicyProblem>);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("invalid policies"),
            [one] => write!(f, "{one}"),
            [first, rest @ ..] => write!(
                f,
                "{first} (and {} more; see `warden policy validate`)",
                rest.len()
            ),
        }
    }
}

impl std::error::Error for PolicyError {}

/// A validated policy directory.
pub struct Loaded {
    /// Every policy, in file order, with its final id.
    pub policies: Vec<Policy>,
    /// The declared shape of `context.input` (Cedar JSON schema type of `Input`).
    pub input_type: serde_json::Value,
    pub files: Vec<PathBuf>,
}

/// Reads and validates `dir`. A missing directory is an empty policy set: everything is
/// denied (deny by default).
pub fn load_dir(dir: &Path) -> Result<Loaded, PolicyError> {
    let problem = |file: &Path, line: Option<usize>, message: String| PolicyProblem {
        file: file.to_path_buf(),
        line,
        message,
    };
    let mut files = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let path = entry
                    .map_err(|e| PolicyError(vec![problem(dir, None, e.to_string())]))?
                    .path();
                if path.extension().is_some_and(|e| e == "cedar") {
                    files.push(path);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(PolicyError(vec![problem(
                dir,
                None,
                format!("cannot read the policy directory: {e}"),
            )]));
        }
    }
    files.sort();

    let (schema, input_type) = load_schema(dir)?;

    let mut problems = Vec::new();
    let mut policies = Vec::new();
    // Which file each policy came from.
    let mut origins: HashMap<PolicyId, PathBuf> = HashMap::new();
    let mut texts: HashMap<PathBuf, String> = HashMap::new();
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                problems.push(problem(file, None, format!("cannot read: {e}")));
                continue;
            }
        };
        let set: PolicySet = match text.parse() {
            Ok(set) => set,
            Err(e) => {
                let e: cedar_policy::ParseErrors = e;
                for one in e.iter() {
                    problems.push(problem(file, line_of(&text, one), one_line(one)));
                }
                continue;
            }
        };
        if set.templates().next().is_some() {
            problems.push(problem(
                file,
                None,
                "policy templates (`?principal`, `?resource`) are not supported".into(),
            ));
            continue;
        }
        // `PolicySet::from_str` names the policies of a file policy0, policy1, … in order.
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        for index in 0.. {
            let Some(policy) = set.policy(&PolicyId::new(format!("policy{index}"))) else {
                break;
            };
            let id = match policy.annotation("id") {
                Some(id) => PolicyId::new(id),
                None => PolicyId::new(format!("{name}:{index}")),
            };
            if let Some(other) = origins.get(&id) {
                problems.push(problem(
                    file,
                    None,
                    format!("policy id `{id}` is also used in {}", other.display()),
                ));
                continue;
            }
            origins.insert(id.clone(), file.clone());
            policies.push(policy.new_id(id));
        }
        texts.insert(file.clone(), text);
    }
    if !problems.is_empty() {
        return Err(PolicyError(problems));
    }

    let mut set = PolicySet::new();
    for policy in &policies {
        set.add(policy.clone()).expect("ids are unique");
    }
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    for error in result.validation_errors() {
        let file = &origins[error.policy_id()];
        let mut message = one_line(error);
        if message.contains("attribute `input.") {
            message.push_str(&format!(
                " (declare the input fields policies read in {})",
                dir.join(INPUT_SCHEMA_FILE).display()
            ));
        }
        problems.push(problem(file, line_of(&texts[file], error), message));
    }
    if !problems.is_empty() {
        return Err(PolicyError(problems));
    }
    Ok(Loaded {
        policies,
        input_type,
        files,
    })
}

/// Warden's schema plus the deployment's `Input` declaration.
pub(super) fn load_schema(dir: &Path) -> Result<(Schema, serde_json::Value), PolicyError> {
    let file = dir.join(INPUT_SCHEMA_FILE);
    let input = match std::fs::read_to_string(&file) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(PolicyError(vec![PolicyProblem {
                file,
                line: None,
                message: format!("cannot read: {e}"),
            }]));
        }
    };
    let input_src = input.as_deref().unwrap_or(NO_INPUT);
    let fail = |line, message| {
        PolicyError(vec![PolicyProblem {
            file: file.clone(),
            line,
            message,
        }])
    };
    let (fragment, _) = SchemaFragment::from_cedarschema_str(input_src)
        .map_err(|e| fail(line_of(input_src, &e), one_line(&e)))?;
    let fragment_json = fragment
        .clone()
        .to_json_value()
        .map_err(|e| fail(None, one_line(&e)))?;
    // The file may declare `Input` and nothing else, outside any namespace.
    let only_input = fragment_json.as_object().is_some_and(|namespaces| {
        namespaces.keys().all(|ns| ns.is_empty())
            && namespaces.values().all(|ns| {
                let count = |key: &str| {
                    ns.get(key)
                        .and_then(|v| v.as_object())
                        .map_or(0, |m| m.len())
                };
                count("entityTypes") == 0 && count("actions") == 0 && count("commonTypes") == 1
            })
    });
    let input_type = fragment_json
        .get("")
        .and_then(|ns| ns.pointer("/commonTypes/Input"))
        .filter(|_| only_input)
        .cloned()
        .ok_or_else(|| {
            fail(
                None,
                "must declare `type Input = { … };` and nothing else".into(),
            )
        })?;
    let (base, _) =
        SchemaFragment::from_cedarschema_str(SCHEMA).expect("the shipped schema parses");
    let schema =
        Schema::from_schema_fragments([base, fragment]).map_err(|e| fail(None, one_line(&e)))?;
    Ok((schema, input_type))
}

/// The first labelled position of a Cedar diagnostic, as a 1-based line of `text`.
fn line_of(text: &str, diagnostic: &dyn Diagnostic) -> Option<usize> {
    let offset = diagnostic.labels()?.next()?.offset();
    Some(crate::manifest::line_at(text, offset))
}

/// A diagnostic and its help, on one line.
pub(super) fn one_line(diagnostic: &(impl Diagnostic + ?Sized)) -> String {
    let mut text = diagnostic.to_string();
    if let Some(help) = diagnostic.help() {
        text.push_str(&format!(" ({help})"));
    }
    text.replace('\n', " ")
}
