//! Broadcast messages through the message classifier and every Broadcast filter,
//! against real channel bundles built from the fixtures' genesis blocks.
//!
//! Random bytes almost never make an envelope with a valid signature, so the
//! structured mode builds the envelope from fuzzer-chosen header fields, data and
//! signature, signing it when asked with Fabric's sample MSP identity, made the
//! orderer organisation's MSP of one of the bundles (the fixtures' v1.4.12 system
//! channel). The other mode hands the
//! filters an arbitrary envelope.

use std::sync::OnceLock;
use std::time::SystemTime;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use korder_channelconfig::Bundle;
use korder_channelconfig::bundle::ORDERER_GROUP;
use korder_channelconfig::policies::SignedData;
use korder_consensus::ConfigSeq;
use korder_consensus::support::MsgClass;
use korder_msp::mspdir::MspDir;
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::Timestamp;
use korder_proto::common::{
    Block, ChannelHeader, ConfigEnvelope, Envelope, Header, HeaderType, Payload, SignatureHeader,
};
use korder_proto::msp::{MspConfig, SerializedIdentity};
use korder_server::msgprocessor::{
    FilterOptions, basic_filters, last_update_of, maintenance_filter, message_size, parse,
    process_channel_creation, process_config_update, process_normal, standard_filters,
    system_channel_filters,
};
use korder_server::status::ProcessError;

const GENESIS_BLOCKS: &[&[u8]] = &[
    include_bytes!("../../../tests/fixtures/fabric-v1.4.12/blocks/common-server-genesis.block"),
    include_bytes!("../../../tests/fixtures/fabric-v1.4.12/blocks/common-cluster-mychannel.block"),
    include_bytes!(
        "../../../tests/fixtures/fabric-v1.4.12/blocks/consensus-etcdraft-etcdraftgenesis.block"
    ),
    include_bytes!(
        "../../../tests/fixtures/fabric-v2.5.16/blocks/system-kafka-v2caps-genesis.block"
    ),
];
const SAMPLE_CERT: &[u8] =
    include_bytes!("../../../tests/fixtures/fabric-v1.4.12/sampleconfig/msp/signcerts/peer.pem");
const SAMPLE_KEY: &[u8] =
    include_bytes!("../../../tests/fixtures/fabric-v1.4.12/sampleconfig/msp/keystore/key.pem");

struct Fixtures {
    bundles: Vec<Bundle>,
    signer: SigningIdentity,
}

/// The MSP id the sample identity signs as: the orderer organisation of the
/// fixtures' v1.4.12 system channel, whose MSP is replaced by Fabric's sample MSP
/// (the fixtures hold no private key of the genesis blocks' organisations).
const SIGNER_MSP: &str = "OrdererMSP";

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let mut bundles: Vec<Bundle> = GENESIS_BLOCKS
            .iter()
            .map(|bytes| {
                let block = Block::decode(*bytes).expect("fixture block decodes");
                let envelope = &block.data.expect("fixture block has data").data[0];
                Bundle::from_config_envelope(envelope).expect("fixture genesis bundle")
            })
            .collect();
        bundles.insert(0, with_sample_msp(&bundles[0]));
        let signer = SigningIdentity::from_pem(SIGNER_MSP, SAMPLE_CERT, SAMPLE_KEY)
            .expect("sample MSP signer");
        Fixtures { bundles, signer }
    })
}

/// `bundle` with the MSP of its orderer organisation replaced by the sample MSP.
fn with_sample_msp(bundle: &Bundle) -> Bundle {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/fabric-v1.4.12/sampleconfig/msp");
    let msp = MspDir::load(&dir)
        .expect("the sample MSP directory loads")
        .to_fabric_msp_config(SIGNER_MSP);
    let mut config = bundle.config.clone();
    let org = config
        .channel_group
        .as_mut()
        .and_then(|c| c.groups.get_mut(ORDERER_GROUP))
        .and_then(|o| o.groups.values_mut().next())
        .expect("the fixture's orderer organisation");
    let value = org.values.get_mut("MSP").expect("the organisation's MSP");
    value.value = MspConfig {
        r#type: 0,
        config: msp.encode_to_vec().into(),
    }
    .encode_to_vec()
    .into();
    Bundle::new(&bundle.channel_id, config).expect("the fixture with the sample MSP")
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Message,
    ConfigUpdate,
    Config,
    OrdererTransaction,
    EndorserTransaction,
    Other(i32),
}

