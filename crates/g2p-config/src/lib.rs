//! Settings to providers: the one place that knows every provider type.
//!
//! A [`Config`] is the configuration file (TOML) with the `KEYMANAGER_*` environment layered
//! over the selected Keymanager provider's table by figment. It builds that provider
//! ([`Config::provider`]), or every configured provider as a registry for the gateway
//! ([`Config::providers`]), and hands other tables (`[gateway]`, ...) to the code that owns
//! them ([`Config::section`]).
//!
//! ```toml
//! default_provider = "registry"
//!
//! [providers.registry]
//! type = "keymanager"
//! api_base_url = "https://keymanager.example.org/v1/keymanager"
//! auth_url = "https://keycloak.example.org/realms/openg2p/protocol/openid-connect/token"
//! auth_client_id = "openg2p-admin-client"
//! auth_client_secret = "..."          # better: KEYMANAGER_AUTH_CLIENT_SECRET
//!
//! [providers.embedded]
//! type = "local"
//! data_dir = "/var/lib/g2p-keymanager"
//! ```
//!
//! Without a file, a provider named `default` is built from the `KEYMANAGER_*` variables
//! alone; without those either, the default is the embedded key manager (`type = "local"`)
//! in `$G2P_DATA_DIR` or `./g2p-data`.
//!
//! ```no_run
//! # fn demo() -> Result<(), g2p_config::ConfigError> {
//! let config = g2p_config::Config::load(Some(std::path::Path::new("g2p.toml")))?;
//! let (name, provider) = config.provider(None)?;
//! let provider = provider.as_dyn(); // Arc<dyn EncryptionProvider>
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod env;
mod error;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::Figment;
use figment::providers::{Format, Toml};
use g2p_encryption::{EncryptionProvider, ProviderRegistry};
use g2p_encryption_keymanager::{KeymanagerProvider, KeymanagerSettings};
use g2p_kms::{Kms, KmsSettings, LocalProvider, LocalProviderSettings};
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use env::PREFIX as ENV_PREFIX;
pub use error::ConfigError;

/// The name of the provider used when nothing names one.
pub const DEFAULT_PROVIDER: &str = "default";

/// One provider's settings, by its `type`.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    /// `type = "keymanager"`: a remote MOSIP Keymanager.
    Keymanager(Box<KeymanagerSettings>),
    /// `type = "local"`: the embedded key manager, in process.
    Local(LocalProviderSettings),
}

/// The `type` of a provider table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ProviderKind {
    Keymanager,
    Local,
}

/// The file's top level. Provider tables are read one by one (their `type` first); tables
/// other code owns (`[gateway]`, `[audit]`, `[registry]`) are only checked to be tables here and read with
/// [`Config::section`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    default_provider: Option<String>,
    #[serde(default)]
    providers: BTreeMap<String, figment::value::Dict>,
    #[serde(default)]
    kms: KmsSettings,
    #[serde(rename = "gateway")]
    _gateway: Option<figment::value::Dict>,
    #[serde(rename = "audit")]
    _audit: Option<figment::value::Dict>,
    #[serde(rename = "registry")]
    _registry: Option<figment::value::Dict>,
}

/// Where the file came from.
#[derive(Debug, Clone)]
enum Source {
    None,
    File(PathBuf),
    Text(String),
}

impl Source {
    fn figment(&self) -> Figment {
        match self {
            Source::None => Figment::new(),
            Source::File(path) => Figment::from(Toml::file_exact(path)),
            Source::Text(text) => Figment::from(Toml::string(text)),
        }
    }

    /// The file without the `type` of provider `name`, so that the rest of its table can be
    /// read as that type's settings.
    fn without_type(&self, name: &str) -> Figment {
        let key = ["providers", name, "type"];
        match self {
            Source::None => Figment::new(),
            Source::File(path) => Figment::from(Without::new(Toml::file_exact(path), key)),
            Source::Text(text) => Figment::from(Without::new(Toml::string(text), key)),
        }
    }
}

/// A figment provider with one key removed.
struct Without<P> {
    inner: P,
    key: [String; 3],
}

impl<P: figment::Provider> Without<P> {
    fn new(inner: P, key: [&str; 3]) -> Self {
        Without {
            inner,
            key: key.map(String::from),
        }
    }
}

impl<P: figment::Provider> figment::Provider for Without<P> {
    fn metadata(&self) -> figment::Metadata {
        self.inner.metadata()
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut data = self.inner.data()?;
        let [outer, middle, leaf] = &self.key;
        for dict in data.values_mut() {
            if let Some(figment::value::Value::Dict(_, providers)) = dict.get_mut(outer)
                && let Some(figment::value::Value::Dict(_, table)) = providers.get_mut(middle)
            {
                table.remove(leaf);
            }
        }
        Ok(data)
    }
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

