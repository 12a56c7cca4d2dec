//! The configuration file (TOML) and its environment overrides.
//!
//! ```toml
//! default_provider = "default"
//!
//! [providers.default]
//! type = "keymanager"
//! api_base_url = "https://keymanager.example.org/v1/keymanager"
//! auth_url = "https://keycloak.example.org/realms/openg2p/protocol/openid-connect/token"
//! auth_client_id = "openg2p-admin-client"
//! auth_client_secret = "..."
//! ```
//!
//! `KEYMANAGER_*` variables override the selected Keymanager provider's table. Without a file,
//! a provider named `default` is built from those variables alone; without them either, the
//! default is the embedded key manager (`type = "local"`) in `$G2P_DATA_DIR` or `./g2p-data`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use g2p_encryption::{EncryptionProvider, ProviderRegistry};
use g2p_encryption_keymanager::{KeymanagerProvider, KeymanagerSettings};
use g2p_kms::{Kek, Kms, LocalProvider, LocalSettings, StoreOptions};
use g2p_mosip::cipher::CipherParams;
use serde::Deserialize;

use crate::failure::Failure;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Provider used when `--provider` is not given (default: `default`, or the only one).
    pub default_provider: Option<String>,
    /// Named providers.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSettings>,
    /// `g2p-keymanager serve`: the gateway.
    #[serde(default)]
    pub gateway: GatewayTable,
    /// The embedded key manager: its data directory, key policies and `kms serve`.
    #[serde(default)]
    pub kms: KmsTable,
}

/// `[kms]`: the embedded key manager, for `kms serve`, `kms keys` and `type = "local"`
/// providers.
///
/// ```toml
/// [kms]
/// data_dir = "/var/lib/g2p-keymanager"
/// listen = "127.0.0.1:8088"
/// admit_unknown_applications = false
/// clients = [{ id = "openg2p-admin-client", secret = "...", roles = ["KEY_MAKER"] }]
///
/// [kms.policies.SOCIAL_REGISTRY]
/// validity_days = 730
/// pre_expire_days = 30
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsTable {
    /// Data directory (default `$G2P_DATA_DIR`, else `./g2p-data`; `--data-dir` overrides).
    pub data_dir: Option<PathBuf>,
    /// `kms serve` address (default `127.0.0.1:8088`; `--listen` overrides).
    pub listen: Option<std::net::SocketAddr>,
    /// Realm of the token endpoint (default `openg2p`).
    pub realm: Option<String>,
    /// Lifetime of issued tokens, seconds (default 300).
    pub token_lifetime: Option<i64>,
    /// Clients of the token endpoint (added to `--client`).
    #[serde(default)]
    pub clients: Vec<ClientTable>,
    /// Key policies by application, added to (or replacing rows of) the spec's table.
    #[serde(default)]
    pub policies: BTreeMap<String, g2p_kms::KeyPolicy>,
    /// Give applications without a policy the standard one (1095 / 60 days) instead of
    /// refusing them with KER-KMS-002.
    #[serde(default)]
    pub admit_unknown_applications: bool,
    /// Applications whose master keys are made at first start (default REGISTRATION, ID_REPO,
    /// KERNEL, OPENG2P).
    pub initial_applications: Option<Vec<String>>,
}

/// One client of the token endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTable {
    /// `client_id`.
    pub id: String,
    /// `client_secret`.
    pub secret: secrecy::SecretString,
    /// Realm roles in its tokens (default: the crypto and admin roles).
    pub roles: Option<Vec<String>>,
}

impl KmsTable {
    /// The store's options: the spec's policies plus the configured ones.
    pub fn store_options(&self) -> Result<StoreOptions, Failure> {
        let mut options = StoreOptions::default();
        for (app, policy) in &self.policies {
            if policy.validity_days <= 0
                || policy.pre_expire_days < 0
                || policy.pre_expire_days >= policy.validity_days
            {
                return Err(Failure::usage(format!(
                    "kms.policies.{app}: validity_days must be positive and pre_expire_days between 0 and validity_days"
                )));
            }
            options.policies.set(app, *policy);
        }
        if self.admit_unknown_applications {
            options
                .policies
                .admit_unknown_applications(Some(g2p_kms::policy::Policies::standard()));
        }
        if let Some(apps) = &self.initial_applications {
            options.initial_applications = apps.clone();
        }
        Ok(options)
    }

