//! `registry encrypt|decrypt|rewrap|inspect`: OpenG2P's registry encryption — one ciphertext
//! of a registrant's personal fields in `encrypted_val` — over a file (JSON Lines or CSV) or a
//! live registry database (`--database-url`), through the selected provider.

use std::sync::Arc;

use clap::{Args, Subcommand};
use g2p_registry::envelope::{
    DEFAULT_PLACEHOLDER, EnvelopeSettings, Inspect, Inventory, Open, Rewrap, Seal,
};
use g2p_registry::settings::RegistrySettings;
use g2p_registry::{Summary, Transform};

use crate::cli::Used;
use crate::failure::Failure;
use crate::records_io::{self, FileArgs};

/// A database URL, which may hold a password: kept out of `Debug` output.
#[derive(Clone)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(<set>)")
    }
}

/// `registry` subcommands.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Encrypt the personal fields of each registrant not yet encrypted into `encrypted_val`,
    /// replacing each by the placeholder.
    Encrypt(RegistryArgs),
    /// Decrypt `encrypted_val` and put the fields back (in a database only with --yes: it
    /// removes the protection).
    Decrypt(RegistryArgs),
    /// Re-encrypt records sealed under an older key than the current one (after a rotation);
    /// records under the current key are not touched.
    Rewrap(RegistryArgs),
    /// Count records per key (thumbprint, and the key id and expiry where the provider knows
    /// them), plain and encrypted; with --verify, also those that do not decrypt. Never prints
    /// personal data.
    Inspect(RegistryArgs),
}

/// `registry` arguments.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[command(flatten)]
    pub files: FileArgs,
    /// A live registry database instead of files (`postgres://user:password@host/db`); else
    /// `[registry] database_url`.
    #[arg(
        long,
        env = "G2P_REGISTRY_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        value_parser = |s: &str| Ok::<_, String>(DatabaseUrl(s.to_string()))
    )]
    pub database_url: Option<DatabaseUrl>,
    /// PEM file of the CA that signed the database server's certificate, trusted besides the
    /// system's roots (TLS as the URL's `sslmode` says: `disable`, `prefer` by default,
    /// `require`; certificates are always verified); else `[registry] database_ca`.
    #[arg(long, value_name = "PEM")]
    pub database_ca: Option<std::path::PathBuf>,
    /// The table of registrants (default `res_partner`).
    #[arg(long, value_name = "NAME")]
    pub table: Option<String>,
    /// Its id column (default `id`).
    #[arg(long, value_name = "NAME")]
    pub id_column: Option<String>,
    /// The fields to encrypt, in this order (comma-separated or repeated); default OpenG2P's:
    /// name, family_name, given_name, addl_name, display_name, address, birth_place.
    #[arg(long = "fields", value_delimiter = ',', value_name = "NAME")]
    pub fields: Vec<String>,
    /// What replaces an encrypted field (default `encrypted`).
    #[arg(long, value_name = "TEXT")]
    pub placeholder: Option<String>,
    /// Encrypt every record, not only registrants (`is_registrant` true).
    #[arg(long)]
    pub all_records: bool,
    /// Rows per transaction in a database.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// `decrypt` in a database: yes, remove the protection.
    #[arg(long)]
    pub yes: bool,
    /// `inspect`: decrypt every encrypted record to check it.
    #[arg(long)]
    pub verify: bool,
    /// `inspect`: print the counts as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl RegistryCommand {
    fn parts(&self) -> (&'static str, &RegistryArgs) {
        match self {
            RegistryCommand::Encrypt(a) => ("encrypt", a),
            RegistryCommand::Decrypt(a) => ("decrypt", a),
            RegistryCommand::Rewrap(a) => ("rewrap", a),
            RegistryCommand::Inspect(a) => ("inspect", a),
        }
    }
}

/// The fields named by `--fields` or `[registry] fields`, trimmed; `None` for the default list.
pub fn named_fields(
    args: &RegistryArgs,
    file: &RegistrySettings,
) -> Result<Option<Vec<String>>, Failure> {
    let named = if args.fields.is_empty() {
        file.fields.clone()
    } else {
        Some(args.fields.clone())
    };
    let Some(fields) = named else {
        return Ok(None);
    };
    let fields: Vec<String> = fields.iter().map(|f| f.trim().to_string()).collect();
    if fields.is_empty() || fields.iter().any(String::is_empty) {
        return Err(Failure::usage("--fields names an empty field"));
    }
    Ok(Some(fields))
}

fn envelope_settings(
    args: &RegistryArgs,
    file: &RegistrySettings,
) -> Result<EnvelopeSettings, Failure> {
    let mut settings = EnvelopeSettings::default();
    if let Some(fields) = named_fields(args, file)? {
        settings.fields = fields;
        settings.named = true;
    }
    settings.placeholder = args
        .placeholder
        .clone()
        .or_else(|| file.placeholder.clone())
        .unwrap_or_else(|| DEFAULT_PLACEHOLDER.into());
    settings.registrants_only = !args.all_records;
    Ok(settings)
}

