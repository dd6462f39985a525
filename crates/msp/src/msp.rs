//! A channel member's X.509 MSP, built from the `FabricMSPConfig` in a channel config:
//! identity validation and principal matching.
//!
//! ```text
//! Identity ──validate──▶ not a CA ─▶ chain to roots (as of NotBefore + 1 s)
//!                        ─▶ issuer is a leaf CA ─▶ not revoked ─▶ OU identifiers
//!                        ─▶ NodeOU classification (when enforced)
//! ```
//!
//! Expiry is deliberately not checked here: Fabric's MSP validates as of the
//! certificate's own NotBefore + 1 s, and leaves expiry to the broadcast and deliver
//! paths.

use crate::cert::{CertError, Certificate, SanitizeError};
use crate::identity::{Identity, IdentityError};
use aws_lc_rs::digest::{SHA256, digest};
use bytes::Bytes;
use korder_proto::Message;
use korder_proto::common::msp_principal::Classification;
use korder_proto::common::msp_role::MspRoleType;
use korder_proto::common::{
    CombinedPrincipal, MspIdentityAnonymity, MspPrincipal, MspRole, OrganizationUnit,
};
use korder_proto::msp::{FabricMspConfig, FabricOuIdentifier, MspConfig};
use korder_types::sync::MutexExt;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// How many validation results an [`Msp`] remembers.
pub const VALIDATION_CACHE_ENTRIES_MAX: usize = 256;

/// How many deserialised (sanitised) identities an [`Msp`] remembers.
pub const IDENTITY_CACHE_ENTRIES_MAX: usize = 256;

/// Longest chain of CA certificates followed above a CA certificate.
pub const CA_CHAIN_DEPTH_MAX: usize = 8;

/// Deepest nesting of COMBINED principals accepted.
pub const PRINCIPAL_DEPTH_MAX: usize = 8;

/// The MSP behaviour version, chosen by the channel capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MspVersion {
    /// No channel capability.
    V1_0,
    /// Channel capability V1_1.
    V1_1,
    /// Channel capability V1_3 or V1_4_2.
    V1_3,
    /// Channel capability V1_4_3 or V2_0 and later.
    V1_4_3,
}

impl MspVersion {
    /// The version selected by a channel's capability names (`"V1_1"`, `"V1_4_3"`, ...).
    pub fn from_channel_capabilities<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names
            .into_iter()
            .map(|name| match name {
                "V1_1" => Self::V1_1,
                "V1_3" | "V1_4_2" => Self::V1_3,
                "V1_4_3" | "V2_0" | "V2_5" | "V3_0" => Self::V1_4_3,
                _ => Self::V1_0,
            })
            .max()
            .unwrap_or(Self::V1_0)
    }
}

