//! The node's signing identity, as the block writer and the config paths use it.

use bytes::Bytes;
use korder_proto::Message;
use korder_proto::common::SignatureHeader;

/// Why a signature could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SignError(pub String);

/// Something that signs as this node.
pub trait Signer: Send + Sync + 'static {
    /// The marshalled `msp.SerializedIdentity` of the signer.
    fn serialized_identity(&self) -> Bytes;

    /// An ECDSA signature (DER, low-S) over SHA-256 of `message`.
    fn sign(&self, message: &[u8]) -> Result<Bytes, SignError>;

    /// A marshalled `SignatureHeader{creator, nonce}` with a fresh 24-byte nonce.
    fn new_signature_header(&self) -> Result<Bytes, SignError> {
        let mut nonce = [0u8; 24];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SignError("no system randomness".into()))?;
        Ok(SignatureHeader {
            creator: self.serialized_identity(),
            nonce: Bytes::copy_from_slice(&nonce),
        }
        .encode_to_vec()
        .into())
    }
}

impl Signer for korder_msp::signer::SigningIdentity {
    fn serialized_identity(&self) -> Bytes {
        self.serialized()
    }

    fn sign(&self, message: &[u8]) -> Result<Bytes, SignError> {
        korder_msp::signer::SigningIdentity::sign(self, message)
            .map_err(|e| SignError(e.to_string()))
    }

    fn new_signature_header(&self) -> Result<Bytes, SignError> {
        korder_msp::signer::SigningIdentity::new_signature_header(self)
            .map_err(|e| SignError(e.to_string()))
    }
}

/// The node's signer builds orderer envelopes (channelconfig's envelope helpers).
impl korder_channelconfig::envelope::EnvelopeSigner for dyn Signer {
    type Error = SignError;

    fn new_signature_header(&self) -> Result<Bytes, SignError> {
        Signer::new_signature_header(self)
    }

    fn sign(&self, message: &[u8]) -> Result<Bytes, SignError> {
        Signer::sign(self, message)
    }
}
