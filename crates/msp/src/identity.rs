//! Identities as they travel: `msp.SerializedIdentity { mspid, id_bytes = PEM certificate }`.

use crate::cert::{CertError, Certificate, HasPublicKey};
use crate::signature::{KeyError, PublicKey, VerifyError};
use bytes::Bytes;
use korder_proto::Message;
use korder_proto::msp::SerializedIdentity;
use std::time::SystemTime;

/// Why serialized identity bytes could not be turned into an [`Identity`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The bytes are not a `SerializedIdentity` message.
    #[error("cannot decode SerializedIdentity ({len} bytes): {source}")]
    Decode {
        /// Length of the input.
        len: usize,
        /// The protobuf decoder's error.
        source: prost::DecodeError,
    },
    /// The identity names no MSP.
    #[error("serialized identity has an empty MSP id")]
    EmptyMspId,
    /// `id_bytes` is not a PEM X.509 certificate.
    #[error("identity of MSP {msp_id:?} does not carry a valid PEM certificate: {source}")]
    Certificate {
        /// The MSP the identity claims.
        msp_id: String,
        /// What is wrong with the certificate.
        source: CertError,
    },
}

/// An X.509 identity: an MSP id and a certificate.
///
/// Keeps the serialized bytes exactly as received, so that signature checks never
/// depend on a re-encoding. An MSP that deserializes the identity also records the
/// certificate's sanitised form (its own signature in low-S form, see
/// [`crate::Certificate::sanitized`]): that form gives the identity id and is what
/// admin and IDENTITY principals compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    msp_id: String,
    serialized: Bytes,
    id_bytes: Bytes,
    certificate: Certificate,
    /// The low-S form of `certificate`, once an MSP has computed it.
    sanitized: Option<Certificate>,
}

impl Identity {
    /// Decodes a marshalled `SerializedIdentity` whose `id_bytes` is a PEM certificate.
    pub fn from_serialized(bytes: &[u8]) -> Result<Self, IdentityError> {
        let sid = SerializedIdentity::decode(bytes).map_err(|source| IdentityError::Decode {
            len: bytes.len(),
            source,
        })?;
        if sid.mspid.is_empty() {
            return Err(IdentityError::EmptyMspId);
        }
        let certificate =
            Certificate::from_pem(&sid.id_bytes).map_err(|source| IdentityError::Certificate {
                msp_id: sid.mspid.clone(),
                source,
            })?;
        Ok(Self {
            msp_id: sid.mspid,
            serialized: Bytes::copy_from_slice(bytes),
            id_bytes: sid.id_bytes,
            certificate,
            sanitized: None,
        })
    }

    /// Builds the identity of `certificate` in MSP `msp_id`, serialized with the certificate's PEM.
    pub fn new(msp_id: &str, certificate: Certificate) -> Self {
        let id_bytes = Bytes::from(certificate.to_pem());
        let sid = SerializedIdentity {
            mspid: msp_id.to_owned(),
            id_bytes: id_bytes.clone(),
        };
        Self {
            msp_id: msp_id.to_owned(),
            serialized: Bytes::from(sid.encode_to_vec()),
            id_bytes,
            certificate,
            sanitized: None,
        }
    }

    /// This identity with `sanitized` recorded as the low-S form of its certificate.
    ///
    /// `sanitized` must be the same certificate up to its signature encoding.
    pub(crate) fn with_sanitized(mut self, sanitized: Certificate) -> Self {
        assert_eq!(
            sanitized.subject_raw(),
            self.certificate.subject_raw(),
            "a sanitised certificate keeps the subject"
        );
        assert_eq!(
            sanitized.serial(),
            self.certificate.serial(),
            "a sanitised certificate keeps the serial number"
        );
        self.sanitized = Some(sanitized);
        self
    }

    /// Whether an MSP has recorded the sanitised form of the certificate.
    pub fn is_sanitized(&self) -> bool {
        self.sanitized.is_some()
    }

    /// The certificate in sanitised (low-S) form when an MSP has computed it, else
    /// the certificate as carried.
    pub fn sanitized_certificate(&self) -> &Certificate {
        self.sanitized.as_ref().unwrap_or(&self.certificate)
    }

    /// SHA-256 of the DER of [`Self::sanitized_certificate`]: with the MSP id, what
    /// tells identities apart (the same certificate in high-S and low-S form is one
    /// identity).
    pub fn id_hash(&self) -> [u8; 32] {
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            self.sanitized_certificate().der(),
        );
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// The identity id: hex of [`Self::id_hash`].
    pub fn id(&self) -> String {
        hex::encode(self.id_hash())
    }

    /// The MSP this identity claims to belong to.
    pub fn msp_id(&self) -> &str {
        &self.msp_id
    }

    /// The identity's certificate as carried (see [`Self::sanitized_certificate`]).
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// When the certificate expires (its NotAfter).
    pub fn expires_at(&self) -> SystemTime {
        self.certificate.not_after()
    }

    /// The marshalled `SerializedIdentity`, exactly as received or built.
    pub fn serialized(&self) -> &Bytes {
        &self.serialized
    }

    /// The `id_bytes` field: the certificate's PEM as carried.
    pub fn id_bytes(&self) -> &Bytes {
        &self.id_bytes
    }

    /// Verifies a DER ECDSA signature over `message` (SHA-256, low-S only).
    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> Result<(), VerifyError> {
        crate::signature::verify_ecdsa_p256_sha256(self, message, der_signature)
    }
}

impl HasPublicKey for Identity {
    fn public_key(&self) -> Result<&PublicKey, KeyError> {
        self.certificate.public_key()
    }
}
