//! `network.json`: what `korder init` wrote, so that client commands given
//! `--data-dir` need no other option.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// File name of the description inside a data directory.
pub const NETWORK_FILE: &str = "network.json";

/// One orderer node of a dev network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// Name, e.g. `node1`.
    pub name: String,
    /// The node's orderer.yaml, relative to the data directory.
    pub config: PathBuf,
    /// Broadcast/Deliver address, `host:port`.
    pub address: String,
}

/// A dev network written by `korder init`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    /// The system channel's id.
    pub system_channel: String,
    /// The application channel clients can use at once.
    pub channel: String,
    /// Consensus type of the channels (`solo`-style embedded, or `kafka`).
    pub consensus: String,
    /// Every node.
    pub nodes: Vec<NodeInfo>,
    /// The client's MSP directory, relative to the data directory.
    pub client_msp_dir: PathBuf,
    /// The client's MSP id.
    pub client_msp_id: String,
}

impl Network {
    /// Reads `DIR/network.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Network> {
        let path = dir.join(NETWORK_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (run `korder init` first?)", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `DIR/network.json`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(NETWORK_FILE);
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// Every node's address.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.address.clone()).collect()
    }
}
