//! An identity provider's JWK Set, as fetched (`PublishedKeys::parse`). The document comes
//! from the network: nothing in it may panic, and whatever is read must be a public
//! signature key of a family we verify — never an HMAC key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::auth::jwks::PublishedKeys;
use portcullis::auth::jwt::algorithm::SigningAlgorithm;

fuzz_target!(|data: &[u8]| {
    let Ok(keys) = PublishedKeys::parse(data) else {
        return;
    };
    assert!(!keys.is_empty());
    assert!(keys.len() <= portcullis::auth::jwks::MAX_PUBLISHED_KEYS);
    for alg in SigningAlgorithm::ALL {
        let usable = keys.candidates(None, alg).count();
        if alg.is_symmetric() {
            assert_eq!(usable, 0, "an HMAC algorithm found a key");
        }
    }
});
