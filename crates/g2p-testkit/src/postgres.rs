//! A throwaway PostgreSQL cluster for tests: `initdb` and `pg_ctl` of the system's PostgreSQL
//! (Debian's `/usr/lib/postgresql/N/bin`, or `G2P_PG_BINDIR`), in a temporary directory, on a
//! free port of 127.0.0.1, run as `nobody` when the tests run as root (PostgreSQL refuses
//! root), stopped and removed on drop.
//!
//! Without PostgreSQL installed, [`PgCluster::start`] says loudly that the test is skipped and
//! returns `None`; under `CI=true` it panics instead, so CI cannot pass by skipping.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `nobody:nogroup`, who runs the server when the tests are root.
const NOBODY: (u32, u32) = (65534, 65534);

/// A running cluster; dropped, it is stopped and its files removed.
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    options: String,
}

/// Whether tests that need an external component must fail rather than skip.
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The directory holding `initdb` and `pg_ctl`, if PostgreSQL is installed.
pub fn bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("G2P_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

impl PgCluster {
    /// Starts a cluster, or says why not: `None` (printed to stderr) when PostgreSQL is not
    /// installed, unless under CI, where that panics. `test` names the caller in the message.
    pub fn start(test: &str) -> Option<PgCluster> {
        let Some(bindir) = bindir() else {
            assert!(
                !required(),
                "{test}: PostgreSQL is required under CI=true, but initdb was not found \
                 (apt-get install postgresql, or set G2P_PG_BINDIR)"
            );
            eprintln!(
                "SKIPPED {test}: PostgreSQL is not installed (apt-get install postgresql, or set \
                 G2P_PG_BINDIR); this test did not run"
            );
            return None;
        };
        Some(PgCluster::start_with(&bindir, None))
    }

    /// As [`PgCluster::start`], serving TLS with this certificate and key (PEM) besides
    /// plain connections.
    pub fn start_tls(test: &str, certificate: &str, key: &str) -> Option<PgCluster> {
        let bindir = bindir();
        if bindir.is_none() {
            return PgCluster::start(test);
        }
        bindir.map(|bindir| PgCluster::start_with(&bindir, Some((certificate, key))))
    }

    fn start_with(bindir: &Path, tls: Option<(&str, &str)>) -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("g2p-pg-")
            .tempdir()
            .expect("a temporary directory");
        let root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let run_as = root.then_some(NOBODY);
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the cluster directory");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cluster = PgCluster {
            dir,
            bindir: bindir.to_path_buf(),
            port,
            run_as,
            options: String::new(),
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("a UTF-8 path"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            cluster.dir.path().display()
        );
        if let Some((certificate, key)) = tls {
            for (name, text) in [("server.crt", certificate), ("server.key", key)] {
                let path = data.join(name);
                std::fs::write(&path, text).expect("write the server's TLS files");
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .expect("chmod the server's TLS files");
                if let Some((uid, gid)) = run_as {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                        .expect("chown the server's TLS files");
                }
            }
            options.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        cluster.options = options;
        cluster.start_again();
        cluster
    }

    /// Starts the server again after [`PgCluster::stop`] (same port, same data).
    pub fn start_again(&self) {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("a UTF-8 path"),
                "-l",
                log.to_str().expect("a UTF-8 path"),
                "-o",
                &self.options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server (fast shutdown: clients are disconnected), keeping its data.
    pub fn stop(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("a UTF-8 path"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    /// Creates database `name` and gives its URL.
    pub fn create_database(&self, name: &str) -> String {
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name],
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bindir.join(program));
        command.current_dir(self.dir.path()).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{program} failed: {}{}\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}
