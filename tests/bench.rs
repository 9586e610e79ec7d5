//! Benchmarks of the CPU-heavy paths, compiled to wasm32 and run in Node (V8, the engine
//! workerd runs). They print figures and assert nothing: `bash scripts/bench.sh`.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)]

use base64::Engine;
use nanobanana::synthetic::{render_png, SyntheticSpec};
use wasm_bindgen_test::{console_log, wasm_bindgen_test};

fn now_ms() -> f64 {
    worker::js_sys::Date::now()
}

/// Mean milliseconds of `runs` calls of `work`.
fn time(runs: u32, mut work: impl FnMut()) -> f64 {
    work(); // warm-up
    let start = now_ms();
    for _ in 0..runs {
        work();
    }
    (now_ms() - start) / f64::from(runs)
}

#[wasm_bindgen_test]
fn bench_synthetic_png() {
    for (width, height) in [(1024, 1024), (1536, 1024), (1792, 1024), (2048, 2048)] {
        for artistic in [false, true] {
            let spec =
                SyntheticSpec { prompt: "a banana in a spacesuit", width, height, artistic, index: 0, inputs: None };
            let mut bytes = 0;
            let ms = time(10, || bytes = render_png(&spec).len());
            console_log!(
                "bench: synthetic {width}x{height} {} : {ms:.1} ms, {bytes} bytes",
                if artistic { "artistic" } else { "natural" }
            );
        }
    }
}

#[wasm_bindgen_test]
fn bench_gemini_response_decode() {
    // A 1.5 MB image inside Gemini's JSON, as base64: parsed and decoded once.
    // A real PNG header (the type is read from the bytes), padded to 1.5 MB.
    let spec = SyntheticSpec { prompt: "header", width: 64, height: 64, artistic: false, index: 0, inputs: None };
    let mut image = render_png(&spec);
    image.resize(1_500_000, 7);
    let body = serde_json::json!({"candidates": [{"finishReason": "STOP", "content": {"parts": [
        {"text": "draft", "thought": true},
        {"inlineData": {"mimeType": "image/png", "data": base64::engine::general_purpose::STANDARD.encode(&image)}}
    ]}}]})
    .to_string()
    .into_bytes();
    let ms = time(10, || {
        assert!(matches!(nanobanana::gemini::interpret(200, &body), nanobanana::gemini::Attempt::Image(_)));
    });
    console_log!("bench: gemini 200 with a 1.5 MB image ({} KB JSON): {ms:.1} ms", body.len() / 1024);
}

#[wasm_bindgen_test]
fn bench_bcrypt() {
    for cost in [4, 8, 10] {
        let password = nanobanana::accounts::password::Password::parse("correct horse battery".into()).unwrap();
        let ms = time(3, || {
            password.hash(cost).unwrap();
        });
        console_log!("bench: bcrypt cost {cost}: {ms:.0} ms per hash");
    }
}

#[wasm_bindgen_test]
fn bench_sha256() {
    // The largest input image (7 MB) is hashed once for its record and once for the
    // request's fingerprint.
    let data = vec![7u8; 7_000_000];
    let ms = time(5, || {
        std::hint::black_box(hmac_sha256::Hash::hash(&data));
    });
    console_log!("bench: sha256 of a 7 MB input: {ms:.1} ms");
}