    /// One line saying what the provider is, for start-up banners.
    pub fn describe(&self) -> String {
        match self {
            Provider::Keymanager(p) => {
                format!("keymanager at {}", p.client().config().api_base_url())
            }
            Provider::Local(_) => "embedded key manager".to_string(),
        }
    }
}

/// Every configured provider: the registry the gateway serves, and each provider by name.
#[derive(Debug)]
pub struct Providers {
    /// The registry, with its default set.
    pub registry: ProviderRegistry,
    /// The providers, by name, in name order.
    pub built: Vec<(String, Provider)>,
}

/// The configuration: a file and the environment, layered.
#[derive(Debug)]
pub struct Config {
    source: Source,
    figment: Figment,
    file: FileSettings,
}

impl Config {
    /// Reads the file at `path` (none: an empty configuration) and the process environment.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the file and the key that is wrong.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let source = match path {
            None => Source::None,
            Some(path) => {
                std::fs::metadata(path).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "cannot read configuration {}: {e}",
                        path.display()
                    ))
                })?;
                Source::File(path.to_path_buf())
            }
        };
        Self::from_source(source)
    }

    /// A configuration from TOML text (and the process environment).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_source(Source::Text(text.to_string()))
    }

    fn from_source(source: Source) -> Result<Self, ConfigError> {
        let figment = source.figment();
        let file: FileSettings = figment
            .extract_lossy()
            .map_err(|e| error::invalid(e, &[], &figment))?;
        if let Some(bad) = file.providers.keys().find(|n| !valid_name(n)) {
            return Err(ConfigError::Invalid(format!(
                "provider name {bad:?}: use letters, digits, '-' and '_'"
            )));
        }
        let config = Config {
            source,
            figment,
            file,
        };
        // Every table is read now, so a mistake in any of them is found at start-up.
        for name in config.file.providers.keys() {
            config.settings_of(name, false)?;
        }
        Ok(config)
    }

    /// The `[kms]` table: the embedded key manager.
    pub fn kms(&self) -> &KmsSettings {
        &self.file.kms
    }

    /// A table owned by other code, e.g. `gateway`; its default when the file has none.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key that does not fit `T`.
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, ConfigError> {
        if self.figment.find_value(name).is_err() {
            return Ok(T::default());
        }
        self.figment
            .extract_inner_lossy(name)
            .map_err(|e| error::invalid(e, &[name], &self.figment))
    }

    /// The `(application, reference)` pairs the configured providers encrypt and sign with
    /// (as they would be built, without the environment).
    pub fn provider_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for name in self.file.providers.keys() {
            match self.settings_of(name, false) {
                Ok(ProviderSettings::Keymanager(settings)) => pairs.extend(settings.key_pairs()),
                Ok(ProviderSettings::Local(table)) => {
                    if let Ok(s) = table.build() {
                        pairs.push((s.encrypt_application_id, s.encrypt_reference_id));
                        pairs.push((s.sign_application_id, s.sign_reference_id));
                    }
                }
                Err(_) => {}
            }
        }
        pairs
    }

    /// The names of the configured providers.
    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        self.file.providers.keys().map(String::as_str)
    }

    fn configured(&self) -> String {
        self.file
            .providers
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The name of the provider used when `requested` is `None`: `default_provider`, else
    /// `default`, else the only one configured.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when several providers are configured and none is chosen.
    pub fn selected_name(&self, requested: Option<&str>) -> Result<String, ConfigError> {
        if let Some(name) = requested.or(self.file.default_provider.as_deref()) {
            return Ok(name.to_string());
        }
        let providers = &self.file.providers;
        if providers.contains_key(DEFAULT_PROVIDER) || providers.is_empty() {
            return Ok(DEFAULT_PROVIDER.into());
        }
        let mut names = providers.keys();
        match (names.next(), names.next()) {
            (Some(only), None) => Ok(only.clone()),
            _ => Err(ConfigError::Invalid(format!(
                "several providers are configured ({}); choose one with --provider or default_provider",
                self.configured()
            ))),
        }
    }

    /// The settings of provider `name`, with the `KEYMANAGER_*` environment over them when
    /// `with_env` and it is a Keymanager provider.
    fn settings_of(&self, name: &str, with_env: bool) -> Result<ProviderSettings, ConfigError> {
        let env = env::KeymanagerEnv::for_provider(name);
        let (kind, figment) = if self.file.providers.contains_key(name) {
            let kind: ProviderKind = self
                .figment
                .extract_inner(&format!("providers.{name}.type"))
                .map_err(|e| {
                    ConfigError::Invalid(format!(
                        "provider {name:?}: type must be \"keymanager\" or \"local\" ({})",
                        e.kind
                    ))
                })?;
            (kind, self.source.without_type(name))
        } else if self.file.providers.is_empty() && name == DEFAULT_PROVIDER {
            // Nothing configured: the environment alone, else the embedded key manager.
            let kind = if with_env && env.is_set() {
                ProviderKind::Keymanager
            } else {
                ProviderKind::Local
            };
            (kind, Figment::new())
        } else if self.file.providers.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "no provider named {name:?}: none is configured (pass --config FILE, or set KEYMANAGER_API_BASE_URL and the other KEYMANAGER_* variables)"
            )));
        } else {
            return Err(ConfigError::Invalid(format!(
                "no provider named {name:?} (configured: {})",
                self.configured()
            )));
        };
        let path = format!("providers.{name}");
        let figment = match kind {
            ProviderKind::Keymanager if with_env => figment.merge(env),
            _ => figment,
        };
        if figment.find_value(&path).is_err() {
            return Ok(match kind {
                ProviderKind::Keymanager => ProviderSettings::Keymanager(Box::default()),
                ProviderKind::Local => ProviderSettings::Local(LocalProviderSettings::default()),
            });
        }
        let invalid = |e| error::invalid(e, &["providers", name], &figment);
        Ok(match kind {
            ProviderKind::Keymanager => ProviderSettings::Keymanager(Box::new(
                figment.extract_inner_lossy(&path).map_err(invalid)?,
            )),
            ProviderKind::Local => {
                ProviderSettings::Local(figment.extract_inner_lossy(&path).map_err(invalid)?)
            }
        })
    }

    /// Builds the provider called `requested` (or the default), with the `KEYMANAGER_*`
    /// environment over its table.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for an unknown name or a wrong setting; [`ConfigError::Kms`]
    /// when the embedded key manager cannot be opened.
    pub fn provider(&self, requested: Option<&str>) -> Result<(String, Provider), ConfigError> {
        let name = self.selected_name(requested)?;
        let settings = self.settings_of(&name, true)?;
        let provider = Builder::new(&self.file.kms).build(&name, settings)?;
        Ok((name, provider))
    }

    /// Builds every configured provider for the gateway; the `KEYMANAGER_*` environment
    /// applies to the default one (`requested_default`, else as [`Config::selected_name`]).
    /// With none configured: `default`, from the environment or the embedded key manager.
    ///
    /// # Errors
    /// As [`Config::provider`].
    pub fn providers(&self, requested_default: Option<&str>) -> Result<Providers, ConfigError> {
        let default = self.selected_name(requested_default)?;
        let names: Vec<String> = if self.file.providers.is_empty() {
            vec![default.clone()]
        } else {
            self.file.providers.keys().cloned().collect()
        };
        if !names.contains(&default) {
            return Err(ConfigError::Invalid(format!(
                "no provider named {default:?} (configured: {})",
                self.configured()
            )));
        }
        let mut builder = Builder::new(&self.file.kms);
        let mut registry = ProviderRegistry::new();
        let mut built = Vec::new();
        for name in names {
            let settings = self.settings_of(&name, name == default)?;
            let provider = builder.build(&name, settings)?;
            registry.insert(name.clone(), provider.as_dyn());
            built.push((name, provider));
        }
        registry
            .set_default(&default)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(Providers { registry, built })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Builds providers; embedded key managers over the same data directory share one store.
struct Builder<'a> {
    kms: &'a KmsSettings,
    opened: BTreeMap<PathBuf, Arc<Kms>>,
}

