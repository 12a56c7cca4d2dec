//! The `[registry]` table of the configuration file.

use serde::Deserialize;

/// `[registry]`: where the registry lives and what is encrypted. Command-line options win.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// A live registry database, `postgres://user:password@host:port/db`.
    pub database_url: Option<String>,
    /// PEM file of the CA that signed the database server's certificate (added to the
    /// system's roots).
    pub database_ca: Option<std::path::PathBuf>,
    /// The table of registrants (default `res_partner`).
    pub table: Option<String>,
    /// Its id column (default `id`).
    pub id_column: Option<String>,
    /// The fields to encrypt, in order (default OpenG2P's list).
    pub fields: Option<Vec<String>>,
    /// What replaces an encrypted field (default `encrypted`).
    pub placeholder: Option<String>,
}

impl std::fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("RegistrySettings")
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("database_ca", &self.database_ca)
            .field("table", &self.table)
            .field("id_column", &self.id_column)
            .field("fields", &self.fields)
            .field("placeholder", &self.placeholder)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_password_stays_out_of_debug_output() {
        let settings = RegistrySettings {
            database_url: Some("postgres://odoo:s3cret@db/registry".into()),
            ..RegistrySettings::default()
        };
        let text = format!("{settings:?}");
        assert!(!text.contains("s3cret") && text.contains("<set>"), "{text}");
    }
}
