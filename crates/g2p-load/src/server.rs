//! The server under load: a `g2p-keymanager` process on a free port, and what /proc says
//! about it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

/// A server process started on a free port, killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(bin: &PathBuf, args: &[&str]) -> Result<Self> {
        Self::start_with_env(bin, args, &[])
    }

    /// As [`Server::start`], with these environment variables.
    pub fn start_with_env(bin: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut command = Command::new(bin);
        for (key, _) in std::env::vars() {
            if key.starts_with("KEYMANAGER_") || key.starts_with("G2P_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(args)
            .env("G2P_DATA_DIR", dir.path())
            .env("G2P_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {} (build it first)", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        if !first.starts_with("http://") {
            bail!("unexpected first line from the server: {first:?}");
        }
        Ok(Server {
            child,
            url: first.trim().to_string(),
            _dir: dir,
        })
    }

    /// CPU time the server has used so far, seconds (all its threads, live or ended).
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds_of(&format!("/proc/{}/stat", self.child.id()))
    }

    /// (current resident set, peak resident set) in KiB, from /proc.
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process from its `/proc/.../stat`, in seconds (USER_HZ = 100).
pub fn cpu_seconds_of(path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(path)?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    Ok((ticks(11) + ticks(12)) as f64 / 100.0)
}
