//! The environment is the process's, so each test runs in a figment `Jail` (its own
//! variables and working directory, one test at a time).
#![allow(clippy::result_large_err)]

use figment::Jail;

use super::*;

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

fn keymanager(provider: &Provider) -> &KeymanagerProvider {
    match provider {
        Provider::Keymanager(p) => p,
        Provider::Local(_) => panic!("not a keymanager provider"),
    }
}

fn message(e: ConfigError) -> String {
    e.to_string()
}

#[test]
fn selects_by_name_and_default() {
    Jail::expect_with(|_| {
        let config = Config::from_toml(TWO).unwrap();
        let (name, p) = config.provider(None).unwrap();
        assert_eq!(name, "b");
        assert_eq!(keymanager(&p).client().config().encrypt_ids().0, "RESIDENT");
        let (name, p) = config.provider(Some("a")).unwrap();
        assert_eq!(name, "a");
        assert_eq!(keymanager(&p).client().config().client_id(), "ca");
        let e = config.provider(Some("c")).unwrap_err();
        assert_eq!(e.kind(), g2p_encryption::ErrorKind::Configuration);
        let e = message(e);
        assert!(e.contains("\"c\"") && e.contains("a, b"), "{e}");
        Ok(())
    });
}

#[test]
fn the_environment_overrides_the_selected_provider_as_text() {
    Jail::expect_with(|jail| {
        jail.set_env("KEYMANAGER_ENCRYPT_APPLICATION_ID", "OVERRIDE");
        // Digits stay text: a secret or an id is not a number.
        jail.set_env("KEYMANAGER_AUTH_CLIENT_SECRET", "0012345");
        jail.set_env("KEYMANAGER_AUTH_CLIENT_ID", "42");
        jail.set_env("KEYMANAGER_API_TIMEOUT", "3");
        jail.set_env("KEYMANAGER_VERIFY_MODE", "REMOTE");
        jail.set_env("KEYMANAGER_TLS_INSECURE_SKIP_VERIFY", "false");
        // Not settings: a Kubernetes service link, and an unknown name.
        jail.set_env("KEYMANAGER_SERVICE_HOST", "10.0.0.7");
        jail.set_env("KEYMANAGER_SOMETHING_ELSE", "x");
        let config = Config::from_toml(TWO).unwrap();
        let (_, p) = config.provider(None).unwrap();
        let c = keymanager(&p).client().config();
        assert_eq!(c.encrypt_ids().0, "OVERRIDE");
        assert_eq!(c.client_id(), "42");
        assert_eq!(c.timeout(), std::time::Duration::from_secs(3));
        assert_eq!(
            c.verify_mode(),
            g2p_encryption_keymanager::VerifyMode::Remote
        );
        // Another provider than the selected one does not see the environment.
        let (_, a) = config.provider(Some("a")).unwrap();
        assert_eq!(keymanager(&a).client().config().client_id(), "42");
        Ok(())
    });
}

