//! ECDSA P-256 over SHA-256, the way Fabric's X.509 MSP signs and checks.
//!
//! A signature travels as DER `SEQUENCE { INTEGER r, INTEGER s }`. Verifiers accept
//! only the low-S form (`s <= n/2`), so that a signature cannot be altered into a
//! second valid one; signers normalise `s` before encoding. The high-S check is made
//! here, before the signature reaches the crypto library, which would accept both.

use crate::cert::HasPublicKey;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};
use std::fmt;

/// Length of a P-256 scalar or coordinate, in bytes.
pub const P256_SCALAR_LEN: usize = 32;

/// Length of an uncompressed SEC1 P-256 point (`04 ‖ x ‖ y`), in bytes.
pub const P256_POINT_LEN: usize = 65;

/// The order `n` of the P-256 group, big-endian.
pub const P256_ORDER: [u8; P256_SCALAR_LEN] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// `floor(n / 2)` for P-256, big-endian: the largest `s` a verifier accepts.
pub const P256_HALF_ORDER: [u8; P256_SCALAR_LEN] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

/// The order `n` of the P-384 group, big-endian.
pub const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

/// Elliptic curves whose group order is known here, for low-S normalisation of
/// signatures made with keys on them (certificate signatures included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EcCurve {
    /// NIST P-256 (prime256v1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
}

impl EcCurve {
    /// The group order `n`, big-endian, as wide as a scalar of the curve.
    pub fn order(self) -> &'static [u8] {
        match self {
            Self::P256 => &P256_ORDER,
            Self::P384 => &P384_ORDER,
        }
    }

    /// The curve's usual name.
    pub fn name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
        }
    }
}

impl fmt::Display for EcCurve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rewrites a DER ECDSA signature made on `curve` into low-S form.
///
/// Returns `None` when `s` is already at most `n/2` (the signature is then used as
/// it is, byte for byte), else the minimal DER `SEQUENCE { INTEGER r, INTEGER n - s }`.
/// Trailing bytes after the sequence are not accepted.
pub fn signature_to_low_s(
    curve: EcCurve,
    der_signature: &[u8],
) -> Result<Option<Vec<u8>>, VerifyError> {
    let pair = read_der_pair(der_signature)?;
    if pair.trailing {
        return Err(VerifyError::MalformedSignature {
            reason: "unexpected data after the SEQUENCE",
        });
    }
    let (r, s) = (pair.r, pair.s);
    let order = curve.order();
    if r.len() > order.len() || s.len() > order.len() {
        return Err(VerifyError::OutOfRange {
            component: if r.len() > order.len() { "r" } else { "s" },
        });
    }
    let mut s_wide = vec![0u8; order.len()];
    s_wide[order.len() - s.len()..].copy_from_slice(&s);
    if s_wide.as_slice() >= order {
        return Err(VerifyError::OutOfRange { component: "s" });
    }
    let mut mirrored = vec![0u8; order.len()];
    sub_be(order, &s_wide, &mut mirrored);
    // n is odd, so s and n - s differ; the high one is the larger of the two.
    if s_wide <= mirrored {
        return Ok(None);
    }
    Ok(Some(encode_der_pair(&r, &mirrored)))
}

/// The two INTEGERs of a DER ECDSA signature, as positive big-endian magnitudes
/// without leading zeros.
struct DerPair {
    r: Vec<u8>,
    s: Vec<u8>,
    /// Whether bytes follow the SEQUENCE.
    trailing: bool,
}

