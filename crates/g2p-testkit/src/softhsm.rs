//! A throwaway SoftHSM2 token for tests: a configuration file and token directory in a
//! temporary directory (`SOFTHSM2_CONF` points at it), one token initialised with
//! `softhsm2-util`, removed on drop. Processes given [`SoftHsm::env`] see only this token.
//!
//! Without SoftHSM installed, [`SoftHsm::start`] says loudly that the test is skipped and
//! returns `None`; under `CI=true` it panics instead, so CI cannot pass by skipping.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The token's label.
pub const TOKEN_LABEL: &str = "g2p-test";
/// The user PIN.
pub const USER_PIN: &str = "4821-7730";
/// The security officer's PIN.
const SO_PIN: &str = "9934-1210";

/// A SoftHSM2 configuration with one initialised token.
#[derive(Debug)]
pub struct SoftHsm {
    dir: tempfile::TempDir,
    module: PathBuf,
}

/// The SoftHSM2 library, if installed (Debian: `/usr/lib/softhsm/libsofthsm2.so`).
pub fn module() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("G2P_SOFTHSM_MODULE") {
        return Some(PathBuf::from(path));
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

impl SoftHsm {
    /// A configuration with one token labelled [`TOKEN_LABEL`], user PIN [`USER_PIN`]; or
    /// `None` (said on stderr) when SoftHSM is not installed, unless under CI, where that
    /// panics. `test` names the caller in the message.
    pub fn start(test: &str) -> Option<SoftHsm> {
        let found = module().filter(|_| which("softhsm2-util"));
        let Some(module) = found else {
            assert!(
                !crate::postgres::required(),
                "{test}: SoftHSM2 is required under CI=true, but libsofthsm2.so or softhsm2-util \
                 was not found (apt-get install softhsm2)"
            );
            eprintln!(
                "SKIPPED {test}: SoftHSM2 is not installed (apt-get install softhsm2); this test \
                 did not run"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("g2p-softhsm-")
            .tempdir()
            .expect("a temporary directory");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("the token directory");
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("the SoftHSM configuration");
        let hsm = SoftHsm { dir, module };
        let out = hsm
            .command("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                TOKEN_LABEL,
                "--so-pin",
                SO_PIN,
                "--pin",
                USER_PIN,
            ])
            .output()
            .expect("softhsm2-util runs");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(hsm)
    }

    /// The library's path.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The configuration file (`SOFTHSM2_CONF`).
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// `program` with `SOFTHSM2_CONF` set to this configuration.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SOFTHSM2_CONF", self.conf());
        command
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
