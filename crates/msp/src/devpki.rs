//! A development PKI for `korder init`: one organisation, its CA, its TLS CA, and
//! certificates for orderer nodes, clients and administrators, written as Fabric
//! MSP directories.
//!
//! Every certificate is ECDSA P-256 signed with SHA-256. Identity certificates carry
//! the role as their subject OU (`orderer`, `peer`, `client`, `admin`) so that an MSP
//! with NodeOUs enabled classifies them, and no Extended Key Usage (an EKU list
//! without serverAuth would fail Fabric's chain verification). TLS certificates come
//! from a separate TLS CA and carry serverAuth and clientAuth with the given hosts.
//!
//! ```text
//! <msp dir>/cacerts/ca.pem          <tls dir>/ca.crt
//! <msp dir>/signcerts/cert.pem      <tls dir>/server.crt
//! <msp dir>/keystore/key.pem 0600   <tls dir>/server.key 0600
//! <msp dir>/admincerts/admin.pem
//! <msp dir>/tlscacerts/tlsca.pem
//! <msp dir>/config.yaml             (NodeOUs enabled)
//! ```

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// How long generated certificates are valid, in days (about ten years).
pub const DEV_CERT_VALIDITY_DAYS: i64 = 3650;

/// How far before "now" generated certificates start, in seconds, to absorb clock skew.
pub const DEV_CERT_BACKDATE_S: i64 = 300;

/// Why the development PKI could not be generated or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevPkiError {
    /// Key or certificate generation failed.
    #[error("certificate generation failed for {what}: {source}")]
    Generate {
        /// Which certificate or key.
        what: String,
        /// The generator's error.
        source: rcgen::Error,
    },
    /// The random source failed.
    #[error("the system random number generator failed")]
    Random,
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The role an identity certificate is issued for; it becomes the subject OU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// An ordering node.
    Orderer,
    /// A peer.
    Peer,
    /// A client application or CLI user.
    Client,
    /// An administrator of the organisation.
    Admin,
}

impl NodeRole {
    /// The OU value carried by certificates of this role.
    pub fn ou(self) -> &'static str {
        match self {
            Self::Orderer => "orderer",
            Self::Peer => "peer",
            Self::Client => "client",
            Self::Admin => "admin",
        }
    }
}

/// A certificate and its private key, both PEM (the key as PKCS#8 `PRIVATE KEY`).
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn load(cert_pem: String, key_pem: String, what: &str) -> Result<Ca, DevPkiError> {
        let key = KeyPair::from_pem(&key_pem).map_err(gen_err(what))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(gen_err(what))?;
        Ok(Ca {
            issuer,
            cert_pem,
            key_pem,
        })
    }
}

/// Files of a saved [`DevPki`] inside its directory.
const CA_FILES: [&str; 4] = ["ca.pem", "ca.key", "tlsca.pem", "tlsca.key"];

/// An organisation's development CAs: one for identities, one for TLS.
pub struct DevPki {
    msp_id: String,
    domain: String,
    ca: Ca,
    tls_ca: Ca,
}

