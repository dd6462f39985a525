//! Identities for korder: X.509 certificates, ECDSA signatures, MSP directories,
//! MSP validation and a development PKI.
//!
//! What Fabric calls the X.509 "bccsp" MSP, reduced to what an orderer needs:
//!
//! - [`signature`]: ECDSA P-256 / SHA-256 verification (low-S only) and DER handling.
//! - [`cert`]: certificate parsing into owned fields (names, validity, OUs, SKI/AKI),
//!   and sanitisation: re-encoding a certificate's own ECDSA signature in low-S form.
//! - [`identity`]: `SerializedIdentity` decoding and signature checks.
//! - [`signer`]: the node's own signing identity, loaded from an MSP directory.
//! - [`mspdir`]: reading Fabric's on-disk MSP layout and its `config.yaml`.
//! - [`msp`]: a channel MSP built from `FabricMSPConfig`: sanitised roots, intermediates
//!   and admins, identity deserialisation (with sanitisation), validation and principals.
//! - [`devpki`]: generating a CA, node and client certificates and MSP directories.
//!
//! This crate does no network I/O and keeps no global state. Every hashed or signed
//! quantity is taken as bytes given by the caller; nothing is re-marshalled here
//! before it is verified. The one re-encoding, sanitisation, only serves to identify
//! certificates (identity ids, admin and IDENTITY principal comparisons).

pub mod cert;
pub mod devpki;
pub mod identity;
pub mod msp;
pub mod mspdir;
pub mod signature;
pub mod signer;

pub use cert::{
    CertError, Certificate, ChainError, HasPublicKey, SanitizeError, sanitize_der,
    with_signature_value,
};
pub use identity::{Identity, IdentityError};
pub use msp::{Msp, MspError, MspVersion};
pub use signature::{
    EcCurve, EcdsaSignature, KeyError, PublicKey, VerifyError, signature_to_low_s,
    verify_ecdsa_p256_sha256,
};