/// Reads a strict DER `SEQUENCE { INTEGER r, INTEGER s }`: definite minimal lengths,
/// minimal INTEGER encodings, nothing else inside the SEQUENCE, `r` and `s` above zero.
fn read_der_pair(der: &[u8]) -> Result<DerPair, VerifyError> {
    let mut read = None;
    let outcome = yasna::parse_der(der, |reader| {
        read = Some(reader.read_sequence(|seq| {
            let r = seq.next().read_bigint_bytes()?;
            let s = seq.next().read_bigint_bytes()?;
            Ok((r, s))
        })?);
        Ok(())
    });
    // yasna also insists that nothing follows the value; the callback has already
    // handed the SEQUENCE out when that is the only complaint, so trailing bytes are
    // told apart from a malformed signature and left to the caller.
    let Some((r, s)) = read else {
        let reason = match outcome.map_err(|e| e.kind()) {
            Err(yasna::ASN1ErrorKind::Eof) => "truncated DER",
            Err(yasna::ASN1ErrorKind::Extra) => "unexpected data after s inside the SEQUENCE",
            _ => "not a DER SEQUENCE of two minimally encoded INTEGERs",
        };
        return Err(VerifyError::MalformedSignature { reason });
    };
    Ok(DerPair {
        r: positive_magnitude(r, "r")?,
        s: positive_magnitude(s, "s")?,
        trailing: outcome.is_err(),
    })
}

/// Minimal DER `SEQUENCE { INTEGER r, INTEGER s }` of two positive big-endian magnitudes.
fn encode_der_pair(r: &[u8], s: &[u8]) -> Vec<u8> {
    yasna::construct_der(|writer| {
        writer.write_sequence(|seq| {
            seq.next().write_bigint_bytes(r, true);
            seq.next().write_bigint_bytes(s, true);
        });
    })
}

/// The magnitude of a DER INTEGER read by yasna, refusing zero and negative values.
fn positive_magnitude(
    (bytes, non_negative): (Vec<u8>, bool),
    component: &'static str,
) -> Result<Vec<u8>, VerifyError> {
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    if !non_negative || skip == bytes.len() {
        return Err(VerifyError::NotPositive { component });
    }
    Ok(bytes[skip..].to_vec())
}

/// `out = a - b` for equal-width big-endian numbers with `a >= b`: the one
/// subtraction behind every low-S rewrite (`n - s`).
fn sub_be(a: &[u8], b: &[u8], out: &mut [u8]) {
    assert!(
        a.len() == b.len() && a.len() == out.len(),
        "operands must have the same width"
    );
    let mut borrow = 0i16;
    for i in (0..a.len()).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = if d < 0 {
            d += 256;
            1
        } else {
            0
        };
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0, "subtrahend must not exceed the minuend");
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The signature bytes are not a DER `SEQUENCE { INTEGER r, INTEGER s }`.
    #[error("malformed DER ECDSA signature: {reason}")]
    MalformedSignature {
        /// What is wrong with the encoding.
        reason: &'static str,
    },
    /// `r` or `s` is zero or negative.
    #[error("invalid ECDSA signature: {component} must be greater than zero")]
    NotPositive {
        /// `"r"` or `"s"`.
        component: &'static str,
    },
    /// `r` or `s` is not below the curve order.
    #[error("invalid ECDSA signature: {component} is not below the curve order")]
    OutOfRange {
        /// `"r"` or `"s"`.
        component: &'static str,
    },
    /// `s` lies in the upper half of the curve order; Fabric accepts low-S only.
    #[error(
        "invalid ECDSA signature: s is in the high half of the curve order (only low-S signatures are accepted)"
    )]
    HighS,
    /// The signature is well formed but does not match the message and key.
    #[error("ECDSA signature does not verify against the public key")]
    Mismatch,
    /// The signer's key cannot verify ECDSA P-256 signatures.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Why a public key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is not an uncompressed point on P-256.
    #[error("not a valid uncompressed P-256 public key ({len} bytes)")]
    InvalidPoint {
        /// Length of the rejected encoding.
        len: usize,
    },
    /// The key uses an algorithm or curve other than ECDSA P-256.
    #[error("unsupported public key: {algorithm} (only ECDSA P-256 is supported)")]
    Unsupported {
        /// A description of the algorithm or curve found.
        algorithm: String,
    },
}

/// A P-256 public key, parsed once and reusable for many verifications.
#[derive(Clone)]
pub struct PublicKey {
    point: [u8; P256_POINT_LEN],
    parsed: ParsedPublicKey,
}

