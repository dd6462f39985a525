//! Certificate sanitisation: a certificate's own ECDSA signature is normalised to
//! low-S with the issuing CA's curve order before the MSP uses its bytes (identity
//! ids, admin and IDENTITY principals, roots and intermediates).

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use korder_msp::devpki::{DevPki, IssuedCert, NodeRole};
use korder_msp::{
    Certificate, EcCurve, EcdsaSignature, Msp, MspError, MspVersion, SanitizeError, sanitize_der,
    signature_to_low_s, with_signature_value,
};
use korder_proto::Message;
use korder_proto::common::msp_principal::Classification;
use korder_proto::common::msp_role::MspRoleType;
use korder_proto::common::{MspPrincipal, MspRole};
use korder_proto::msp::{FabricMspConfig, SerializedIdentity};

const MSP_ID: &str = "OrdererMSP";

/// The certificate with its signature `(r, s)` replaced by `(r, n - s)`.
fn flip_s(cert: &Certificate) -> Certificate {
    let sig = EcdsaSignature::from_der(cert.signature_value())
        .unwrap()
        .negate_s();
    Certificate::from_der(&with_signature_value(cert.der(), &sig.to_der()).unwrap()).unwrap()
}

/// The (low-S, high-S) forms of a P-256-signed certificate.
fn forms(cert: &Certificate) -> (Certificate, Certificate) {
    let sig = EcdsaSignature::from_der(cert.signature_value()).unwrap();
    if sig.is_high_s() {
        (flip_s(cert), cert.clone())
    } else {
        (cert.clone(), flip_s(cert))
    }
}

fn pem_cert(pem: &str) -> Certificate {
    Certificate::from_pem(pem.as_bytes()).unwrap()
}

fn serialized(cert: &Certificate) -> Vec<u8> {
    SerializedIdentity {
        mspid: MSP_ID.to_owned(),
        id_bytes: Bytes::from(cert.to_pem()),
    }
    .encode_to_vec()
}

fn role(role: MspRoleType) -> MspPrincipal {
    MspPrincipal {
        principal_classification: Classification::Role as i32,
        principal: MspRole {
            msp_identifier: MSP_ID.to_owned(),
            role: role as i32,
        }
        .encode_to_vec()
        .into(),
    }
}

/// An MSP config without NodeOUs: the given roots, intermediates and admins.
fn config(
    roots: &[&Certificate],
    inters: &[&Certificate],
    admins: &[&Certificate],
) -> FabricMspConfig {
    let pems = |certs: &[&Certificate]| {
        certs
            .iter()
            .map(|c| Bytes::from(c.to_pem()))
            .collect::<Vec<_>>()
    };
    FabricMspConfig {
        name: MSP_ID.to_owned(),
        root_certs: pems(roots),
        intermediate_certs: pems(inters),
        admins: pems(admins),
        ..Default::default()
    }
}

fn issue(pki: &DevPki, cn: &str, role: NodeRole) -> IssuedCert {
    pki.issue(cn, role).unwrap()
}

/// Fabric's own sample certificate is low-S; its high-S twin still verifies and sanitises back to it byte for byte.
#[test]
fn sanitizing_high_s_sample_certificate_restores_the_original() {
    let dir = common::sample_msp_dir();
    let ca =
        Certificate::from_pem(&std::fs::read(dir.join("cacerts/cacert.pem")).unwrap()).unwrap();
    let leaf =
        Certificate::from_pem(&std::fs::read(dir.join("signcerts/peer.pem")).unwrap()).unwrap();
    assert!(
        !EcdsaSignature::from_der(leaf.signature_value())
            .unwrap()
            .is_high_s(),
        "the sample certificate is expected in low-S form"
    );
    let high = flip_s(&leaf);
    assert_ne!(high.der(), leaf.der());
    high.verify_issued_by(&ca).unwrap();
    assert_eq!(high.tbs_der(), leaf.tbs_der());

    let sanitized = high.sanitized(&ca).unwrap();
    assert_eq!(sanitized.der(), leaf.der());
    assert_eq!(
        sanitize_der(high.der(), EcCurve::P256).unwrap().unwrap(),
        leaf.der().to_vec()
    );
}

