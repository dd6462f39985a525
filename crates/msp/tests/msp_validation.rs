//! Channel MSP: setup from FabricMSPConfig, identity validation and principal matching.

mod common;

use korder_msp::devpki::{DevPki, IssuedCert, NodeRole};
use korder_msp::mspdir::MspDir;
use korder_msp::{Certificate, Identity, Msp, MspError, MspVersion};
use korder_proto::Message;
use korder_proto::common::msp_principal::Classification;
use korder_proto::common::msp_role::MspRoleType;
use korder_proto::common::{CombinedPrincipal, MspPrincipal, MspRole, OrganizationUnit};

fn role(msp_id: &str, role: MspRoleType) -> MspPrincipal {
    MspPrincipal {
        principal_classification: Classification::Role as i32,
        principal: MspRole {
            msp_identifier: msp_id.to_owned(),
            role: role as i32,
        }
        .encode_to_vec()
        .into(),
    }
}

fn identity(msp_id: &str, issued: &IssuedCert) -> Identity {
    Identity::new(
        msp_id,
        Certificate::from_pem(issued.cert_pem.as_bytes()).expect("issued cert parses"),
    )
}

struct Org {
    pki: DevPki,
    msp: Msp,
    _dir: tempfile::TempDir,
}

fn dev_org(version: MspVersion, crls: Vec<String>) -> Org {
    let pki = DevPki::generate("OrdererMSP", "example.com").expect("generate");
    let dir = tempfile::tempdir().expect("tempdir");
    let node = pki
        .issue("orderer0.example.com", NodeRole::Orderer)
        .expect("issue");
    let admin = pki
        .issue("Admin@example.com", NodeRole::Admin)
        .expect("issue");
    pki.write_msp_dir(dir.path(), &node, &admin).expect("write");
    let mut config = MspDir::load(dir.path())
        .expect("load")
        .to_fabric_msp_config("OrdererMSP");
    config.revocation_list = crls.into_iter().map(Into::into).collect();
    if version < MspVersion::V1_4_3 {
        // Before v1.4.3 an admin certificate must be a valid client: an admin-OU one is refused.
        let err =
            Msp::from_config(&config, version).expect_err("admin-OU admin refused before v1.4.3");
        assert!(err.to_string().contains("exactly one NodeOU"), "{err}");
        config.admins.clear();
    }
    let msp = Msp::from_config(&config, version).expect("MSP setup");
    Org {
        pki,
        msp,
        _dir: dir,
    }
}

/// Identities of each role validate and satisfy exactly the roles their OU gives them.
#[test]
fn node_ous_classify_roles() {
    let org = dev_org(MspVersion::V1_4_3, Vec::new());
    let msp = &org.msp;
    let cases = [
        (NodeRole::Orderer, MspRoleType::Orderer),
        (NodeRole::Client, MspRoleType::Client),
        (NodeRole::Peer, MspRoleType::Peer),
        (NodeRole::Admin, MspRoleType::Admin),
    ];
    for (node_role, own) in cases {
        let id = identity("OrdererMSP", &org.pki.issue("x", node_role).unwrap());
        msp.validate(&id).unwrap();
        msp.satisfies_principal(&id, &role("OrdererMSP", MspRoleType::Member))
            .unwrap();
        for (_, other) in cases {
            let result = msp.satisfies_principal(&id, &role("OrdererMSP", other));
            assert_eq!(
                result.is_ok(),
                other == own,
                "{node_role:?} as {other:?}: {result:?}"
            );
        }
    }
}

/// A certificate from another CA, a CA certificate, and a certificate without a NodeOU are invalid.
#[test]
fn foreign_ca_and_unclassified_certificates_are_invalid() {
    let org = dev_org(MspVersion::V1_4_3, Vec::new());
    let other = DevPki::generate("OrdererMSP", "example.com").unwrap();
    let foreign = identity("OrdererMSP", &other.issue("o", NodeRole::Orderer).unwrap());
    let err = org.msp.validate(&foreign).unwrap_err();
    assert!(err.to_string().contains("does not chain"), "{err}");

    let ca = Identity::new(
        "OrdererMSP",
        Certificate::from_pem(org.pki.ca_cert_pem().as_bytes()).unwrap(),
    );
    assert!(
        org.msp
            .validate(&ca)
            .unwrap_err()
            .to_string()
            .contains("CA certificate")
    );

    let tls = org
        .pki
        .issue_tls("t", &["t.example.com".to_owned()])
        .unwrap();
    // Issued by the TLS CA, which is not an identity root.
    assert!(org.msp.validate(&identity("OrdererMSP", &tls)).is_err());
}

/// A principal or identity of another MSP is refused with a clear error.
#[test]
fn other_msp_is_refused() {
    let org = dev_org(MspVersion::V1_4_3, Vec::new());
    let id = identity(
        "OrdererMSP",
        &org.pki.issue("o", NodeRole::Orderer).unwrap(),
    );
    assert!(matches!(
        org.msp
            .satisfies_principal(&id, &role("Org1MSP", MspRoleType::Member)),
        Err(MspError::WrongMsp { .. })
    ));
    let renamed = Identity::new("Org1MSP", id.certificate().clone());
    assert!(matches!(
        org.msp.validate(&renamed),
        Err(MspError::WrongMsp { .. })
    ));
    assert!(matches!(
        org.msp.deserialize_identity(renamed.serialized()),
        Err(MspError::WrongMsp { .. })
    ));
}