impl PublicKey {
    /// Builds a key from an uncompressed SEC1 point (`04 ‖ x ‖ y`), checking it lies on P-256.
    pub fn from_sec1_point(point: &[u8]) -> Result<Self, KeyError> {
        let invalid = || KeyError::InvalidPoint { len: point.len() };
        let fixed: [u8; P256_POINT_LEN] = point.try_into().map_err(|_| invalid())?;
        if fixed[0] != 0x04 {
            return Err(invalid());
        }
        let parsed =
            ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, fixed).map_err(|_| invalid())?;
        Ok(Self {
            point: fixed,
            parsed,
        })
    }

    /// The uncompressed SEC1 encoding of the point.
    pub fn sec1_point(&self) -> &[u8; P256_POINT_LEN] {
        &self.point
    }

    /// Verifies `der_signature` over `message` (hashed with SHA-256 here).
    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> Result<(), VerifyError> {
        let sig = EcdsaSignature::from_der(der_signature)?;
        if sig.is_high_s() {
            return Err(VerifyError::HighS);
        }
        self.parsed
            .verify_sig(message, &sig.to_fixed())
            .map_err(|_| VerifyError::Mismatch)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.point == other.point
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(P-256 {})", hex::encode(self.point))
    }
}

/// Verifies a DER ECDSA signature over `message` with SHA-256 and P-256.
///
/// `key` is anything that holds a P-256 public key: a [`PublicKey`], a parsed
/// [`crate::Certificate`] or an [`crate::Identity`]. High-S signatures are rejected
/// with [`VerifyError::HighS`] before any curve arithmetic.
pub fn verify_ecdsa_p256_sha256(
    key: &(impl HasPublicKey + ?Sized),
    message: &[u8],
    der_signature: &[u8],
) -> Result<(), VerifyError> {
    key.public_key()?.verify(message, der_signature)
}

/// The two scalars of an ECDSA P-256 signature, each left-padded to 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EcdsaSignature {
    r: [u8; P256_SCALAR_LEN],
    s: [u8; P256_SCALAR_LEN],
}

impl fmt::Debug for EcdsaSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcdsaSignature")
            .field("r", &hex::encode(self.r))
            .field("s", &hex::encode(self.s))
            .finish()
    }
}

impl EcdsaSignature {
    /// Builds a signature from `r ‖ s` (64 bytes, big-endian), checking both are in `[1, n-1]`.
    pub fn from_fixed(fixed: &[u8]) -> Result<Self, VerifyError> {
        if fixed.len() != 2 * P256_SCALAR_LEN {
            return Err(VerifyError::MalformedSignature {
                reason: "fixed-width signature must be 64 bytes",
            });
        }
        let mut r = [0u8; P256_SCALAR_LEN];
        let mut s = [0u8; P256_SCALAR_LEN];
        r.copy_from_slice(&fixed[..P256_SCALAR_LEN]);
        s.copy_from_slice(&fixed[P256_SCALAR_LEN..]);
        check_scalar(&r, "r")?;
        check_scalar(&s, "s")?;
        Ok(Self { r, s })
    }

    /// Parses a strict DER `SEQUENCE { INTEGER r, INTEGER s }`.
    ///
    /// Bytes after the sequence are ignored, as Fabric's decoder ignores them.
    /// Non-minimal integer encodings and negative values are rejected.
    pub fn from_der(der: &[u8]) -> Result<Self, VerifyError> {
        let pair = read_der_pair(der)?;
        Ok(Self {
            r: scalar_from_magnitude(&pair.r, "r")?,
            s: scalar_from_magnitude(&pair.s, "s")?,
        })
    }

    /// `r`, big-endian, 32 bytes.
    pub fn r(&self) -> &[u8; P256_SCALAR_LEN] {
        &self.r
    }

    /// `s`, big-endian, 32 bytes.
    pub fn s(&self) -> &[u8; P256_SCALAR_LEN] {
        &self.s
    }

    /// Whether `s > n/2`.
    pub fn is_high_s(&self) -> bool {
        self.s > P256_HALF_ORDER
    }

