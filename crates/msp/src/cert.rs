//! X.509 certificates: the fields an MSP looks at, extracted once into owned values.

use crate::signature::{EcCurve, KeyError, PublicKey, VerifyError};
use bytes::Bytes;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why certificate bytes could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The input holds no `-----BEGIN ...-----` block.
    #[error("no PEM block found")]
    NoPem,
    /// A PEM block is present but cannot be decoded.
    #[error("invalid PEM: {reason}")]
    Pem {
        /// What the PEM decoder reported.
        reason: String,
    },
    /// A PEM block carries a label other than `CERTIFICATE`.
    #[error("PEM block is labelled {label:?}, expected \"CERTIFICATE\"")]
    WrongPemLabel {
        /// The label found.
        label: String,
    },
    /// The DER is not an X.509 certificate.
    #[error("invalid X.509 certificate: {reason}")]
    X509 {
        /// What the parser reported.
        reason: String,
    },
    /// Bytes follow the DER certificate.
    #[error("{len} bytes of trailing data after the DER certificate")]
    TrailingData {
        /// How many bytes follow.
        len: usize,
    },
}

/// Why a certificate's own signature could not be put into low-S form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SanitizeError {
    /// The issuer's key is not on a curve whose order is known here.
    #[error(
        "certificate {subject:?}: issuer key {issuer:?} is not a P-256 or P-384 ECDSA key, cannot normalise its signature"
    )]
    UnsupportedIssuerKey {
        /// The certificate's subject.
        subject: String,
        /// The issuer's subject.
        issuer: String,
    },
    /// The outer structure of the certificate is not `SEQUENCE { tbs, algorithm, BIT STRING }`.
    #[error("certificate DER is malformed: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// The signature value is not a valid DER ECDSA signature for the issuer's curve.
    #[error("certificate signature value: {0}")]
    Signature(VerifyError),
    /// The re-encoded certificate does not parse back.
    #[error("re-encoded certificate: {0}")]
    Reparse(CertError),
}

/// Rewrites an ECDSA-signed DER certificate so that its own signature is in low-S
/// form, given the curve of the issuer's key.
///
/// Returns `None` when the signature is already low-S: the certificate is then used
/// byte for byte as given. Otherwise returns `SEQUENCE { tbsCertificate,
/// signatureAlgorithm, BIT STRING }` where the first two elements are copied from the
/// input unchanged and the bit string (no unused bits) holds the minimal DER of
/// `(r, n - s)`. The caller decides whether the certificate is ECDSA-signed.
pub fn sanitize_der(der: &[u8], issuer_curve: EcCurve) -> Result<Option<Vec<u8>>, SanitizeError> {
    let parts = split_certificate(der)?;
    let Some(low) = crate::signature::signature_to_low_s(issuer_curve, &parts.signature)
        .map_err(SanitizeError::Signature)?
    else {
        return Ok(None);
    };
    Ok(Some(parts.encode(&low)))
}

/// Re-encodes a DER certificate with another signature value: the tbsCertificate and
/// signatureAlgorithm elements are copied unchanged, `signature` goes into the BIT
/// STRING. Used to present one certificate in several signature encodings.
pub fn with_signature_value(der: &[u8], signature: &[u8]) -> Result<Vec<u8>, SanitizeError> {
    Ok(split_certificate(der)?.encode(signature))
}

/// The three elements of a certificate.
struct CertificateParts {
    /// The whole tbsCertificate element, as encoded in the input.
    tbs: Vec<u8>,
    /// The whole signatureAlgorithm element, as encoded in the input.
    algorithm: Vec<u8>,
    /// The contents of the signatureValue BIT STRING after the unused-bits octet.
    signature: Vec<u8>,
}