impl std::fmt::Debug for DevPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPki")
            .field("msp_id", &self.msp_id)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl DevPki {
    /// Generates the CA (`CN=ca.<domain>`) and TLS CA (`CN=tlsca.<domain>`) of an organisation.
    pub fn generate(org_msp_id: &str, domain: &str) -> Result<Self, DevPkiError> {
        Ok(Self {
            msp_id: org_msp_id.to_owned(),
            domain: domain.to_owned(),
            ca: new_ca(&format!("ca.{domain}"), domain)?,
            tls_ca: new_ca(&format!("tlsca.{domain}"), domain)?,
        })
    }

    /// Saves both CAs (certificates, and keys with mode 0600) into `dir`, so that
    /// more certificates can be issued later with [`DevPki::load`], as cryptogen's
    /// `ca/` directory allows.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), DevPkiError> {
        let dir = dir.as_ref();
        let contents = [
            &self.ca.cert_pem,
            &self.ca.key_pem,
            &self.tls_ca.cert_pem,
            &self.tls_ca.key_pem,
        ];
        for (name, text) in CA_FILES.iter().zip(contents) {
            write_file(&dir.join(name), text.as_bytes(), name.ends_with(".key"))?;
        }
        Ok(())
    }

    /// Loads CAs saved with [`DevPki::save`].
    pub fn load(
        dir: impl AsRef<Path>,
        org_msp_id: &str,
        domain: &str,
    ) -> Result<Self, DevPkiError> {
        let dir = dir.as_ref();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| DevPkiError::Io { path, source })
        };
        Ok(Self {
            msp_id: org_msp_id.to_owned(),
            domain: domain.to_owned(),
            ca: Ca::load(read(CA_FILES[0])?, read(CA_FILES[1])?, "the saved CA")?,
            tls_ca: Ca::load(read(CA_FILES[2])?, read(CA_FILES[3])?, "the saved TLS CA")?,
        })
    }

    /// Issues an identity certificate valid only from `not_before` to `not_after`
    /// (unix seconds): e.g. an already expired one, for tests and drills.
    pub fn issue_with_validity(
        &self,
        common_name: &str,
        role: NodeRole,
        not_before_unix_s: i64,
        not_after_unix_s: i64,
    ) -> Result<IssuedCert, DevPkiError> {
        let mut params = self.identity_params(common_name, role)?;
        let at = |s: i64| OffsetDateTime::from_unix_timestamp(s).map_err(|_| DevPkiError::Random);
        params.not_before = at(not_before_unix_s)?;
        params.not_after = at(not_after_unix_s)?;
        issue_from(&self.ca, &params, common_name)
    }

    fn identity_params(
        &self,
        common_name: &str,
        role: NodeRole,
    ) -> Result<CertificateParams, DevPkiError> {
        let mut params = base_params(common_name, &self.domain)?;
        params.distinguished_name = distinguished_name(&self.domain, Some(role.ou()), common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }

    /// The MSP id of the organisation.
    pub fn msp_id(&self) -> &str {
        &self.msp_id
    }

    /// The organisation's domain (the subject O of every certificate).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The identity CA's certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The TLS CA's certificate, PEM.
    pub fn tls_ca_cert_pem(&self) -> &str {
        &self.tls_ca.cert_pem
    }

    /// Issues an identity certificate (`OU=<role>, CN=<common_name>`) from the identity CA.
    pub fn issue(&self, common_name: &str, role: NodeRole) -> Result<IssuedCert, DevPkiError> {
        let params = self.identity_params(common_name, role)?;
        issue_from(&self.ca, &params, common_name)
    }

    /// Issues a TLS certificate for `hosts` (DNS names or IP addresses) from the TLS CA,
    /// usable as server and client certificate.
    pub fn issue_tls(
        &self,
        common_name: &str,
        hosts: &[String],
    ) -> Result<IssuedCert, DevPkiError> {
        let mut params =
            CertificateParams::new(hosts.to_vec()).map_err(|source| DevPkiError::Generate {
                what: format!("TLS names {hosts:?}"),
                source,
            })?;
        let base = base_params(common_name, &self.domain)?;
        params.not_before = base.not_before;
        params.not_after = base.not_after;
        params.serial_number = base.serial_number;
        params.distinguished_name = distinguished_name(&self.domain, None, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        issue_from(&self.tls_ca, &params, common_name)
    }

    /// A CRL from the identity CA revoking `revoked` (PEM `X509 CRL`), for `crls/` or a channel MSP.
    pub fn crl_pem(&self, revoked: &[&crate::Certificate]) -> Result<String, DevPkiError> {
        let now = OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - Duration::seconds(DEV_CERT_BACKDATE_S),
            next_update: now + Duration::days(DEV_CERT_VALIDITY_DAYS),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|cert| rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(cert.serial()),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.ca.issuer)
            .and_then(|crl| crl.pem())
            .map_err(gen_err("CRL"))
    }

    /// Writes a complete MSP directory for `signer`, with `admin` in `admincerts/`.
    ///
    /// `config.yaml` enables NodeOUs with client/peer/admin/orderer OUs bound to the CA.
    pub fn write_msp_dir(
        &self,
        dir: impl AsRef<Path>,
        signer: &IssuedCert,
        admin: &IssuedCert,
    ) -> Result<(), DevPkiError> {
        let dir = dir.as_ref();
        write_file(
            &dir.join("cacerts/ca.pem"),
            self.ca.cert_pem.as_bytes(),
            false,
        )?;
        write_file(
            &dir.join("signcerts/cert.pem"),
            signer.cert_pem.as_bytes(),
            false,
        )?;
        write_file(
            &dir.join("keystore/key.pem"),
            signer.key_pem.as_bytes(),
            true,
        )?;
        write_file(
            &dir.join("admincerts/admin.pem"),
            admin.cert_pem.as_bytes(),
            false,
        )?;
        write_file(
            &dir.join("tlscacerts/tlsca.pem"),
            self.tls_ca.cert_pem.as_bytes(),
            false,
        )?;
        write_file(
            &dir.join("config.yaml"),
            node_ous_config_yaml().as_bytes(),
            false,
        )?;
        Ok(())
    }

    /// Writes a TLS directory: `ca.crt` (the TLS CA), `server.crt`, `server.key` (0600).
    pub fn write_tls_dir(
        &self,
        dir: impl AsRef<Path>,
        tls: &IssuedCert,
    ) -> Result<(), DevPkiError> {
        let dir = dir.as_ref();
        write_file(&dir.join("ca.crt"), self.tls_ca.cert_pem.as_bytes(), false)?;
        write_file(&dir.join("server.crt"), tls.cert_pem.as_bytes(), false)?;
        write_file(&dir.join("server.key"), tls.key_pem.as_bytes(), true)?;
        Ok(())
    }
}