    /// The same signature with `s` replaced by `n - s` when it is in the high half.
    pub fn to_low_s(self) -> Self {
        if self.is_high_s() {
            Self {
                r: self.r,
                s: sub_from_order(&self.s),
            }
        } else {
            self
        }
    }

    /// The mirrored signature `(r, n - s)`, which verifies exactly when the original does.
    pub fn negate_s(self) -> Self {
        Self {
            r: self.r,
            s: sub_from_order(&self.s),
        }
    }

    /// `r ‖ s`, 64 bytes.
    pub fn to_fixed(&self) -> [u8; 2 * P256_SCALAR_LEN] {
        let mut out = [0u8; 2 * P256_SCALAR_LEN];
        out[..P256_SCALAR_LEN].copy_from_slice(&self.r);
        out[P256_SCALAR_LEN..].copy_from_slice(&self.s);
        out
    }

    /// Minimal DER `SEQUENCE { INTEGER r, INTEGER s }`.
    pub fn to_der(&self) -> Vec<u8> {
        encode_der_pair(&self.r, &self.s)
    }
}

/// A positive magnitude left-padded to a P-256 scalar, checked to be below `n`.
fn scalar_from_magnitude(
    magnitude: &[u8],
    component: &'static str,
) -> Result<[u8; P256_SCALAR_LEN], VerifyError> {
    if magnitude.len() > P256_SCALAR_LEN {
        return Err(VerifyError::OutOfRange { component });
    }
    let mut out = [0u8; P256_SCALAR_LEN];
    out[P256_SCALAR_LEN - magnitude.len()..].copy_from_slice(magnitude);
    check_scalar(&out, component)?;
    Ok(out)
}

fn check_scalar(value: &[u8; P256_SCALAR_LEN], component: &'static str) -> Result<(), VerifyError> {
    if value.iter().all(|&b| b == 0) {
        return Err(VerifyError::NotPositive { component });
    }
    if *value >= P256_ORDER {
        return Err(VerifyError::OutOfRange { component });
    }
    Ok(())
}

