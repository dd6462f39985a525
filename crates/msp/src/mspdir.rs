//! Fabric's on-disk MSP directory layout.
//!
//! ```text
//! <dir>/cacerts/*              root CA certificates (PEM)         required
//! <dir>/intermediatecerts/*    intermediate CA certificates
//! <dir>/admincerts/*           administrator certificates
//! <dir>/signcerts/*            the node's own certificate (local MSP only)
//! <dir>/keystore/*             the node's private key (local MSP only)
//! <dir>/crls/*                 certificate revocation lists
//! <dir>/tlscacerts/*           TLS root CA certificates
//! <dir>/tlsintermediatecerts/* TLS intermediate CA certificates
//! <dir>/config.yaml            OU identifiers and NodeOUs
//! ```
//!
//! Files in the certificate folders that hold no PEM block are skipped; a PEM
//! block that does not parse is an error naming the file.

use crate::cert::{CertError, Certificate};
use bytes::Bytes;
use korder_proto::msp::{
    FabricCryptoConfig, FabricMspConfig, FabricNodeOUs, FabricOuIdentifier, MspConfig,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `MSPConfig.type` for X.509 MSPs.
pub const MSP_TYPE_FABRIC: i32 = 0;

/// Largest file read from an MSP directory, in bytes: certificates and keys are small.
pub const MSP_FILE_SIZE_MAX_BYTES: u64 = 1 << 20;

/// Why an MSP directory could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MspDirError {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is larger than [`MSP_FILE_SIZE_MAX_BYTES`].
    #[error(
        "{path} is {len} bytes, more than the {MSP_FILE_SIZE_MAX_BYTES} allowed in an MSP directory"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// A certificate file does not parse.
    #[error("bad certificate in {path}: {source}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: CertError,
    },
    /// No root CA certificate was found.
    #[error("MSP directory {dir} holds no CA certificate in cacerts/")]
    NoCaCerts {
        /// The MSP directory.
        dir: PathBuf,
    },
    /// `config.yaml` does not parse.
    #[error("bad MSP config {path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What the YAML parser reported.
        reason: String,
    },
}

/// An OU identifier: an OU value, optionally bound to one of the MSP's CA certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OuIdentifier {
    /// The CA certificate the OU is bound to, if any.
    pub certificate: Option<Certificate>,
    /// The organizational unit value.
    pub organizational_unit: String,
}

impl OuIdentifier {
    /// An OU identifier not bound to a particular CA.
    pub fn unbound(ou: &str) -> Self {
        Self {
            certificate: None,
            organizational_unit: ou.to_owned(),
        }
    }

    fn to_proto(&self) -> FabricOuIdentifier {
        FabricOuIdentifier {
            certificate: self
                .certificate
                .as_ref()
                .map(|c| Bytes::from(c.to_pem()))
                .unwrap_or_default(),
            organizational_unit_identifier: self.organizational_unit.clone(),
        }
    }
}

/// The NodeOUs section of `config.yaml`: which OU marks a client, peer, admin, orderer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeOus {
    /// Whether identities must be classified by these OUs.
    pub enable: bool,
    /// OU of client identities.
    pub client: Option<OuIdentifier>,
    /// OU of peer identities.
    pub peer: Option<OuIdentifier>,
    /// OU of administrators.
    pub admin: Option<OuIdentifier>,
    /// OU of orderer nodes.
    pub orderer: Option<OuIdentifier>,
}

impl NodeOus {
    fn to_proto(&self) -> FabricNodeOUs {
        let conv = |ou: &Option<OuIdentifier>| ou.as_ref().map(OuIdentifier::to_proto);
        FabricNodeOUs {
            enable: self.enable,
            client_ou_identifier: conv(&self.client),
            peer_ou_identifier: conv(&self.peer),
            admin_ou_identifier: conv(&self.admin),
            orderer_ou_identifier: conv(&self.orderer),
        }
    }
}

/// The contents of an MSP directory, parsed.
#[derive(Clone, Debug)]
pub struct MspDir {
    /// Where it was read from.
    pub path: PathBuf,
    /// Root CA certificates.
    pub ca_certs: Vec<Certificate>,
    /// Intermediate CA certificates.
    pub intermediate_certs: Vec<Certificate>,
    /// Administrator certificates.
    pub admin_certs: Vec<Certificate>,
    /// Signing certificates (local MSP).
    pub sign_certs: Vec<Certificate>,
    /// Revocation lists, as the files' bytes.
    pub crls: Vec<Bytes>,
    /// TLS root CA certificates.
    pub tls_ca_certs: Vec<Certificate>,
    /// TLS intermediate CA certificates.
    pub tls_intermediate_certs: Vec<Certificate>,
    /// OU identifiers from `config.yaml`.
    pub ou_identifiers: Vec<OuIdentifier>,
    /// NodeOUs from `config.yaml`, if the section is present.
    pub node_ous: Option<NodeOus>,
}