    /// The configured clients.
    pub fn clients(&self) -> Vec<g2p_kms::server::auth::Client> {
        use secrecy::ExposeSecret;
        self.clients
            .iter()
            .map(|c| {
                g2p_kms::server::auth::Client::new(
                    &c.id,
                    c.secret.expose_secret(),
                    c.roles.clone().unwrap_or_else(|| {
                        g2p_kms::server::auth::DEFAULT_CLIENT_ROLES
                            .iter()
                            .map(|r| r.to_string())
                            .collect()
                    }),
                )
            })
            .collect()
    }
}

/// `[gateway]`: the HTTP gateway's address, limits and API keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayTable {
    /// Address to listen on (default `127.0.0.1:8080`; `--listen` overrides).
    pub listen: Option<std::net::SocketAddr>,
    /// Largest request body, bytes (default 4 MiB).
    pub body_limit: Option<usize>,
    /// Most items in one batch (default 1000).
    pub batch_limit: Option<usize>,
    /// Items of a batch processed at once (default 16).
    pub batch_concurrency: Option<usize>,
    /// Longest a request may take, seconds (default 30).
    pub request_timeout: Option<f64>,
    /// `Cache-Control: max-age` of the JWKS, seconds (default 300).
    pub jwks_max_age: Option<u64>,
    /// Seconds the gateway reuses the JWKS it built (default 5).
    pub jwks_refresh: Option<u64>,
    /// API keys, stored as hashes (`g2p-keymanager api-key new` makes one).
    #[serde(default)]
    pub api_keys: Vec<ApiKeyTable>,
}

/// `[[gateway.api_keys]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyTable {
    /// A name for logs, e.g. the calling application.
    pub name: String,
    /// `sha256:<64 hex>` of the key.
    pub hash: String,
    /// What the key may do: `encrypt`, `decrypt`, `sign`, `verify`.
    pub scopes: Vec<String>,
}

impl GatewayTable {
    /// The gateway's options.
    pub fn options(&self) -> Result<g2p_gateway::GatewayOptions, Failure> {
        let defaults = g2p_gateway::GatewayOptions::default();
        let request_timeout = match self.request_timeout {
            Some(t) if t > 0.0 && std::time::Duration::try_from_secs_f64(t).is_ok() => {
                std::time::Duration::from_secs_f64(t)
            }
            Some(t) => {
                return Err(Failure::usage(format!(
                    "gateway.request_timeout must be a positive number of seconds, not {t}"
                )));
            }
            None => defaults.request_timeout,
        };
        Ok(g2p_gateway::GatewayOptions {
            body_limit: self.body_limit.unwrap_or(defaults.body_limit),
            batch_limit: self.batch_limit.unwrap_or(defaults.batch_limit),
            batch_concurrency: self.batch_concurrency.unwrap_or(defaults.batch_concurrency),
            request_timeout,
            jwks_max_age: self
                .jwks_max_age
                .map(std::time::Duration::from_secs)
                .unwrap_or(defaults.jwks_max_age),
            jwks_refresh: self
                .jwks_refresh
                .map(std::time::Duration::from_secs)
                .unwrap_or(defaults.jwks_refresh),
        })
    }

    /// The configured API keys.
    pub fn api_keys(&self) -> Result<g2p_gateway::ApiKeys, Failure> {
        let keys = self
            .api_keys
            .iter()
            .map(|k| g2p_gateway::ApiKey::from_hash(&k.name, &k.hash, &k.scopes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure::usage(format!("gateway.api_keys: {e}")))?;
        let keys = g2p_gateway::ApiKeys::new(keys);
        if let Some(name) = keys.duplicate() {
            return Err(Failure::usage(format!(
                "gateway.api_keys: the key {name:?} has the same hash as another one; give each application its own key"
            )));
        }
        Ok(keys)
    }
}

/// One provider's table, selected by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProviderSettings {
    /// A remote MOSIP Keymanager.
    Keymanager(KeymanagerSettings),
    /// The embedded key manager, in process.
    Local(LocalTable),
}

/// `type = "local"`: the embedded key manager over a data directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalTable {
    /// Data directory (default `$G2P_DATA_DIR`, else `./g2p-data`).
    pub data_dir: Option<PathBuf>,
    /// Encryption application (default `REGISTRATION`).
    pub encrypt_application_id: Option<String>,
    /// Encryption reference (default `ENCRYPT`).
    pub encrypt_reference_id: Option<String>,
    /// Signing application (default `ID_REPO`).
    pub sign_application_id: Option<String>,
    /// Signing reference (default `""`).
    pub sign_reference_id: Option<String>,
    /// base64url salt (GCM IV, 12/16/32 bytes).
    pub encrypt_salt: Option<String>,
    /// base64url aad.
    pub encrypt_aad: Option<String>,
}

