//! Message processing: what a message must pass before it is ordered (and again
//! when the chain re-validates a stale one), split by job:
//!
//! - [`parse`](mod@parse): the decode of envelope → payload → channel header that routes a
//!   message, and its class;
//! - [`filters`]: the standard rule set, in Fabric's order: empty payload, size
//!   (`len(payload) + len(signature)` against `AbsoluteMaxBytes`), expiration of the
//!   signer's certificate (with the orderer capability V1_1+), and the signature
//!   against `/Channel/Writers` (`/Channel/Orderer/Writers` in maintenance mode);
//! - [`config_update`]: the paths that turn a client's CONFIG_UPDATE into an
//!   orderer-signed CONFIG (existing channel) or ORDERER_TRANSACTION (channel
//!   creation);
//! - [`migration`]: the maintenance-mode and consensus-type migration rules a
//!   config update must also pass.
//!
//! [`crate::processor::ChannelProcessor`] puts them together for one channel.

pub mod config_update;
pub mod filters;
pub mod migration;
pub mod parse;

pub use config_update::{
    last_update_of, process_channel_creation, process_config_update, system_channel_filters,
};
pub use filters::{FilterOptions, basic_filters, message_size, process_normal, standard_filters};
pub use migration::{MIGRATION_TARGETS, maintenance_filter};
pub use parse::{Parsed, parse};

#[cfg(test)]
pub(crate) mod testing {
    use bytes::Bytes;
    use korder_channelconfig::Bundle;
    use korder_channelconfig::genesis::{ChannelProfile, EnvelopeStamp, genesis_envelope};
    use korder_proto::Message;
    use korder_proto::common::{ChannelHeader, Envelope, Header, HeaderType, Payload};

    pub(crate) fn bundle(max_bytes: u32) -> Bundle {
        let mut p = ChannelProfile::sample("solo");
        p.batch_size.absolute_max_bytes = max_bytes;
        p.batch_size.preferred_max_bytes = max_bytes;
        let env = genesis_envelope(
            "ch",
            p.channel_group(),
            &EnvelopeStamp {
                timestamp_secs: 0,
                nonce: [0; 24],
            },
        );
        Bundle::from_config_envelope(&env).unwrap()
    }

    pub(crate) fn envelope(channel: &str, data_len: usize) -> Envelope {
        let ch = ChannelHeader {
            r#type: HeaderType::EndorserTransaction as i32,
            channel_id: channel.into(),
            ..Default::default()
        };
        let payload = Payload {
            header: Some(Header {
                channel_header: ch.encode_to_vec().into(),
                signature_header: Bytes::new(),
            }),
            data: vec![0u8; data_len].into(),
        };
        Envelope {
            payload: payload.encode_to_vec().into(),
            signature: Bytes::from_static(b"sig"),
        }
    }
}
