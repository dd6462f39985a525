//! `korder start`: run the orderer.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use korder_config::{Config, env_from_process};

use crate::cmd::init::{InitArgs, init};
use crate::network::{NETWORK_FILE, Network};

/// Options of `korder start`.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Data directory of a dev network (written by `korder init`, or now if empty).
    #[arg(long, conflicts_with = "config")]
    pub data_dir: Option<PathBuf>,
    /// An orderer.yaml to run with.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: StartArgs) -> anyhow::Result<ExitCode> {
    let config_path = match args.config {
        Some(path) => path,
        None => {
            let dir = args.data_dir.unwrap_or_else(crate::default_data_dir);
            let yaml = dir.join("orderer.yaml");
            if !dir.join(NETWORK_FILE).exists() && !yaml.exists() {
                tracing::info!(dir = %dir.display(), "no network here yet: running korder init");
                init(&InitArgs::defaults_for(&dir))?;
            }
            if !yaml.exists() {
                let network = Network::load(&dir)?;
                let nodes: Vec<String> = network
                    .nodes
                    .iter()
                    .map(|n| dir.join(&n.config).display().to_string())
                    .collect();
                bail!(
                    "{} holds a network of {} nodes: start each with --config, one of {}",
                    dir.display(),
                    nodes.len(),
                    nodes.join(", ")
                );
            }
            yaml
        }
    };
    let config = Config::load(&config_path, &env_from_process())
        .with_context(|| format!("loading {}", config_path.display()))?;
    config
        .validate()
        .with_context(|| format!("checking {}", config_path.display()))?;
    tracing::info!(config = %config_path.display(), settings = %config.summary(), "effective configuration");
    for warning in config.ignored_settings() {
        tracing::warn!("{warning}");
    }
    crate::node::run(config)?;
    Ok(ExitCode::SUCCESS)
}
