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

/// A PostgreSQL cluster of its own, on a free loopback port, for a test that stops and starts
/// the server (the shared one serves other tests meanwhile). Made with the installed server's
/// `initdb` as the `postgres` user (so it needs root), trusting loopback connections, and
/// removed when dropped.
pub struct Cluster {
    dir: std::path::PathBuf,
    port: u16,
    bin: std::path::PathBuf,
}

impl Cluster {
    /// A new running cluster, or None (after saying so loudly) when none can be made here and
    /// this is not CI.
    pub fn start() -> Option<Cluster> {
        match Cluster::make() {
            Ok(cluster) => Some(cluster),
            Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true and no PostgreSQL cluster of its own for the test: {why}")
            }
            Err(why) => {
                eprintln!("\n*** SKIPPED: a PostgreSQL outage test: {why}\n");
                None
            }
        }
    }

    fn make() -> Result<Cluster, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no PostgreSQL server installed: {e}"))?
            .flatten()
            .map(|v| v.path().join("bin"))
            .find(|bin| bin.join("initdb").exists())
            .ok_or("no initdb under /usr/lib/postgresql")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = std::env::temp_dir().join(format!("warden-pg-{}", uuid_like()));
        let cluster = Cluster { dir, port, bin };
        std::fs::create_dir_all(&cluster.dir).map_err(|e| e.to_string())?;
        run(
            "chown",
            &["postgres:postgres", cluster.dir.to_str().unwrap()],
        )?;
        let data = cluster.data();
        cluster.as_postgres(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "warden", "--no-sync"],
        )?;
        cluster.start_again()?;
        Ok(cluster)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn as_postgres(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let program = self.bin.join(program).display().to_string();
        let mut all = vec!["-u", "postgres", "--", program.as_str()];
        all.extend(args);
        run("runuser", &all)
    }

    /// `postgres://warden@127.0.0.1:PORT/postgres` (no password: loopback is trusted).
    pub fn url(&self) -> String {
        format!("postgres://warden@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (`immediate`: as a crash would).
    pub fn stop(&self) -> Result<(), String> {
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
    }

    /// Starts the stopped server, and waits until it accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
