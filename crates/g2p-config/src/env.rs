//! The `KEYMANAGER_*` environment (the names OpenG2P uses) as a figment provider over one
//! provider's table.

use figment::providers::Env;
use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};
use g2p_encryption_keymanager::KeymanagerSettings;
use serde::de::{self, Deserializer, Visitor};

/// The prefix of the Keymanager provider's environment variables.
pub const PREFIX: &str = "KEYMANAGER_";

/// The `KEYMANAGER_*` variables named after a setting of the Keymanager provider
/// (`KEYMANAGER_API_BASE_URL` → `api_base_url`, ...), put in the table of provider `name`.
/// Values stay text (a secret or an id made of digits is not a number); numbers and
/// booleans are read from text when the settings are extracted. Other `KEYMANAGER_*`
/// variables, such as the service links Kubernetes adds, are left alone.
pub(crate) struct KeymanagerEnv {
    provider: String,
    env: Env,
}

impl KeymanagerEnv {
    pub(crate) fn for_provider(name: &str) -> Self {
        KeymanagerEnv {
            provider: name.to_string(),
            env: Env::prefixed(PREFIX).only(settings_fields()),
        }
    }

    /// Whether any of the variables is set.
    pub(crate) fn is_set(&self) -> bool {
        self.env.iter().next().is_some()
    }
}

impl Provider for KeymanagerEnv {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("`{PREFIX}*` environment variables")).interpolater(
            |_: &Profile, keys: &[&str]| match keys.last() {
                Some(field) => format!("{PREFIX}{}", field.to_ascii_uppercase()),
                None => PREFIX.to_string(),
            },
        )
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let table: Dict = self
            .env
            .iter()
            .map(|(key, value)| (key.to_string(), Value::from(value)))
            .collect();
        let provider: Dict = [(self.provider.clone(), Value::from(table))].into();
        let providers: Dict = [("providers".to_string(), Value::from(provider))].into();
        Ok(Profile::Default.collect(providers))
    }
}

/// The field names of [`KeymanagerSettings`], read from its `Deserialize` implementation so
/// that every setting has its variable without a second list to keep.
pub(crate) fn settings_fields() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for &mut Fields {
        type Error = de::value::Error;

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("fields read"))
        }

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields = Fields(None);
    let _ = <KeymanagerSettings as serde::Deserialize>::deserialize(&mut fields);
    fields.0.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_a_variable() {
        let fields = settings_fields();
        for expected in [
            "api_base_url",
            "auth_client_secret",
            "encrypt_salt",
            "verify_mode",
            "tls_insecure_skip_verify",
        ] {
            assert!(fields.contains(&expected), "{expected} in {fields:?}");
        }
    }
}
