//! The command's audit lines: one per key operation, as the services write them.

use g2p_config::Provider;
use g2p_encryption::audit::{AuditLog, AuditRecord, Outcome};

use crate::failure::{EXIT_REFUSED, Failure};

/// The audit log and what every line of this run shares.
#[derive(Debug)]
pub struct Audit {
    log: AuditLog,
    caller: String,
}

impl Audit {
    /// The run's audit trail into `log`; the caller is the local user.
    pub fn new(log: AuditLog) -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        Audit {
            log,
            caller: format!("cli:{user}"),
        }
    }

    /// The log, for the services this run starts.
    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// Records an operation of `provider` on `items` values, `succeeded` of them, with
    /// `keys`, and the failure that ended it, if one did.
    pub fn record(
        &self,
        operation: &'static str,
        (name, provider): (&str, &Provider),
        keys: Vec<String>,
        (items, succeeded): (usize, usize),
        failure: Option<&Failure>,
    ) {
        let pair = provider.as_dyn().key_pairs().map(|pairs| match operation {
            "encrypt" | "decrypt" | "rewrap" | "inspect" => pairs.encrypt,
            _ => pairs.sign,
        });
        self.record_pair(
            operation,
            Some(name),
            pair,
            keys,
            (items, succeeded),
            failure,
        );
    }

    /// Records an operation on the key of `pair` (the administrator's, say).
    pub fn record_pair(
        &self,
        operation: &'static str,
        provider: Option<&str>,
        pair: Option<(String, String)>,
        keys: Vec<String>,
        (items, succeeded): (usize, usize),
        failure: Option<&Failure>,
    ) {
        let outcome = match failure {
            None => Outcome::Ok,
            Some(_) if succeeded > 0 => Outcome::Partial,
            Some(f) if f.exit == EXIT_REFUSED => Outcome::Refused,
            Some(_) => Outcome::Error,
        };
        self.log.record(AuditRecord {
            service: "cli",
            caller: self.caller.clone(),
            operation,
            provider: provider.map(String::from),
            application_id: pair.as_ref().map(|p| p.0.clone()),
            reference_id: pair.map(|p| p.1),
            keys,
            items,
            succeeded,
            outcome: Some(outcome),
            error: failure.map(|f| format!("exit {}", f.exit)),
            ..AuditRecord::default()
        });
    }

    /// Waits until every line is written and synced.
    ///
    /// # Errors
    /// The audit log's I/O error, as a failure of this machine.
    pub fn flush(&self) -> Result<(), Failure> {
        self.log
            .flush()
            .map_err(|e| Failure::system(format!("audit log: {e}")))
    }
}
