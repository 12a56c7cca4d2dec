//! Key policies (spec 6.2): validity and pre-expiry per application.

use std::collections::BTreeMap;

use serde::Deserialize;

/// How long an application's keys live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct KeyPolicy {
    /// Days from generation to expiry.
    pub validity_days: i64,
    /// Days before expiry at which a key stops being current (a new one is made).
    pub pre_expire_days: i64,
}

/// The policy table, with the spec's seed rows plus `OPENG2P`.
#[derive(Debug, Clone)]
pub struct Policies {
    table: BTreeMap<String, KeyPolicy>,
    admit_unknown: Option<KeyPolicy>,
}

const STANDARD: KeyPolicy = KeyPolicy {
    validity_days: 1095,
    pre_expire_days: 60,
};

impl Default for Policies {
    fn default() -> Self {
        let mut table = BTreeMap::new();
        table.insert(
            "ROOT".to_string(),
            KeyPolicy {
                validity_days: 2920,
                pre_expire_days: 1125,
            },
        );
        for app in [
            "REGISTRATION",
            "PRE_REGISTRATION",
            "REGISTRATION_PROCESSOR",
            "ID_REPO",
            "KERNEL",
            "RESIDENT",
            "ADMIN_SERVICES",
            "DIGITAL_CARD",
            "COMPLIANCE_TOOLKIT",
            "OPENG2P",
        ] {
            table.insert(app.to_string(), STANDARD);
        }
        table.insert(
            "PMS".to_string(),
            KeyPolicy {
                validity_days: 1460,
                pre_expire_days: 395,
            },
        );
        table.insert(
            "BASE".to_string(),
            KeyPolicy {
                validity_days: 730,
                pre_expire_days: 30,
            },
        );
        Policies {
            table,
            admit_unknown: None,
        }
    }
}

impl Policies {
    /// Adds or replaces an application's policy.
    pub fn set(&mut self, application_id: &str, policy: KeyPolicy) {
        self.table.insert(application_id.to_string(), policy);
    }

    /// Gives applications without a row this policy instead of refusing them.
    pub fn admit_unknown_applications(&mut self, policy: Option<KeyPolicy>) {
        self.admit_unknown = policy;
    }

    /// The policy of an application, if it may have keys.
    pub fn get(&self, application_id: &str) -> Option<KeyPolicy> {
        self.table
            .get(application_id)
            .copied()
            .or(self.admit_unknown)
    }

    /// Pre-expiry of base keys (the `BASE` row, 30 days when missing).
    pub fn base_pre_expire_days(&self) -> i64 {
        self.table.get("BASE").map_or(30, |p| p.pre_expire_days)
    }

    /// The standard policy of the seed table (1095 / 60 days).
    pub fn standard() -> KeyPolicy {
        STANDARD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_table() {
        let p = Policies::default();
        assert_eq!(p.get("REGISTRATION"), Some(STANDARD));
        assert_eq!(p.get("OPENG2P"), Some(STANDARD));
        assert_eq!(p.get("ROOT").unwrap().validity_days, 2920);
        assert_eq!(p.get("PMS").unwrap().pre_expire_days, 395);
        assert_eq!(p.base_pre_expire_days(), 30);
        assert_eq!(p.get("UNKNOWN"), None);
        let mut p = p;
        p.admit_unknown_applications(Some(STANDARD));
        assert_eq!(p.get("UNKNOWN"), Some(STANDARD));
    }
}