/// A certificate whose outer structure is not exactly `SEQUENCE { tbs, algorithm, BIT STRING }`
/// (bytes after it, cut short, another outer tag) is refused as malformed, not rewritten.
#[test]
fn malformed_certificate_structure_is_refused() {
    let pki = DevPki::generate(MSP_ID, "example.com").unwrap();
    let (_, high) = forms(&pem_cert(&issue(&pki, "o", NodeRole::Orderer).cert_pem));
    let der = high.der().to_vec();
    let mut trailing = der.clone();
    trailing.push(0);
    let mut other_tag = der.clone();
    other_tag[0] = 0x31;
    for bad in [trailing, der[..der.len() - 1].to_vec(), other_tag] {
        assert!(
            matches!(
                sanitize_der(&bad, EcCurve::P256),
                Err(SanitizeError::Malformed { .. })
            ),
            "accepted {} bytes",
            bad.len()
        );
        assert!(with_signature_value(&bad, &[1]).is_err());
    }
    assert!(sanitize_der(&der, EcCurve::P256).unwrap().is_some());
}

/// A low-S certificate is returned unchanged, and the function reports that nothing was rewritten.
#[test]
fn sanitizing_low_s_certificate_changes_nothing() {
    let pki = DevPki::generate(MSP_ID, "example.com").unwrap();
    let ca = pem_cert(pki.ca_cert_pem());
    let leaf = pem_cert(&issue(&pki, "o", NodeRole::Orderer).cert_pem);
    let (low, high) = forms(&leaf);
    assert_eq!(sanitize_der(low.der(), EcCurve::P256).unwrap(), None);
    assert_eq!(low.sanitized(&ca).unwrap().der(), low.der());
    assert_eq!(high.sanitized(&ca).unwrap().der(), low.der());
}

/// Without NodeOUs an admin is recognised by its sanitised certificate, whichever form is listed or presented.
#[test]
fn admin_in_high_s_form_is_admin_without_node_ous() {
    let pki = DevPki::generate(MSP_ID, "example.com").unwrap();
    let ca = pem_cert(pki.ca_cert_pem());
    let admin = pem_cert(&issue(&pki, "Admin@example.com", NodeRole::Client).cert_pem);
    let other = pem_cert(&issue(&pki, "User1@example.com", NodeRole::Client).cert_pem);
    let (low, high) = forms(&admin);
    for listed in [&low, &high] {
        let msp = Msp::from_config(&config(&[&ca], &[], &[listed]), MspVersion::V1_4_3).unwrap();
        assert_eq!(msp.admins()[0].der(), low.der());
        for presented in [&low, &high] {
            let id = msp.deserialize_identity(&serialized(presented)).unwrap();
            assert_eq!(id.certificate().der(), presented.der());
            assert_eq!(id.sanitized_certificate().der(), low.der());
            msp.satisfies_principal(&id, &role(MspRoleType::Admin))
                .unwrap();
        }
        let not_admin = msp.deserialize_identity(&serialized(&other)).unwrap();
        assert!(
            msp.satisfies_principal(&not_admin, &role(MspRoleType::Admin))
                .is_err()
        );
    }
}

/// Both signature forms of one certificate deserialise to the same identity id; another certificate does not.
#[test]
fn identity_id_is_the_hash_of_the_sanitised_certificate() {
    let pki = DevPki::generate(MSP_ID, "example.com").unwrap();
    let ca = pem_cert(pki.ca_cert_pem());
    let leaf = pem_cert(&issue(&pki, "o", NodeRole::Orderer).cert_pem);
    let other = pem_cert(&issue(&pki, "p", NodeRole::Orderer).cert_pem);
    let (low, high) = forms(&leaf);
    let msp = Msp::from_config(&config(&[&ca], &[], &[]), MspVersion::V1_3).unwrap();
    let id_low = msp.deserialize_identity(&serialized(&low)).unwrap();
    let id_high = msp.deserialize_identity(&serialized(&high)).unwrap();
    assert_ne!(id_low.serialized(), id_high.serialized());
    assert_eq!(id_low.id(), id_high.id());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, low.der());
    assert_eq!(id_low.id(), hex::encode(digest.as_ref()));
    let id_other = msp.deserialize_identity(&serialized(&other)).unwrap();
    assert_ne!(id_other.id(), id_low.id());
}

/// A root CA listed in high-S form is kept in low-S form and still anchors its identities' chains.
#[test]
fn root_in_high_s_form_anchors_chains() {
    let pki = DevPki::generate(MSP_ID, "example.com").unwrap();
    let (root_low, root_high) = forms(&pem_cert(pki.ca_cert_pem()));
    let leaf = pem_cert(&issue(&pki, "o", NodeRole::Orderer).cert_pem);
    let msp = Msp::from_config(&config(&[&root_high], &[], &[]), MspVersion::V1_3).unwrap();
    assert_eq!(msp.roots()[0].der(), root_low.der());
    let id = msp.deserialize_identity(&serialized(&leaf)).unwrap();
    msp.validate(&id).unwrap();
    msp.satisfies_principal(&id, &role(MspRoleType::Member))
        .unwrap();
}

