//! What the binary's tests share.

use std::process::Command;

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