impl CertificateParts {
    fn encode(&self, signature: &[u8]) -> Vec<u8> {
        yasna::construct_der(|writer| {
            writer.write_sequence(|seq| {
                seq.next().write_der(&self.tbs);
                seq.next().write_der(&self.algorithm);
                seq.next()
                    .write_bitvec_bytes(signature, signature.len() * 8);
            });
        })
    }
}

/// Splits a DER certificate into its three elements; tbsCertificate and
/// signatureAlgorithm are taken whole, as they are, without being decoded.
fn split_certificate(der: &[u8]) -> Result<CertificateParts, SanitizeError> {
    let (tbs, algorithm, (signature, bits)) = yasna::parse_der(der, |reader| {
        reader.read_sequence(|seq| {
            let tbs = seq.next().read_der()?;
            let algorithm = seq.next().read_der()?;
            let signature = seq.next().read_bitvec_bytes()?;
            Ok((tbs, algorithm, signature))
        })
    })
    .map_err(|e| SanitizeError::Malformed {
        reason: match e.kind() {
            yasna::ASN1ErrorKind::Eof => "truncated certificate",
            yasna::ASN1ErrorKind::Extra => "data after the signatureValue or the certificate",
            _ => "expected SEQUENCE { tbsCertificate, signatureAlgorithm, BIT STRING }",
        },
    })?;
    if bits != signature.len() * 8 {
        return Err(SanitizeError::Malformed {
            reason: "signatureValue has unused bits",
        });
    }
    if signature.is_empty() {
        return Err(SanitizeError::Malformed {
            reason: "empty signatureValue",
        });
    }
    Ok(CertificateParts {
        tbs,
        algorithm,
        signature,
    })
}

/// ECDSA signature algorithms (with SHA-1, SHA-256, SHA-384, SHA-512).
const OIDS_ECDSA_SIGNATURE: [&str; 4] = [
    "1.2.840.10045.4.1",
    "1.2.840.10045.4.3.2",
    "1.2.840.10045.4.3.3",
    "1.2.840.10045.4.3.4",
];

/// Why a certificate is not issued by a candidate issuer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The certificate's issuer name is not the candidate's subject name.
    #[error("certificate issuer {issuer:?} is not the candidate issuer {candidate:?}")]
    NameMismatch {
        /// The certificate's issuer.
        issuer: String,
        /// The candidate's subject.
        candidate: String,
    },
    /// The certificate is signed with an algorithm other than ECDSA with SHA-256.
    #[error("certificate signature algorithm {oid} is not supported (only ecdsa-with-SHA256)")]
    UnsupportedAlgorithm {
        /// The signature algorithm OID.
        oid: String,
    },
    /// The signature does not verify with the candidate's key.
    #[error("certificate signature: {0}")]
    Signature(VerifyError),
}

/// Checks an X.509 signature (certificate or CRL) made by `issuer` over `tbs`.
///
/// Accepts high-S: X.509 signatures are not subject to Fabric's low-S rule.
pub(crate) fn verify_signed_by(
    tbs: &[u8],
    algorithm_oid: &str,
    signature_value: &[u8],
    issuer: &Certificate,
) -> Result<(), ChainError> {
    if algorithm_oid != OID_ECDSA_WITH_SHA256 {
        return Err(ChainError::UnsupportedAlgorithm {
            oid: algorithm_oid.to_owned(),
        });
    }
    let sig = crate::signature::EcdsaSignature::from_der(signature_value)
        .map_err(ChainError::Signature)?
        .to_low_s();
    issuer
        .public_key()
        .map_err(|e| ChainError::Signature(e.into()))?
        .verify(tbs, &sig.to_der())
        .map_err(ChainError::Signature)
}

/// `ecdsa-with-SHA256`.
const OID_ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";

/// The public key carried by a certificate, as far as korder can use it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SubjectKey {
    P256(PublicKey),
    Unusable(KeyError),
}

/// Anything that holds a P-256 verification key.
pub trait HasPublicKey {
    /// The key, or why there is no usable one.
    fn public_key(&self) -> Result<&PublicKey, KeyError>;
}

