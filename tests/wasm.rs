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

#[wasm_bindgen_test]
fn d1_columns_convert_strictly() {
    use nanobanana::auth::Role;
    use nanobanana::db::Row;
    use worker::js_sys;
    use worker::wasm_bindgen::JsValue;
    let object = js_sys::Object::new();
    let set = |name: &str, value: JsValue| {
        js_sys::Reflect::set(&object, &JsValue::from_str(name), &value).unwrap();
    };
    set("text", JsValue::from_str("x"));
    set("count", JsValue::from_f64(42.0));
    set("half", JsValue::from_f64(1.5));
    set("negative", JsValue::from_f64(-1.0));
    set("huge", JsValue::from_f64(2f64.powi(60)));
    set("nothing", JsValue::NULL);
    set("role", JsValue::from_str("admin"));
    set("unknown_role", JsValue::from_str("root"));
    let row = Row::from_object(object.clone().into());

    assert_eq!(row.get::<String>("text").unwrap(), "x");
    assert_eq!(row.get::<i64>("count").unwrap(), 42);
    assert_eq!(row.get::<u16>("count").unwrap(), 42);
    assert_eq!(row.get::<Option<u32>>("count").unwrap(), Some(42));
    assert_eq!(row.get::<Option<String>>("nothing").unwrap(), None);
    assert_eq!(row.get::<Option<String>>("absent").unwrap(), None);
    assert_eq!(row.get::<Role>("role").unwrap(), Role::Admin);
    // Anything else is a 500 naming the column, never a silent default.
    for (column, err) in [
        ("text", row.get::<i64>("text").unwrap_err()),
        ("count", row.get::<String>("count").unwrap_err()),
        ("half", row.get::<i64>("half").unwrap_err()),
        ("negative", row.get::<u32>("negative").unwrap_err()),
        ("huge", row.get::<i64>("huge").unwrap_err()),
        ("nothing", row.get::<String>("nothing").unwrap_err()),
        ("absent", row.get::<i64>("absent").unwrap_err()),
        ("unknown_role", row.get::<Role>("unknown_role").unwrap_err()),
    ] {
        assert_eq!(err.status(), 500, "{column}");
        assert!(err.cause.as_deref().unwrap_or_default().contains(column), "{column}: {:?}", err.cause);
    }
}

#[wasm_bindgen_test]
fn a_row_type_reads_every_column_or_names_the_first_it_cannot() {
    use nanobanana::db::{FromRow, Row};
    use nanobanana::generate::store::Charged;
    use worker::js_sys;
    use worker::wasm_bindgen::JsValue;
    let row_of = |n: JsValue, status: &str| {
        let object = js_sys::Object::new();
        let set = |name: &str, value: JsValue| {
            js_sys::Reflect::set(&object, &JsValue::from_str(name), &value).unwrap();
        };
        set("api_key_id", JsValue::from_str("k"));
        set("user_id", JsValue::from_str("u"));
        set("n", n);
        set("mode", JsValue::from_str("test"));
        set("created_at", JsValue::from_str("2026-11-30T00:00:00.000Z"));
        set("status", JsValue::from_str(status));
        set("webhook_url", JsValue::NULL);
        set("reserved_micros", JsValue::from_f64(528_336.0));
        Row::from_object(object.into())
    };
    let charged = Charged::from_row(&row_of(JsValue::from_f64(2.0), "queued")).unwrap();
    assert_eq!(charged.charge().micros, 528_336, "the money it reserved comes back with it");
    assert_eq!((charged.n, charged.user_id.as_str(), charged.inputs), (2, "u", None));
    let err = Charged::from_row(&row_of(JsValue::from_str("two"), "queued")).map(|_| ()).unwrap_err();
    assert!(err.cause.as_deref().unwrap_or_default().contains("D1 column n:"), "{:?}", err.cause);
    let err = Charged::from_row(&row_of(JsValue::from_str("two"), "sleeping")).map(|_| ()).unwrap_err();
    assert!(err.cause.as_deref().unwrap_or_default().contains("D1 column n:"), "the first bad column: {:?}", err.cause);
    let err = Charged::from_row(&row_of(JsValue::from_f64(1.0), "sleeping")).map(|_| ()).unwrap_err();
    assert!(err.cause.as_deref().unwrap_or_default().contains("D1 column status:"), "{:?}", err.cause);
}