/// A certificate of a foreign CA fails deserialisation with an error naming the MSP and the missing chain.
#[test]
fn foreign_ca_certificate_fails_deserialization() {
    let pki = DevPki::generate(MSP_ID, "example.com").unwrap();
    let foreign = DevPki::generate(MSP_ID, "example.com").unwrap();
    let msp = Msp::from_config(
        &config(&[&pem_cert(pki.ca_cert_pem())], &[], &[]),
        MspVersion::V1_3,
    )
    .unwrap();
    let cert = pem_cert(&issue(&foreign, "o", NodeRole::Orderer).cert_pem);
    let err = msp.deserialize_identity(&serialized(&cert)).unwrap_err();
    assert!(matches!(err, MspError::Deserialize { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("cannot be deserialized by MSP OrdererMSP"),
        "{text}"
    );
    assert!(text.contains("does not chain to the MSP's roots"), "{text}");
    // Refused again from the cache, with the same error.
    assert_eq!(
        msp.deserialize_identity(&serialized(&cert)).unwrap_err(),
        err
    );
}

/// An admin certificate from a foreign CA makes MSP setup fail, since it cannot be sanitised.
#[test]
fn foreign_admin_fails_setup() {
    let pki = DevPki::generate(MSP_ID, "example.com").unwrap();
    let foreign = DevPki::generate(MSP_ID, "example.com").unwrap();
    let admin = pem_cert(&issue(&foreign, "Admin@example.com", NodeRole::Client).cert_pem);
    let err = Msp::from_config(
        &config(&[&pem_cert(pki.ca_cert_pem())], &[], &[&admin]),
        MspVersion::V1_4_3,
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not chain"), "{err}");
}

/// An intermediate CA listed in high-S form is kept in low-S form and issues valid identities.
#[test]
fn intermediate_in_high_s_form_is_sanitised_and_issues_identities() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    };
    let ca_params = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    };
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let root_params = ca_params("root.example.com");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let inter_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let inter_params = ca_params("ica.example.com");
    let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
    let inter_issuer = Issuer::new(inter_params, inter_key);
    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "orderer0.example.com");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf = leaf_params.signed_by(&leaf_key, &inter_issuer).unwrap();

    let root = Certificate::from_der(root.der()).unwrap();
    let (inter_low, inter_high) = forms(&Certificate::from_der(inter.der()).unwrap());
    let (leaf_low, leaf_high) = forms(&Certificate::from_der(leaf.der()).unwrap());
    let msp = Msp::from_config(&config(&[&root], &[&inter_high], &[]), MspVersion::V1_3).unwrap();
    assert_eq!(msp.intermediates()[0].der(), inter_low.der());
    for presented in [&leaf_low, &leaf_high] {
        let id = msp.deserialize_identity(&serialized(presented)).unwrap();
        assert_eq!(id.sanitized_certificate().der(), leaf_low.der());
        msp.validate(&id).unwrap();
    }
    // The root issued a CA, so it may not issue identities itself.
    let direct = pem_cert(&{
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "direct");
        p.is_ca = IsCa::ExplicitNoCa;
        p.signed_by(
            &KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            &root_issuer,
        )
        .unwrap()
        .pem()
    });
    let id = msp.deserialize_identity(&serialized(&direct)).unwrap();
    assert!(
        msp.validate(&id)
            .unwrap_err()
            .to_string()
            .contains("leaf CAs")
    );
}

/// Low-S normalisation on P-256 and P-384 yields signatures that still verify and are left alone a second time.
#[test]
fn low_s_normalisation_keeps_signatures_valid_on_p256_and_p384() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1,
        ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey,
    };
    let rng = SystemRandom::new();
    let cases = [
        (
            EcCurve::P256,
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &ECDSA_P256_SHA256_ASN1,
        ),
        (
            EcCurve::P384,
            &ECDSA_P384_SHA384_ASN1_SIGNING,
            &ECDSA_P384_SHA384_ASN1,
        ),
    ];
    for (curve, signing, verifying) in cases {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref()).unwrap();
        let public = UnparsedPublicKey::new(verifying, key.public_key().as_ref().to_vec());
        let mut rewritten = 0;
        for i in 0..32u8 {
            let message = [i; 40];
            let sig = key.sign(&rng, &message).unwrap();
            let low = match signature_to_low_s(curve, sig.as_ref()).unwrap() {
                Some(low) => {
                    rewritten += 1;
                    low
                }
                None => sig.as_ref().to_vec(),
            };
            public.verify(&message, &low).unwrap();
            assert_eq!(signature_to_low_s(curve, &low).unwrap(), None, "{curve}");
        }
        // With 32 random signatures, none rewritten would mean s is never high.
        assert!(rewritten > 0, "{curve}: no high-S signature in 32");
    }
}