/// The data directory: the given one, else `$G2P_DATA_DIR`, else `./g2p-data`.
pub fn data_dir(given: Option<PathBuf>, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    given
        .or_else(|| env("G2P_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("g2p-data"))
}

/// Opens the embedded key manager in `dir`.
pub fn open_kms(
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    options: StoreOptions,
) -> Result<Arc<Kms>, Failure> {
    let kek = Kek::load(dir, env(g2p_kms::kek::KEK_ENV).as_deref())
        .map_err(|e| Failure::usage(e.to_string()))?;
    Kms::open(dir, kek, options)
        .map(Arc::new)
        .map_err(|e| Failure::usage(e.to_string()))
}

/// Embedded key managers already opened, by data directory, so that providers over the same
/// directory share one store.
type OpenKms = BTreeMap<PathBuf, Arc<Kms>>;

/// How embedded key managers are opened: the `[kms]` table's directory and policies.
struct Embedded<'a> {
    kms: &'a KmsTable,
    opened: OpenKms,
}

fn local_provider(
    table: LocalTable,
    env: &dyn Fn(&str) -> Option<String>,
    embedded: &mut Embedded<'_>,
) -> Result<LocalProvider, Failure> {
    let cipher_params =
        CipherParams::from_b64u(table.encrypt_salt.as_deref(), table.encrypt_aad.as_deref())
            .map_err(|e| Failure::usage(format!("encrypt_{e}")))?;
    let defaults = LocalSettings::default();
    let settings = LocalSettings {
        encrypt_application_id: table
            .encrypt_application_id
            .unwrap_or(defaults.encrypt_application_id),
        encrypt_reference_id: table
            .encrypt_reference_id
            .unwrap_or(defaults.encrypt_reference_id),
        sign_application_id: table
            .sign_application_id
            .unwrap_or(defaults.sign_application_id),
        sign_reference_id: table
            .sign_reference_id
            .unwrap_or(defaults.sign_reference_id),
        cipher_params,
    };
    let dir = data_dir(table.data_dir.or(embedded.kms.data_dir.clone()), env);
    let kms = match embedded.opened.get(&dir) {
        Some(kms) => kms.clone(),
        None => {
            let kms = open_kms(&dir, env, embedded.kms.store_options()?)?;
            embedded.opened.insert(dir, kms.clone());
            kms
        }
    };
    Ok(LocalProvider::new(kms, settings))
}

/// A provider ready to use.
#[derive(Debug, Clone)]
pub enum Provider {
    /// A remote MOSIP Keymanager.
    Keymanager(Arc<KeymanagerProvider>),
    /// The embedded key manager.
    Local(Arc<LocalProvider>),
}

impl Provider {
    /// The provider behind the common trait.
    pub fn as_dyn(&self) -> Arc<dyn EncryptionProvider> {
        match self {
            Provider::Keymanager(p) => p.clone(),
            Provider::Local(p) => p.clone(),
        }
    }
}

impl FileConfig {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, Failure> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::usage(format!("cannot read configuration {}: {e}", path.display()))
        })?;
        toml::from_str(&text).map_err(|e| {
            Failure::usage(format!(
                "configuration {}: {}",
                path.display(),
                e.to_string().trim_end().replace('\n', " ")
            ))
        })
    }

    fn unknown_provider(&self, name: &str) -> Failure {
        Failure::usage(format!(
            "no provider named {name:?} (configured: {})",
            self.providers
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    fn selected_name(&self, requested: Option<&str>) -> Result<String, Failure> {
        if let Some(name) = requested.or(self.default_provider.as_deref()) {
            return Ok(name.to_string());
        }
        if self.providers.contains_key("default") || self.providers.is_empty() {
            return Ok("default".into());
        }
        let mut names = self.providers.keys();
        match (names.next(), names.next()) {
            (Some(only), None) => Ok(only.clone()),
            _ => Err(Failure::usage(format!(
                "several providers are configured ({}); choose one with --provider or default_provider",
                self.providers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Builds the provider called `requested` (or the default), applying the environment
    /// through `env`.
    pub fn build(
        mut self,
        requested: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(String, Provider), Failure> {
        let env = &env;
        let name = self.selected_name(requested)?;
        let settings = match self.providers.remove(&name) {
            Some(settings) => settings,
            None if name == "default"
                && self.providers.is_empty()
                && env("KEYMANAGER_API_BASE_URL").is_some() =>
            {
                ProviderSettings::Keymanager(KeymanagerSettings::default())
            }
            // Nothing configured: the embedded key manager is the default.
            None if name == "default" && self.providers.is_empty() => {
                ProviderSettings::Local(LocalTable::default())
            }
            None if self.providers.is_empty() => {
                return Err(Failure::usage(format!(
                    "no provider named {name:?}: none is configured (pass --config FILE, or set KEYMANAGER_API_BASE_URL and the other KEYMANAGER_* variables)"
                )));
            }
            None => return Err(self.unknown_provider(&name)),
        };
        let mut embedded = Embedded {
            kms: &self.kms,
            opened: OpenKms::new(),
        };
        let provider = build_one(&name, settings, env, &mut embedded)?;
        Ok((name, provider))
    }

    /// Builds every configured provider for the gateway (the `KEYMANAGER_*` variables apply to
    /// the default one). With none configured: `default`, from the environment or the
    /// embedded key manager.
    pub fn build_all(
        mut self,
        requested_default: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(ProviderRegistry, Vec<(String, Provider)>), Failure> {
        let env = &env;
        let default = self.selected_name(requested_default)?;
        if self.providers.is_empty() {
            let (name, provider) = self.build(requested_default, env)?;
            let mut registry = ProviderRegistry::new();
            registry.insert(name.clone(), provider.as_dyn());
            return Ok((registry, vec![(name, provider)]));
        }
        if !self.providers.contains_key(&default) {
            return Err(self.unknown_provider(&default));
        }
        let mut embedded = Embedded {
            kms: &self.kms,
            opened: OpenKms::new(),
        };
        let mut built = Vec::new();
        let mut registry = ProviderRegistry::new();
        for (name, settings) in std::mem::take(&mut self.providers) {
            // `KEYMANAGER_*` speak for the default provider only.
            let apply_env: &dyn Fn(&str) -> Option<String> = if name == default {
                env
            } else {
                &|k: &str| {
                    if k.starts_with("KEYMANAGER_") {
                        None
                    } else {
                        env(k)
                    }
                }
            };
            let provider = build_one(&name, settings, apply_env, &mut embedded)?;
            registry.insert(name.clone(), provider.as_dyn());
            built.push((name, provider));
        }
        registry
            .set_default(&default)
            .map_err(|e| Failure::usage(e.to_string()))?;
        Ok((registry, built))
    }
}

fn build_one(
    name: &str,
    settings: ProviderSettings,
    env: &dyn Fn(&str) -> Option<String>,
    embedded: &mut Embedded<'_>,
) -> Result<Provider, Failure> {
    Ok(match settings {
        ProviderSettings::Keymanager(mut settings) => {
            settings
                .apply_env(env)
                .map_err(|e| Failure::usage(format!("provider {name:?}: {e}")))?;
            let config = settings
                .build()
                .map_err(|e| Failure::usage(format!("provider {name:?}: {e}")))?;
            Provider::Keymanager(Arc::new(
                KeymanagerProvider::new(config)
                    .map_err(|e| Failure::usage(format!("provider {name:?}: {e}")))?,
            ))
        }
        ProviderSettings::Local(table) => {
            Provider::Local(Arc::new(local_provider(table, env, embedded)?))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    const TWO: &str = r#"
default_provider = "b"
[providers.a]
type = "keymanager"
api_base_url = "http://a/v1/keymanager"
auth_url = "http://a/token"
auth_client_id = "ca"
auth_client_secret = "sa"
[providers.b]
type = "keymanager"
api_base_url = "http://b/v1/keymanager"
auth_url = "http://b/token"
auth_client_id = "cb"
auth_client_secret = "sb"
encrypt_application_id = "RESIDENT"
"#;

    #[test]
    fn selects_by_name_and_default() {
        let (name, Provider::Keymanager(p)) = parse(TWO).build(None, |_| None).unwrap() else {
            panic!("not a keymanager provider")
        };
        assert_eq!(name, "b");
        assert_eq!(p.client().config().encrypt_ids().0, "RESIDENT");
        let (name, Provider::Keymanager(p)) = parse(TWO).build(Some("a"), |_| None).unwrap() else {
            panic!("not a keymanager provider")
        };
        assert_eq!(name, "a");
        assert_eq!(p.client().config().client_id(), "ca");
        let e = parse(TWO).build(Some("c"), |_| None).unwrap_err();
        assert!(
            e.message.contains("\"c\"") && e.message.contains("a, b"),
            "{}",
            e.message
        );
        assert_eq!(e.exit, 2);
    }

    #[test]
    fn environment_overrides_the_file() {
        let (_, Provider::Keymanager(p)) = parse(TWO)
            .build(None, |k| {
                (k == "KEYMANAGER_ENCRYPT_APPLICATION_ID").then(|| "OVERRIDE".to_string())
            })
            .unwrap()
        else {
            panic!("not a keymanager provider")
        };
        assert_eq!(p.client().config().encrypt_ids().0, "OVERRIDE");
    }

    #[test]
    fn environment_alone_builds_a_default_provider() {
        let env = |k: &str| match k {
            "KEYMANAGER_API_BASE_URL" => Some("http://km/v1/keymanager".to_string()),
            "KEYMANAGER_AUTH_URL" => Some("http://kc/token".to_string()),
            "KEYMANAGER_AUTH_CLIENT_ID" => Some("c".to_string()),
            "KEYMANAGER_AUTH_CLIENT_SECRET" => Some("s".to_string()),
            _ => None,
        };
        let (name, p) = FileConfig::default().build(None, env).unwrap();
        assert_eq!(name, "default");
        assert!(matches!(p, Provider::Keymanager(_)));
        // Nothing at all: the embedded key manager in G2P_DATA_DIR.
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let data_text = data.to_str().unwrap().to_string();
        let (_, p) = FileConfig::default()
            .build(None, |k| (k == "G2P_DATA_DIR").then(|| data_text.clone()))
            .unwrap();
        assert!(matches!(p, Provider::Local(_)));
        assert!(data.join("keys.db").exists());
        let e = FileConfig::default()
            .build(Some("other"), |_| None)
            .unwrap_err();
        assert!(e.message.contains("none is configured"), "{}", e.message);
    }

    #[test]
    fn build_all_serves_every_provider_with_the_environment_on_the_default_only() {
        let env = |k: &str| (k == "KEYMANAGER_ENCRYPT_APPLICATION_ID").then(|| "ENV".to_string());
        let (registry, built) = parse(TWO).build_all(None, env).unwrap();
        assert_eq!(registry.default_name(), Some("b"));
        assert_eq!(registry.names().collect::<Vec<_>>(), ["a", "b"]);
        for (name, provider) in &built {
            let Provider::Keymanager(p) = provider else {
                panic!("not a keymanager provider")
            };
            let expected = if name == "b" { "ENV" } else { "REGISTRATION" };
            assert_eq!(p.client().config().encrypt_ids().0, expected, "{name}");
        }
        let e = parse(TWO).build_all(Some("zz"), |_| None).unwrap_err();
        assert!(e.message.contains("zz"), "{}", e.message);
        // Nothing configured: one default provider, the embedded key manager.
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap().to_string();
        let (registry, built) = FileConfig::default()
            .build_all(None, |k| (k == "G2P_DATA_DIR").then(|| data.clone()))
            .unwrap();
        assert_eq!(registry.default_name(), Some("default"));
        assert!(matches!(built[0].1, Provider::Local(_)));
    }

    #[test]
    fn gateway_table() {
        let file =
            parse("[gateway]\nlisten = \"0.0.0.0:9000\"\nbatch_limit = 5\nrequest_timeout = 2.5\n");
        let options = file.gateway.options().unwrap();
        assert_eq!(options.batch_limit, 5);
        assert_eq!(options.request_timeout.as_millis(), 2500);
        assert_eq!(
            options.body_limit,
            g2p_gateway::GatewayOptions::default().body_limit
        );
        for bad in ["-1", "1e20", "nan", "0"] {
            let e = parse(&format!("[gateway]\nrequest_timeout = {bad}\n"))
                .gateway
                .options()
                .unwrap_err();
            assert!(
                e.message.contains("request_timeout"),
                "{bad}: {}",
                e.message
            );
        }
        let hash = g2p_gateway::hash_key("k");
        let twice = parse(&format!(
            "[[gateway.api_keys]]\nname = \"a\"\nhash = \"{hash}\"\nscopes = [\"encrypt\"]\n[[gateway.api_keys]]\nname = \"b\"\nhash = \"{hash}\"\nscopes = [\"decrypt\"]\n"
        ));
        let e = twice.gateway.api_keys().unwrap_err();
        assert!(e.message.contains("\"b\""), "{}", e.message);
        let e = toml::from_str::<FileConfig>("[gateway]\nlisten_on = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("listen_on"), "{e}");
    }

    #[test]
    fn bad_tables_name_the_problem() {
        let e = toml::from_str::<FileConfig>("[providers.x]\ntype = \"hsm\"\n").unwrap_err();
        assert!(e.to_string().contains("hsm"), "{e}");
        let e = toml::from_str::<FileConfig>(
            "[providers.x]\ntype = \"keymanager\"\napi_base = \"x\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("api_base"), "{e}");
        let missing = parse("[providers.x]\ntype = \"keymanager\"\napi_base_url = \"http://k\"\n");
        let e = missing.build(None, |_| None).unwrap_err();
        assert!(e.message.contains("auth_url"), "{}", e.message);
    }
}
