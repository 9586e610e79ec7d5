//! The parsers that read what a client sends, under hostile input: none panics on any
//! input (property tests), and the memory each allocates is bounded by a constant plus a
//! small multiple of the input, whatever its shape (a counting allocator). The Worker's
//! wasm memory never shrinks and an isolate past 128 MB is killed with every request on
//! it, so one request that builds a tree of a 26 MB body takes down the others.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nanobanana::auth::api_key::ApiKey;
use nanobanana::auth::token;
use nanobanana::body;
use nanobanana::generate::{edits, inputs};
use nanobanana::{idempotency, media, multipart};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts the bytes this thread holds, and the most it held, so tests running on other
/// threads do not disturb the figure.
struct Counting;

thread_local! {
    static HELD: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn add(bytes: usize) {
    let _ = HELD.try_with(|held| {
        let now = held.get() + bytes;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn sub(bytes: usize) {
    let _ = HELD.try_with(|held| held.set(held.get().saturating_sub(bytes)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        sub(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Both blocks exist for a moment; count the new one before the old one goes.
        add(new_size);
        sub(layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What `work` allocated at its worst, beyond what the thread held before it.
fn peak_of<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let before = HELD.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    let out = work();
    (out, PEAK.with(Cell::get) - before)
}

const MIB: usize = 1024 * 1024;
/// The body limit of the generation routes (27 MB).
const BODY: usize = inputs::GENERATION_BODY_LIMIT;

/// A JSON body of about `size` bytes: `head`, then `item` repeated, then `tail`.
fn repeated(head: &str, item: &str, tail: &str, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + head.len() + tail.len());
    out.extend_from_slice(head.as_bytes());
    while out.len() + item.len() + tail.len() < size {
        out.extend_from_slice(item.as_bytes());
    }
    // The separator after the last item goes.
    if out.ends_with(b",") {
        out.pop();
    }
    out.extend_from_slice(tail.as_bytes());
    out
}

/// `/v1/generate`'s parse: the fields, then the inputs.
fn parse_generate(raw: &[u8]) -> Result<usize, (u16, String)> {
    let (mut fields, images) =
        body::parse_object_keeping(raw, BODY, "images").map_err(|e| (e.status(), e.code.as_str().to_string()))?;
    let specs = inputs::parse_raw(images).map_err(|e| (e.status(), e.code.as_str().to_string()))?;
    let _ = fields.take("prompt");
    let _ = idempotency::fingerprint("POST /v1/generate", &fields);
    Ok(specs.len())
}

#[test]
fn the_hostile_bodies_of_the_report_are_refused_in_a_few_kilobytes() {
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "13 million zeros in an unknown field",
            repeated(r#"{"prompt":"x","junk":["#, "0,", "]}", BODY),
            413,
            "payload_too_large",
        ),
        (
            "13 million zeros in images",
            repeated(r#"{"prompt":"x","images":["#, "0,", "]}", BODY),
            422,
            "unsupported_by_model",
        ),
        ("a 26 MB prompt", repeated(r#"{"prompt":""#, "x", r#""}"#, BODY), 413, "payload_too_large"),
        (
            "millions of tiny objects",
            repeated(r#"{"prompt":"x","junk":["#, "{},", "]}", BODY),
            413,
            "payload_too_large",
        ),
        ("millions of fields", repeated(r#"{"prompt":"x","#, r#""a":0,"#, "}", BODY), 413, "payload_too_large"),
        ("deep nesting", repeated(r#"{"prompt":"x","junk":"#, "[", "", BODY), 400, "invalid_json"),
        ("deep nesting in images", repeated(r#"{"images":"#, "[", "", BODY), 400, "invalid_json"),
        (
            "an item with a huge unknown field",
            repeated(r#"{"images":[{"junk":["#, "0,", "]}]}", BODY),
            400,
            "invalid_image",
        ),
        (
            "64 huge arrays as items",
            repeated(r#"{"images":["#, "[0,0,0,0,0,0,0,0],", "]}", BODY),
            422,
            "unsupported_by_model",
        ),
    ];
    for (name, raw, status, code) in cases {
        assert!(raw.len() > 25 * MIB && raw.len() <= BODY, "{name}: {} bytes", raw.len());
        let (result, peak) = peak_of(|| parse_generate(&raw));
        assert_eq!(result, Err((status, code.to_string())), "{name}");
        assert!(peak <= MIB, "{name}: {peak} bytes allocated for a {} byte body", raw.len());
    }
}

/// A multipart form: `(name, filename, bytes)` parts, boundary `B`.
fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(filename) = filename {
            body.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--B--\r\n");
    body
}

fn parse_edit(raw: &[u8]) -> Result<usize, (u16, String)> {
    let (fields, specs) = edits::read_form("B", raw).map_err(|e| (e.status(), e.code.as_str().to_string()))?;
    let _ = idempotency::fingerprint("POST /v1/images/edits", &fields);
    Ok(specs.len())
}

#[test]
fn a_hostile_edit_form_is_refused_before_its_text_is_copied() {
    let control = vec![1u8; 27_000_000];
    let image = nanobanana::png::encode_rgb(8, 8, |_, _| {});
    let raw = form(&[("image", Some("a.png"), &image), ("prompt", None, &control)]);
    drop(control);
    let (result, peak) = peak_of(|| parse_edit(&raw));
    assert_eq!(result, Err((413, "payload_too_large".into())));
    assert!(peak <= MIB, "{peak}");

    let junk = vec![7u8; 400_000];
    let many: Vec<(&str, Option<&str>, &[u8])> = (0..64).map(|_| ("image[]", Some("x.png"), junk.as_slice())).collect();
    let raw = form(&many);
    let (result, peak) = peak_of(|| parse_edit(&raw));
    assert_eq!(result, Err((400, "invalid_image".into())));
    assert!(peak <= MIB, "one part at a time: {peak}");
}

/// The largest request a client may legitimately send: three inputs of 6.6 MB (20 MB
/// together) as base64 in one 27 MB body. Its peak is reported in docs/architecture.md.
#[test]
fn the_largest_legitimate_edit_costs_about_its_own_size() {
    let mut input = nanobanana::png::encode_rgb(8, 8, |_, _| {});
    input.resize(inputs::MAX_INPUTS_TOTAL_BYTES / 3, 0);
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &input);
    let item = format!(r#"{{"b64_json":"{b64}","mime_type":"image/png"}}"#);
    let raw = format!(r#"{{"prompt":"make it blue","images":[{item},{item},{item}]}}"#).into_bytes();
    drop((b64, item, input));
    assert!(raw.len() <= BODY);
    let (result, peak) = peak_of(|| parse_generate(&raw));
    assert_eq!(result, Ok(3));
    // The decoded inputs (20 MB) are what the request is for; one input's base64 text lives
    // beside them while it decodes.
    eprintln!("largest legitimate edit: {} byte body, parse peak {} bytes", raw.len(), peak);
    assert!(peak <= inputs::MAX_INPUTS_TOTAL_BYTES + inputs::MAX_INPUT_BYTES * 4 / 3 + MIB, "{peak}");
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 256, 16, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..16).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z_]{0,12}", inner, 0..16)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Any request body for `/v1/generate`: an object of likely and unlikely fields, whose
/// `images` may be anything.
fn generate_body() -> impl Strategy<Value = Vec<u8>> {
    let field =
        prop_oneof![Just("prompt".to_string()), Just("images".to_string()), Just("n".to_string()), "[a-z]{1,8}"];
    prop::collection::btree_map(field, json_value(), 0..8)
        .prop_map(|map| serde_json::Value::Object(map.into_iter().collect()).to_string().into_bytes())
}

/// A constant plus a small multiple of the input: what any parse may allocate.
fn bounded(peak: usize, input: usize) -> bool {
    peak <= 256 * 1024 + 64 * input
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_as_a_generate_body(raw in prop::collection::vec(any::<u8>(), 0..4096)) {
        let (_, peak) = peak_of(|| parse_generate(&raw));
        prop_assert!(bounded(peak, raw.len()), "{peak} for {} bytes", raw.len());
    }

    #[test]
    fn any_json_object_as_a_generate_body(raw in generate_body()) {
        let (result, peak) = peak_of(|| parse_generate(&raw));
        if let Err((status, _)) = result {
            prop_assert!((400..500).contains(&status));
        }
        prop_assert!(bounded(peak, raw.len()), "{peak} for {} bytes", raw.len());
    }

    #[test]
    fn any_bytes_as_a_form(raw in prop::collection::vec(any::<u8>(), 0..4096), boundary in "[A-Za-z0-9'()+_,./:=?-]{1,70}") {
        let (_, peak) = peak_of(|| {
            let parts = multipart::parse(&raw, &boundary).map(|parts| parts.len());
            let form = edits::read_form(&boundary, &raw).map(|(_, specs)| specs.len());
            (parts.is_ok(), form.is_ok())
        });
        prop_assert!(bounded(peak, raw.len()), "{peak} for {} bytes", raw.len());
    }

    #[test]
    fn a_form_around_any_part(name in ".{0,40}", filename in proptest::option::of(".{0,40}"), data in prop::collection::vec(any::<u8>(), 0..2048)) {
        let raw = form(&[(&name, filename.as_deref(), &data), ("prompt", None, b"x")]);
        let (result, peak) = peak_of(|| parse_edit(&raw));
        if let Err((status, _)) = result {
            prop_assert!((400..500).contains(&status));
        }
        prop_assert!(bounded(peak, raw.len()), "{peak} for {} bytes", raw.len());
    }

    #[test]
    fn the_hand_written_ip_parsers_agree_with_core_net(
        text in "[0-9a-fA-F:.]{0,45}",
        v6 in any::<[u16; 8]>(),
        v4 in any::<[u8; 4]>(),
    ) {
        use std::net::{Ipv4Addr, Ipv6Addr};
        prop_assert_eq!(nanobanana::ip::parse_v4(&text), text.parse::<Ipv4Addr>().ok().map(|a| a.octets()));
        prop_assert_eq!(nanobanana::ip::parse_v6(&text), text.parse::<Ipv6Addr>().ok().map(|a| a.segments()));
        // Every address, in the shortest form std writes, and fully written out.
        let address = Ipv6Addr::from(v6);
        prop_assert_eq!(nanobanana::ip::parse_v6(&address.to_string()), Some(v6));
        let long = v6.iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":");
        prop_assert_eq!(nanobanana::ip::parse_v6(&long), Some(v6));
        prop_assert_eq!(nanobanana::ip::parse_v4(&Ipv4Addr::from(v4).to_string()), Some(v4));
    }

    #[test]
    fn money_reads_back_what_it_writes_and_nothing_else_panics(micros in 0u64..1_000_000_000_000_000_000, text in ".{0,24}") {
        use nanobanana::metering::Micros;
        prop_assert_eq!(Micros::parse(&Micros(micros).to_decimal()), Some(Micros(micros)));
        if let Some(parsed) = Micros::parse(&text) {
            // Whatever parses is a plain decimal, and writes back to itself.
            prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
            prop_assert_eq!(Micros::parse(&parsed.to_decimal()), Some(parsed));
        }
    }

    #[test]
    fn any_bytes_as_media(raw in prop::collection::vec(any::<u8>(), 0..4096)) {
        let (_, peak) = peak_of(|| (media::sniff(&raw), media::dimensions(&raw)));
        prop_assert!(peak <= 1024, "{peak}");
    }

    #[test]
    fn any_text_as_a_token_or_a_key(text in ".{0,600}", dotted in "[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,60}") {
        for candidate in [&text, &dotted] {
            let (verified, peak) = peak_of(|| token::verify("a secret of at least thirty-two bytes!", candidate, 1_800_000_000));
            prop_assert_eq!(verified.map_err(|e| e.status()).err(), Some(401));
            prop_assert!(bounded(peak, candidate.len()), "{peak}");
            let (key, peak) = peak_of(|| ApiKey::parse(candidate).map(|_| ()).map_err(|e| e.status()));
            prop_assert_eq!(key.err(), Some(401));
            prop_assert!(peak <= 1024, "{peak}");
        }
    }
}

/// Anything from upstream is untrusted too: an answer of a million parts, or of a million
/// candidates, costs no more than one of each.
#[test]
fn a_hostile_upstream_answer_is_read_in_bounded_memory() {
    use nanobanana::gemini::{interpret, Attempt};
    let png = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        nanobanana::png::encode_rgb(8, 8, |_, _| {}),
    );
    let image = format!(r#"{{"inlineData":{{"mimeType":"image/png","data":"{png}"}}}}"#);
    let parts = repeated(r#"{"candidates":[{"content":{"parts":["#, "{},", &format!(",{image}]}}}}]}}"), 8 * MIB);
    let (outcome, peak) = peak_of(|| interpret(200, &parts));
    assert!(matches!(outcome, Attempt::Image(_)), "{outcome:?}");
    assert!(peak <= 64 * 1024, "{peak} for {} bytes of parts", parts.len());

    let candidate = r#"{"content":{"parts":[{"text":"x"}]}},"#;
    let candidates = repeated(r#"{"candidates":["#, candidate, "]}", 8 * MIB);
    let (outcome, peak) = peak_of(|| interpret(200, &candidates));
    assert!(matches!(outcome, Attempt::Fail(_)), "{outcome:?}");
    assert!(peak <= 64 * 1024, "{peak} for {} bytes of candidates", candidates.len());

    let details = repeated(r#"{"error":{"message":"x","details":["#, "{},", "]}}", 8 * MIB);
    let (outcome, peak) = peak_of(|| interpret(429, &details));
    assert!(matches!(outcome, Attempt::Retry { .. }), "{outcome:?}");
    assert!(peak <= 64 * 1024, "{peak} for {} bytes of error details", details.len());
}