#[derive(Arbitrary, Debug)]
enum Creator {
    /// The sample MSP identity (it also signs).
    Signer,
    /// The sample certificate under another MSP id.
    SignerAs(String),
    Raw(Vec<u8>),
    Empty,
}

#[derive(Arbitrary, Debug)]
enum Data {
    Raw(Vec<u8>),
    /// Zero bytes of this length (to cross the size limit).
    Zeros(u16),
    /// The channel's current config as a config envelope, with a chosen sequence
    /// and last update.
    CurrentConfig {
        sequence: u8,
        last_update: Option<Vec<u8>>,
    },
}

#[derive(Arbitrary, Debug)]
enum Signature {
    Valid,
    /// A valid signature with one byte changed.
    Flipped(u16, u8),
    /// A valid signature over other bytes.
    OverOther(Vec<u8>),
    Raw(Vec<u8>),
    Empty,
}

#[derive(Arbitrary, Debug)]
struct Structured {
    bundle: u8,
    /// A smaller `AbsoluteMaxBytes` for the bundle.
    max_bytes: Option<u16>,
    /// Turn the bundle's maintenance flag over.
    maintenance: bool,
    no_expiration_checks: bool,
    channels: u8,
    kind: Kind,
    /// The bundle's channel, or another.
    channel: Option<String>,
    version: i32,
    epoch: u64,
    tx_id: String,
    timestamp: Option<(i64, i32)>,
    extension: Vec<u8>,
    tls_cert_hash: Vec<u8>,
    no_header: bool,
    empty_channel_header: bool,
    raw_signature_header: Option<Vec<u8>>,
    creator: Creator,
    nonce: Vec<u8>,
    data: Data,
    signature: Signature,
}

/// Arbitrary input: a structured envelope against a chosen fixture bundle (first
/// byte even), or bytes as an envelope against every bundle (odd).
///
/// Invariants: nothing panics; an envelope the standard filters accept is not
/// empty, is at most `AbsoluteMaxBytes`, and carries a signature that verifies
/// under its creator, an identity the channel's MSPs accept and (with the expiry
/// check on) has not expired; what `process_normal` accepts the standard filters
/// accept, at the bundle's sequence; re-validation from the envelope's bytes
/// gives the same answer; a config update the node accepts yields a CONFIG (or
/// ORDERER_TRANSACTION) envelope for the channel that the filters accept in turn.
pub fn broadcast_filters(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fx = fixtures();
    if mode % 2 == 1 {
        let Ok(envelope) = Envelope::decode(rest) else {
            return;
        };
        for bundle in &fx.bundles {
            check(&envelope, bundle, &FilterOptions::default(), 2);
        }
        return;
    }
    let Ok(input) = Structured::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let mut bundle = fx.bundles[usize::from(input.bundle) % fx.bundles.len()].clone();
    if let Some(max) = input.max_bytes {
        bundle.orderer.batch_size.absolute_max_bytes = u32::from(max).max(1);
    }
    if input.maintenance {
        bundle.orderer.maintenance = !bundle.orderer.maintenance;
    }
    let envelope = build(&input, &bundle, &fx.signer);
    let opts = FilterOptions {
        no_expiration_checks: input.no_expiration_checks,
    };
    check(&envelope, &bundle, &opts, u64::from(input.channels));
}

/// Whether the standard filters accept the envelope a structured input (first
/// byte even) builds; `None` for other inputs. Lets tests check that the
/// structured mode reaches the accept path.
pub fn structured_accepted(data: &[u8]) -> Option<bool> {
    let (&mode, rest) = data.split_first()?;
    if mode % 2 == 1 {
        return None;
    }
    let input = Structured::arbitrary_take_rest(Unstructured::new(rest)).ok()?;
    let fx = fixtures();
    let bundle = &fx.bundles[usize::from(input.bundle) % fx.bundles.len()];
    let envelope = build(&input, bundle, &fx.signer);
    let opts = FilterOptions {
        no_expiration_checks: input.no_expiration_checks,
    };
    let r = standard_filters(&envelope, bundle, &opts);
    Some(r.is_ok())
}

