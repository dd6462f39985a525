//! The node's own signing identity: a certificate and its P-256 private key.
//!
//! Signatures are DER ECDSA over SHA-256 with `s` normalised to the low half of the
//! curve order, which is what Fabric verifiers demand.

use crate::cert::{CertError, Certificate, HasPublicKey};
use crate::identity::Identity;
use crate::mspdir::{MspDirError, files_in};
use crate::signature::{EcdsaSignature, KeyError, PublicKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use bytes::Bytes;
use korder_proto::Message;
use korder_proto::common::{Envelope, SignatureHeader};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Length of the random nonce in a `SignatureHeader`, in bytes.
pub const NONCE_LEN: usize = 24;

/// Why a signing identity could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The MSP directory could not be read.
    #[error(transparent)]
    MspDir(#[from] MspDirError),
    /// `signcerts/` holds no certificate.
    #[error("no signing certificate in {dir}")]
    NoSignCert {
        /// The `signcerts` folder.
        dir: PathBuf,
    },
    /// No key in `keystore/` matches the signing certificate.
    #[error("no private key in {dir} matches the signing certificate {subject:?}")]
    NoMatchingKey {
        /// The `keystore` folder.
        dir: PathBuf,
        /// The certificate's subject.
        subject: String,
    },
    /// A PEM private key could not be used.
    #[error("bad private key: {reason}")]
    BadKey {
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate cannot be parsed.
    #[error("bad signing certificate: {0}")]
    Certificate(#[from] CertError),
    /// The certificate's key is not a P-256 key.
    #[error("signing certificate key: {0}")]
    CertificateKey(#[from] KeyError),
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the signing certificate {subject:?}")]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
    },
    /// The signing certificate's NotAfter has passed.
    #[error("signing certificate {subject:?} expired at unix time {not_after_unix_s}")]
    Expired {
        /// The certificate's subject.
        subject: String,
        /// Its NotAfter, seconds since the Unix epoch.
        not_after_unix_s: i64,
    },
}

/// Why a signature or nonce could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The system random source failed.
    #[error("the system random number generator failed")]
    Random,
    /// The crypto library refused to sign.
    #[error("ECDSA signing failed")]
    Signing,
}

/// A local identity able to sign: the certificate, its MSP id and the private key.
pub struct SigningIdentity {
    identity: Identity,
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("msp_id", &self.identity.msp_id())
            .field("subject", &self.identity.certificate().subject())
            .finish_non_exhaustive()
    }
}

impl SigningIdentity {
    /// Loads the signing identity of an MSP directory, refusing an expired certificate.
    ///
    /// Uses the first certificate of `signcerts/` (files sorted by name) and the key
    /// in `keystore/` whose public key matches it.
    pub fn load_msp_dir(dir: impl AsRef<Path>, msp_id: &str) -> Result<Self, SignerError> {
        Self::load_msp_dir_at(dir, msp_id, SystemTime::now())
    }

    /// As [`Self::load_msp_dir`], checking expiry against `now`.
    pub fn load_msp_dir_at(
        dir: impl AsRef<Path>,
        msp_id: &str,
        now: SystemTime,
    ) -> Result<Self, SignerError> {
        let dir = dir.as_ref();
        let signcerts = dir.join("signcerts");
        let cert = files_in(&signcerts)?
            .into_iter()
            .find(|(_, bytes)| crate::cert::looks_like_pem(bytes))
            .ok_or_else(|| SignerError::NoSignCert {
                dir: signcerts.clone(),
            })
            .and_then(|(path, bytes)| {
                Certificate::from_pem(&bytes).map_err(|source| {
                    SignerError::MspDir(MspDirError::Certificate { path, source })
                })
            })?;
        let cert_key = cert.public_key()?.clone();
        let keystore = dir.join("keystore");
        let mut key = None;
        for (_, bytes) in files_in(&keystore)? {
            // Other files (other keys, notes) may sit in the keystore: skip what does not match.
            if let Ok(candidate) = parse_private_key(&bytes)
                && candidate.public_key().as_ref() == cert_key.sec1_point().as_slice()
            {
                key = Some(candidate);
                break;
            }
        }
        let key = key.ok_or_else(|| SignerError::NoMatchingKey {
            dir: keystore,
            subject: cert.subject().to_owned(),
        })?;
        let signer = Self::from_parts(msp_id, cert, key)?;
        signer.check_not_expired(now)?;
        Ok(signer)
    }

    /// Builds a signing identity from a PEM certificate and a PEM private key
    /// (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`).
    pub fn from_pem(msp_id: &str, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, SignerError> {
        let cert = Certificate::from_pem(cert_pem)?;
        let key = parse_private_key(key_pem)?;
        Self::from_parts(msp_id, cert, key)
    }

    fn from_parts(msp_id: &str, cert: Certificate, key: EcdsaKeyPair) -> Result<Self, SignerError> {
        if key.public_key().as_ref() != cert.public_key()?.sec1_point().as_slice() {
            return Err(SignerError::KeyMismatch {
                subject: cert.subject().to_owned(),
            });
        }
        Ok(Self {
            identity: Identity::new(msp_id, cert),
            key,
            rng: SystemRandom::new(),
        })
    }

    /// Fails if the signing certificate has expired at `now`.
    pub fn check_not_expired(&self, now: SystemTime) -> Result<(), SignerError> {
        let cert = self.identity.certificate();
        if cert.is_expired_at(now) {
            return Err(SignerError::Expired {
                subject: cert.subject().to_owned(),
                not_after_unix_s: cert.not_after_unix_s(),
            });
        }
        Ok(())
    }

    /// The public identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The MSP id.
    pub fn msp_id(&self) -> &str {
        self.identity.msp_id()
    }

    /// The signing certificate.
    pub fn certificate(&self) -> &Certificate {
        self.identity.certificate()
    }

    /// The marshalled `SerializedIdentity` (`mspid`, PEM certificate).
    pub fn serialized(&self) -> Bytes {
        self.identity.serialized().clone()
    }

    /// Signs `message`: SHA-256, ECDSA P-256, low-S, DER.
    pub fn sign(&self, message: &[u8]) -> Result<Bytes, SignError> {
        let fixed = self
            .key
            .sign(&self.rng, message)
            .map_err(|_| SignError::Signing)?;
        let sig = EcdsaSignature::from_fixed(fixed.as_ref())
            .map_err(|_| SignError::Signing)?
            .to_low_s();
        Ok(Bytes::from(sig.to_der()))
    }

    /// A fresh random nonce of [`NONCE_LEN`] bytes.
    pub fn new_nonce(&self) -> Result<[u8; NONCE_LEN], SignError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SignError::Random)?;
        Ok(nonce)
    }

    /// A marshalled `SignatureHeader { creator: serialized(), nonce: 24 random bytes }`.
    pub fn new_signature_header(&self) -> Result<Bytes, SignError> {
        let header = SignatureHeader {
            creator: self.serialized(),
            nonce: Bytes::copy_from_slice(&self.new_nonce()?),
        };
        Ok(Bytes::from(header.encode_to_vec()))
    }

    /// Wraps already-marshalled payload bytes in an `Envelope` signed by this identity.
    pub fn sign_envelope(&self, payload: Bytes) -> Result<Envelope, SignError> {
        let signature = self.sign(&payload)?;
        Ok(Envelope { payload, signature })
    }
}

impl HasPublicKey for SigningIdentity {
    fn public_key(&self) -> Result<&PublicKey, KeyError> {
        self.identity.public_key()
    }
}

/// Parses a PEM P-256 private key: PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`.
fn parse_private_key(pem_bytes: &[u8]) -> Result<EcdsaKeyPair, SignerError> {
    let bad = |reason: String| SignerError::BadKey { reason };
    let block = crate::cert::first_pem(pem_bytes).map_err(|e| bad(e.to_string()))?;
    match block.tag() {
        "PRIVATE KEY" | "EC PRIVATE KEY" => {}
        other => return Err(bad(format!("PEM label {other:?} is not a private key"))),
    }
    EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, block.contents())
        .map_err(|e| bad(format!("not an EC P-256 private key: {e}")))
}