impl HasPublicKey for PublicKey {
    fn public_key(&self) -> Result<&PublicKey, KeyError> {
        Ok(self)
    }
}

/// A parsed X.509 certificate.
///
/// Keeps the DER exactly as decoded from the input, and owned copies of the fields
/// the MSP needs: names, validity, OUs, key identifiers, CA flag and the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    der: Bytes,
    subject: String,
    issuer: String,
    subject_raw: Bytes,
    issuer_raw: Bytes,
    serial: Bytes,
    not_before_unix_s: i64,
    not_after_unix_s: i64,
    organizational_units: Vec<String>,
    common_name: Option<String>,
    subject_key_id: Option<Bytes>,
    authority_key_id: Option<Bytes>,
    is_ca: bool,
    key: SubjectKey,
    key_curve: Option<EcCurve>,
    tbs_raw: Bytes,
    signature_algorithm: String,
    signature_value: Bytes,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("serial", &hex::encode(&self.serial))
            .field("not_after_unix_s", &self.not_after_unix_s)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Parses a certificate given as PEM (the first `CERTIFICATE` block) or as raw DER.
    pub fn from_pem_or_der(input: &[u8]) -> Result<Self, CertError> {
        if looks_like_pem(input) {
            Self::from_pem(input)
        } else {
            Self::from_der(input)
        }
    }

    /// Parses the first PEM block, which must be a `CERTIFICATE`; anything after it is ignored.
    pub fn from_pem(input: &[u8]) -> Result<Self, CertError> {
        let pem = first_pem(input)?;
        if pem.tag() != "CERTIFICATE" {
            return Err(CertError::WrongPemLabel {
                label: pem.tag().to_owned(),
            });
        }
        Self::from_der(pem.contents())
    }

    /// Parses every `CERTIFICATE` block of a PEM file (other labels are skipped).
    pub fn all_from_pem(input: &[u8]) -> Result<Vec<Self>, CertError> {
        let blocks = pem::parse_many(input).map_err(|e| CertError::Pem {
            reason: e.to_string(),
        })?;
        let mut certs = Vec::new();
        for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
            certs.push(Self::from_der(block.contents())?);
        }
        if certs.is_empty() {
            return Err(CertError::NoPem);
        }
        Ok(certs)
    }

    /// Parses a DER certificate; trailing bytes are an error.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let (rest, x509) = X509Certificate::from_der(der).map_err(|e| CertError::X509 {
            reason: e.to_string(),
        })?;
        if !rest.is_empty() {
            return Err(CertError::TrailingData { len: rest.len() });
        }
        Self::from_parsed(der, &x509)
    }

    fn from_parsed(der: &[u8], x509: &X509Certificate<'_>) -> Result<Self, CertError> {
        let x509_err = |reason: String| CertError::X509 { reason };
        let tbs = &x509.tbs_certificate;
        let organizational_units = tbs
            .subject
            .iter_organizational_unit()
            .map(|attr| attr.as_str().map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| x509_err(format!("subject OU is not a string: {e}")))?;
        let common_name = tbs
            .subject
            .iter_common_name()
            .next()
            .and_then(|attr| attr.as_str().ok())
            .map(str::to_owned);
        let mut subject_key_id = None;
        let mut authority_key_id = None;
        for ext in tbs.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(ki) => {
                    subject_key_id = Some(Bytes::copy_from_slice(ki.0));
                }
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    authority_key_id = aki
                        .key_identifier
                        .as_ref()
                        .map(|ki| Bytes::copy_from_slice(ki.0));
                }
                _ => {}
            }
        }
        let is_ca = x509
            .basic_constraints()
            .map_err(|e| x509_err(format!("basic constraints: {e}")))?
            .is_some_and(|bc| bc.value.ca);
        Ok(Self {
            der: Bytes::copy_from_slice(der),
            subject: tbs.subject.to_string(),
            issuer: tbs.issuer.to_string(),
            subject_raw: Bytes::copy_from_slice(tbs.subject.as_raw()),
            issuer_raw: Bytes::copy_from_slice(tbs.issuer.as_raw()),
            serial: Bytes::copy_from_slice(tbs.raw_serial()),
            not_before_unix_s: tbs.validity.not_before.timestamp(),
            not_after_unix_s: tbs.validity.not_after.timestamp(),
            organizational_units,
            common_name,
            subject_key_id,
            authority_key_id,
            is_ca,
            key: subject_key(x509),
            key_curve: key_curve(x509),
            tbs_raw: Bytes::copy_from_slice(tbs.as_ref()),
            signature_algorithm: x509.signature_algorithm.algorithm.to_id_string(),
            signature_value: Bytes::copy_from_slice(&x509.signature_value.data),
        })
    }

    /// The certificate's DER encoding, as it was decoded.
    pub fn der(&self) -> &Bytes {
        &self.der
    }

    /// The certificate as a PEM `CERTIFICATE` block (64-column base64, trailing newline).
    pub fn to_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.der)
    }

    /// The subject name, RFC 4514-style (`C=US, O=..., CN=...`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The issuer name, RFC 4514-style.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The DER of the subject name, for exact comparisons.
    pub fn subject_raw(&self) -> &[u8] {
        &self.subject_raw
    }

    /// The DER of the issuer name, for exact comparisons.
    pub fn issuer_raw(&self) -> &[u8] {
        &self.issuer_raw
    }

    /// The serial number's big-endian bytes, as encoded.
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// NotBefore, seconds since the Unix epoch.
    pub fn not_before_unix_s(&self) -> i64 {
        self.not_before_unix_s
    }

    /// NotAfter, seconds since the Unix epoch.
    pub fn not_after_unix_s(&self) -> i64 {
        self.not_after_unix_s
    }

    /// NotBefore as a system time.
    pub fn not_before(&self) -> SystemTime {
        unix_to_system_time(self.not_before_unix_s)
    }

    /// NotAfter as a system time: the moment the certificate expires.
    pub fn not_after(&self) -> SystemTime {
        unix_to_system_time(self.not_after_unix_s)
    }

    /// Whether `now` is after NotAfter.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now > self.not_after()
    }

    /// The subject's organizational units, in certificate order.
    pub fn organizational_units(&self) -> &[String] {
        &self.organizational_units
    }

    /// The subject's first common name, if any.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// The Subject Key Identifier extension, if present.
    pub fn subject_key_id(&self) -> Option<&[u8]> {
        self.subject_key_id.as_deref()
    }

    /// The key identifier of the Authority Key Identifier extension, if present.
    pub fn authority_key_id(&self) -> Option<&[u8]> {
        self.authority_key_id.as_deref()
    }

    /// Whether basic constraints mark this certificate as a CA.
    pub fn is_ca(&self) -> bool {
        self.is_ca
    }

    /// Checks that `issuer` issued this certificate: names chain and the signature
    /// (ECDSA with SHA-256) verifies with the issuer's key.
    ///
    /// Certificate signatures may be high-S (X.509 does not forbid it), so both forms
    /// are accepted here, unlike for Fabric message signatures.
    pub fn verify_issued_by(&self, issuer: &Certificate) -> Result<(), ChainError> {
        if self.issuer_raw != issuer.subject_raw {
            return Err(ChainError::NameMismatch {
                issuer: self.issuer.clone(),
                candidate: issuer.subject.clone(),
            });
        }
        verify_signed_by(
            &self.tbs_raw,
            &self.signature_algorithm,
            &self.signature_value,
            issuer,
        )
    }

    /// The DER of the tbsCertificate element (the signed part).
    pub fn tbs_der(&self) -> &[u8] {
        &self.tbs_raw
    }

    /// The certificate's own signature value (for ECDSA, a DER `SEQUENCE { r, s }`).
    pub fn signature_value(&self) -> &[u8] {
        &self.signature_value
    }

    /// Whether the certificate's own signature is an ECDSA signature.
    pub fn is_ecdsa_signed(&self) -> bool {
        OIDS_ECDSA_SIGNATURE.contains(&self.signature_algorithm.as_str())
    }

    /// The curve of the subject's key, when it is an ECDSA key on a curve known here.
    pub fn key_curve(&self) -> Option<EcCurve> {
        self.key_curve
    }

    /// This certificate with its own signature in low-S form, `issuer` being the
    /// certificate whose key signed it (itself for a self-signed root).
    ///
    /// A certificate not signed with ECDSA, or already low-S, is returned unchanged.
    /// The signature is not verified here; chain building does that.
    pub fn sanitized(&self, issuer: &Certificate) -> Result<Certificate, SanitizeError> {
        if !self.is_ecdsa_signed() {
            return Ok(self.clone());
        }
        let curve = issuer
            .key_curve
            .ok_or_else(|| SanitizeError::UnsupportedIssuerKey {
                subject: self.subject.clone(),
                issuer: issuer.subject.clone(),
            })?;
        match sanitize_der(&self.der, curve)? {
            None => Ok(self.clone()),
            Some(der) => Certificate::from_der(&der).map_err(SanitizeError::Reparse),
        }
    }

    /// Verifies a DER ECDSA signature over `message` with this certificate's key.
    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> Result<(), VerifyError> {
        crate::signature::verify_ecdsa_p256_sha256(self, message, der_signature)
    }
}

