//! Turns batches into signed blocks and hands them to the ledger.
//!
//! For every block: number and previous hash from the last block *created* (the
//! previous one may still be in flight), LAST_CONFIG, and the signed SIGNATURES
//! value carrying the consenter metadata (the log offsets). Where the ORDERER slot
//! also carries them depends on the Fabric generation the blocks must match
//! ([`MetadataLayout`]). At most one block is in flight: handing over block N+1
//! waits until block N is durable.

use korder_ledger::BlockNumber;
use korder_types::ids::ConfigSeq;
use std::sync::Arc;

use bytes::Bytes;
use korder_ledger::block::{
    BlockBuilder, last_config_index, set_last_config, set_signatures, signature_input,
    signatures_value, write_orderer_metadata,
};
use korder_ledger::{BlockStore, LedgerError, PipelinedWriter};
use korder_proto::common::{Block, MetadataSignature};
use korder_proto::orderer::KafkaMetadata;

use korder_msp::signer::{SignError, SigningIdentity};

/// Why a block could not be written. Each of these stops the chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("signing block {number}: {source}")]
    Sign {
        number: BlockNumber,
        #[source]
        source: SignError,
    },
    #[error("reading the last config index of the ledger's last block: {0}")]
    LastConfig(String),
}

/// Orderer capability with which a channel can only be shared with Fabric 2.x
/// nodes (and later).
pub const ORDERER_V2_CAPABILITY: &str = "V2_0";

/// Which Fabric generation's block metadata layout a block gets. Both keep
/// LAST_CONFIG and sign `OrdererBlockMetadata{last_config, consenter_metadata}` in
/// SIGNATURES, `consenter_metadata` being `Metadata{value: KafkaMetadata}`; they differ
/// in the ORDERER slot. Readers accept both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetadataLayout {
    /// Fabric 2.x: the ORDERER slot stays empty.
    #[default]
    Fabric2,
    /// Fabric 1.4: the ORDERER slot holds the consenter metadata as well.
    Fabric14,
}

impl MetadataLayout {
    /// The layout of a channel whose orderer capabilities are `capabilities`, given
    /// the node's `configured` layout: a channel with [`ORDERER_V2_CAPABILITY`] can
    /// only be shared with 2.x nodes, so it always gets [`MetadataLayout::Fabric2`].
    pub fn for_channel<'a>(
        configured: MetadataLayout,
        mut capabilities: impl Iterator<Item = &'a String>,
    ) -> MetadataLayout {
        if capabilities.any(|c| c == ORDERER_V2_CAPABILITY) {
            MetadataLayout::Fabric2
        } else {
            configured
        }
    }
}

/// Writes the metadata slots an orderer of `layout`'s generation writes before
/// signing (LAST_CONFIG; ORDERER too in the 1.4 layout) and returns the SIGNATURES
/// value to sign, the same in both layouts.
pub fn write_metadata(
    block: &mut Block,
    last_config: BlockNumber,
    consenter: Option<&KafkaMetadata>,
    layout: MetadataLayout,
) -> Bytes {
    match layout {
        MetadataLayout::Fabric14 => write_orderer_metadata(block, last_config, consenter),
        MetadataLayout::Fabric2 => {
            set_last_config(block, last_config);
            signatures_value(last_config, consenter)
        }
    }
}

/// Writes one channel's blocks.
pub struct BlockWriter {
    builder: BlockBuilder,
    writer: PipelinedWriter,
    signer: Arc<SigningIdentity>,
    last_config_block: BlockNumber,
    last_config_seq: ConfigSeq,
}

impl BlockWriter {
    /// A writer continuing `store`'s chain; `sequence` is the channel's current config
    /// sequence, the one recorded by the last config block.
    pub fn new(
        store: BlockStore,
        signer: Arc<SigningIdentity>,
        sequence: ConfigSeq,
    ) -> Result<Self, WriteError> {
        Self::observed(store, signer, sequence, |_| {})
    }

