//! The orderer.yaml loader with environment overrides.

use std::collections::BTreeMap;

use korder_config::Config;

/// Separates the YAML text from the environment in an input.
pub const ENV_SEPARATOR: &str = "\n#--env--\n";

/// An orderer.yaml, optionally followed by [`ENV_SEPARATOR`] and `KEY=VALUE` lines
/// that play the process environment (`ORDERER_GENERAL_LISTENPORT=7051`, ...).
///
/// Invariants: loading never panics; a loaded config written back with
/// [`Config::to_yaml`] loads again, without the environment, to an equal value; so
/// does that text a second time (the writer is a fixed point).
pub fn orderer_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (yaml, env_text) = text.split_once(ENV_SEPARATOR).unwrap_or((text, ""));
    let env: BTreeMap<String, String> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let Ok(config) = Config::from_yaml_str(yaml, None, &env) else {
        return;
    };
    let _ = config.validate();
    let _ = config.summary();
    let _ = config.ignored_settings();
    let Ok(written) = config.to_yaml() else {
        return;
    };
    let none = BTreeMap::new();
    let back = Config::from_yaml_str(&written, None, &none)
        .unwrap_or_else(|e| panic!("korder's own orderer.yaml does not load: {e}\n{written}"));
    assert_eq!(
        back, config,
        "to_yaml then load changed the config:\n{written}"
    );
}