/// Why an MSP could not be set up, an identity was refused, or a principal not satisfied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MspError {
    /// `MSPConfig.type` is not FABRIC (0).
    #[error("MSP config type {0} is not supported (only X.509 FABRIC MSPs)")]
    UnsupportedType(i32),
    /// The config bytes do not decode.
    #[error("cannot decode FabricMSPConfig: {0}")]
    Decode(String),
    /// A setup rule is broken.
    #[error("MSP {msp_id}: {reason}")]
    Setup {
        /// The MSP.
        msp_id: String,
        /// Which rule.
        reason: String,
    },
    /// A certificate in the config does not parse.
    #[error("MSP {msp_id}: bad {what} certificate: {source}")]
    Certificate {
        /// The MSP.
        msp_id: String,
        /// Which list it came from.
        what: &'static str,
        /// The parse error.
        source: CertError,
    },
    /// The identity bytes do not decode.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The identity's certificate cannot be put into its sanitised (low-S) form,
    /// typically because it does not chain to the MSP's roots.
    #[error("identity {subject:?} cannot be deserialized by MSP {msp_id}: {reason}")]
    Deserialize {
        /// The MSP.
        msp_id: String,
        /// The identity's certificate subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// The identity belongs to another MSP.
    #[error("the identity is a member of a different MSP (expected {expected}, got {actual})")]
    WrongMsp {
        /// This MSP.
        expected: String,
        /// The identity's MSP.
        actual: String,
    },
    /// The identity is not valid in this MSP.
    #[error("identity {subject:?} is not valid in MSP {msp_id}: {reason}")]
    Invalid {
        /// The MSP.
        msp_id: String,
        /// The identity's certificate subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// The identity does not satisfy the principal.
    #[error("identity {subject:?} does not satisfy the principal: {reason}")]
    NotSatisfied {
        /// The identity's certificate subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// The principal is malformed or of an unsupported kind.
    #[error("invalid principal: {0}")]
    BadPrincipal(String),
}

/// An OU identifier with the hash of its certification chain (empty when unbound).
#[derive(Clone, Debug, PartialEq, Eq)]
struct OuId {
    ou: String,
    certifiers_id: Option<Vec<u8>>,
}

#[derive(Clone, Debug, Default)]
struct NodeOuRules {
    enable: bool,
    client: Option<OuId>,
    peer: Option<OuId>,
    admin: Option<OuId>,
    orderer: Option<OuId>,
}

#[derive(Clone, Debug)]
struct Crl {
    authority_key_id: Option<Vec<u8>>,
    revoked_serials: Vec<Vec<u8>>,
    tbs: Vec<u8>,
    algorithm_oid: String,
    signature: Vec<u8>,
}

/// What validation learns about a valid identity.
#[derive(Clone, Debug)]
struct Validated {
    /// Hash of the DER of the chain from the issuing CA to the root.
    certifiers_id: Vec<u8>,
}

/// A bounded FIFO cache of outcomes keyed by serialized identity bytes.
#[derive(Debug)]
struct FifoCache<V> {
    capacity: usize,
    order: VecDeque<Bytes>,
    entries: HashMap<Bytes, Result<V, MspError>>,
}

impl<V: Clone> FifoCache<V> {
    fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a cache holds at least one entry");
        Self {
            capacity,
            order: VecDeque::new(),
            entries: HashMap::new(),
        }
    }

    fn get(&self, key: &Bytes) -> Option<Result<V, MspError>> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: Bytes, value: Result<V, MspError>) {
        if self.entries.contains_key(&key) {
            return;
        }
        while self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
        self.order.push_back(key.clone());
        self.entries.insert(key, value);
        assert_eq!(self.order.len(), self.entries.len());
    }
}

/// An X.509 MSP as configured in a channel.
#[derive(Debug)]
pub struct Msp {
    name: String,
    version: MspVersion,
    roots: Vec<Certificate>,
    intermediates: Vec<Certificate>,
    admins: Vec<Certificate>,
    crls: Vec<Crl>,
    ou_identifiers: Vec<OuId>,
    node_ous: NodeOuRules,
    /// CAs (by DER) that issued another CA: identities may not be issued by them.
    internal_nodes: Vec<Bytes>,
    anchors: Vec<TrustAnchor<'static>>,
    intermediate_ders: Vec<CertificateDer<'static>>,
    /// The caches are taken even after a holder panicked: the worst a panic leaves is
    /// a missing entry.
    cache: Mutex<FifoCache<Validated>>,
    /// Deserialised identities (with their sanitised certificates) by serialized bytes.
    identities: Mutex<FifoCache<Identity>>,
}

