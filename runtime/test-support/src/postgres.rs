//! The PostgreSQL server the tests of the PostgreSQL state store run against, found or
//! started: `WARDEN_TEST_POSTGRES_URL` (with its password in `WARDEN_TEST_POSTGRES_PASSWORD`)
//! names another server; otherwise `.ci/postgres` makes the local one ready (as root). Each
//! test gets a schema of its own, so tests run side by side on one database.
//!
//! Without a server, a test is skipped loudly, or fails when `CI=true`: CI must prove it.

use std::sync::OnceLock;

/// A server and the password of its test role.
#[derive(Clone)]
pub struct Postgres {
    /// `postgres://user@host:port/database`, no password.
    pub url: String,
    pub password: String,
}

/// One fresh schema on the server: `url` selects it (`search_path`).
#[derive(Clone)]
pub struct Schema {
    pub url: String,
    pub password: String,
    pub name: String,
}

const LOCAL_URL: &str = "postgres://warden_test@127.0.0.1:5432/warden_test";

/// The server, or None (after saying so loudly) when there is none and this is not CI.
pub fn postgres() -> Option<Postgres> {
    static FOUND: OnceLock<Result<Postgres, String>> = OnceLock::new();
    match FOUND.get_or_init(find) {
        Ok(found) => Some(found.clone()),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and no PostgreSQL server for the tests: {why}")
        }
        Err(why) => {
            eprintln!(
                "\n*** SKIPPED: a PostgreSQL test, for want of a server: {why}\n\
                 *** Set WARDEN_TEST_POSTGRES_URL and WARDEN_TEST_POSTGRES_PASSWORD, or run as \
                 root where `.ci/postgres` can start the local one.\n"
            );
            None
        }
    }
}

fn find() -> Result<Postgres, String> {
    if let Ok(url) = std::env::var("WARDEN_TEST_POSTGRES_URL") {
        let password = std::env::var("WARDEN_TEST_POSTGRES_PASSWORD")
            .map_err(|_| "WARDEN_TEST_POSTGRES_PASSWORD is not set".to_string())?;
        return Ok(Postgres { url, password });
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/postgres");
    let password_file = std::env::temp_dir().join("warden-test-postgres/password");
    let out = std::process::Command::new(&script)
        .arg(&password_file)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let password = std::fs::read_to_string(&password_file)
        .map_err(|e| format!("cannot read {}: {e}", password_file.display()))?;
    Ok(Postgres {
        url: LOCAL_URL.into(),
        password: password.trim().into(),
    })
}

impl Postgres {
    /// A new, empty schema, and a URL that selects it.
    pub fn schema(&self) -> Schema {
        let name = format!("t_{}", uuid_like());
        let (url, password, created) = (self.url.clone(), self.password.clone(), name.clone());
        // On a thread of its own: the caller may be inside a runtime already.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut config: tokio_postgres::Config = url.parse().unwrap();
                config.password(password);
                let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("CREATE SCHEMA {created}"))
                    .await
                    .unwrap();
            })
        })
        .join()
        .expect("creating a schema on the test PostgreSQL server");
        let separator = if self.url.contains('?') { '&' } else { '?' };
        Schema {
            url: format!("{}{separator}options=-csearch_path%3D{name}", self.url),
            password: self.password.clone(),
            name,
        }
    }
}

/// 16 random hex digits, for names.
fn uuid_like() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
