//! Signing and verification: round trips, the low-S rule, tampering, garbage input.

mod common;

use korder_msp::signer::SigningIdentity;
use korder_msp::{
    CertError, Certificate, EcdsaSignature, Identity, IdentityError, KeyError, VerifyError,
    verify_ecdsa_p256_sha256,
};

fn sample_signer() -> SigningIdentity {
    SigningIdentity::load_msp_dir_at(common::sample_msp_dir(), "SampleOrg", common::fixed_now())
        .expect("sample MSP loads")
}

/// A signature made by the signing identity verifies with its certificate and identity.
#[test]
fn sign_then_verify_round_trip() {
    let signer = sample_signer();
    let message = b"the payload bytes as carried";
    let sig = signer.sign(message).unwrap();
    verify_ecdsa_p256_sha256(signer.certificate(), message, &sig).unwrap();
    signer.identity().verify(message, &sig).unwrap();
    let decoded = Identity::from_serialized(&signer.serialized()).unwrap();
    decoded.verify(message, &sig).unwrap();
}

/// Produced signatures are always low-S, over many signatures.
#[test]
fn produced_signatures_are_low_s() {
    let signer = sample_signer();
    for i in 0u32..64 {
        let sig = signer.sign(&i.to_be_bytes()).unwrap();
        let parsed = EcdsaSignature::from_der(&sig).unwrap();
        assert!(!parsed.is_high_s(), "signature {i} is high-S");
        assert_eq!(parsed.to_der(), sig.to_vec(), "DER is not minimal");
    }
}

/// The mirrored high-S form (r, n - s) of a valid signature is rejected as HighS.
#[test]
fn high_s_signature_is_rejected_low_s_original_verifies() {
    let signer = sample_signer();
    let message = b"block bytes";
    let sig = signer.sign(message).unwrap();
    let low = EcdsaSignature::from_der(&sig).unwrap();
    assert!(!low.is_high_s());
    let high = low.negate_s();
    assert!(high.is_high_s());
    verify_ecdsa_p256_sha256(signer.certificate(), message, &low.to_der()).unwrap();
    assert_eq!(
        verify_ecdsa_p256_sha256(signer.certificate(), message, &high.to_der()),
        Err(VerifyError::HighS)
    );
}

/// A changed message, or a signature from another key, does not verify.
#[test]
fn tampered_message_and_wrong_key_fail() {
    let signer = sample_signer();
    let sig = signer.sign(b"original").unwrap();
    assert_eq!(
        signer.identity().verify(b"0riginal", &sig),
        Err(VerifyError::Mismatch)
    );
    let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let other = rcgen::CertificateParams::new(vec!["other.example.com".to_owned()])
        .unwrap()
        .self_signed(&other_key)
        .unwrap();
    let other = Certificate::from_der(other.der()).unwrap();
    assert_eq!(other.verify(b"original", &sig), Err(VerifyError::Mismatch));
}

/// Malformed DER signatures give a MalformedSignature error, not a panic.
#[test]
fn malformed_signature_is_a_clear_error() {
    let signer = sample_signer();
    for bad in [
        &b""[..],
        b"\x30",
        b"not a signature at all",
        b"\x30\x02\x02\x00",
    ] {
        let err = signer.identity().verify(b"m", bad).unwrap_err();
        assert!(
            matches!(err, VerifyError::MalformedSignature { .. }),
            "{bad:?} gave {err:?}"
        );
        assert!(err.to_string().contains("malformed DER"));
    }
}

/// Bad PEM, a non-certificate PEM and garbage DER each give a distinct certificate error.
#[test]
fn garbage_certificates_are_clear_errors() {
    assert_eq!(Certificate::from_pem(b"hello"), Err(CertError::NoPem));
    assert!(matches!(
        Certificate::from_pem(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
        Err(CertError::Pem { .. })
    ));
    let key_pem = std::fs::read(common::sample_msp_dir().join("keystore/key.pem")).unwrap();
    assert_eq!(
        Certificate::from_pem(&key_pem),
        Err(CertError::WrongPemLabel {
            label: "PRIVATE KEY".to_owned()
        })
    );
    assert!(matches!(
        Certificate::from_der(&[0x30, 0x03, 0x02, 0x01, 0x01]),
        Err(CertError::X509 { .. })
    ));
    let mut der = Certificate::from_pem(
        &std::fs::read(common::sample_msp_dir().join("signcerts/peer.pem")).unwrap(),
    )
    .unwrap()
    .der()
    .to_vec();
    der.push(0);
    assert_eq!(
        Certificate::from_der(&der),
        Err(CertError::TrailingData { len: 1 })
    );
}

/// Identity bytes that are not a SerializedIdentity, or carry no certificate, are refused.
#[test]
fn garbage_identities_are_clear_errors() {
    assert!(matches!(
        Identity::from_serialized(&[0xff, 0xff, 0xff]),
        Err(IdentityError::Decode { .. })
    ));
    // mspid "X", id_bytes "nope"
    let sid = [0x0a, 0x01, b'X', 0x12, 0x04, b'n', b'o', b'p', b'e'];
    let err = Identity::from_serialized(&sid).unwrap_err();
    assert!(matches!(err, IdentityError::Certificate { .. }));
    assert!(err.to_string().contains("\"X\""));
    assert_eq!(
        Identity::from_serialized(&[]).unwrap_err(),
        IdentityError::EmptyMspId
    );
}

/// A certificate on another curve (P-384) parses, but verification says the key is unsupported.
#[test]
fn wrong_curve_key_is_rejected_clearly() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["p384.example.com".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let parsed = Certificate::from_pem(cert.pem().as_bytes()).unwrap();
    let err = parsed
        .verify(b"m", &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01])
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::Key(KeyError::Unsupported { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("1.3.132.0.34"), "{err}");
}

/// The signature header carries the serialized identity and a fresh 24-byte nonce.
#[test]
fn signature_header_has_creator_and_fresh_nonce() {
    use korder_proto::Message;
    use korder_proto::common::SignatureHeader;
    let signer = sample_signer();
    let a = SignatureHeader::decode(signer.new_signature_header().unwrap()).unwrap();
    let b = SignatureHeader::decode(signer.new_signature_header().unwrap()).unwrap();
    assert_eq!(a.creator, signer.serialized());
    assert_eq!(a.nonce.len(), 24);
    assert_ne!(a.nonce, b.nonce);
}

/// An envelope signed over its payload bytes verifies with the creator identity.
#[test]
fn signed_envelope_verifies_over_payload() {
    let signer = sample_signer();
    let payload = bytes::Bytes::from_static(b"\x0a\x00\x12\x03abc");
    let env = signer.sign_envelope(payload.clone()).unwrap();
    assert_eq!(env.payload, payload);
    signer
        .identity()
        .verify(&env.payload, &env.signature)
        .unwrap();
}
