//! A real PostgreSQL for the tests: `TEST_DATABASE_URL` if set, otherwise a
//! throwaway cluster made with the installed `initdb`/`pg_ctl` (run as the
//! `postgres` user when we are root, since initdb refuses root), on a free
//! loopback port, started once per test process and stopped at exit.
//! Each test gets a database of its own.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Environment variable naming an existing server to use instead.
pub const ENV_TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

struct Cluster {
    base_url: String,
    _dir: Option<tempfile::TempDir>,
}

fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run_as_postgres(program: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn start_cluster() -> Cluster {
    if let Ok(url) = std::env::var(ENV_TEST_DATABASE_URL) {
        return Cluster {
            base_url: url
                .trim_end_matches('/')
                .rsplit_once('/')
                .map_or(url.clone(), |(b, _)| b.to_owned()),
            _dir: None,
        };
    }
    let server = Server::start(None);
    Cluster {
        base_url: server.base_url.clone(),
        _dir: Some(server.dir),
    }
}

/// A server made with `initdb` and started with `pg_ctl` in a folder of its own.
struct Server {
    base_url: String,
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    dir: tempfile::TempDir,
}

impl Server {
    /// On `port` (a free one if `None`).
    fn start(port: Option<u16>) -> Server {
        let bin = bin_dir().expect(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb) and TEST_DATABASE_URL is not set",
        );
        let dir = tempfile::Builder::new().prefix("cii-pg-").tempdir().expect("tempdir");
        let data = dir.path().join("data");
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status();
        }
        let out = run_as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .expect("port")
                .local_addr()
                .expect("addr")
                .port()
        });
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c max_connections=200 -c fsync=on",
            dir.path().display()
        );
        let log = dir.path().join("pg.log");
        let out = run_as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &options,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        stop_when_process_exits(&bin.join("pg_ctl"), &data);
        Server {
            base_url: format!("postgres://postgres@127.0.0.1:{port}"),
            port,
            bin,
            data,
            dir,
        }
    }
}

/// A cluster of one test's own, which it may destroy (the restore test: back up, destroy,
/// restore into a fresh cluster).
pub struct OwnCluster {
    server: Server,
}

impl OwnCluster {
    /// A new cluster on `port` (a free one if `None`: pass a destroyed cluster's port to put
    /// a fresh one in its place).
    pub fn start(port: Option<u16>) -> OwnCluster {
        OwnCluster {
            server: Server::start(port),
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Creates database `name`; its URL.
    pub async fn database(&self, name: &str) -> String {
        create_database(&self.server.base_url, name).await
    }

    /// `pg_dump --format=custom` of database `name` into `file` (the operator guide's backup).
    pub fn dump(&self, name: &str, file: &std::path::Path) {
        self.client("pg_dump", &["--format=custom", "--file", &file.to_string_lossy(), name]);
    }

    /// `pg_restore` of `file` into database `name` (created before, empty).
    pub fn restore(&self, name: &str, file: &std::path::Path) {
        self.client(
            "pg_restore",
            &["--exit-on-error", "--dbname", name, &file.to_string_lossy()],
        );
    }

    fn client(&self, tool: &str, args: &[&str]) {
        let port = self.server.port.to_string();
        let out = Command::new(self.server.bin.join(tool))
            .args(["--host", "127.0.0.1", "--port", &port, "--username", "postgres"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(out.status.success(), "{tool}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the cluster at once and deletes its files: nothing of it remains.
    pub fn destroy(self) {
        let out = run_as_postgres(
            &self.server.bin.join("pg_ctl"),
            &[
                "-D",
                &self.server.data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(self.server.dir);
    }
}

/// The test harness ends the process without running destructors, so a small
/// watchdog stops the server once this process is gone, and removes its folder (a machine
/// that runs the tests often would otherwise fill its disk with clusters).
fn stop_when_process_exits(pg_ctl: &std::path::Path, data: &std::path::Path) {
    let pid = std::process::id();
    let sudo = if is_root() { "runuser -u postgres -- " } else { "" };
    let folder = data.parent().unwrap_or(data);
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {sudo}{} -D {} -m immediate stop >/dev/null 2>&1; rm -rf {}",
        pg_ctl.display(),
        data.display(),
        folder.display()
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start_cluster)
}

/// A fresh, empty database on the test server; returns its URL.
pub async fn fresh_database() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = cluster().base_url.clone();
    let name = format!(
        "cii_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    create_database(&base, &name).await
}

/// Creates database `name` on the server at `base`; its URL.
async fn create_database(base: &str, name: &str) -> String {
    let pool = sqlx::PgPool::connect(&format!("{base}/postgres"))
        .await
        .expect("connect to the test server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .expect("create database");
    pool.close().await;
    format!("{base}/{name}")
}
