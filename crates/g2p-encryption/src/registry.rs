//! Named providers with one default: the way a service "selects Keymanager as the encryption
//! provider".

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{EncryptionProvider, Error};

/// A set of named providers, one of which is the default.
#[derive(Debug, Clone, Default)]
pub struct ProviderRegistry {
    providers: BTreeMap<String, Arc<dyn EncryptionProvider>>,
    default: Option<String>,
}

impl ProviderRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a provider. The first one added becomes the default.
    pub fn insert(&mut self, name: impl Into<String>, provider: Arc<dyn EncryptionProvider>) {
        let name = name.into();
        if self.default.is_none() {
            self.default = Some(name.clone());
        }
        self.providers.insert(name, provider);
    }

    /// Makes `name` the default.
    ///
    /// # Errors
    /// [`Error::UnknownProvider`] when no provider has that name.
    pub fn set_default(&mut self, name: &str) -> Result<(), Error> {
        if !self.providers.contains_key(name) {
            return Err(Error::UnknownProvider(name.to_string()));
        }
        self.default = Some(name.to_string());
        Ok(())
    }

    /// The provider called `name`, or the default when `name` is `None`.
    ///
    /// # Errors
    /// [`Error::UnknownProvider`] for an unknown name; [`Error::Configuration`] when the
    /// registry is empty.
    pub fn get(&self, name: Option<&str>) -> Result<Arc<dyn EncryptionProvider>, Error> {
        let name = match name {
            Some(name) => name,
            None => self.default.as_deref().ok_or_else(|| {
                Error::Configuration("no encryption provider is configured".into())
            })?,
        };
        self.providers
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownProvider(name.to_string()))
    }

    /// The default provider's name.
    pub fn default_name(&self) -> Option<&str> {
        self.default.as_deref()
    }

    /// All names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }

    /// Number of providers.
    pub fn len(&self) -> usize {
        self.providers.len()
    }

    /// Whether no provider is registered.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JwkSet, SignOptions, SignPayload, VerifiedJws};
    use async_trait::async_trait;

    #[derive(Debug)]
    struct Fixed(&'static str);

    #[async_trait]
    impl EncryptionProvider for Fixed {
        fn kind(&self) -> &'static str {
            self.0
        }
        async fn encrypt(&self, p: &[u8]) -> Result<Vec<u8>, Error> {
            Ok(p.to_vec())
        }
        async fn decrypt(&self, c: &[u8]) -> Result<Vec<u8>, Error> {
            Ok(c.to_vec())
        }
        async fn jwt_sign(&self, _: &SignPayload, _: &SignOptions) -> Result<String, Error> {
            Err(Error::Configuration("no signing".into()))
        }
        async fn jwt_verify(&self, _: &str, _: Option<&[u8]>) -> Result<VerifiedJws, Error> {
            Err(Error::Configuration("no verifying".into()))
        }
        async fn jwks(&self) -> Result<JwkSet, Error> {
            Ok(JwkSet::default())
        }
    }

    #[test]
    fn first_is_default_and_names_resolve() {
        let mut registry = ProviderRegistry::new();
        assert!(matches!(registry.get(None), Err(Error::Configuration(_))));
        registry.insert("a", Arc::new(Fixed("one")));
        registry.insert("b", Arc::new(Fixed("two")));
        assert_eq!(registry.get(None).unwrap().kind(), "one");
        assert_eq!(registry.get(Some("b")).unwrap().kind(), "two");
        assert!(matches!(registry.get(Some("c")), Err(Error::UnknownProvider(n)) if n == "c"));
        registry.set_default("b").unwrap();
        assert_eq!(registry.default_name(), Some("b"));
        assert!(registry.set_default("zzz").is_err());
        assert_eq!(registry.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(registry.len(), 2);
    }
}