impl<'a> Builder<'a> {
    fn new(kms: &'a KmsSettings) -> Self {
        Builder {
            kms,
            opened: BTreeMap::new(),
        }
    }

    fn build(&mut self, name: &str, settings: ProviderSettings) -> Result<Provider, ConfigError> {
        let in_provider = |e: String| ConfigError::Invalid(format!("provider {name:?}: {e}"));
        Ok(match settings {
            ProviderSettings::Keymanager(settings) => {
                let config = (*settings)
                    .build()
                    .map_err(|e| in_provider(e.to_string()))?;
                let provider =
                    KeymanagerProvider::new(config).map_err(|e| in_provider(e.to_string()))?;
                Provider::Keymanager(Arc::new(provider))
            }
            ProviderSettings::Local(table) => {
                let settings = table.build().map_err(|e| in_provider(e.message()))?;
                let kms = self.open(table.data_dir.as_deref())?;
                Provider::Local(Arc::new(LocalProvider::new(kms, settings)))
            }
        })
    }

    fn open(&mut self, data_dir: Option<&Path>) -> Result<Arc<Kms>, ConfigError> {
        let process_env = |k: &str| std::env::var(k).ok();
        let dir = self.kms.data_dir(data_dir, process_env);
        if let Some(kms) = self.opened.get(&dir) {
            return Ok(kms.clone());
        }
        let kms = Arc::new(self.kms.open(&dir, process_env)?);
        self.opened.insert(dir, kms.clone());
        Ok(kms)
    }
}

#[cfg(test)]
mod tests;