    /// As [`BlockWriter::new`]; `commit_time` learns how long each block took to
    /// reach storage.
    pub fn observed(
        store: BlockStore,
        signer: Arc<SigningIdentity>,
        sequence: ConfigSeq,
        commit_time: impl Fn(std::time::Duration) + Send + Sync + 'static,
    ) -> Result<Self, WriteError> {
        let (builder, last_config_block) = match store.last_block_number() {
            Some(n) => {
                let last = store.block(n)?;
                let header = last.header.clone().unwrap_or_default();
                let lc = if n == BlockNumber::GENESIS {
                    BlockNumber::GENESIS
                } else {
                    last_config_index(&last).map_err(|e| WriteError::LastConfig(e.to_string()))?
                };
                (BlockBuilder::after(header), lc)
            }
            None => (BlockBuilder::new(), BlockNumber::GENESIS),
        };
        Ok(BlockWriter {
            builder,
            writer: PipelinedWriter::observed(store, commit_time)?,
            signer,
            last_config_block,
            last_config_seq: sequence,
        })
    }

    /// The number the next created block gets.
    pub fn next_number(&self) -> BlockNumber {
        self.builder.next_number()
    }

    /// Creates the next block from raw envelope bytes (kept exactly as carried).
    pub fn create_next_block(&mut self, envelopes: Vec<Bytes>) -> Block {
        self.builder.build(envelopes)
    }

    /// Adds metadata in `layout` and the signature to `block` and hands it to the
    /// ledger. `sequence` is the channel's config sequence now: if it moved since the
    /// last config block, this block is the new last config block. Blocking: waits
    /// until the previous block is durable.
    pub fn write_block(
        &mut self,
        block: Block,
        consenter: Option<&KafkaMetadata>,
        sequence: ConfigSeq,
        layout: MetadataLayout,
    ) -> Result<(), WriteError> {
        let block = self.seal(block, consenter, sequence, layout)?;
        self.writer.submit(block)?;
        Ok(())
    }

    /// [`BlockWriter::write_block`] for tasks.
    pub async fn write_block_async(
        &mut self,
        block: Block,
        consenter: Option<&KafkaMetadata>,
        sequence: ConfigSeq,
        layout: MetadataLayout,
    ) -> Result<(), WriteError> {
        let block = self.seal(block, consenter, sequence, layout)?;
        self.writer.submit_async(block).await?;
        Ok(())
    }

    /// Adds the metadata and the signature to `block`.
    fn seal(
        &mut self,
        mut block: Block,
        consenter: Option<&KafkaMetadata>,
        sequence: ConfigSeq,
        layout: MetadataLayout,
    ) -> Result<Block, WriteError> {
        let header = block.header.clone().unwrap_or_default();
        let number = BlockNumber::new(header.number);
        if sequence > self.last_config_seq {
            self.last_config_block = number;
            self.last_config_seq = sequence;
        }
        let value = write_metadata(&mut block, self.last_config_block, consenter, layout);
        let sign_err = |source| WriteError::Sign { number, source };
        let signature_header = self.signer.new_signature_header().map_err(sign_err)?;
        let signature = self
            .signer
            .sign(&signature_input(&value, &signature_header, &header))
            .map_err(sign_err)?;
        set_signatures(
            &mut block,
            value,
            vec![MetadataSignature {
                signature_header,
                signature,
            }],
        );
        Ok(block)
    }

    /// Waits until block `number` is durable. Blocking: for threads.
    pub fn wait_durable(&self, number: BlockNumber) -> Result<(), WriteError> {
        Ok(self.writer.wait_durable(number)?)
    }

    /// [`BlockWriter::wait_durable`] for tasks.
    pub async fn wait_durable_async(&self, number: BlockNumber) -> Result<(), WriteError> {
        Ok(self.writer.wait_durable_async(number).await?)
    }

    /// Why the ledger writer stopped, if a block write failed.
    pub fn failure(&self) -> Option<String> {
        self.writer.failure().map(|e| e.to_string())
    }

    /// Writes the block in flight and stops. Blocking: for threads.
    pub fn close(self) -> Result<(), WriteError> {
        Ok(self.writer.close()?)
    }

    /// [`BlockWriter::close`] for tasks.
    pub async fn close_async(self) -> Result<(), WriteError> {
        Ok(self.writer.close_async().await?)
    }

    /// The ledger this writer appends to.
    pub fn store(&self) -> &BlockStore {
        self.writer.store()
    }
}
