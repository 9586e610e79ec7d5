//! Runs in Node under wasm-bindgen-test: the parts whose wasm32 build differs from the
//! native one (the JS-backed RNG and clock) or that must behave identically on both.
//! `cargo test --target wasm32-unknown-unknown --test wasm`
#![cfg(target_arch = "wasm32")]
// Test code: a failed unwrap is a failed test (clippy does not see wasm_bindgen_test as #[test]).
#![allow(clippy::unwrap_used)]

use nanobanana::accounts::password;
use nanobanana::auth::token;
use wasm_bindgen_test::wasm_bindgen_test;

#[wasm_bindgen_test]
fn random_ids_come_from_the_js_rng() {
    let a = nanobanana::random::uuid_v4().unwrap();
    let b = nanobanana::random::uuid_v4().unwrap();
    assert_ne!(a, b);
    assert_eq!(&a[14..15], "4", "{a} is not a v4 uuid");
    let id = nanobanana::http::new_request_id();
    assert!(id.starts_with("req_") && id.len() == 28, "{id}");
}

#[wasm_bindgen_test]
fn the_js_clock_is_read_without_panicking() {
    let now = nanobanana::time::now_millis();
    // After 2025-01-01 and before 2100: a real clock, not zero.
    assert!(now > 1_735_689_600_000 && now < 4_102_444_800_000, "{now}");
    assert_eq!(nanobanana::time::iso_from_millis(now).len(), 24);
}

#[wasm_bindgen_test]
fn bcrypt_hashes_and_verifies_in_wasm() {
    let hash = password::Password::parse("correct horse".into()).unwrap().hash(4).unwrap();
    assert!(password::verify("correct horse", Some(&hash), 4));
    assert!(!password::verify("wrong horse!", Some(&hash), 4));
}

#[wasm_bindgen_test]
fn tokens_round_trip_in_wasm() {
    let secret = "0123456789abcdef0123456789abcdef";
    let now = nanobanana::time::now_millis() / 1000;
    let issued = token::issue(secret, "user-1", 0, now).unwrap();
    assert_eq!(token::verify(secret, &issued.token, now).unwrap().user_id, "user-1");
    assert_eq!(token::verify(secret, &issued.token, now + 8 * 86_400).unwrap_err().code.as_str(), "token_expired");
}

#[wasm_bindgen_test]
fn synthetic_png_is_byte_identical_to_native() {
    use sha2::{Digest, Sha256};
    let spec = nanobanana::synthetic::SyntheticSpec {
        prompt: "pinned prompt",
        width: 96,
        height: 64,
        artistic: true,
        index: 2,
        inputs: None,
    };
    let png = nanobanana::synthetic::render_png(&spec);
    // Same value as synthetic::tests::pinned_output natively.
    assert_eq!(hex::encode(Sha256::digest(&png)), "64d6a7d6393eadfd8247d21abcc63710bfe811612139240640773afe15068322");
}
