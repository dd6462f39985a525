//! `BlockVerifier`: decides whether a block pulled from another orderer may follow
//! the blocks the node already trusts. Pure: no I/O, no clock; signature checks
//! are CPU work, so the puller calls it off the runtime.
//!
//! Starting points:
//! - [`BlockVerifier::after`]: the node's last block and the config bundle in force
//!   at it (catching up a channel the node has);
//! - [`BlockVerifier::join`]: nothing, and a trusted config block `N` of the channel
//!   (joining it). The chain is read from block 0 under its own configs, and block
//!   `N` must be the trusted block itself, byte for byte in its header.
//!
//! Each next block must have: the next number; as `previous_hash` the header hash of
//! the block before it (none for block 0); a `data_hash` over its data; unless it is a config block,
//! at least one transaction, each an envelope with a payload and a signature;
//! signatures in the SIGNATURES
//! slot that satisfy `/Channel/Orderer/BlockValidation` of the bundle in force
//! (block 0 carries none and is exempt); a LAST_CONFIG index naming the newest
//! config block. A config block (one CONFIG envelope) must decode to a bundle of
//! this channel whose sequence is the next one; that bundle is in force from the
//! next block on.

use std::sync::Arc;

use bytes::Bytes;
use korder_channelconfig::Bundle;
use korder_channelconfig::policies::{BLOCK_VALIDATION, PolicyError, SignedData};
use korder_ledger::block::{data_hash, header_hash, last_config_index, signed_entries};
use korder_ledger::{BlockError, BlockNumber};
use korder_proto::Message;
use korder_proto::common::{
    Block, BlockHeader, BlockMetadataIndex, ChannelHeader, Envelope, HeaderType, Payload,
};
use korder_types::ids::ConfigSeq;

/// Why a block was refused. Every variant names the block.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The block has no header.
    #[error("block (expected {expected}) has no header")]
    MissingHeader { expected: BlockNumber },
    /// The block is not the next one.
    #[error("block {got} is not the next block: expected block {expected}")]
    WrongNumber {
        expected: BlockNumber,
        got: BlockNumber,
    },
    /// `previous_hash` is not the header hash of the block before.
    #[error(
        "block {number}: previous_hash {got} is not the header hash {expected} of the block before"
    )]
    PreviousHash {
        number: BlockNumber,
        expected: String,
        got: String,
    },
    /// `data_hash` does not match the block's data.
    #[error("block {number}: data_hash {got} does not match its data (hash {expected})")]
    DataHash {
        number: BlockNumber,
        expected: String,
        got: String,
    },
    /// A metadata slot does not decode.
    #[error("block {number}: {source}")]
    Metadata {
        number: BlockNumber,
        #[source]
        source: BlockError,
    },
    /// A block past block 0 without data.
    #[error("block {number} holds no transaction")]
    Empty { number: BlockNumber },
    /// A data entry of a block that is not a config block is not a signed envelope.
    #[error("block {number}: transaction {index} is malformed: {reason}")]
    MalformedTransaction {
        number: BlockNumber,
        index: usize,
        reason: String,
    },
    /// The signatures do not satisfy the BlockValidation policy.
    #[error(
        "block {number}: its signatures do not satisfy {BLOCK_VALIDATION} at config sequence {sequence}: {source}"
    )]
    Signatures {
        number: BlockNumber,
        sequence: ConfigSeq,
        #[source]
        source: PolicyError,
    },
    /// The LAST_CONFIG index does not name the newest config block.
    #[error(
        "block {number}: its last config index is {got}, the newest config block is {expected}"
    )]
    LastConfig {
        number: BlockNumber,
        expected: BlockNumber,
        got: BlockNumber,
    },
    /// A config block whose config cannot be read.
    #[error("config block {number}: {reason}")]
    Config { number: BlockNumber, reason: String },
    /// A config block of another channel.
    #[error("config block {number} is of channel {got}, not {expected}")]
    ConfigChannel {
        number: BlockNumber,
        expected: String,
        got: String,
    },
    /// A config block whose sequence is not the next one.
    #[error("config block {number} has config sequence {got}, expected {expected}")]
    ConfigSequence {
        number: BlockNumber,
        expected: ConfigSeq,
        got: ConfigSeq,
    },
    /// Block 0 of a chain is not a config block.
    #[error("block 0 is not a config block")]
    GenesisNotConfig,
    /// Block 0 of a chain names a block before it.
    #[error("block 0 has previous_hash {got}: the first block of a chain has none")]
    GenesisPreviousHash { got: String },
    /// The block at the trusted block's height differs from it.
    #[error(
        "block {number} differs from the trusted config block: header hash {got}, trusted {expected}"
    )]
    NotTrustedBlock {
        number: BlockNumber,
        expected: String,
        got: String,
    },
    /// The trusted starting point itself is unusable.
    #[error("the trusted block cannot start a verifier: {0}")]
    BadTrustedBlock(String),
}