/// The `config.yaml` written into generated MSP directories.
pub fn node_ous_config_yaml() -> String {
    let mut out = String::from("NodeOUs:\n  Enable: true\n");
    for (key, role) in [
        ("ClientOUIdentifier", NodeRole::Client),
        ("PeerOUIdentifier", NodeRole::Peer),
        ("AdminOUIdentifier", NodeRole::Admin),
        ("OrdererOUIdentifier", NodeRole::Orderer),
    ] {
        out.push_str(&format!(
            "  {key}:\n    Certificate: cacerts/ca.pem\n    OrganizationalUnitIdentifier: {}\n",
            role.ou()
        ));
    }
    out
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> DevPkiError + '_ {
    move |source| DevPkiError::Generate {
        what: what.to_owned(),
        source,
    }
}

fn distinguished_name(domain: &str, ou: Option<&str>, common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, domain);
    if let Some(ou) = ou {
        dn.push(DnType::OrganizationalUnitName, ou);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn base_params(common_name: &str, domain: &str) -> Result<CertificateParams, DevPkiError> {
    let mut params = CertificateParams::default();
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::seconds(DEV_CERT_BACKDATE_S);
    params.not_after = now + Duration::days(DEV_CERT_VALIDITY_DAYS);
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| DevPkiError::Random)?;
    serial[0] &= 0x7f; // a positive serial without a padding byte
    serial[0] |= 0x01; // and without a leading zero
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.distinguished_name = distinguished_name(domain, None, common_name);
    Ok(params)
}

fn new_ca(common_name: &str, domain: &str) -> Result<Ca, DevPkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err(common_name))?;
    let mut params = base_params(common_name, domain)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&key).map_err(gen_err(common_name))?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    })
}

fn issue_from(
    ca: &Ca,
    params: &CertificateParams,
    common_name: &str,
) -> Result<IssuedCert, DevPkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err(common_name))?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(gen_err(common_name))?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), DevPkiError> {
    let io = |source| DevPkiError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(io)?;
    #[cfg(unix)]
    if private {
        // The mode above applies only when the file is created.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}