impl HasPublicKey for Certificate {
    fn public_key(&self) -> Result<&PublicKey, KeyError> {
        match &self.key {
            SubjectKey::P256(key) => Ok(key),
            SubjectKey::Unusable(err) => Err(err.clone()),
        }
    }
}

fn subject_key(x509: &X509Certificate<'_>) -> SubjectKey {
    let spki = x509.public_key();
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return SubjectKey::Unusable(KeyError::Unsupported {
            algorithm: format!("key algorithm {}", spki.algorithm.algorithm),
        });
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    match curve {
        Some(oid) if oid == OID_EC_P256 => {
            match PublicKey::from_sec1_point(&spki.subject_public_key.data) {
                Ok(key) => SubjectKey::P256(key),
                Err(err) => SubjectKey::Unusable(err),
            }
        }
        Some(oid) => SubjectKey::Unusable(KeyError::Unsupported {
            algorithm: format!("EC curve {oid}"),
        }),
        None => SubjectKey::Unusable(KeyError::Unsupported {
            algorithm: "EC key without a named curve".to_owned(),
        }),
    }
}

fn key_curve(x509: &X509Certificate<'_>) -> Option<EcCurve> {
    let spki = x509.public_key();
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return None;
    }
    let oid = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
    if oid == OID_EC_P256 {
        Some(EcCurve::P256)
    } else if oid == OID_NIST_EC_P384 {
        Some(EcCurve::P384)
    } else {
        None
    }
}

fn unix_to_system_time(unix_s: i64) -> SystemTime {
    if unix_s >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix_s.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix_s.unsigned_abs())
    }
}

pub(crate) fn looks_like_pem(input: &[u8]) -> bool {
    input
        .windows(b"-----BEGIN ".len())
        .any(|w| w == b"-----BEGIN ")
}

/// Decodes the first PEM block of `input`; anything after it is ignored.
pub(crate) fn first_pem(input: &[u8]) -> Result<pem::Pem, CertError> {
    if !looks_like_pem(input) {
        return Err(CertError::NoPem);
    }
    pem::parse(input).map_err(|e| CertError::Pem {
        reason: e.to_string(),
    })
}

/// Encodes `der` as a PEM block with the given label (64-column base64, LF line endings).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