/// The config block a joined chain must end at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedEnd {
    /// Its number.
    pub number: BlockNumber,
    /// Its header hash.
    pub header_hash: [u8; 32],
}

/// What a verified block changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The block's number.
    pub number: BlockNumber,
    /// The bundle a config block brought (in force from the next block on).
    pub config: Option<Arc<Bundle>>,
}

/// The verifier's state: the last trusted block and the config in force.
#[derive(Debug, Clone)]
pub struct BlockVerifier {
    channel: String,
    /// The bundle in force; `None` only before block 0 of a join.
    bundle: Option<Arc<Bundle>>,
    /// Header of the last verified (or trusted) block.
    last: Option<BlockHeader>,
    /// Number of the newest config block so far.
    last_config: BlockNumber,
    /// Where a joined chain must arrive; `None` once it has.
    end: Option<TrustedEnd>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The CONFIG envelope of `block`: its single data entry when that entry is an
/// envelope whose channel header is of type CONFIG.
pub fn config_envelope(block: &Block) -> Option<&Bytes> {
    let entries = &block.data.as_ref()?.data;
    let [only] = entries.as_slice() else {
        return None;
    };
    let envelope = Envelope::decode(only.as_ref()).ok()?;
    let payload = Payload::decode(envelope.payload.as_ref()).ok()?;
    let header = ChannelHeader::decode(payload.header?.channel_header.as_ref()).ok()?;
    (header.r#type == HeaderType::Config as i32).then_some(only)
}

/// Every data entry of a block that is not a config block must be an envelope with a
/// payload and a signature, and there must be at least one.
fn check_transactions(block: &Block, number: BlockNumber) -> Result<(), VerifyError> {
    let entries = block.data.as_ref().map_or(&[][..], |d| d.data.as_slice());
    if entries.is_empty() {
        return Err(VerifyError::Empty { number });
    }
    for (index, entry) in entries.iter().enumerate() {
        let malformed = |reason: String| VerifyError::MalformedTransaction {
            number,
            index,
            reason,
        };
        let envelope = Envelope::decode(entry.as_ref())
            .map_err(|e| malformed(format!("not an envelope: {e}")))?;
        if envelope.payload.is_empty() {
            return Err(malformed("it has no payload".into()));
        }
        if envelope.signature.is_empty() {
            return Err(malformed("it has no signature".into()));
        }
    }
    Ok(())
}

impl BlockVerifier {
    /// A verifier continuing after `last`, the node's last block, under `bundle`,
    /// the config in force at it (the channel's current bundle).
    pub fn after(last: &Block, bundle: Arc<Bundle>) -> Result<BlockVerifier, VerifyError> {
        let header = last
            .header
            .clone()
            .ok_or_else(|| VerifyError::BadTrustedBlock("the last block has no header".into()))?;
        let number = BlockNumber::new(header.number);
        let last_config = if config_envelope(last).is_some() {
            number
        } else {
            last_config_index(last).map_err(|e| VerifyError::BadTrustedBlock(e.to_string()))?
        };
        Ok(BlockVerifier {
            channel: bundle.channel_id.clone(),
            bundle: Some(bundle),
            last: Some(header),
            last_config,
            end: None,
        })
    }

    /// A verifier for a channel the node joins with `trusted`, a config block of it:
    /// blocks are read from 0, and block `trusted.number` must be `trusted`.
    pub fn join(trusted: &Block) -> Result<BlockVerifier, VerifyError> {
        let header = trusted
            .header
            .as_ref()
            .ok_or_else(|| VerifyError::BadTrustedBlock("it has no header".into()))?;
        let envelope = config_envelope(trusted)
            .ok_or_else(|| VerifyError::BadTrustedBlock("it is not a config block".into()))?;
        let bundle = Bundle::from_config_envelope(envelope)
            .map_err(|e| VerifyError::BadTrustedBlock(e.to_string()))?;
        Ok(BlockVerifier {
            channel: bundle.channel_id,
            bundle: None,
            last: None,
            last_config: BlockNumber::GENESIS,
            end: Some(TrustedEnd {
                number: BlockNumber::new(header.number),
                header_hash: header_hash(header),
            }),
        })
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The number the next block must have.
    pub fn next_number(&self) -> BlockNumber {
        self.last
            .as_ref()
            .map_or(BlockNumber::GENESIS, |h| BlockNumber::new(h.number).next())
    }

    /// The bundle in force for the next block (`None` before block 0 of a join).
    pub fn bundle(&self) -> Option<&Arc<Bundle>> {
        self.bundle.as_ref()
    }

    /// The trusted block a joined chain has yet to reach.
    pub fn pending_end(&self) -> Option<&TrustedEnd> {
        self.end.as_ref()
    }

    /// Checks `block` as the next block and, when it passes, makes it the last
    /// trusted block (and its config, if it is a config block, the one in force).
    /// A refused block changes nothing.
    pub fn verify(&mut self, block: &Block) -> Result<Verified, VerifyError> {
        let expected = self.next_number();
        let header = block
            .header
            .as_ref()
            .ok_or(VerifyError::MissingHeader { expected })?;
        let number = BlockNumber::new(header.number);
        if number != expected {
            return Err(VerifyError::WrongNumber {
                expected,
                got: number,
            });
        }
        self.check_links(block, header, number)?;
        let config = match config_envelope(block) {
            Some(envelope) => Some(Arc::new(self.check_config(number, envelope)?)),
            None if number == BlockNumber::GENESIS => return Err(VerifyError::GenesisNotConfig),
            None => {
                check_transactions(block, number)?;
                None
            }
        };
        if number != BlockNumber::GENESIS {
            self.check_signatures(block, number)?;
        }
        let newest_config = if config.is_some() {
            number
        } else {
            self.last_config
        };
        let recorded =
            last_config_index(block).map_err(|source| VerifyError::Metadata { number, source })?;
        if recorded != newest_config {
            return Err(VerifyError::LastConfig {
                number,
                expected: newest_config,
                got: recorded,
            });
        }
        if let Some(end) = &self.end
            && end.number == number
        {
            let got = header_hash(header);
            if got != end.header_hash {
                return Err(VerifyError::NotTrustedBlock {
                    number,
                    expected: hex(&end.header_hash),
                    got: hex(&got),
                });
            }
        }
        // Every check passed: advance.
        if self.end.as_ref().is_some_and(|e| e.number == number) {
            self.end = None;
        }
        if let Some(bundle) = &config {
            self.bundle = Some(bundle.clone());
            self.last_config = number;
        }
        self.last = Some(header.clone());
        Ok(Verified { number, config })
    }

    /// The hash chain: previous hash and data hash.
    fn check_links(
        &self,
        block: &Block,
        header: &BlockHeader,
        number: BlockNumber,
    ) -> Result<(), VerifyError> {
        if let Some(prev) = &self.last {
            let expected = header_hash(prev);
            if header.previous_hash.as_ref() != expected {
                return Err(VerifyError::PreviousHash {
                    number,
                    expected: hex(&expected),
                    got: hex(&header.previous_hash),
                });
            }
        } else if !header.previous_hash.is_empty() {
            // Block 0 of a join: with an empty previous hash its header is fixed by
            // its data, which must be a config of this channel; any other header
            // would pass here and only be caught by block 1.
            return Err(VerifyError::GenesisPreviousHash {
                got: hex(&header.previous_hash),
            });
        }
        let computed = block
            .data
            .as_ref()
            .map_or_else(|| data_hash(&Default::default()), data_hash);
        if header.data_hash.as_ref() != computed {
            return Err(VerifyError::DataHash {
                number,
                expected: hex(&computed),
                got: hex(&header.data_hash),
            });
        }
        Ok(())
    }

    /// A config block's bundle: this channel, the next sequence (any sequence for
    /// block 0, the chain's first config).
    fn check_config(&self, number: BlockNumber, envelope: &Bytes) -> Result<Bundle, VerifyError> {
        let bundle = Bundle::from_config_envelope(envelope).map_err(|e| VerifyError::Config {
            number,
            reason: e.to_string(),
        })?;
        if bundle.channel_id != self.channel {
            return Err(VerifyError::ConfigChannel {
                number,
                expected: self.channel.clone(),
                got: bundle.channel_id,
            });
        }
        if let Some(current) = &self.bundle {
            let expected = current.sequence.next();
            if bundle.sequence != expected {
                return Err(VerifyError::ConfigSequence {
                    number,
                    expected,
                    got: bundle.sequence,
                });
            }
        }
        Ok(bundle)
    }

    /// The SIGNATURES slot's signatures against BlockValidation of the bundle in
    /// force before this block.
    fn check_signatures(&self, block: &Block, number: BlockNumber) -> Result<(), VerifyError> {
        // A verifier always has a bundle past block 0: `after` is given one and
        // `join` gets one from block 0.
        let bundle = self
            .bundle
            .as_ref()
            .expect("a bundle is in force after block 0");
        let signed: Vec<SignedData> = signed_entries(block)
            .map_err(|source| VerifyError::Metadata { number, source })?
            .into_iter()
            .filter(|e| e.slot == BlockMetadataIndex::Signatures)
            .map(|e| SignedData {
                data: e.signed_data.into(),
                identity: e.creator,
                signature: e.signature,
            })
            .collect();
        bundle
            .evaluate(BLOCK_VALIDATION, &signed)
            .map_err(|source| VerifyError::Signatures {
                number,
                sequence: bundle.sequence,
                source,
            })
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