/// Runs a `registry` command, and records it in the audit trail.
pub async fn run(
    used: &Used<'_>,
    command: &RegistryCommand,
    file: &RegistrySettings,
) -> Result<(), Failure> {
    let (verb, args) = command.parts();
    if args.batch_size == 0 {
        return Err(Failure::usage("--batch-size must be at least 1"));
    }
    let provider = used.provider.as_dyn();
    let database_url = args
        .database_url
        .as_ref()
        .map(|url| url.0.clone())
        .or_else(|| file.database_url.clone());
    let inspect = Arc::new(Inspect::new(args.verify.then(|| provider.clone())));
    let transform: Arc<dyn Transform> = match command {
        RegistryCommand::Encrypt(_) => {
            Arc::new(Seal::new(provider.clone(), envelope_settings(args, file)?))
        }
        RegistryCommand::Decrypt(_) => Arc::new(Open::new(provider.clone())),
        RegistryCommand::Rewrap(_) => Arc::new(Rewrap::new(provider.clone()).await?),
        RegistryCommand::Inspect(_) => inspect.clone(),
    };
    let transform = &transform;
    let result = match &database_url {
        Some(url) => crate::registry_db::run(verb, args, file, url, transform).await,
        None => records_io::run_files(&args.files, transform, verb != "inspect").await,
    };
    // Records changed (for inspect: records read), under the verb's own name.
    let done = result.as_ref().map_or(0, |s: &Summary| {
        if verb == "inspect" {
            s.records
        } else {
            s.changed
        }
    });
    let summary = used.record(verb, Vec::new(), (done, done), result)?;
    if verb == "inspect" {
        return report_inventory(used, args, &inspect.inventory(), &summary).await;
    }
    if !args.files.quiet {
        let done = match verb {
            "encrypt" => "encrypted",
            "decrypt" => "decrypted",
            _ => "rewrapped",
        };
        eprintln!(
            "{}",
            records_io::summary_line(&format!("registry {verb}"), done, &summary)
        );
    }
    Ok(())
}

/// Prints what `inspect` found: per key, its thumbprint and (where the provider publishes the
/// certificate) its key id and expiry.
async fn report_inventory(
    used: &Used<'_>,
    args: &RegistryArgs,
    inventory: &Inventory,
    summary: &Summary,
) -> Result<(), Failure> {
    let known = known_keys(used).await;
    let keys: Vec<serde_json::Value> = inventory
        .by_key
        .iter()
        .map(|(thumbprint, count)| {
            let key = known.get(thumbprint);
            serde_json::json!({
                "thumbprint": thumbprint,
                "key_id": key.map(|k| &k.0),
                "expires": key.map(|k| &k.1),
                "records": count.records,
                "undecryptable": count.undecryptable,
            })
        })
        .collect();
    let report = serde_json::json!({
        "records": summary.records,
        "plain": inventory.plain,
        "encrypted": inventory.encrypted,
        "keys": keys,
        "verified": args.verify,
        "undecryptable": inventory.by_key.values().map(|c| c.undecryptable).sum::<usize>(),
        "failures": inventory.failures,
    });
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{} records: {} plain, {} encrypted",
        summary.records, inventory.plain, inventory.encrypted
    );
    for key in &keys {
        let text = |name: &str| key[name].as_str().unwrap_or("-").to_string();
        println!(
            "  key {} (id {}, expires {}): {} records{}",
            text("thumbprint"),
            text("key_id"),
            text("expires"),
            key["records"],
            if args.verify {
                format!(", {} do not decrypt", key["undecryptable"])
            } else {
                String::new()
            }
        );
    }
    for failure in &inventory.failures {
        println!("  does not decrypt: {failure}");
    }
    Ok(())
}

/// Thumbprint (upper hex) → (key id, expiry) of the provider's published encryption keys;
/// empty when it publishes none or cannot be reached.
async fn known_keys(used: &Used<'_>) -> std::collections::HashMap<String, (String, String)> {
    let mut known = std::collections::HashMap::new();
    let Ok(jwks) = used.provider.as_dyn().jwks().await else {
        return known;
    };
    for jwk in jwks.keys {
        let Ok(Some(der)) = jwk.certificate_der() else {
            continue;
        };
        let Ok(cert) = g2p_encryption::cert::CertificateInfo::from_der(&der) else {
            continue;
        };
        let thumbprint = hex::encode_upper(cert.sha256());
        let expires = time::OffsetDateTime::from_unix_timestamp(cert.not_after())
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        known.insert(thumbprint, (jwk.kid.clone().unwrap_or_default(), expires));
    }
    known
}