impl Msp {
    /// Builds an MSP from the `MSPConfig` stored in a channel config (type FABRIC only).
    pub fn from_msp_config(config: &MspConfig, version: MspVersion) -> Result<Self, MspError> {
        if config.r#type != 0 {
            return Err(MspError::UnsupportedType(config.r#type));
        }
        let fabric = FabricMspConfig::decode(config.config.as_ref())
            .map_err(|e| MspError::Decode(e.to_string()))?;
        Self::from_config(&fabric, version)
    }

    /// Builds an MSP from a `FabricMSPConfig`, applying Fabric's setup checks.
    pub fn from_config(config: &FabricMspConfig, version: MspVersion) -> Result<Self, MspError> {
        let name = config.name.clone();
        let setup = |reason: String| MspError::Setup {
            msp_id: name.clone(),
            reason,
        };
        if name.is_empty() {
            return Err(setup("the MSP name is empty".to_owned()));
        }
        if let Some(cc) = &config.crypto_config
            && !cc.signature_hash_family.is_empty()
            && cc.signature_hash_family != "SHA2"
        {
            return Err(setup(format!(
                "signature hash family {:?} is not supported (only SHA2)",
                cc.signature_hash_family
            )));
        }
        let parse = |what: &'static str, list: &[Bytes]| {
            list.iter()
                .map(|pem| {
                    Certificate::from_pem_or_der(pem).map_err(|source| MspError::Certificate {
                        msp_id: name.clone(),
                        what,
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let roots = parse("root", &config.root_certs)?;
        let intermediates = parse("intermediate", &config.intermediate_certs)?;
        let admins = parse("admin", &config.admins)?;
        let sanitize_err = |what: &str, cert: &Certificate, e: SanitizeError| {
            setup(format!(
                "{what} certificate {:?} cannot be sanitised: {e}",
                cert.subject()
            ))
        };
        if roots.is_empty() {
            return Err(setup("expected at least one CA certificate".to_owned()));
        }
        for ca in roots.iter().chain(&intermediates) {
            if !ca.is_ca() {
                return Err(setup(format!("{:?} is not a CA certificate", ca.subject())));
            }
            if ca.subject_key_id().is_none() {
                return Err(setup(format!(
                    "CA certificate {:?} has no Subject Key Identifier",
                    ca.subject()
                )));
            }
        }
        // A root is its own parent: its signature is normalised with its own curve.
        let roots = roots
            .iter()
            .map(|root| {
                root.sanitized(root)
                    .map_err(|e| sanitize_err("root", root, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let anchors = roots
            .iter()
            .map(|root| {
                let der = CertificateDer::from(root.der().to_vec());
                webpki::anchor_from_trusted_cert(&der)
                    .map(|a| a.to_owned())
                    .map_err(|e| setup(format!("root {:?} unusable: {e}", root.subject())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let intermediate_ders = intermediates
            .iter()
            .map(|c| CertificateDer::from(c.der().to_vec()))
            .collect();
        let mut msp = Self {
            name: name.clone(),
            version,
            roots,
            intermediates,
            admins,
            crls: Vec::new(),
            ou_identifiers: Vec::new(),
            node_ous: NodeOuRules::default(),
            internal_nodes: Vec::new(),
            anchors,
            intermediate_ders,
            cache: Mutex::new(FifoCache::new(VALIDATION_CACHE_ENTRIES_MAX)),
            identities: Mutex::new(FifoCache::new(IDENTITY_CACHE_ENTRIES_MAX)),
        };
        // Intermediates are sanitised against chains built from the certificates as
        // configured, then the MSP keeps only the sanitised forms. Chain building
        // looks only at names and keys of the issuers, which sanitising leaves alone.
        let sanitized_intermediates = msp
            .intermediates
            .iter()
            .map(|inter| {
                msp.sanitize(inter).map_err(|reason| {
                    setup(format!("intermediate {:?}: {reason}", inter.subject()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        msp.intermediate_ders = sanitized_intermediates
            .iter()
            .map(|c| CertificateDer::from(c.der().to_vec()))
            .collect();
        msp.intermediates = sanitized_intermediates;
        msp.admins = msp
            .admins
            .iter()
            .map(|admin| {
                msp.sanitize(admin)
                    .map_err(|reason| setup(format!("admin {:?}: {reason}", admin.subject())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Every intermediate must chain to the roots; its issuer becomes an internal node.
        for inter in &msp.intermediates {
            let chain = msp
                .chain_of(inter)
                .map_err(|reason| setup(format!("intermediate {:?}: {reason}", inter.subject())))?;
            if let Some(parent) = chain.first() {
                msp.internal_nodes.push(parent.der().clone());
            }
        }
        msp.crls = config
            .revocation_list
            .iter()
            .map(|bytes| parse_crl(bytes).map_err(|reason| setup(format!("bad CRL: {reason}"))))
            .collect::<Result<Vec<_>, _>>()?;
        msp.ou_identifiers = config
            .organizational_unit_identifiers
            .iter()
            .map(|ou| {
                if ou.certificate.is_empty() {
                    return Err(setup(format!(
                        "OU identifier {:?} names no certificate",
                        ou.organizational_unit_identifier
                    )));
                }
                msp.ou_id(ou).map_err(setup)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(n) = &config.fabric_node_ous {
            let conv = |ou: &Option<FabricOuIdentifier>| {
                ou.as_ref()
                    .map(|ou| msp.ou_id(ou))
                    .transpose()
                    .map_err(setup)
            };
            msp.node_ous = NodeOuRules {
                enable: n.enable,
                client: conv(&n.client_ou_identifier)?,
                peer: conv(&n.peer_ou_identifier)?,
                admin: conv(&n.admin_ou_identifier)?,
                orderer: conv(&n.orderer_ou_identifier)?,
            };
            if version < MspVersion::V1_4_3
                && (msp.node_ous.client.is_none() || msp.node_ous.peer.is_none())
            {
                return Err(setup(
                    "NodeOUs require client and peer OU identifiers before MSP v1.4.3".to_owned(),
                ));
            }
        }
        msp.check_admins().map_err(setup)?;
        Ok(msp)
    }

    fn check_admins(&self) -> Result<(), String> {
        if self.version >= MspVersion::V1_4_3 {
            if self.admins.is_empty() && !(self.node_ous.enable && self.node_ous.admin.is_some()) {
                return Err("administrators must be declared as admin certificates or through the admin NodeOU".to_owned());
            }
            if self.node_ous.enable {
                for admin in &self.admins {
                    let ous = admin.organizational_units();
                    let has =
                        |rule: &Option<OuId>| rule.as_ref().is_some_and(|r| ous.contains(&r.ou));
                    if !has(&self.node_ous.client) && !has(&self.node_ous.admin) {
                        return Err(format!(
                            "admin {:?} carries neither the client nor the admin OU",
                            admin.subject()
                        ));
                    }
                }
            }
            return Ok(());
        }
        for admin in &self.admins {
            let identity = Identity::new(&self.name, admin.clone());
            self.validate(&identity)
                .map_err(|e| format!("admin {:?} is not valid: {e}", admin.subject()))?;
            if self.version >= MspVersion::V1_1 && self.node_ous.enable {
                let client_ou = self.node_ous.client.as_ref().map(|c| c.ou.as_str());
                if !admin
                    .organizational_units()
                    .iter()
                    .any(|o| Some(o.as_str()) == client_ou)
                {
                    return Err(format!("admin {:?} is not a client", admin.subject()));
                }
            }
        }
        Ok(())
    }

    /// The MSP id.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The behaviour version.
    pub fn version(&self) -> MspVersion {
        self.version
    }

    /// Whether NodeOU classification is enforced.
    pub fn node_ous_enabled(&self) -> bool {
        self.node_ous.enable
    }

    /// Decodes serialized identity bytes, checks they name this MSP and sanitises the
    /// certificate (its own ECDSA signature put into low-S form with the issuing CA's
    /// curve order).
    ///
    /// Sanitising needs the certificate's chain to the MSP's roots (built as of
    /// NotBefore + 1 s), so a certificate from a foreign CA fails here with
    /// [`MspError::Deserialize`]. Results are cached by the serialized bytes.
    pub fn deserialize_identity(&self, bytes: &[u8]) -> Result<Identity, MspError> {
        let key = Bytes::copy_from_slice(bytes);
        if let Some(hit) = self.identities.lock_unpoisoned().get(&key) {
            return hit;
        }
        let outcome = Identity::from_serialized(bytes)
            .map_err(MspError::from)
            .and_then(|identity| {
                if identity.msp_id() != self.name {
                    return Err(MspError::WrongMsp {
                        expected: self.name.clone(),
                        actual: identity.msp_id().to_owned(),
                    });
                }
                self.sanitize_identity(identity)
            });
        self.identities
            .lock_unpoisoned()
            .insert(key, outcome.clone());
        outcome
    }

    /// Records the sanitised form of `identity`'s certificate (see [`Self::deserialize_identity`]).
    pub fn sanitize_identity(&self, identity: Identity) -> Result<Identity, MspError> {
        let sanitized =
            self.sanitize(identity.certificate())
                .map_err(|reason| MspError::Deserialize {
                    msp_id: self.name.clone(),
                    subject: identity.certificate().subject().to_owned(),
                    reason,
                })?;
        Ok(identity.with_sanitized(sanitized))
    }

    /// `cert` with its own signature in low-S form: the parent is the issuing CA of
    /// the certificate's chain, or the certificate itself when it is one of the roots.
    fn sanitize(&self, cert: &Certificate) -> Result<Certificate, String> {
        if !cert.is_ecdsa_signed() {
            return Ok(cert.clone());
        }
        let chain = self.chain_of(cert)?;
        let parent = chain.first().copied().unwrap_or(cert);
        cert.sanitized(parent).map_err(|e| e.to_string())
    }

    /// The administrators' certificates, sanitised.
    pub fn admins(&self) -> &[Certificate] {
        &self.admins
    }

    /// The root CA certificates, sanitised.
    pub fn roots(&self) -> &[Certificate] {
        &self.roots
    }

    /// The intermediate CA certificates, sanitised.
    pub fn intermediates(&self) -> &[Certificate] {
        &self.intermediates
    }

    /// Checks that `identity` is a valid member of this MSP (expiry aside).
    pub fn validate(&self, identity: &Identity) -> Result<(), MspError> {
        self.validated(identity).map(|_| ())
    }

    fn validated(&self, identity: &Identity) -> Result<Validated, MspError> {
        let key = identity.serialized().clone();
        if let Some(hit) = self.cache.lock_unpoisoned().get(&key) {
            return hit;
        }
        let outcome = self.validate_uncached(identity);
        self.cache.lock_unpoisoned().insert(key, outcome.clone());
        outcome
    }

    fn validate_uncached(&self, identity: &Identity) -> Result<Validated, MspError> {
        let cert = identity.certificate();
        let invalid = |reason: String| MspError::Invalid {
            msp_id: self.name.clone(),
            subject: cert.subject().to_owned(),
            reason,
        };
        if identity.msp_id() != self.name {
            return Err(MspError::WrongMsp {
                expected: self.name.clone(),
                actual: identity.msp_id().to_owned(),
            });
        }
        if cert.is_ca() {
            return Err(invalid(
                "a CA certificate cannot be a member identity".to_owned(),
            ));
        }
        let chain = self.chain_of(cert).map_err(invalid)?;
        let issuer = chain
            .first()
            .ok_or_else(|| invalid("empty certification chain".to_owned()))?;
        if self.internal_nodes.contains(issuer.der()) {
            return Err(invalid(format!(
                "issued by {:?}, a CA that certifies other CAs (identities must come from leaf CAs)",
                issuer.subject()
            )));
        }
        self.check_revocation(cert, issuer).map_err(invalid)?;
        let certifiers_id = certifiers_id(&chain);
        if !self.ou_identifiers.is_empty() {
            let matched = cert.organizational_units().iter().any(|ou| {
                self.ou_identifiers
                    .iter()
                    .any(|id| id.ou == *ou && id.certifiers_id.as_deref() == Some(&certifiers_id))
            });
            if !matched {
                return Err(invalid(
                    "none of the certificate's OUs matches the MSP's OU identifiers".to_owned(),
                ));
            }
        }
        if self.node_ous.enable {
            let mut rules = vec![&self.node_ous.client, &self.node_ous.peer];
            if self.version >= MspVersion::V1_4_3 {
                rules.push(&self.node_ous.admin);
                rules.push(&self.node_ous.orderer);
            }
            let matches = cert
                .organizational_units()
                .iter()
                .filter(|ou| {
                    rules.iter().any(|rule| {
                        rule.as_ref()
                            .is_some_and(|r| r.ou == **ou && r.matches_certifiers(&certifiers_id))
                    })
                })
                .count();
            if matches != 1 {
                return Err(invalid(format!(
                    "the certificate must carry exactly one NodeOU, it carries {matches}"
                )));
            }
        }
        Ok(Validated { certifiers_id })
    }

    /// The chain above `cert` (issuing CA first, root last), verified as of NotBefore + 1 s.
    ///
    /// Empty only for a CA certificate that is itself one of the roots.
    fn chain_of(&self, cert: &Certificate) -> Result<Vec<&Certificate>, String> {
        if cert.is_ca() {
            return self.ca_chain_of(cert);
        }
        let der = CertificateDer::from(cert.der().as_ref());
        let ee = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| format!("certificate not usable for chain building: {e}"))?;
        let at_s = cert.not_before_unix_s().saturating_add(1);
        let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(at_s).unwrap_or(0)));
        let path = ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                &self.intermediate_ders,
                at,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map_err(|e| format!("the certificate does not chain to the MSP's roots: {e}"))?;
        let mut chain = Vec::new();
        for inter in path.intermediate_certificates() {
            let der = inter.der();
            let found = self
                .intermediates
                .iter()
                .find(|c| c.der().as_ref() == der.as_ref())
                .ok_or_else(|| "chain uses an unknown intermediate".to_owned())?;
            chain.push(found);
        }
        let anchor = path.anchor();
        let root_index = self
            .anchors
            .iter()
            .position(|a| std::ptr::eq(a, anchor))
            .ok_or_else(|| "chain ends at an unknown root".to_owned())?;
        chain.push(&self.roots[root_index]);
        Ok(chain)
    }

    /// The chain above a CA certificate, built by hand (the path builder used for
    /// identities refuses CA certificates as end entities): every issuer must have the
    /// certificate's issuer name as subject, be a CA valid at the certificate's
    /// NotBefore + 1 s, and verify the certificate's signature. Exactly one chain may
    /// reach a root.
    fn ca_chain_of(&self, cert: &Certificate) -> Result<Vec<&Certificate>, String> {
        if self.roots.iter().any(|r| r.der() == cert.der()) {
            return Ok(Vec::new());
        }
        let at_s = cert.not_before_unix_s().saturating_add(1);
        let mut complete: Vec<Vec<&Certificate>> = Vec::new();
        let mut partial: Vec<(&Certificate, Vec<&Certificate>)> = vec![(cert, Vec::new())];
        while let Some((below, path)) = partial.pop() {
            for issuer in self.roots.iter().chain(&self.intermediates) {
                let is_root = self.roots.iter().any(|r| std::ptr::eq(r, issuer));
                let usable = issuer.is_ca()
                    && issuer.not_before_unix_s() <= at_s
                    && at_s <= issuer.not_after_unix_s()
                    && !path.iter().any(|p| p.der() == issuer.der())
                    && issuer.der() != below.der()
                    && below.verify_issued_by(issuer).is_ok();
                if !usable {
                    continue;
                }
                let mut longer = path.clone();
                longer.push(issuer);
                if is_root {
                    complete.push(longer);
                } else if longer.len() < CA_CHAIN_DEPTH_MAX {
                    partial.push((issuer, longer));
                }
            }
        }
        match complete.len() {
            0 => Err(format!(
                "the CA certificate {:?} does not chain to the MSP's roots",
                cert.subject()
            )),
            1 => Ok(complete.swap_remove(0)),
            n => Err(format!(
                "the CA certificate {:?} has {n} validation chains, only one is supported",
                cert.subject()
            )),
        }
    }

    fn check_revocation(&self, cert: &Certificate, issuer: &Certificate) -> Result<(), String> {
        let Some(ski) = issuer.subject_key_id() else {
            return Ok(());
        };
        let serial = strip_leading_zeros(cert.serial());
        for crl in &self.crls {
            if crl.authority_key_id.as_deref() != Some(ski) {
                continue;
            }
            let listed = crl
                .revoked_serials
                .iter()
                .any(|s| strip_leading_zeros(s) == serial);
            if listed
                && crate::cert::verify_signed_by(
                    &crl.tbs,
                    &crl.algorithm_oid,
                    &crl.signature,
                    issuer,
                )
                .is_ok()
            {
                return Err("The certificate has been revoked".to_owned());
            }
        }
        Ok(())
    }

    fn ou_id(&self, ou: &FabricOuIdentifier) -> Result<OuId, String> {
        let certifiers_id = if ou.certificate.is_empty() {
            None
        } else {
            let cert = Certificate::from_pem_or_der(&ou.certificate).map_err(|e| {
                format!(
                    "OU {:?} certificate: {e}",
                    ou.organizational_unit_identifier
                )
            })?;
            let cert = self.sanitize(&cert).map_err(|e| {
                format!(
                    "OU {:?} certificate: {e}",
                    ou.organizational_unit_identifier
                )
            })?;
            let is_root = self.roots.iter().any(|r| r.der() == cert.der());
            let chain: Vec<&Certificate> = if is_root {
                self.roots
                    .iter()
                    .filter(|r| r.der() == cert.der())
                    .take(1)
                    .collect()
            } else {
                let inter = self
                    .intermediates
                    .iter()
                    .find(|c| c.der() == cert.der())
                    .ok_or_else(|| {
                        format!(
                            "OU {:?} certificate is neither a root nor an intermediate of the MSP",
                            ou.organizational_unit_identifier
                        )
                    })?;
                let mut chain = vec![inter];
                chain.extend(self.chain_of(inter)?);
                chain
            };
            Some(certifiers_id(&chain))
        };
        Ok(OuId {
            ou: ou.organizational_unit_identifier.clone(),
            certifiers_id,
        })
    }

    /// Checks whether `identity` satisfies `principal` in this MSP.
    pub fn satisfies_principal(
        &self,
        identity: &Identity,
        principal: &MspPrincipal,
    ) -> Result<(), MspError> {
        // Identities that did not come through this MSP's deserialisation are
        // sanitised here, so admin and IDENTITY matching always compare low-S forms.
        if identity.msp_id() == self.name && !identity.is_sanitized() {
            let sanitized = self.sanitize_identity(identity.clone())?;
            return self.satisfies_at_depth(&sanitized, principal, 0);
        }
        self.satisfies_at_depth(identity, principal, 0)
    }

    fn satisfies_at_depth(
        &self,
        identity: &Identity,
        principal: &MspPrincipal,
        depth: usize,
    ) -> Result<(), MspError> {
        let not_satisfied = |reason: String| MspError::NotSatisfied {
            subject: identity.certificate().subject().to_owned(),
            reason,
        };
        let bad =
            |what: &str, e: prost::DecodeError| MspError::BadPrincipal(format!("{what}: {e}"));
        let classification =
            Classification::try_from(principal.principal_classification).map_err(|_| {
                MspError::BadPrincipal(format!(
                    "invalid principal type {}",
                    principal.principal_classification
                ))
            })?;
        match classification {
            Classification::Role => {
                let role =
                    MspRole::decode(principal.principal.as_ref()).map_err(|e| bad("MSPRole", e))?;
                self.check_msp_id(&role.msp_identifier)?;
                self.satisfies_role(identity, role.role, not_satisfied)
            }
            Classification::OrganizationUnit => {
                let ou = OrganizationUnit::decode(principal.principal.as_ref())
                    .map_err(|e| bad("OrganizationUnit", e))?;
                self.check_msp_id(&ou.msp_identifier)?;
                let validated = self.validated(identity)?;
                let ok = identity
                    .certificate()
                    .organizational_units()
                    .iter()
                    .any(|o| {
                        *o == ou.organizational_unit_identifier
                            && validated.certifiers_id == ou.certifiers_identifier.as_ref()
                    });
                if ok {
                    Ok(())
                } else {
                    Err(not_satisfied(format!(
                        "no OU {:?} with matching certifiers",
                        ou.organizational_unit_identifier
                    )))
                }
            }
            Classification::Identity => {
                let wanted = self.deserialize_identity(&principal.principal)?;
                if wanted.sanitized_certificate().der() != identity.sanitized_certificate().der() {
                    return Err(not_satisfied(
                        "not the identity named by the principal".to_owned(),
                    ));
                }
                self.validate(&wanted)
            }
            Classification::Anonymity if self.version >= MspVersion::V1_3 => {
                let anon = MspIdentityAnonymity::decode(principal.principal.as_ref())
                    .map_err(|e| bad("MSPIdentityAnonymity", e))?;
                match anon.anonymity_type {
                    0 => Ok(()),
                    1 => Err(not_satisfied(
                        "an X.509 identity is not anonymous".to_owned(),
                    )),
                    other => Err(MspError::BadPrincipal(format!(
                        "invalid anonymity type {other}"
                    ))),
                }
            }
            Classification::Combined if self.version >= MspVersion::V1_3 => {
                if depth >= PRINCIPAL_DEPTH_MAX {
                    return Err(MspError::BadPrincipal(format!(
                        "combined principals nested deeper than {PRINCIPAL_DEPTH_MAX}"
                    )));
                }
                let combined = CombinedPrincipal::decode(principal.principal.as_ref())
                    .map_err(|e| bad("CombinedPrincipal", e))?;
                if combined.principals.is_empty() {
                    return Err(MspError::BadPrincipal(
                        "no principals in CombinedPrincipal".to_owned(),
                    ));
                }
                combined
                    .principals
                    .iter()
                    .try_for_each(|p| self.satisfies_at_depth(identity, p, depth + 1))
            }
            Classification::Anonymity | Classification::Combined => {
                Err(MspError::BadPrincipal(format!(
                    "invalid principal type {}",
                    principal.principal_classification
                )))
            }
        }
    }

    fn check_msp_id(&self, msp_id: &str) -> Result<(), MspError> {
        if msp_id != self.name {
            return Err(MspError::WrongMsp {
                expected: msp_id.to_owned(),
                actual: self.name.clone(),
            });
        }
        Ok(())
    }

    fn satisfies_role(
        &self,
        identity: &Identity,
        role: i32,
        not_satisfied: impl Fn(String) -> MspError,
    ) -> Result<(), MspError> {
        if identity.msp_id() != self.name {
            return Err(MspError::WrongMsp {
                expected: self.name.clone(),
                actual: identity.msp_id().to_owned(),
            });
        }
        let role = MspRoleType::try_from(role)
            .map_err(|_| MspError::BadPrincipal(format!("invalid MSP role type {role}")))?;
        let has_ou = |rule: &Option<OuId>, name: &str| -> Result<(), MspError> {
            if !self.node_ous.enable {
                return Err(not_satisfied(
                    "NodeOUs not activated. Cannot tell apart identities.".to_owned(),
                ));
            }
            self.validate(identity)?;
            let wanted = rule.as_ref().map(|r| r.ou.as_str());
            if identity
                .certificate()
                .organizational_units()
                .iter()
                .any(|o| Some(o.as_str()) == wanted)
            {
                Ok(())
            } else {
                Err(not_satisfied(format!("not a {name}")))
            }
        };
        match role {
            MspRoleType::Member => self.validate(identity),
            MspRoleType::Admin => {
                let der = identity.sanitized_certificate().der();
                if self.admins.iter().any(|a| a.der() == der) {
                    return Ok(());
                }
                if self.version >= MspVersion::V1_4_3 && self.node_ous.enable {
                    return has_ou(&self.node_ous.admin, "admin");
                }
                Err(not_satisfied("not an admin of the MSP".to_owned()))
            }
            MspRoleType::Client => has_ou(&self.node_ous.client, "client"),
            MspRoleType::Peer => has_ou(&self.node_ous.peer, "peer"),
            MspRoleType::Orderer => {
                if self.version < MspVersion::V1_4_3 || !self.node_ous.enable {
                    return Err(MspError::BadPrincipal("invalid MSP role type 4".to_owned()));
                }
                has_ou(&self.node_ous.orderer, "orderer")
            }
        }
    }
}

impl OuId {
    fn matches_certifiers(&self, certifiers_id: &[u8]) -> bool {
        self.certifiers_id
            .as_deref()
            .is_none_or(|wanted| wanted == certifiers_id)
    }
}

/// SHA-256 of the concatenated DER of a CA chain (issuing CA first, root last).
fn certifiers_id(chain: &[&Certificate]) -> Vec<u8> {
    let mut all = Vec::new();
    for cert in chain {
        all.extend_from_slice(cert.der());
    }
    digest(&SHA256, &all).as_ref().to_vec()
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    &bytes[skip..]
}

fn parse_crl(bytes: &[u8]) -> Result<Crl, String> {
    use x509_parser::extensions::ParsedExtension;
    let der = if crate::cert::looks_like_pem(bytes) {
        crate::cert::first_pem(bytes)
            .map_err(|e| e.to_string())?
            .into_contents()
    } else {
        bytes.to_vec()
    };
    let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|e| e.to_string())?;
    let authority_key_id = crl
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    Ok(Crl {
        authority_key_id,
        revoked_serials: crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect(),
        tbs: crl.tbs_cert_list.as_ref().to_vec(),
        algorithm_oid: crl.signature_algorithm.algorithm.to_id_string(),
        signature: crl.signature_value.data.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The validation cache never holds more than its bound and evicts the oldest first.
    #[test]
    fn validation_cache_is_bounded_fifo() {
        let mut cache = FifoCache::new(VALIDATION_CACHE_ENTRIES_MAX);
        let total = VALIDATION_CACHE_ENTRIES_MAX + 10;
        for i in 0..total {
            let key = Bytes::from(i.to_be_bytes().to_vec());
            cache.insert(
                key,
                Ok(Validated {
                    certifiers_id: Vec::new(),
                }),
            );
            assert!(cache.entries.len() <= VALIDATION_CACHE_ENTRIES_MAX);
        }
        assert!(
            cache
                .get(&Bytes::from(0usize.to_be_bytes().to_vec()))
                .is_none()
        );
        assert!(
            cache
                .get(&Bytes::from((total - 1).to_be_bytes().to_vec()))
                .is_some()
        );
    }
}
