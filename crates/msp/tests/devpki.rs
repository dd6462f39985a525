//! The development PKI: certificates chain, carry their role OU, and round-trip through MSP dirs.

use korder_msp::devpki::{DevPki, NodeRole};
use korder_msp::mspdir::MspDir;
use korder_msp::signer::SigningIdentity;
use korder_msp::{Certificate, Identity};

/// Identity certificates chain to the CA, carry their role OU and a CA-matching AKI.
#[test]
fn issued_certificates_chain_and_carry_role_ou() {
    let pki = DevPki::generate("OrdererMSP", "example.com").unwrap();
    let ca = Certificate::from_pem(pki.ca_cert_pem().as_bytes()).unwrap();
    assert!(ca.is_ca());
    assert!(ca.subject_key_id().is_some());
    ca.verify_issued_by(&ca).unwrap();
    for (name, role) in [
        ("orderer0.example.com", NodeRole::Orderer),
        ("User1@example.com", NodeRole::Client),
        ("Admin@example.com", NodeRole::Admin),
        ("peer0.example.com", NodeRole::Peer),
    ] {
        let issued = pki.issue(name, role).unwrap();
        let cert = Certificate::from_pem(issued.cert_pem.as_bytes()).unwrap();
        assert!(!cert.is_ca());
        assert_eq!(cert.common_name(), Some(name));
        assert_eq!(cert.organizational_units(), [role.ou().to_owned()]);
        assert_eq!(cert.authority_key_id(), ca.subject_key_id());
        cert.verify_issued_by(&ca).unwrap();
        // Signing with the issued key verifies with the issued certificate.
        let signer = SigningIdentity::from_pem(
            "OrdererMSP",
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
        )
        .unwrap();
        let sig = signer.sign(b"message").unwrap();
        cert.verify(b"message", &sig).unwrap();
    }
}

/// Two generated organisations do not chain to each other.
#[test]
fn certificates_do_not_chain_to_a_foreign_ca() {
    let a = DevPki::generate("OrgA", "a.example.com").unwrap();
    let b = DevPki::generate("OrgB", "a.example.com").unwrap();
    let leaf = Certificate::from_pem(a.issue("n", NodeRole::Orderer).unwrap().cert_pem.as_bytes())
        .unwrap();
    let foreign_ca = Certificate::from_pem(b.ca_cert_pem().as_bytes()).unwrap();
    // Same subject name, different key: only the signature check can tell.
    assert!(matches!(
        leaf.verify_issued_by(&foreign_ca),
        Err(korder_msp::ChainError::Signature(_))
    ));
}

/// A written MSP directory loads back: signing identity, CA, admin, TLS CA, NodeOUs.
#[test]
fn written_msp_dir_loads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = DevPki::generate("OrdererMSP", "example.com").unwrap();
    let node = pki
        .issue("orderer0.example.com", NodeRole::Orderer)
        .unwrap();
    let admin = pki.issue("Admin@example.com", NodeRole::Admin).unwrap();
    let msp = tmp.path().join("msp");
    pki.write_msp_dir(&msp, &node, &admin).unwrap();

    let signer = SigningIdentity::load_msp_dir(&msp, "OrdererMSP").unwrap();
    assert_eq!(signer.msp_id(), "OrdererMSP");
    assert_eq!(signer.certificate().to_pem(), node.cert_pem);
    let sig = signer.sign(b"payload").unwrap();
    let back = Identity::from_serialized(&signer.serialized()).unwrap();
    back.verify(b"payload", &sig).unwrap();

    let dir = MspDir::load(&msp).unwrap();
    assert_eq!(dir.ca_certs[0].to_pem(), pki.ca_cert_pem());
    assert_eq!(dir.admin_certs[0].to_pem(), admin.cert_pem);
    assert_eq!(dir.tls_ca_certs[0].to_pem(), pki.tls_ca_cert_pem());
    let node_ous = dir.node_ous.unwrap();
    assert!(node_ous.enable);
    for (ou, want) in [
        (&node_ous.client, "client"),
        (&node_ous.peer, "peer"),
        (&node_ous.admin, "admin"),
        (&node_ous.orderer, "orderer"),
    ] {
        let ou = ou.as_ref().unwrap();
        assert_eq!(ou.organizational_unit, want);
        assert_eq!(ou.certificate.as_ref(), Some(&dir.ca_certs[0]));
    }

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(msp.join("keystore/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// TLS certificates come from the TLS CA, name the hosts and are written with a private key file.
#[test]
fn tls_certificates_name_hosts_and_chain_to_tls_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = DevPki::generate("OrdererMSP", "example.com").unwrap();
    let hosts = vec!["orderer0.example.com".to_owned(), "127.0.0.1".to_owned()];
    let tls = pki.issue_tls("orderer0.example.com", &hosts).unwrap();
    let cert = Certificate::from_pem(tls.cert_pem.as_bytes()).unwrap();
    let tls_ca = Certificate::from_pem(pki.tls_ca_cert_pem().as_bytes()).unwrap();
    cert.verify_issued_by(&tls_ca).unwrap();
    let ca = Certificate::from_pem(pki.ca_cert_pem().as_bytes()).unwrap();
    assert!(cert.verify_issued_by(&ca).is_err());

    let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.contains("orderer0.example.com")),
        "{names:?}"
    );
    assert!(
        names.contains(&"IPAddress(7f:00:00:01)".to_owned()),
        "{names:?}"
    );

    pki.write_tls_dir(tmp.path(), &tls).unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("server.crt")).unwrap(),
        tls.cert_pem
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("ca.crt")).unwrap(),
        pki.tls_ca_cert_pem()
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("server.key")).unwrap(),
        tls.key_pem
    );
}

/// Saved CAs load back and issue certificates that chain to the same CA; a
/// certificate can be issued with a validity already in the past.
#[test]
fn saved_cas_issue_more_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::generate("Org1MSP", "org1.example.com").unwrap();
    pki.save(dir.path()).unwrap();
    let again = DevPki::load(dir.path(), "Org1MSP", "org1.example.com").unwrap();
    assert_eq!(again.ca_cert_pem(), pki.ca_cert_pem());
    let ca = Certificate::from_pem(pki.ca_cert_pem().as_bytes()).unwrap();
    let issued = again.issue("later", NodeRole::Client).unwrap();
    let cert = Certificate::from_pem(issued.cert_pem.as_bytes()).unwrap();
    cert.verify_issued_by(&ca).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let old = again
        .issue_with_validity("old", NodeRole::Client, now - 7200, now - 3600)
        .unwrap();
    let old = Certificate::from_pem(old.cert_pem.as_bytes()).unwrap();
    assert!(old.is_expired_at(std::time::SystemTime::now()));
    old.verify_issued_by(&ca).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
