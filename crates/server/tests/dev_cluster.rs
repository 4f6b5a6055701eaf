//! The repository's configs load (the dev cluster itself, with its in-process agents,
//! is tested black-box through the `corral dev` binary in crates/cli/tests).
// Tests and benchmarks state their expectations with unwrap (the workspace lints forbid it
// in product code only).
#![allow(clippy::unwrap_used)]

use corral_server::ServerConfig;

#[test]
fn every_config_in_the_repository_loads() {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut loaded = 0;
    for name in [
        "dev.toml",
        "manager-1.toml",
        "manager-2.toml",
        "manager-3.toml",
    ] {
        let config = ServerConfig::load(&directory.join(name))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(
            config.data_dir.starts_with(&directory),
            "{name}: data_dir is resolved next to the config"
        );
        loaded += 1;
    }
    assert_eq!(loaded, 4);
}
