//! The JWK set the gateway publishes: every provider's keys, and never two different keys
//! under one `kid` (a token signed by one would fail under the other as "signature does not
//! match").

use g2p_encryption::{Error, JwkSet, ProviderRegistry};

/// Two providers publishing different keys under one key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdCollision {
    /// The key id.
    pub kid: String,
    /// The provider whose key is published.
    pub kept: String,
    /// The provider whose key is left out.
    pub left_out: String,
}

impl std::fmt::Display for KeyIdCollision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "providers {:?} and {:?} publish different keys under the key id {:?}",
            self.kept, self.left_out, self.kid
        )
    }
}

/// Merges the providers' sets, in the order given: a key already in the set is not repeated,
/// and a key under a `kid` that another provider's different key already has is left out
/// and reported.
pub fn merge(sets: Vec<(String, JwkSet)>) -> (JwkSet, Vec<KeyIdCollision>) {
    let mut merged = JwkSet::default();
    let mut owners: Vec<String> = Vec::new();
    let mut collisions = Vec::new();
    for (provider, set) in sets {
        for key in set.keys {
            let same_kid = merged
                .keys
                .iter()
                .position(|k| k.kid.is_some() && k.kid == key.kid);
            match same_kid {
                Some(i) if merged.keys[i].n != key.n || merged.keys[i].e != key.e => {
                    collisions.push(KeyIdCollision {
                        kid: key.kid.clone().unwrap_or_default(),
                        kept: owners[i].clone(),
                        left_out: provider.clone(),
                    });
                }
                Some(i) if merged.keys[i].key_use == key.key_use => {}
                _ => {
                    merged.keys.push(key);
                    owners.push(provider.clone());
                }
            }
        }
    }
    (merged, collisions)
}

/// The key id collisions among the providers of `registry`, for a check at start-up.
///
/// # Errors
/// A provider whose keys cannot be read now (its key manager down, say).
pub async fn collisions(registry: &ProviderRegistry) -> Result<Vec<KeyIdCollision>, Error> {
    let mut sets = Vec::new();
    for name in registry.names() {
        sets.push((name.to_string(), registry.get(Some(name))?.jwks().await?));
    }
    Ok(merge(sets).1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use g2p_encryption::{Jwk, KeyUse};

    fn key(kid: &str, n: &str, key_use: KeyUse) -> Jwk {
        Jwk {
            kty: "RSA".into(),
            n: n.into(),
            e: "AQAB".into(),
            kid: Some(kid.into()),
            key_use: Some(key_use),
            alg: None,
            x5c: Vec::new(),
            x5t: None,
            x5t_s256: None,
        }
    }

    #[test]
    fn one_key_id_one_key() {
        let a = JwkSet {
            keys: vec![
                key("k1", "AAAA", KeyUse::Sig),
                key("k2", "BBBB", KeyUse::Enc),
            ],
        };
        let b = JwkSet {
            keys: vec![
                key("k1", "AAAA", KeyUse::Sig),
                key("k2", "CCCC", KeyUse::Enc),
                key("k3", "DDDD", KeyUse::Sig),
            ],
        };
        let (merged, collisions) = merge(vec![("a".into(), a), ("b".into(), b)]);
        let kids: Vec<_> = merged.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["k1", "k2", "k3"]);
        assert_eq!(merged.keys[1].n, "BBBB", "the first provider's key is kept");
        assert_eq!(
            collisions,
            [KeyIdCollision {
                kid: "k2".into(),
                kept: "a".into(),
                left_out: "b".into()
            }]
        );
        assert!(collisions[0].to_string().contains("\"k2\""));
    }
}
