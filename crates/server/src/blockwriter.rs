//! Turns batches into signed blocks and hands them to the ledger.
//!
//! For every block: number and previous hash from the last block *created* (the
//! previous one may still be in flight), ORDERER metadata (the log offsets),
//! LAST_CONFIG and the signed SIGNATURES value, in both Fabric layouts. At most one
//! block is in flight: handing over block N+1 waits until block N is durable.

use korder_ledger::BlockNumber;
use std::sync::Arc;

use bytes::Bytes;
use korder_ledger::block::{
    BlockBuilder, last_config_index, set_signatures, signature_input, write_orderer_metadata,
};
use korder_ledger::{BlockStore, LedgerError, PipelinedWriter};
use korder_proto::common::{Block, MetadataSignature};
use korder_proto::orderer::KafkaMetadata;

use crate::signer::{SignError, Signer};

/// Why a block could not be written. Each of these stops the chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("signing block {number}: {source}")]
    Sign {
        number: u64,
        #[source]
        source: SignError,
    },
    #[error("reading the last config index of the ledger's last block: {0}")]
    LastConfig(String),
}

/// Writes one channel's blocks.
pub struct BlockWriter {
    builder: BlockBuilder,
    writer: PipelinedWriter,
    signer: Arc<dyn Signer>,
    last_config_block: u64,
    last_config_seq: u64,
}

impl BlockWriter {
    /// A writer continuing `store`'s chain; `sequence` is the channel's current config
    /// sequence, the one recorded by the last config block.
    pub fn new(
        store: BlockStore,
        signer: Arc<dyn Signer>,
        sequence: u64,
    ) -> Result<Self, WriteError> {
        Self::observed(store, signer, sequence, |_| {})
    }

    /// As [`BlockWriter::new`]; `commit_time` learns how long each block took to
    /// reach storage.
    pub fn observed(
        store: BlockStore,
        signer: Arc<dyn Signer>,
        sequence: u64,
        commit_time: impl Fn(std::time::Duration) + Send + 'static,
    ) -> Result<Self, WriteError> {
        let (builder, last_config_block) = match store.last_block_number() {
            Some(n) => {
                let last = store.block(n)?;
                let header = last.header.clone().unwrap_or_default();
                let lc = if n == BlockNumber::GENESIS {
                    0
                } else {
                    last_config_index(&last).map_err(|e| WriteError::LastConfig(e.to_string()))?
                };
                (BlockBuilder::after(header), lc)
            }
            None => (BlockBuilder::new(), 0),
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
    pub fn next_number(&self) -> u64 {
        self.builder.next_number()
    }

    /// Creates the next block from raw envelope bytes (kept exactly as carried).
    pub fn create_next_block(&mut self, envelopes: Vec<Bytes>) -> Block {
        self.builder.build(envelopes)
    }

    /// Adds metadata and the signature to `block` and hands it to the ledger.
    /// `sequence` is the channel's config sequence now: if it moved since the last
    /// config block, this block is the new last config block.
    pub fn write_block(
        &mut self,
        mut block: Block,
        consenter: Option<&KafkaMetadata>,
        sequence: u64,
    ) -> Result<(), WriteError> {
        let header = block.header.clone().unwrap_or_default();
        if sequence > self.last_config_seq {
            self.last_config_block = header.number;
            self.last_config_seq = sequence;
        }
        let value = write_orderer_metadata(&mut block, self.last_config_block, consenter);
        let sign_err = |source| WriteError::Sign {
            number: header.number,
            source,
        };
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
        self.writer.submit(block)?;
        Ok(())
    }

    /// Waits until block `number` is durable.
    pub fn wait_durable(&self, number: BlockNumber) -> Result<(), WriteError> {
        Ok(self.writer.wait_durable(number)?)
    }

    /// Why the ledger writer stopped, if a block write failed.
    pub fn failure(&self) -> Option<String> {
        self.writer.failure().map(|e| e.to_string())
    }

    /// Writes the block in flight and stops.
    pub fn close(self) -> Result<(), WriteError> {
        Ok(self.writer.close()?)
    }

    /// The ledger this writer appends to.
    pub fn store(&self) -> &BlockStore {
        self.writer.store()
    }
}