#[test]
fn a_wrong_variable_is_named() {
    Jail::expect_with(|jail| {
        jail.set_env("KEYMANAGER_API_TIMEOUT", "ten");
        jail.set_env("KEYMANAGER_AUTH_CLIENT_SECRET", "s3cr3t-client-value");
        let e = message(Config::from_toml(TWO).unwrap().provider(None).unwrap_err());
        assert!(
            e.contains("KEYMANAGER_API_TIMEOUT") && e.contains("\"ten\""),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        // A secret of the wrong type is named, never shown.
        let e = message(
            Config::from_toml(
                "[kms]
clients = [{ id = \"a\", secret = \"s3cr3t\", roles = \"X\" }]
",
            )
            .unwrap_err(),
        );
        assert!(e.contains("roles") && !e.contains("s3cr3t"), "{e}");
        jail.set_env("KEYMANAGER_API_TIMEOUT", "5");
        jail.set_env("KEYMANAGER_ENCRYPT_MODE", "sideways");
        let e = message(Config::from_toml(TWO).unwrap().provider(None).unwrap_err());
        assert!(
            e.contains("KEYMANAGER_ENCRYPT_MODE") && e.contains("sideways"),
            "{e}"
        );
        Ok(())
    });
}

#[test]
fn the_environment_alone_builds_a_default_provider() {
    Jail::expect_with(|jail| {
        jail.set_env("KEYMANAGER_API_BASE_URL", "http://km/v1/keymanager");
        jail.set_env("KEYMANAGER_AUTH_URL", "http://kc/token");
        jail.set_env("KEYMANAGER_AUTH_CLIENT_ID", "c");
        jail.set_env("KEYMANAGER_AUTH_CLIENT_SECRET", "s");
        let (name, p) = Config::load(None).unwrap().provider(None).unwrap();
        assert_eq!(name, "default");
        assert!(matches!(p, Provider::Keymanager(_)));
        let e = message(
            Config::load(None)
                .unwrap()
                .provider(Some("other"))
                .unwrap_err(),
        );
        assert!(e.contains("none is configured"), "{e}");
        Ok(())
    });
}

#[test]
fn resilience_settings_come_from_the_environment_as_numbers() {
    Jail::expect_with(|jail| {
        jail.set_env("KEYMANAGER_API_BASE_URL", "http://km/v1/keymanager");
        jail.set_env("KEYMANAGER_AUTH_URL", "http://kc/token");
        jail.set_env("KEYMANAGER_AUTH_CLIENT_ID", "c");
        jail.set_env("KEYMANAGER_AUTH_CLIENT_SECRET", "s");
        jail.set_env("KEYMANAGER_MAX_ATTEMPTS", "6");
        jail.set_env("KEYMANAGER_RETRY_BASE", "0.25");
        jail.set_env("KEYMANAGER_RETRY_MAX", "3");
        jail.set_env("KEYMANAGER_BREAKER_COOLDOWN", "1.5");
        jail.set_env("KEYMANAGER_MAX_IN_FLIGHT", "16");
        jail.set_env("KEYMANAGER_OUTAGE_GRACE", "600");
        let (_, p) = Config::load(None).unwrap().provider(None).unwrap();
        let Provider::Keymanager(p) = p else {
            panic!("not a Keymanager provider");
        };
        let r = *p.client().config().resilience();
        assert_eq!(r.retry.max_attempts, 6);
        assert_eq!(r.retry.base, std::time::Duration::from_millis(250));
        assert_eq!(r.retry.max, std::time::Duration::from_secs(3));
        assert_eq!(r.breaker.cooldown, std::time::Duration::from_millis(1500));
        assert_eq!(r.max_in_flight, 16);
        assert_eq!(r.outage_grace, std::time::Duration::from_secs(600));
        // Out of range: refused, naming the setting.
        jail.set_env("KEYMANAGER_RETRY_MAX", "0.1");
        let e = message(Config::load(None).unwrap().provider(None).unwrap_err());
        assert!(e.contains("retry_max"), "{e}");
        jail.set_env("KEYMANAGER_RETRY_MAX", "3");
        jail.set_env("KEYMANAGER_MAX_ATTEMPTS", "0");
        let e = message(Config::load(None).unwrap().provider(None).unwrap_err());
        assert!(e.contains("max_attempts"), "{e}");
        Ok(())
    });
}

#[test]
fn nothing_configured_is_the_embedded_key_manager_in_g2p_data_dir() {
    Jail::expect_with(|jail| {
        let data = jail.directory().join("data");
        jail.set_env("G2P_DATA_DIR", data.display());
        let (name, p) = Config::load(None).unwrap().provider(None).unwrap();
        assert_eq!(name, "default");
        assert!(matches!(p, Provider::Local(_)));
        assert!(data.join("keys.db").exists());
        let all = Config::load(None).unwrap().providers(None).unwrap();
        assert_eq!(all.registry.default_name(), Some("default"));
        assert!(matches!(all.built[0].1, Provider::Local(_)));
        Ok(())
    });
}

#[test]
fn every_provider_is_served_with_the_environment_on_the_default_only() {
    Jail::expect_with(|jail| {
        jail.set_env("KEYMANAGER_ENCRYPT_APPLICATION_ID", "ENV");
        let config = Config::from_toml(TWO).unwrap();
        let all = config.providers(None).unwrap();
        assert_eq!(all.registry.default_name(), Some("b"));
        assert_eq!(all.registry.names().collect::<Vec<_>>(), ["a", "b"]);
        for (name, provider) in &all.built {
            let expected = if name == "b" { "ENV" } else { "REGISTRATION" };
            let got = keymanager(provider).client().config().encrypt_ids().0;
            assert_eq!(got, expected, "{name}");
        }
        let e = message(config.providers(Some("zz")).unwrap_err());
        assert!(e.contains("zz"), "{e}");
        Ok(())
    });
}

#[test]
fn local_providers_over_one_directory_share_a_store() {
    Jail::expect_with(|jail| {
        let dir = jail.directory().join("kms");
        let toml = format!(
            "default_provider = \"x\"\n[kms]\ndata_dir = {dir:?}\n[providers.x]\ntype = \"local\"\n[providers.y]\ntype = \"local\"\nencrypt_reference_id = \"OTHER\"\n[providers.z]\ntype = \"local\"\ndata_dir = {:?}\n",
            jail.directory().join("elsewhere")
        );
        let all = Config::from_toml(&toml).unwrap().providers(None).unwrap();
        let store = |name: &str| match &all.built.iter().find(|(n, _)| n == name).unwrap().1 {
            Provider::Local(p) => p.kms().clone(),
            Provider::Keymanager(_) => panic!("not local"),
        };
        assert!(Arc::ptr_eq(&store("x"), &store("y")));
        assert!(!Arc::ptr_eq(&store("x"), &store("z")));
        assert!(dir.join("keys.db").exists());
        Ok(())
    });
}

#[test]
fn bad_tables_name_the_problem() {
    Jail::expect_with(|jail| {
        let e = message(Config::from_toml("[providers.x]\ntype = \"hsm\"\n").unwrap_err());
        assert!(e.contains("hsm"), "{e}");
        let e = message(
            Config::from_toml("[providers.x]\ntype = \"keymanager\"\napi_base = \"x\"\n")
                .unwrap_err(),
        );
        assert!(e.contains("api_base"), "{e}");
        let e = message(Config::from_toml("[gatway]\nlisten = \"x\"\n").unwrap_err());
        assert!(e.contains("gatway"), "{e}");
        let e = message(Config::from_toml("[providers.\"a.b\"]\ntype = \"local\"\n").unwrap_err());
        assert!(e.contains("a.b"), "{e}");
        let missing = Config::from_toml(
            "[providers.x]\ntype = \"keymanager\"\napi_base_url = \"http://k\"\n",
        )
        .unwrap();
        let e = message(missing.provider(None).unwrap_err());
        assert!(e.contains("auth_url"), "{e}");
        jail.create_file("broken.toml", "[providers.x\n")?;
        let e = message(Config::load(Some(Path::new("broken.toml"))).unwrap_err());
        assert!(e.contains("broken.toml"), "{e}");
        let e = message(Config::load(Some(Path::new("absent.toml"))).unwrap_err());
        assert!(e.contains("absent.toml"), "{e}");
        Ok(())
    });
}

#[test]
fn sections_are_read_by_their_owners() {
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Gateway {
        listen: Option<String>,
        batch_limit: Option<usize>,
    }
    Jail::expect_with(|_| {
        let config =
            Config::from_toml("[gateway]\nlisten = \"0.0.0.0:9\"\nbatch_limit = 5\n").unwrap();
        let g: Gateway = config.section("gateway").unwrap();
        assert_eq!(
            (g.listen.as_deref(), g.batch_limit),
            (Some("0.0.0.0:9"), Some(5))
        );
        let absent: Gateway = Config::from_toml("").unwrap().section("gateway").unwrap();
        assert!(absent.listen.is_none());
        let typo = Config::from_toml("[gateway]\nlisten_on = \"x\"\n").unwrap();
        let e = message(typo.section::<Gateway>("gateway").unwrap_err());
        assert!(e.contains("listen_on") && e.contains("gateway"), "{e}");
        Ok(())
    });
}