fn build(input: &Structured, bundle: &Bundle, signer: &SigningIdentity) -> Envelope {
    let r#type = match input.kind {
        Kind::Message => HeaderType::Message as i32,
        Kind::ConfigUpdate => HeaderType::ConfigUpdate as i32,
        Kind::Config => HeaderType::Config as i32,
        Kind::OrdererTransaction => HeaderType::OrdererTransaction as i32,
        Kind::EndorserTransaction => HeaderType::EndorserTransaction as i32,
        Kind::Other(t) => t,
    };
    let channel_header = ChannelHeader {
        r#type,
        version: input.version,
        timestamp: input
            .timestamp
            .map(|(seconds, nanos)| Timestamp { seconds, nanos }),
        channel_id: input
            .channel
            .clone()
            .unwrap_or_else(|| bundle.channel_id.clone()),
        tx_id: input.tx_id.clone(),
        epoch: input.epoch,
        extension: Bytes::copy_from_slice(&input.extension),
        tls_cert_hash: Bytes::copy_from_slice(&input.tls_cert_hash),
    };
    let creator = match &input.creator {
        Creator::Signer => signer.serialized(),
        Creator::SignerAs(msp) => SerializedIdentity {
            mspid: msp.clone(),
            id_bytes: Bytes::from_static(SAMPLE_CERT),
        }
        .encode_to_vec()
        .into(),
        Creator::Raw(b) => Bytes::copy_from_slice(b),
        Creator::Empty => Bytes::new(),
    };
    let signature_header: Bytes = match &input.raw_signature_header {
        Some(raw) => Bytes::copy_from_slice(raw),
        None => SignatureHeader {
            creator,
            nonce: Bytes::copy_from_slice(&input.nonce),
        }
        .encode_to_vec()
        .into(),
    };
    let data: Bytes = match &input.data {
        Data::Raw(b) => Bytes::copy_from_slice(b),
        Data::Zeros(n) => vec![0; usize::from(*n)].into(),
        Data::CurrentConfig {
            sequence,
            last_update,
        } => {
            let mut config = bundle.config.clone();
            config.sequence = bundle.sequence.get() + u64::from(*sequence % 3);
            ConfigEnvelope {
                config: Some(config),
                last_update: last_update
                    .as_ref()
                    .and_then(|b| Envelope::decode(b.as_slice()).ok()),
            }
            .encode_to_vec()
            .into()
        }
    };
    let header = (!input.no_header).then(|| Header {
        channel_header: if input.empty_channel_header {
            Bytes::new()
        } else {
            channel_header.encode_to_vec().into()
        },
        signature_header,
    });
    let payload: Bytes = Payload { header, data }.encode_to_vec().into();
    let signature = match &input.signature {
        Signature::Valid => signer.sign(&payload).expect("sign"),
        Signature::Flipped(at, xor) => {
            let mut s = signer.sign(&payload).expect("sign").to_vec();
            let i = usize::from(*at) % s.len();
            s[i] ^= xor | 1;
            s.into()
        }
        Signature::OverOther(other) => signer.sign(other).expect("sign"),
        Signature::Raw(b) => Bytes::copy_from_slice(b),
        Signature::Empty => Bytes::new(),
    };
    Envelope { payload, signature }
}

/// What an envelope the standard filters accepted must satisfy.
fn assert_accepted(envelope: &Envelope, bundle: &Bundle, opts: &FilterOptions) {
    assert!(
        !envelope.payload.is_empty(),
        "an empty payload was accepted"
    );
    let max = u64::from(bundle.orderer.batch_size.absolute_max_bytes);
    assert!(
        message_size(envelope) <= max,
        "a message of {} bytes passed a limit of {max}",
        message_size(envelope)
    );
    let signed = SignedData::from_envelope(envelope).expect("accepted, so signed data exists");
    let sd = &signed[0];
    let (msp, identity) = bundle
        .msp_manager()
        .deserialize_identity(&sd.identity)
        .unwrap_or_else(|e| {
            panic!("an accepted envelope's creator is not a channel identity: {e}")
        });
    msp.validate(&identity)
        .unwrap_or_else(|e| panic!("an accepted envelope's creator is not valid: {e}"));
    identity
        .verify(&sd.data, &sd.signature)
        .unwrap_or_else(|e| panic!("an accepted envelope's signature does not verify: {e}"));
    if !opts.no_expiration_checks && bundle.orderer.expiration_check() {
        assert!(
            SystemTime::now() < identity.expires_at(),
            "an expired identity was accepted"
        );
    }
}

