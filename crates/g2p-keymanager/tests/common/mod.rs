//! What the binary's tests share.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The binary, with no variable that configures it (`KEYMANAGER_*`, `G2P_*`) taken from the
/// environment the tests run in.
pub fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_g2p-keymanager"));
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("KEYMANAGER_") || text.starts_with("G2P_") {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// The binary with `args`, its data directory `data_dir`.
pub fn command(args: &[&str], data_dir: &std::path::Path) -> Command {
    let mut cmd = binary();
    cmd.env("G2P_DATA_DIR", data_dir).args(args);
    cmd
}

/// Where each spawned child's stderr goes, by process id: a file, since a pipe nobody reads
/// fills up and stalls a server that logs every request.
fn stderr_files() -> &'static Mutex<HashMap<u32, tempfile::NamedTempFile>> {
    static FILES: OnceLock<Mutex<HashMap<u32, tempfile::NamedTempFile>>> = OnceLock::new();
    FILES.get_or_init(Default::default)
}

/// Starts the binary with stdout captured and stderr kept for [`stop`]; returns it and its
/// stdout, read by line.
pub fn spawn(args: &[&str], data_dir: &std::path::Path) -> (Child, BufReader<ChildStdout>) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = command(args, data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log.reopen().unwrap()))
        .spawn()
        .unwrap();
    stderr_files().lock().unwrap().insert(child.id(), log);
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout)
}

/// SIGTERM; returns the exit code and everything written to stderr.
pub fn stop(mut child: Child) -> (i32, String) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code().unwrap();
    let log = stderr_files().lock().unwrap().remove(&child.id()).unwrap();
    let mut stderr = String::new();
    log.reopen().unwrap().read_to_string(&mut stderr).unwrap();
    (code, stderr)
}

/// The client `app:app-secret` that the tests give `kms serve`.
pub const CLIENT: &str = "app:app-secret";

/// Keymanager provider settings for client `app` of the `kms serve` at `url`.
pub fn keymanager_settings(url: &str) -> g2p_encryption_keymanager::KeymanagerSettings {
    g2p_encryption_keymanager::KeymanagerConfig::settings(
        &format!("{url}/v1/keymanager"),
        &format!("{url}/realms/openg2p/protocol/openid-connect/token"),
        "app",
        "app-secret",
    )
}

/// `cmd` with the `KEYMANAGER_*` variables for client `app` of the `kms serve` at `url`.
pub fn with_keymanager_env<'a>(cmd: &'a mut Command, url: &str) -> &'a mut Command {
    cmd.env("KEYMANAGER_API_BASE_URL", format!("{url}/v1/keymanager"))
        .env(
            "KEYMANAGER_AUTH_URL",
            format!("{url}/realms/openg2p/protocol/openid-connect/token"),
        )
        .env("KEYMANAGER_AUTH_CLIENT_ID", "app")
        .env("KEYMANAGER_AUTH_CLIENT_SECRET", "app-secret")
}

/// `kms keys rotate` of the encryption pair `REGISTRATION`/`ENCRYPT` in `data_dir`.
pub fn rotate_encryption_key(data_dir: &std::path::Path) -> std::process::Output {
    let data = data_dir.to_str().unwrap();
    command(
        &[
            "kms",
            "keys",
            "rotate",
            "--data-dir",
            data,
            "--app",
            "REGISTRATION",
            "--ref",
            "ENCRYPT",
        ],
        data_dir,
    )
    .output()
    .unwrap()
}

/// Starts `kms serve` on a free port with client [`CLIENT`]; returns it and its URL.
pub fn kms_serve(data_dir: &std::path::Path) -> (Child, String) {
    use std::io::BufRead;
    let (child, mut stdout) = spawn(
        &[
            "kms",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--client",
            CLIENT,
        ],
        data_dir,
    );
    let mut url = String::new();
    stdout.read_line(&mut url).unwrap();
    (child, url.trim().to_string())
}

/// A CA: its certificate (PEM) and what signs with it.
pub struct Ca {
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A self-signed CA named `name`.
pub fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// A certificate for `names` issued by `ca`: its PEM and its key's PEM.
pub fn issue(ca: &Ca, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Starts `cmd` (a server) with stdout captured and stderr written to `log`; returns it and
/// the first line it prints (its URL), which must start with `http`, else the log is shown.
pub fn start_server(mut cmd: Command, log: &std::path::Path) -> (Child, String) {
    use std::io::BufRead;
    let file = std::fs::File::create(log).unwrap();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.starts_with("http"),
        "the server did not start: {first:?}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    (child, first.trim().to_string())
}
