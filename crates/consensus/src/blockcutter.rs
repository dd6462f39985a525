//! The block cutter: groups ordered envelopes into batches.
//!
//! Rules (applied to each envelope in log order, limits read from the current
//! channel config on every call):
//!
//! 1. An envelope larger than `preferred_max_bytes` is cut alone, after the pending
//!    batch (if any) is cut first.
//! 2. An envelope that would push the pending bytes above `preferred_max_bytes`
//!    first cuts the pending batch, then starts a new one.
//! 3. Once the pending batch holds `max_message_count` envelopes it is cut.
//!
//! An envelope's size is `len(payload) + len(signature)`, not its encoded size, so
//! that it matches the size filter applied at Broadcast. `absolute_max_bytes` is not
//! checked here: Broadcast already refuses envelopes above it.
//!
//! The cutter reads no clock. A caller that measures how long batches take to fill
//! uses [`Ordered::started_pending`] (a new pending batch began with this call) and
//! [`Fill`] (an isolated envelope fills in zero time).

use bytes::Bytes;
use korder_proto::Message;
use korder_proto::common::Envelope;
use korder_proto::orderer::BatchSize;

/// An envelope as it goes into the cutter: its bytes exactly as carried in the
/// record, and its size as the cutter counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizedEnvelope {
    bytes: Bytes,
    size: u64,
}

impl SizedEnvelope {
    /// Decodes `bytes` as a `common.Envelope` to learn its size; keeps the bytes as given.
    pub fn decode(bytes: Bytes) -> Result<SizedEnvelope, prost::DecodeError> {
        let envelope = Envelope::decode(bytes.clone())?;
        let size = envelope.payload.len() as u64 + envelope.signature.len() as u64;
        Ok(SizedEnvelope { bytes, size })
    }

    /// An envelope whose size is already known.
    pub fn with_size(bytes: Bytes, size: u64) -> SizedEnvelope {
        SizedEnvelope { bytes, size }
    }

    /// The envelope's bytes, as carried in the record.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// `len(payload) + len(signature)`.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// How a batch filled, for the block fill duration metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// The batch accumulated since the pending batch started.
    Accumulated,
    /// One envelope larger than `preferred_max_bytes`, cut alone: fill duration 0.
    Isolated,
}

/// One cut batch: envelope bytes in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub envelopes: Vec<Bytes>,
    pub fill: Fill,
}

/// What [`BlockCutter::ordered`] returns.
///
/// Possible shapes: `([], true)`, `([b], false)`, `([b], true)` (overflow),
/// `([b, [env]], false)` (isolation behind a pending batch), `([[env]], false)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ordered {
    /// Zero, one or two batches, in order.
    pub batches: Vec<Batch>,
    /// Whether envelopes remain pending after the call.
    pub pending: bool,
    /// Whether the batch now pending began with this call (its first envelope is
    /// the one just ordered). A caller measuring fill durations notes the time here.
    pub started_pending: bool,
}

/// Pending envelopes of one channel.
#[derive(Clone, Debug, Default)]
pub struct BlockCutter {
    pending: Vec<Bytes>,
    pending_bytes: u64,
}

impl BlockCutter {
    /// A cutter with nothing pending.
    pub fn new() -> BlockCutter {
        BlockCutter::default()
    }

    /// Number of envelopes pending.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Sum of the sizes of the pending envelopes.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Adds one envelope and returns the batches it completes.
    pub fn ordered(&mut self, envelope: SizedEnvelope, limits: &BatchSize) -> Ordered {
        let preferred = u64::from(limits.preferred_max_bytes);
        let mut batches = Vec::with_capacity(2);

        if envelope.size > preferred {
            if let Some(batch) = self.take_pending() {
                batches.push(batch);
            }
            batches.push(Batch {
                envelopes: vec![envelope.bytes],
                fill: Fill::Isolated,
            });
            return self.finish(batches);
        }

        if self.pending_bytes + envelope.size > preferred
            && let Some(batch) = self.take_pending()
        {
            batches.push(batch);
        }

        self.pending.push(envelope.bytes);
        self.pending_bytes += envelope.size;

        if self.pending.len() as u64 >= u64::from(limits.max_message_count)
            && let Some(batch) = self.take_pending()
        {
            batches.push(batch);
        }
        self.finish(batches)
    }

    /// Cuts whatever is pending; empty when nothing is.
    pub fn cut(&mut self) -> Vec<Bytes> {
        self.pending_bytes = 0;
        std::mem::take(&mut self.pending)
    }

    fn take_pending(&mut self) -> Option<Batch> {
        if self.pending.is_empty() {
            return None;
        }
        Some(Batch {
            envelopes: self.cut(),
            fill: Fill::Accumulated,
        })
    }

    fn finish(&self, batches: Vec<Batch>) -> Ordered {
        let pending = !self.pending.is_empty();
        assert!(
            batches.len() <= 2,
            "the cutter never cuts more than two batches"
        );
        assert!(
            !(pending && batches.len() == 2),
            "two batches always leave nothing pending"
        );
        Ordered {
            batches,
            pending,
            started_pending: self.pending.len() == 1,
        }
    }
}