impl MspDir {
    /// Reads an MSP directory. Only `cacerts/` is required.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, MspDirError> {
        let dir = dir.as_ref();
        let ca_certs = certs_in(&dir.join("cacerts"))?;
        if ca_certs.is_empty() {
            return Err(MspDirError::NoCaCerts {
                dir: dir.to_owned(),
            });
        }
        let (ou_identifiers, node_ous) = read_config(dir)?;
        Ok(Self {
            path: dir.to_owned(),
            ca_certs,
            intermediate_certs: certs_in(&dir.join("intermediatecerts"))?,
            admin_certs: certs_in(&dir.join("admincerts"))?,
            sign_certs: certs_in(&dir.join("signcerts"))?,
            crls: files_in(&dir.join("crls"))?
                .into_iter()
                .map(|(_, bytes)| Bytes::from(bytes))
                .collect(),
            tls_ca_certs: certs_in(&dir.join("tlscacerts"))?,
            tls_intermediate_certs: certs_in(&dir.join("tlsintermediatecerts"))?,
            ou_identifiers,
            node_ous,
        })
    }

    /// The channel-config form of this MSP (`FabricMSPConfig`), without the signing identity.
    ///
    /// Certificates are carried as PEM, one per entry; the crypto config is SHA2 / SHA256.
    pub fn to_fabric_msp_config(&self, msp_id: &str) -> FabricMspConfig {
        let pems = |certs: &[Certificate]| {
            certs
                .iter()
                .map(|c| Bytes::from(c.to_pem()))
                .collect::<Vec<_>>()
        };
        FabricMspConfig {
            name: msp_id.to_owned(),
            root_certs: pems(&self.ca_certs),
            intermediate_certs: pems(&self.intermediate_certs),
            admins: pems(&self.admin_certs),
            revocation_list: self.crls.clone(),
            signing_identity: None,
            organizational_unit_identifiers: self
                .ou_identifiers
                .iter()
                .map(OuIdentifier::to_proto)
                .collect(),
            crypto_config: Some(FabricCryptoConfig {
                signature_hash_family: "SHA2".to_owned(),
                identity_identifier_hash_function: "SHA256".to_owned(),
            }),
            tls_root_certs: pems(&self.tls_ca_certs),
            tls_intermediate_certs: pems(&self.tls_intermediate_certs),
            fabric_node_ous: self.node_ous.as_ref().map(NodeOus::to_proto),
        }
    }

    /// The `MSPConfig` wrapper (type FABRIC) as stored in a channel config's `MSP` value.
    pub fn to_msp_config(&self, msp_id: &str) -> MspConfig {
        use korder_proto::Message;
        MspConfig {
            r#type: MSP_TYPE_FABRIC,
            config: Bytes::from(self.to_fabric_msp_config(msp_id).encode_to_vec()),
        }
    }
}

/// Reads every regular file of `dir` (sorted by name); a missing folder is empty.
pub(crate) fn files_in(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, MspDirError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| MspDirError::Io { path, source }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(io(&path))?;
        if meta.is_file() {
            paths.push((path, meta.len()));
        }
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for (path, len) in paths {
        if len > MSP_FILE_SIZE_MAX_BYTES {
            return Err(MspDirError::TooLarge { path, len });
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        files.push((path, bytes));
    }
    Ok(files)
}

/// Parses every PEM certificate in the files of `dir`.
fn certs_in(dir: &Path) -> Result<Vec<Certificate>, MspDirError> {
    let mut certs = Vec::new();
    for (path, bytes) in files_in(dir)? {
        if !crate::cert::looks_like_pem(&bytes) {
            continue;
        }
        let parsed = Certificate::all_from_pem(&bytes)
            .map_err(|source| MspDirError::Certificate { path, source })?;
        certs.extend(parsed);
    }
    Ok(certs)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ConfigYaml {
    #[serde(default)]
    organizational_unit_identifiers: Vec<OuYaml>,
    #[serde(rename = "NodeOUs")]
    node_ous: Option<NodeOusYaml>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OuYaml {
    #[serde(default)]
    certificate: Option<String>,
    #[serde(rename = "OrganizationalUnitIdentifier")]
    ou: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeOusYaml {
    #[serde(default)]
    enable: bool,
    #[serde(rename = "ClientOUIdentifier")]
    client: Option<OuYaml>,
    #[serde(rename = "PeerOUIdentifier")]
    peer: Option<OuYaml>,
    #[serde(rename = "AdminOUIdentifier")]
    admin: Option<OuYaml>,
    #[serde(rename = "OrdererOUIdentifier")]
    orderer: Option<OuYaml>,
}

type ConfigParts = (Vec<OuIdentifier>, Option<NodeOus>);

fn read_config(dir: &Path) -> Result<ConfigParts, MspDirError> {
    let path = dir.join("config.yaml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
        Err(source) => return Err(MspDirError::Io { path, source }),
    };
    let config: ConfigYaml = if text.trim().is_empty() {
        ConfigYaml::default()
    } else {
        serde_saphyr::from_str(&text).map_err(|e| MspDirError::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?
    };
    let resolve = |ou: OuYaml| -> Result<OuIdentifier, MspDirError> {
        let certificate = match ou.certificate.filter(|c| !c.is_empty()) {
            None => None,
            Some(rel) => {
                let cert_path = dir.join(rel);
                let bytes = std::fs::read(&cert_path).map_err(|source| MspDirError::Io {
                    path: cert_path.clone(),
                    source,
                })?;
                Some(Certificate::from_pem_or_der(&bytes).map_err(|source| {
                    MspDirError::Certificate {
                        path: cert_path,
                        source,
                    }
                })?)
            }
        };
        Ok(OuIdentifier {
            certificate,
            organizational_unit: ou.ou,
        })
    };
    let ou_identifiers = config
        .organizational_unit_identifiers
        .into_iter()
        .map(resolve)
        .collect::<Result<Vec<_>, _>>()?;
    let node_ous = match config.node_ous {
        None => None,
        Some(n) => Some(NodeOus {
            enable: n.enable,
            client: n.client.map(resolve).transpose()?,
            peer: n.peer.map(resolve).transpose()?,
            admin: n.admin.map(resolve).transpose()?,
            orderer: n.orderer.map(resolve).transpose()?,
        }),
    };
    Ok((ou_identifiers, node_ous))
}
