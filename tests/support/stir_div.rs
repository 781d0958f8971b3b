//! What a buyer can check of DCE's `div` PASSporT (RFC 8946): its header, and its signature
//! under DCE's own certificate (`signer`, a test PKI whose chain is served at `x5u`).

use super::stir_pki::Pki;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dce::stir::{cert, passport};

/// The claims of `identity` (an `Identity` header value), after checking it is a `ppt=div`
/// PASSporT naming `x5u` whose signature verifies under `signer`'s leaf certificate (chained
/// to `signer`'s root at `now_s`). Panics with what is wrong.
pub fn div_claims(identity: &str, signer: &Pki, x5u: &str, now_s: i64) -> serde_json::Value {
    let div = passport::parse_identity(identity).expect("a div Identity parses");
    assert_eq!(div.ppt.as_deref(), Some("div"), "{identity}");
    assert_eq!(div.info.as_deref(), Some(x5u), "{identity}");
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).expect("base64url");
    let header: serde_json::Value = serde_json::from_slice(&b64(&div.header_b64)).unwrap();
    assert_eq!(header["ppt"], "div");
    assert_eq!(header["alg"], "ES256");
    let payload = div.payload_b64.clone().expect("the full form");
    let claims: serde_json::Value = serde_json::from_slice(&b64(&payload)).unwrap();
    let anchors = cert::Anchors::from_pem(signer.root_pem.as_bytes()).unwrap();
    let chain = cert::parse_chain(signer.chain_pem.as_bytes()).unwrap();
    let key = cert::validate_chain(&chain, &anchors, now_s).expect("DCE's certificate chains");
    let p = passport::Passport {
        header: serde_json::from_value(header).unwrap(),
        attest: dce::stir::Attestation::A,
        orig_tn: String::new(),
        dest_tn: Vec::new(),
        iat: 0,
        origid: None,
        signed: format!("{}.{payload}", div.header_b64).into_bytes(),
        signature: div.signature,
    };
    assert_eq!(
        cert::verify_signature(&p, &key),
        Ok(()),
        "the div's signature verifies with DCE's certificate"
    );
    claims
}
