//! STIR/SHAKEN verification of one call with its signer's certificate cached (issue #16;
//! goal ≤ 50 µs median): parse the `Identity` header, decode the PASSporT, check its claims
//! and `x5u`, find the certificate in the cache, check the ES256 signature. And, for scale,
//! what a cache miss would cost on the worker if DCE did not cache the checked chain.

#[path = "../tests/support/stir_pki.rs"]
mod stir_pki;

use criterion::{criterion_group, criterion_main, Criterion};
use dce::stir::{cert, fetch, Step, Stir, Verdict};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bench(c: &mut Criterion) {
    let pki = stir_pki::Pki::new(true, (2024, 2030)).with_x5u("https://cr.sticr.example/sp.pem");
    let now_s = 1_790_000_000;
    let anchors = Arc::new(cert::Anchors::from_pem(pki.root_pem.as_bytes()).unwrap());
    let chain = cert::parse_chain(pki.chain_pem.as_bytes()).unwrap();
    let certs = Arc::new(fetch::Certs::new(10_000));
    let signer = cert::validate_chain(&chain, &anchors, now_s).unwrap();
    certs.put(
        "https://cr.sticr.example/sp.pem",
        Ok(Arc::new(signer)),
        Instant::now() + Duration::from_secs(3600),
    );
    let stir = Stir {
        anchors: anchors.clone(),
        max_age_s: 60,
        fetch_timeout: Duration::from_secs(1),
        x5u_allow: vec!["*.sticr.example".into()],
        certs,
        div: None,
    };
    let id = pki.identity("A", "13105551234", "18005550100", now_s);
    let ids = [id.as_str()];
    let now = Instant::now();
    match dce::stir::begin(&stir, &ids, "13105551234", "18005550100", now_s, now) {
        Step::Done(Verdict::Verified(_)) => {}
        other => panic!("the bench call must verify: {other:?}"),
    }
    c.bench_function("stir_verify_cached", |b| {
        b.iter(|| {
            let step = dce::stir::begin(
                black_box(&stir),
                black_box(&ids),
                "13105551234",
                "18005550100",
                now_s,
                now,
            );
            black_box(matches!(step, Step::Done(Verdict::Verified(_))))
        })
    });
    // The floor: ring's ES256 verification alone, on a key and message of the same shape.
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let msg = id.split('.').take(2).collect::<Vec<_>>().join(".");
    let sig = key.sign(&rng, msg.as_bytes()).unwrap();
    use ring::signature::KeyPair;
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        key.public_key().as_ref().to_vec(),
    );
    c.bench_function("es256_verify_ring_alone", |b| {
        b.iter(|| {
            black_box(
                public
                    .verify(black_box(msg.as_bytes()), sig.as_ref())
                    .is_ok(),
            )
        })
    });
    c.bench_function("stir_chain_check_uncached", |b| {
        b.iter(|| black_box(cert::validate_chain(black_box(&chain), &anchors, now_s).is_ok()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
