//! Fabric's sample local MSP loads: signing identity, certificates and config.yaml.

mod common;

use korder_msp::Certificate;
use korder_msp::mspdir::MspDir;
use korder_msp::signer::{SignerError, SigningIdentity};
use std::time::{Duration, UNIX_EPOCH};

/// The sample MSP loads as SampleOrg, and its signing certificate's fields parse.
#[test]
fn sample_msp_signing_identity_loads() {
    let signer = SigningIdentity::load_msp_dir_at(
        common::sample_msp_dir(),
        "SampleOrg",
        common::fixed_now(),
    )
    .unwrap();
    assert_eq!(signer.msp_id(), "SampleOrg");
    let cert = signer.certificate();
    assert_eq!(cert.common_name(), Some("peer0.org1.example.com"));
    assert_eq!(cert.organizational_units(), ["COP".to_owned()]);
    assert!(
        cert.subject().contains("CN=peer0.org1.example.com"),
        "{}",
        cert.subject()
    );
    assert!(
        cert.issuer().contains("CN=ca.org1.example.com"),
        "{}",
        cert.issuer()
    );
    assert!(!cert.is_ca());
    // Not After : Nov 10 13:41:11 2027 GMT; Not Before: Nov 12 13:41:11 2017 GMT
    assert_eq!(cert.not_after_unix_s(), 1_825_854_071);
    assert_eq!(cert.not_before_unix_s(), 1_510_494_071);
    assert_eq!(
        signer.identity().expires_at(),
        UNIX_EPOCH + Duration::from_secs(1_825_854_071)
    );
    assert_eq!(
        hex::encode(cert.authority_key_id().unwrap()),
        "8a73912219cf1056548579ba7960649bb2bb65cf11e3fcfb2d6e07a2cb03942b"
    );
}

/// Loading refuses a signing certificate that has expired at the given time.
#[test]
fn expired_signing_certificate_is_refused() {
    let after_expiry = UNIX_EPOCH + Duration::from_secs(1_825_854_072);
    let err = SigningIdentity::load_msp_dir_at(common::sample_msp_dir(), "SampleOrg", after_expiry)
        .unwrap_err();
    assert!(matches!(err, SignerError::Expired { .. }), "{err}");
}

/// The signing certificate chains to the CA certificate, and not to a certificate of another name.
#[test]
fn sample_signcert_is_issued_by_sample_ca() {
    let dir = MspDir::load(common::sample_msp_dir()).unwrap();
    assert_eq!(dir.ca_certs.len(), 1);
    let ca = &dir.ca_certs[0];
    assert!(ca.is_ca());
    assert_eq!(ca.subject_key_id(), dir.sign_certs[0].authority_key_id());
    dir.sign_certs[0].verify_issued_by(ca).unwrap();
    assert!(matches!(
        dir.sign_certs[0].verify_issued_by(&dir.tls_ca_certs[0]),
        Err(korder_msp::ChainError::NameMismatch { .. })
    ));
}

/// config.yaml's OU identifiers and NodeOUs are read, with the CA bound to the COP OU.
#[test]
fn sample_msp_config_yaml_is_read() {
    let dir = MspDir::load(common::sample_msp_dir()).unwrap();
    assert_eq!(dir.ou_identifiers.len(), 1);
    assert_eq!(dir.ou_identifiers[0].organizational_unit, "COP");
    assert_eq!(
        dir.ou_identifiers[0].certificate.as_ref(),
        Some(&dir.ca_certs[0])
    );
    let node_ous = dir.node_ous.as_ref().unwrap();
    assert!(!node_ous.enable);
    assert_eq!(
        node_ous.client.as_ref().unwrap().organizational_unit,
        "OU_client"
    );
    assert_eq!(
        node_ous.orderer.as_ref().unwrap().organizational_unit,
        "OU_orderer"
    );
    assert!(node_ous.peer.as_ref().unwrap().certificate.is_none());
    assert_eq!(dir.tls_ca_certs.len(), 1);
    assert_eq!(dir.tls_intermediate_certs.len(), 1);

    let config = dir.to_fabric_msp_config("SampleOrg");
    assert_eq!(config.name, "SampleOrg");
    assert_eq!(config.root_certs.len(), 1);
    assert_eq!(
        Certificate::from_pem(&config.root_certs[0]).unwrap(),
        dir.ca_certs[0]
    );
    assert_eq!(config.admins.len(), 1);
    assert!(config.signing_identity.is_none());
    assert_eq!(
        config.organizational_unit_identifiers[0].organizational_unit_identifier,
        "COP"
    );
}

/// A directory without cacerts is refused, naming the directory.
#[test]
fn msp_dir_without_cacerts_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = MspDir::load(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("cacerts"), "{err}");
}

/// A bad config.yaml is reported with its path.
#[test]
fn bad_config_yaml_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("cacerts")).unwrap();
    std::fs::copy(
        common::sample_msp_dir().join("cacerts/cacert.pem"),
        tmp.path().join("cacerts/ca.pem"),
    )
    .unwrap();
    std::fs::write(tmp.path().join("config.yaml"), "NodeOUs: [not, a, map]\n").unwrap();
    let err = MspDir::load(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("config.yaml"), "{err}");
}
