//! X.509 certificates, their low-S sanitisation, and DER ECDSA signatures.

use korder_msp::Certificate;
use korder_msp::cert::sanitize_der;
use korder_msp::signature::{EcCurve, EcdsaSignature, signature_to_low_s};

/// A certificate in PEM or DER, parsed and sanitised for both issuer curves.
///
/// Invariants: parsing never panics; a sanitised certificate parses again, keeps
/// its to-be-signed bytes and subject, and sanitising it once more changes nothing.
pub fn x509_cert(data: &[u8]) {
    let Ok(cert) = Certificate::from_pem_or_der(data) else {
        return;
    };
    // Read every field the MSP reads.
    let _ = (
        cert.subject(),
        cert.issuer(),
        cert.serial(),
        cert.common_name(),
    );
    let _ = (cert.subject_key_id(), cert.authority_key_id(), cert.is_ca());
    let _ = (
        cert.organizational_units(),
        cert.key_curve(),
        cert.is_ecdsa_signed(),
    );
    let _ = cert.verify_issued_by(&cert);
    for curve in [EcCurve::P256, EcCurve::P384] {
        let Ok(Some(low)) = sanitize_der(cert.der(), curve) else {
            continue;
        };
        let again = Certificate::from_der(&low)
            .unwrap_or_else(|e| panic!("a sanitised certificate does not parse: {e}"));
        assert_eq!(
            again.tbs_der(),
            cert.tbs_der(),
            "sanitising changed the TBS"
        );
        assert_eq!(again.subject(), cert.subject());
        match sanitize_der(&low, curve) {
            Ok(None) => {}
            other => panic!("sanitising twice is not idempotent on {curve}: {other:?}"),
        }
    }
}

/// A DER ECDSA signature through the strict parser and the low-S rewrite.
///
/// Invariants: what parses re-encodes to a DER that parses to the same (r, s);
/// low-S is a fixed point; a rewritten signature is low-S for its curve.
pub fn ecdsa_signature(data: &[u8]) {
    if let Ok(sig) = EcdsaSignature::from_der(data) {
        let der = sig.to_der();
        let back = EcdsaSignature::from_der(&der)
            .unwrap_or_else(|e| panic!("re-encoded signature does not parse: {e}"));
        assert_eq!((back.r(), back.s()), (sig.r(), sig.s()));
        let low = sig.to_low_s();
        assert!(!low.is_high_s(), "to_low_s left s high");
        assert_eq!(low.to_low_s().s(), low.s(), "to_low_s is not idempotent");
        assert_eq!(sig.negate_s().negate_s().s(), sig.s());
        let fixed = sig.to_fixed();
        let from_fixed = EcdsaSignature::from_fixed(&fixed)
            .unwrap_or_else(|e| panic!("fixed form does not parse: {e}"));
        assert_eq!(from_fixed.s(), sig.s());
    }
    for curve in [EcCurve::P256, EcCurve::P384] {
        if let Ok(Some(low)) = signature_to_low_s(curve, data) {
            match signature_to_low_s(curve, &low) {
                Ok(None) => {}
                other => panic!("a rewritten signature is not low-S on {curve}: {other:?}"),
            }
        }
    }
}