/// A certificate listed in a CRL signed by its CA is revoked; others stay valid.
#[test]
fn revoked_certificate_is_invalid() {
    let pki_probe = dev_org(MspVersion::V1_4_3, Vec::new());
    let victim = pki_probe.pki.issue("victim", NodeRole::Client).unwrap();
    let victim_cert = Certificate::from_pem(victim.cert_pem.as_bytes()).unwrap();
    let crl = pki_probe.pki.crl_pem(&[&victim_cert]).unwrap();
    // Rebuild the same org's MSP with the CRL.
    let mut config = MspDir::load(pki_probe._dir.path())
        .unwrap()
        .to_fabric_msp_config("OrdererMSP");
    config.revocation_list = vec![crl.into()];
    let msp = Msp::from_config(&config, MspVersion::V1_4_3).unwrap();
    let err = msp.validate(&identity("OrdererMSP", &victim)).unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    let other = pki_probe.pki.issue("other", NodeRole::Client).unwrap();
    msp.validate(&identity("OrdererMSP", &other)).unwrap();
}

/// ORDERER role needs MSP v1.4.3; CLIENT needs NodeOUs; COMBINED needs every part.
#[test]
fn version_dependent_principals() {
    let org = dev_org(MspVersion::V1_3, Vec::new());
    let orderer = identity(
        "OrdererMSP",
        &org.pki.issue("o", NodeRole::Orderer).unwrap(),
    );
    let client = identity("OrdererMSP", &org.pki.issue("c", NodeRole::Client).unwrap());
    // Under v1.3 only client and peer OUs classify; an orderer-OU certificate is unclassified.
    assert!(org.msp.validate(&orderer).is_err());
    assert!(matches!(
        org.msp
            .satisfies_principal(&client, &role("OrdererMSP", MspRoleType::Orderer)),
        Err(MspError::BadPrincipal(_))
    ));
    let combined = |parts: Vec<MspPrincipal>| MspPrincipal {
        principal_classification: Classification::Combined as i32,
        principal: CombinedPrincipal { principals: parts }
            .encode_to_vec()
            .into(),
    };
    org.msp
        .satisfies_principal(
            &client,
            &combined(vec![
                role("OrdererMSP", MspRoleType::Member),
                role("OrdererMSP", MspRoleType::Client),
            ]),
        )
        .unwrap();
    assert!(
        org.msp
            .satisfies_principal(
                &client,
                &combined(vec![
                    role("OrdererMSP", MspRoleType::Member),
                    role("OrdererMSP", MspRoleType::Peer),
                ]),
            )
            .is_err()
    );
    assert!(
        org.msp
            .satisfies_principal(&client, &combined(Vec::new()))
            .is_err()
    );
}

/// Fabric's sample MSP: OU identifier COP bound to the CA, admin by certificate, no NodeOUs.
#[test]
fn sample_msp_validates_its_signing_identity() {
    let dir = MspDir::load(common::sample_msp_dir()).unwrap();
    let config = dir.to_fabric_msp_config("SampleOrg");
    let msp = Msp::from_config(&config, MspVersion::V1_1).unwrap();
    let id = Identity::new("SampleOrg", dir.sign_certs[0].clone());
    msp.validate(&id).unwrap();
    msp.satisfies_principal(&id, &role("SampleOrg", MspRoleType::Admin))
        .unwrap();
    let err = msp
        .satisfies_principal(&id, &role("SampleOrg", MspRoleType::Client))
        .unwrap_err();
    assert!(err.to_string().contains("NodeOUs not activated"), "{err}");

    // OU principal: COP with the certifiers identifier of the CA chain (SHA-256 of the CA DER).
    let certifiers = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, dir.ca_certs[0].der());
    let ou = |name: &str, certifiers: &[u8]| MspPrincipal {
        principal_classification: Classification::OrganizationUnit as i32,
        principal: OrganizationUnit {
            msp_identifier: "SampleOrg".to_owned(),
            organizational_unit_identifier: name.to_owned(),
            certifiers_identifier: certifiers.to_vec().into(),
        }
        .encode_to_vec()
        .into(),
    };
    msp.satisfies_principal(&id, &ou("COP", certifiers.as_ref()))
        .unwrap();
    assert!(msp.satisfies_principal(&id, &ou("COP", &[0; 32])).is_err());
    assert!(
        msp.satisfies_principal(&id, &ou("OTHER", certifiers.as_ref()))
            .is_err()
    );
}

/// An MSP config without root certificates, or with a non-CA root, is refused at setup.
#[test]
fn bad_msp_configs_are_refused() {
    let dir = MspDir::load(common::sample_msp_dir()).unwrap();
    let mut config = dir.to_fabric_msp_config("SampleOrg");
    config.root_certs.clear();
    assert!(Msp::from_config(&config, MspVersion::V1_4_3).is_err());

    let mut config = dir.to_fabric_msp_config("SampleOrg");
    config.root_certs = vec![dir.sign_certs[0].to_pem().into()];
    let err = Msp::from_config(&config, MspVersion::V1_4_3).unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");

    let mut config = dir.to_fabric_msp_config("SampleOrg");
    config.root_certs = vec![b"garbage".to_vec().into()];
    assert!(matches!(
        Msp::from_config(&config, MspVersion::V1_4_3),
        Err(MspError::Certificate { .. })
    ));
}

/// Capability names map to the MSP version Fabric selects.
#[test]
fn msp_version_from_capabilities() {
    assert_eq!(MspVersion::from_channel_capabilities([]), MspVersion::V1_0);
    assert_eq!(
        MspVersion::from_channel_capabilities(["V1_1"]),
        MspVersion::V1_1
    );
    assert_eq!(
        MspVersion::from_channel_capabilities(["V1_1", "V1_4_2"]),
        MspVersion::V1_3
    );
    assert_eq!(
        MspVersion::from_channel_capabilities(["V1_4_3"]),
        MspVersion::V1_4_3
    );
    assert_eq!(
        MspVersion::from_channel_capabilities(["V2_0"]),
        MspVersion::V1_4_3
    );
}
