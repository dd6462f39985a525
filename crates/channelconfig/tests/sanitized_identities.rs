//! Signature policies count identities by their sanitised certificate: one
//! certificate in high-S and low-S form is one signer, two certificates that differ
//! in their signature are two, and a certificate that does not chain to its MSP's
//! roots is dropped.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use korder_channelconfig::policies::{
    IdentityLookupError, MspManager, Policy, PolicyError, SignedData,
};
use korder_msp::devpki::{DevPki, IssuedCert, NodeRole};
use korder_msp::signer::SigningIdentity;
use korder_msp::{Certificate, EcdsaSignature, MspVersion, with_signature_value};
use korder_proto::Message;
use korder_proto::common::msp_principal::Classification;
use korder_proto::common::msp_role::MspRoleType;
use korder_proto::common::{
    MspPrincipal, MspRole, SignaturePolicy, SignaturePolicyEnvelope, signature_policy,
};
use korder_proto::msp::{FabricMspConfig, MspConfig, SerializedIdentity};

const MSP_ID: &str = "AMSP";
const DATA: &[u8] = b"the bytes that were signed";

/// `n` signatures of MEMBERs of `AMSP`.
fn members(n: i32, msps: Arc<MspManager>) -> Policy {
    let by0 = SignaturePolicy {
        r#type: Some(signature_policy::Type::SignedBy(0)),
    };
    let member = MspPrincipal {
        principal_classification: Classification::Role as i32,
        principal: MspRole {
            msp_identifier: MSP_ID.to_owned(),
            role: MspRoleType::Member as i32,
        }
        .encode_to_vec()
        .into(),
    };
    let rules = (0..n).map(|_| by0.clone()).collect();
    let envelope = SignaturePolicyEnvelope {
        version: 0,
        rule: Some(SignaturePolicy {
            r#type: Some(signature_policy::Type::NOutOf(signature_policy::NOutOf {
                n,
                rules,
            })),
        }),
        identities: vec![member],
    };
    Policy::signature(&envelope, msps).unwrap()
}

/// An MSP manager holding `AMSP` rooted at `pki`'s CA (no NodeOUs).
fn manager(pki: &DevPki) -> Arc<MspManager> {
    let fabric = FabricMspConfig {
        name: MSP_ID.to_owned(),
        root_certs: vec![Bytes::from(pki.ca_cert_pem().to_owned())],
        ..Default::default()
    };
    let config = MspConfig {
        r#type: 0,
        config: fabric.encode_to_vec().into(),
    };
    Arc::new(MspManager::new([(MSP_ID.to_owned(), &config)], MspVersion::V1_3).unwrap())
}

/// `data` signed with `issued`'s key, the certificate presented as `cert`.
fn signed(issued: &IssuedCert, cert: &Certificate) -> SignedData {
    let signer = SigningIdentity::from_pem(
        MSP_ID,
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .unwrap();
    SignedData {
        data: Bytes::from_static(DATA),
        identity: SerializedIdentity {
            mspid: MSP_ID.to_owned(),
            id_bytes: Bytes::from(cert.to_pem()),
        }
        .encode_to_vec()
        .into(),
        signature: signer.sign(DATA).unwrap(),
    }
}

/// The certificate with its own signature `(r, s)` replaced by `(r, n - s)`.
fn flip_s(cert: &Certificate) -> Certificate {
    let sig = EcdsaSignature::from_der(cert.signature_value())
        .unwrap()
        .negate_s();
    Certificate::from_der(&with_signature_value(cert.der(), &sig.to_der()).unwrap()).unwrap()
}

/// One identity signing twice, its certificate once in each signature form, counts as one signer.
#[test]
fn high_s_and_low_s_forms_of_one_certificate_count_once() {
    let pki = DevPki::generate(MSP_ID, "a.example.com").unwrap();
    let msps = manager(&pki);
    let issued = pki.issue("User1@a.example.com", NodeRole::Client).unwrap();
    let cert = Certificate::from_pem(issued.cert_pem.as_bytes()).unwrap();
    let twin = flip_s(&cert);
    assert_ne!(cert.der(), twin.der());
    let (first, second) = (signed(&issued, &cert), signed(&issued, &twin));

    // Each form alone is a valid member signature.
    members(1, msps.clone())
        .evaluate(std::slice::from_ref(&first))
        .unwrap();
    members(1, msps.clone())
        .evaluate(std::slice::from_ref(&second))
        .unwrap();
    let two = members(2, msps);
    assert_eq!(
        two.evaluate(&[first.clone(), second.clone()]),
        Err(PolicyError::SignatureSetNotSatisfied)
    );
    assert_eq!(
        two.evaluate(&[second, first.clone()]),
        Err(PolicyError::SignatureSetNotSatisfied)
    );
    // A second, different identity does complete the set.
    let other = pki.issue("User2@a.example.com", NodeRole::Client).unwrap();
    let other_cert = Certificate::from_pem(other.cert_pem.as_bytes()).unwrap();
    two.evaluate(&[first, signed(&other, &other_cert)]).unwrap();
}

/// Two certificates with the same to-be-signed part but genuinely different CA signatures count twice.
#[test]
fn same_tbs_with_different_signatures_counts_twice() {
    let pki = DevPki::generate(MSP_ID, "a.example.com").unwrap();
    let msps = manager(&pki);
    let dir = tempfile::tempdir().unwrap();
    pki.save(dir.path()).unwrap();
    let ca_key = std::fs::read(dir.path().join("ca.key")).unwrap();
    let ca = SigningIdentity::from_pem(MSP_ID, pki.ca_cert_pem().as_bytes(), &ca_key).unwrap();

    let issued = pki.issue("User1@a.example.com", NodeRole::Client).unwrap();
    let cert = Certificate::from_pem(issued.cert_pem.as_bytes()).unwrap();
    let resigned_sig = ca.sign(cert.tbs_der()).unwrap();
    let resigned =
        Certificate::from_der(&with_signature_value(cert.der(), &resigned_sig).unwrap()).unwrap();
    assert_eq!(resigned.tbs_der(), cert.tbs_der());
    let r = |c: &Certificate| *EcdsaSignature::from_der(c.signature_value()).unwrap().r();
    assert_ne!(r(&resigned), r(&cert));

    members(2, msps)
        .evaluate(&[signed(&issued, &cert), signed(&issued, &resigned)])
        .unwrap();
}

/// A certificate from a foreign CA is dropped at deserialisation with a clear error, so the policy fails.
#[test]
fn foreign_ca_identity_is_dropped() {
    let pki = DevPki::generate(MSP_ID, "a.example.com").unwrap();
    let foreign = DevPki::generate(MSP_ID, "a.example.com").unwrap();
    let msps = manager(&pki);
    let issued = foreign
        .issue("User1@a.example.com", NodeRole::Client)
        .unwrap();
    let cert = Certificate::from_pem(issued.cert_pem.as_bytes()).unwrap();
    let item = signed(&issued, &cert);
    let err = msps.deserialize_identity(&item.identity).unwrap_err();
    assert!(matches!(err, IdentityLookupError::Refused(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("does not chain to the MSP's roots"),
        "{err}"
    );
    assert_eq!(
        members(1, msps).evaluate(&[item]),
        Err(PolicyError::SignatureSetNotSatisfied)
    );
}