/// `n - value` for `0 < value < n`, big-endian.
fn sub_from_order(value: &[u8; P256_SCALAR_LEN]) -> [u8; P256_SCALAR_LEN] {
    let mut out = [0u8; P256_SCALAR_LEN];
    sub_be(&P256_ORDER, value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Half the order doubled plus one is the order: the two constants agree.
    #[test]
    fn half_order_is_floor_of_order_over_two() {
        let mut doubled = [0u8; P256_SCALAR_LEN];
        let mut carry = 1u16; // n is odd: 2 * floor(n/2) + 1 = n
        for i in (0..P256_SCALAR_LEN).rev() {
            let v = u16::from(P256_HALF_ORDER[i]) * 2 + carry;
            doubled[i] = v as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0);
        assert_eq!(doubled, P256_ORDER);
    }

    /// DER encoding and decoding are inverse, including values needing a 0x00 pad byte.
    #[test]
    fn der_round_trip_with_padding_and_short_values() {
        let mut r = [0u8; P256_SCALAR_LEN];
        r[31] = 5;
        let mut s = [0u8; P256_SCALAR_LEN];
        s[0] = 0x7f;
        s[31] = 1;
        let sig = EcdsaSignature { r, s };
        let der = sig.to_der();
        assert_eq!(&der[..5], &[0x30, der.len() as u8 - 2, 0x02, 0x01, 0x05]);
        assert_eq!(EcdsaSignature::from_der(&der).unwrap(), sig);

        let mut s_hi = [0u8; P256_SCALAR_LEN];
        s_hi[0] = 0x80;
        let sig = EcdsaSignature { r, s: s_hi };
        let der = sig.to_der();
        assert_eq!(&der[5..8], &[0x02, 0x21, 0x00]);
        assert_eq!(EcdsaSignature::from_der(&der).unwrap(), sig);
    }

    /// Malformed DER inputs produce errors, never panics.
    #[test]
    fn malformed_der_is_rejected() {
        let cases: &[&[u8]] = &[
            &[],
            &[0x30],
            &[0x30, 0x00],
            &[0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01],
            &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01],
            &[0x30, 0x06, 0x02, 0x01, 0x01, 0x04, 0x01, 0x01],
            &[0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01],
            &[0x30, 0x06, 0x02, 0x00, 0x02, 0x02, 0x01, 0x01],
            &[
                0x30, 0x09, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x05, 0x00, 0x00,
            ],
            &[0x30, 0x84, 0x00, 0x00, 0x00, 0x06],
        ];
        for case in cases {
            assert!(
                matches!(
                    EcdsaSignature::from_der(case),
                    Err(VerifyError::MalformedSignature { .. })
                ),
                "accepted {case:02x?}"
            );
        }
        assert_eq!(
            EcdsaSignature::from_der(&[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01]),
            Err(VerifyError::NotPositive { component: "r" })
        );
        assert_eq!(
            EcdsaSignature::from_der(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x81]),
            Err(VerifyError::NotPositive { component: "s" })
        );
        let mut too_big = vec![0x30, 0x26, 0x02, 0x21, 0x01];
        too_big.extend_from_slice(&[0u8; 32]);
        too_big.extend_from_slice(&[0x02, 0x01, 0x01]);
        assert_eq!(
            EcdsaSignature::from_der(&too_big),
            Err(VerifyError::OutOfRange { component: "r" })
        );
    }

    /// Negating s twice gives back the original, and exactly one of s and n-s is low.
    #[test]
    fn negate_s_flips_between_halves() {
        let mut s = P256_HALF_ORDER;
        s[31] += 1; // n/2 + 1 .. just above the half
        let r = [1u8; P256_SCALAR_LEN];
        let sig = EcdsaSignature { r, s };
        assert!(sig.is_high_s());
        let low = sig.to_low_s();
        assert!(!low.is_high_s());
        assert_eq!(low.negate_s(), sig);
        assert_eq!(low.to_low_s(), low);
    }

    /// Bytes after the SEQUENCE are ignored when verifying (as Fabric does) but refused
    /// by the certificate low-S rewrite, which re-encodes the whole value.
    #[test]
    fn trailing_bytes_ignored_by_from_der_refused_by_low_s_rewrite() {
        let mut s = P256_HALF_ORDER;
        s[31] += 1;
        let sig = EcdsaSignature {
            r: [1u8; P256_SCALAR_LEN],
            s,
        };
        let mut der = sig.to_der();
        der.extend_from_slice(&[0x00, 0x05]);
        assert_eq!(EcdsaSignature::from_der(&der), Ok(sig));
        assert!(matches!(
            signature_to_low_s(EcCurve::P256, &der),
            Err(VerifyError::MalformedSignature { .. })
        ));
        let low = signature_to_low_s(EcCurve::P256, &sig.to_der())
            .unwrap()
            .expect("high-S is rewritten");
        assert_eq!(low, sig.to_low_s().to_der());
        assert_eq!(signature_to_low_s(EcCurve::P256, &low), Ok(None));
    }

    /// On P-384 the rewrite subtracts from P-384's order: n - (n - 1) is 1.
    #[test]
    fn low_s_rewrite_uses_the_curves_order() {
        let mut s = P384_ORDER;
        s[47] -= 1;
        let der = encode_der_pair(&[7], &s);
        let low = signature_to_low_s(EcCurve::P384, &der)
            .unwrap()
            .expect("n - 1 is high");
        assert_eq!(low, [0x30, 0x06, 0x02, 0x01, 0x07, 0x02, 0x01, 0x01]);
        assert_eq!(
            signature_to_low_s(EcCurve::P384, &encode_der_pair(&[7], &P384_ORDER)),
            Err(VerifyError::OutOfRange { component: "s" })
        );
    }

    /// A point of the wrong length or not on the curve is refused.
    #[test]
    fn invalid_points_are_rejected() {
        assert!(PublicKey::from_sec1_point(&[0x04; 10]).is_err());
        let mut off_curve = [0u8; P256_POINT_LEN];
        off_curve[0] = 0x04;
        off_curve[1] = 1;
        assert!(PublicKey::from_sec1_point(&off_curve).is_err());
    }
}