fn check(envelope: &Envelope, bundle: &Bundle, opts: &FilterOptions, channels: u64) {
    let bytes: Bytes = envelope.encode_to_vec().into();
    let basic = basic_filters(envelope, bundle);
    let standard = standard_filters(envelope, bundle, opts);
    if standard.is_ok() {
        assert!(basic.is_ok(), "standard filters accept what basic refuse");
        assert_accepted(envelope, bundle, opts);
    }
    if let Err(e) = &basic {
        assert!(
            matches!(e, ProcessError::BadRequest(_)),
            "basic filters refused with {e:?}"
        );
    }
    if bundle.is_system_channel()
        && system_channel_filters(envelope, bundle, channels, opts).is_ok()
    {
        assert!(
            standard.is_ok(),
            "system channel filters skipped a standard one"
        );
    }
    let _ = last_update_of(&bytes);

    let Ok(parsed) = parse(envelope.clone()) else {
        assert!(
            revalidate_normal(&bytes, bundle, opts).is_err(),
            "re-validation accepts an envelope that does not parse"
        );
        return;
    };
    let header = parsed.payload.header.as_ref().expect("parsed, so a header");
    assert!(!header.channel_header.is_empty());
    let channel_id = parsed.channel_header.channel_id.clone();

    match parsed.class() {
        MsgClass::ConfigUpdate => {
            let signer = &fixtures().signer;
            let result = if channel_id == bundle.channel_id || !bundle.is_system_channel() {
                process_config_update(envelope, bundle, signer, opts)
            } else {
                process_channel_creation(envelope, bundle, channels, signer, opts)
            };
            if let Ok((tx, seq)) = result {
                assert_eq!(seq, bundle.sequence);
                assert!(
                    standard.is_ok(),
                    "a config update skipped the standard filters"
                );
                let out = parse(tx.clone()).expect("the node's config envelope parses");
                assert_eq!(out.class(), MsgClass::Config);
                assert_eq!(out.channel_header.channel_id, bundle.channel_id);
                standard_filters(&tx, bundle, opts)
                    .expect("the node's config envelope passes the filters");
            }
        }
        MsgClass::Config | MsgClass::Normal => {
            let normal = process_normal(envelope, &channel_id, bundle, opts);
            if let Ok(seq) = normal {
                assert_eq!(seq, bundle.sequence);
                assert!(
                    standard.is_ok(),
                    "process_normal skipped the standard filters"
                );
                if bundle.is_system_channel() {
                    assert_eq!(channel_id, bundle.channel_id);
                }
            }
            let again = revalidate_normal(&bytes, bundle, opts);
            assert_eq!(
                normal.is_ok(),
                again.is_ok(),
                "re-validation from bytes disagrees: {normal:?} / {again:?}"
            );
        }
    }

    // A config envelope's config against the channel's: the maintenance rules.
    if parsed.channel_header.r#type == HeaderType::Config as i32
        && let Ok(config_envelope) = ConfigEnvelope::decode(parsed.payload.data.as_ref())
        && let Some(config) = config_envelope.config.clone()
        && let Ok(next) = Bundle::new(&bundle.channel_id, config)
    {
        let _ = maintenance_filter(bundle, &config_envelope, &next);
    }
}

/// The chain's re-validation of a normal envelope read back from the log: decode
/// the bytes, parse, and run the normal filters again.
fn revalidate_normal(
    bytes: &Bytes,
    bundle: &Bundle,
    opts: &FilterOptions,
) -> Result<ConfigSeq, ProcessError> {
    let envelope = Envelope::decode(bytes.as_ref())
        .map_err(|e| ProcessError::bad(format!("envelope does not decode: {e}")))?;
    let parsed = parse(envelope)?;
    process_normal(
        &parsed.envelope,
        &parsed.channel_header.channel_id,
        bundle,
        opts,
    )
}
