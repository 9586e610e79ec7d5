//! Where images live and how clients reach them.
//!
//! Each image is an R2 object `images/{generation id}/{index}` (a test key's:
//! `test-images/...`, a prefix an R2 lifecycle rule expires) with its Content-Type and
//! custom metadata (generation id, key id). A client gets, in order of preference:
//! `{PUBLIC_IMAGE_BASE}/{object key}` when a public bucket domain is configured; else a
//! signed Worker URL `/v1/images/{image id}?expires=...&signature=...` (HMAC-SHA256 under a
//! key derived from JWT_SECRET, valid `IMAGE_URL_TTL_SECONDS`); or, with no `IMAGES`
//! binding at all, a `data:` URL carrying the bytes.
//!
//! Served images can never be turned against the console's origin: only PNG, JPEG and
//! WebP are stored (by their magic bytes), and every image response carries
//! `Content-Security-Policy: default-src 'none'; sandbox` and `nosniff`.

use crate::auth::KeyMode;
use crate::error::{ApiError, ApiResult, Code};
use crate::gemini::Image;
use crate::http::{header, query_param, RequestContext};
use crate::js;
use base64::Engine;
use hmac_sha256::HMAC;
use worker::wasm_bindgen::JsCast;
use worker::{Bucket, Request, Response};

pub const BUCKET_BINDING: &str = "IMAGES";
/// For objects read through a public bucket domain, whose URLs never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Purpose label of the derived signing key, so URL signatures and JWTs never share a key.
const URL_KEY_LABEL: &[u8] = b"nanobanana/image-url/v1";
/// What an image response may do in a browser: nothing but be shown.
pub const IMAGE_CSP: &str = "default-src 'none'; sandbox";

fn prefix(mode: KeyMode) -> &'static str {
    match mode {
        KeyMode::Live => "images",
        KeyMode::Test => "test-images",
    }
}

pub fn object_key(generation_id: &str, index: usize, mode: KeyMode) -> String {
    format!("{}/{generation_id}/{index}", prefix(mode))
}

/// Every object key a generation of `n` images may have written (for cleanup).
pub fn object_keys(generation_id: &str, n: usize, mode: KeyMode) -> Vec<String> {
    (0..n).map(|index| object_key(generation_id, index, mode)).collect()
}

/// Public image id: `{generation id}_{index}`, or `{generation id}_t{index}` for a test key's.
pub fn image_id(generation_id: &str, index: usize, mode: KeyMode) -> String {
    match mode {
        KeyMode::Live => format!("{generation_id}_{index}"),
        KeyMode::Test => format!("{generation_id}_t{index}"),
    }
}

pub fn parse_image_id(image_id: &str) -> Option<(&str, usize, KeyMode)> {
    let (generation_id, index) = image_id.rsplit_once('_')?;
    let (index, mode) = match index.strip_prefix('t') {
        Some(index) => (index, KeyMode::Test),
        None => (index, KeyMode::Live),
    };
    let index: usize = index.parse().ok()?;
    (generation_id.starts_with("gen_") && index < 16).then_some((generation_id, index, mode))
}

fn url_signing_key(secret: &str) -> [u8; 32] {
    HMAC::mac(URL_KEY_LABEL, secret.as_bytes())
}

fn mac(secret: &str, image_id: &str, expires: u64) -> [u8; 32] {
    HMAC::mac(format!("{image_id}:{expires}").as_bytes(), url_signing_key(secret))
}

pub fn signature(secret: &str, image_id: &str, expires: u64) -> String {
    hex::encode(mac(secret, image_id, expires))
}

pub fn signed_path(secret: &str, image_id: &str, expires: u64) -> String {
    format!("/v1/images/{image_id}?expires={expires}&signature={}", signature(secret, image_id, expires))
}

/// Checks a signed URL's query: 403 `invalid_signature` or `url_expired` when it fails.
/// Returns the seconds the signature has left.
pub fn verify_signature(
    secret: &str,
    image_id: &str,
    expires: Option<&str>,
    signature_hex: Option<&str>,
    now_secs: u64,
) -> ApiResult<u64> {
    let invalid = || ApiError::new(Code::InvalidSignature, "this image URL's signature is invalid");
    let (Some(expires_raw), Some(given)) = (expires, signature_hex) else {
        return Err(ApiError::new(Code::InvalidSignature, "this image URL is not signed"));
    };
    let expires: u64 = expires_raw.parse().map_err(|_| invalid())?;
    let mut given_mac = [0u8; 32];
    hex::decode_to_slice(given, &mut given_mac).map_err(|_| invalid())?;
    // Constant-time comparison, by the same vetted crate that computes the MAC.
    let mut expected = HMAC::new(url_signing_key(secret));
    expected.update(format!("{image_id}:{expires}").as_bytes());
    if !expected.finalize_verify(&given_mac) {
        return Err(invalid());
    }
    if expires <= now_secs {
        return Err(ApiError::new(
            Code::UrlExpired,
            "this image URL has expired; fetch the generation again for a fresh one",
        ));
    }
    Ok(expires - now_secs)
}

pub fn data_url(image: &Image) -> String {
    format!("data:{};base64,{}", image.mime_type, base64::engine::general_purpose::STANDARD.encode(&image.bytes))
}

/// Where a stored image is served from, for a response built at `now_ms`.
pub fn stored_image_url(
    rc: &RequestContext,
    origin: &str,
    generation_id: &str,
    index: usize,
    mode: KeyMode,
) -> ApiResult<String> {
    if let Some(base) = &rc.config.public_image_base {
        return Ok(format!("{base}/{}", object_key(generation_id, index, mode)));
    }
    let expires = rc.now_ms / 1000 + rc.config.image_url_ttl_seconds;
    let path = signed_path(rc.config.jwt_secret()?, &image_id(generation_id, index, mode), expires);
    Ok(format!("{origin}{path}"))
}

/// The R2 bucket, or None when the deployment has no `IMAGES` binding.
pub fn bucket(rc: &RequestContext) -> Option<Bucket> {
    rc.env.bucket(BUCKET_BINDING).ok()
}

/// Stores image `index` of a generation, taking its bytes by value: R2 wants owned bytes,
/// and this way they are not copied (and leave the wasm memory once written).
pub async fn put_one(
    bucket: &Bucket,
    generation_id: &str,
    key_id: &str,
    mode: KeyMode,
    index: usize,
    image: Image,
) -> ApiResult<()> {
    let custom = [("generation_id", generation_id), ("api_key_id", key_id)];
    let key = object_key(generation_id, index, mode);
    put(bucket, &key, image.bytes, (&image.mime_type, Some(IMMUTABLE)), &custom).await.map_err(|err| {
        ApiError::new(Code::StorageFailed, "the image could not be stored").caused_by(format!("r2 put failed: {err}"))
    })?;
    Ok(())
}

/// Where a queued generation's input `index` waits for the consumer.
pub fn input_key(generation_id: &str, index: usize) -> String {
    format!("inputs/{generation_id}/{index}")
}

/// Keeps a queued generation's input images for the consumer (deleted when it finishes).
pub async fn put_inputs(
    bucket: &Bucket,
    generation_id: &str,
    inputs: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> ApiResult<()> {
    for (index, (mime_type, bytes)) in inputs.into_iter().enumerate() {
        put(bucket, &input_key(generation_id, index), bytes, (&mime_type, None), &[]).await.map_err(|err| {
            ApiError::new(Code::StorageFailed, "an input image could not be stored")
                .caused_by(format!("r2 put failed: {err}"))
        })?;
    }
    Ok(())
}

/// `bucket.put(key, bytes, {httpMetadata, customMetadata})`, called on the binding itself:
/// worker's `PutOptionsBuilder` converts every option R2 has (and a `HashMap` of custom
/// metadata) and weighed a few KB of wasm for the two this service sets. The bytes are
/// taken by value and let go once copied into JS.
async fn put(
    bucket: &Bucket,
    key: &str,
    bytes: Vec<u8>,
    (content_type, cache_control): (&str, Option<&str>),
    custom: &[(&str, &str)],
) -> worker::Result<()> {
    use worker::js_sys::{Object, Reflect, Uint8Array};
    use worker::wasm_bindgen::JsValue;
    let set = |target: &Object, name: &str, value: &str| Reflect::set(target, &name.into(), &value.into());
    let http = Object::new();
    set(&http, "contentType", content_type)?;
    if let Some(cache_control) = cache_control {
        set(&http, "cacheControl", cache_control)?;
    }
    let metadata = Object::new();
    for (name, value) in custom {
        set(&metadata, name, value)?;
    }
    let options = Object::new();
    Reflect::set(&options, &"httpMetadata".into(), &http)?;
    Reflect::set(&options, &"customMetadata".into(), &metadata)?;
    let body = Uint8Array::from(bytes.as_slice());
    drop(bytes);
    let binding: &JsValue = bucket.as_ref();
    js::resolved(js::method(binding, "put")?.call3(binding, &key.into(), &body, &options)?).await?;
    Ok(())
}

/// An object's bytes, or None when there is no such object.
pub async fn read(bucket: &Bucket, key: String) -> ApiResult<Option<Vec<u8>>> {
    let Some(object) = get(bucket, &key).await? else { return Ok(None) };
    let buffer = async { js::resolved(js::method(&object, "arrayBuffer")?.call0(&object)?).await };
    let buffer = buffer.await.map_err(worker::Error::from)?;
    Ok(Some(worker::js_sys::Uint8Array::new(&buffer).to_vec()))
}

/// `bucket.get(key)` on the binding itself (the object with its body and metadata, or
/// None): worker's `GetOptionsBuilder` converts every option R2 has, for none used here.
async fn get(bucket: &Bucket, key: &str) -> worker::Result<Option<worker::wasm_bindgen::JsValue>> {
    let binding: &worker::wasm_bindgen::JsValue = bucket.as_ref();
    let object = js::resolved(js::method(binding, "get")?.call1(binding, &key.into())?).await?;
    Ok((!object.is_null() && !object.is_undefined()).then_some(object))
}

/// A queued generation's input images, in order.
pub async fn get_inputs(bucket: &Bucket, generation_id: &str, count: usize) -> ApiResult<Vec<Vec<u8>>> {
    let mut all = Vec::with_capacity(count);
    for index in 0..count {
        let gone = || ApiError::internal(format!("input {index} of {generation_id} is missing from R2"));
        all.push(read(bucket, input_key(generation_id, index)).await?.ok_or_else(gone)?);
    }
    Ok(all)
}

pub async fn delete_inputs(bucket: &Bucket, generation_id: &str, count: usize) {
    let keys: Vec<String> = (0..count).map(|index| input_key(generation_id, index)).collect();
    delete_all(bucket, &keys).await;
}

/// Which of a generation's `n` images R2 holds, with their sizes, in index order (a HEAD
/// each). The cron asks this of a generation whose Worker died, to tell whether Gemini
/// answered (and was paid) before it did.
pub async fn stored_images(
    bucket: &Bucket,
    generation_id: &str,
    mode: KeyMode,
    n: usize,
) -> ApiResult<Vec<(usize, u64)>> {
    let mut stored = Vec::new();
    for index in 0..n {
        if let Some(object) = bucket.head(object_key(generation_id, index, mode)).await? {
            stored.push((index, object.size()));
        }
    }
    Ok(stored)
}

/// Deletes objects (missing ones are not an error). Returns whether R2 accepted it.
pub async fn delete_all(bucket: &Bucket, keys: &[String]) -> bool {
    if keys.is_empty() {
        return true;
    }
    match bucket.delete_multiple(keys.iter().map(String::as_str).collect()).await {
        Ok(()) => true,
        Err(err) => {
            crate::log::error("r2 delete failed", &err.to_string());
            false
        }
    }
}

/// `GET /v1/images/{id}`: the bytes of a stored image behind a valid signed URL. The
/// response may be cached for as long as the signature has left, no longer.
pub async fn serve(req: &Request, rc: &RequestContext, image_id_param: &str) -> ApiResult<Response> {
    let (expires, given) = (query_param(req, "expires")?, query_param(req, "signature")?);
    let remaining = verify_signature(
        rc.config.jwt_secret()?,
        image_id_param,
        expires.as_deref(),
        given.as_deref(),
        rc.now_ms / 1000,
    )?;

    let not_found = || ApiError::not_found("no image with this id");
    let (generation_id, index, mode) = parse_image_id(image_id_param).ok_or_else(not_found)?;
    let bucket = bucket(rc).ok_or_else(not_found)?;
    let object = get(&bucket, &object_key(generation_id, index, mode)).await?.ok_or_else(not_found)?;

    let etag = js::property(&object, "httpEtag").as_string().unwrap_or_default();
    let headers = worker::Headers::new();
    headers.set("etag", &etag)?;
    headers.set("cache-control", &format!("private, max-age={remaining}"))?;
    headers.set("content-security-policy", IMAGE_CSP)?;
    headers.set("x-content-type-options", "nosniff")?;
    if header(req, "if-none-match").is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag)) {
        return Ok(Response::empty()?.with_status(304).with_headers(headers));
    }
    let stored_type =
        js::property(&js::property(&object, "httpMetadata"), "contentType").as_string().unwrap_or_default();
    // Only the image types this service stores are served as such; anything else (an
    // object written by hand) is a download, never rendered.
    let (content_type, extension, disposition) = match stored_type.as_str() {
        "image/png" => ("image/png", "png", "inline"),
        "image/jpeg" => ("image/jpeg", "jpg", "inline"),
        "image/webp" => ("image/webp", "webp", "inline"),
        _ => ("application/octet-stream", "bin", "attachment"),
    };
    headers.set("content-type", content_type)?;
    let size = js::property(&object, "size").as_f64().unwrap_or(0.0) as u64;
    headers.set("content-length", &size.to_string())?;
    headers.set("content-disposition", &format!("{disposition}; filename=\"{image_id_param}.{extension}\""))?;
    // Hand the R2 stream to the runtime: the bytes never pass through wasm.
    let body = js::property(&object, "body").dyn_into::<worker::web_sys::ReadableStream>().map_err(|_| not_found())?;
    Ok(Response::from_body(worker::ResponseBody::Stream(body))?.with_headers(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hmac_crate_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(HMAC::mac(b"what do ya want for nothing?", b"Jefe")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(HMAC::mac(b"Test Using Larger Than Block-Size Key - Hash Key First", [0xaa; 131])),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn signatures_are_unchanged_by_the_move_to_the_vetted_crate() {
        // Computed with Python's hmac module, as the end-to-end tests sign URLs.
        assert_eq!(
            signature(SECRET, "gen_abc_0", 2_000),
            "883b95997fe74865dc045f06b02652a7898167d60ba9dab51fc20921e8535e31"
        );
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn signed_urls_verify_until_they_expire() {
        let id = "gen_abc_0";
        let sig = signature(SECRET, id, 2_000);
        assert_eq!(verify_signature(SECRET, id, Some("2000"), Some(&sig), 1_999).unwrap(), 1, "seconds left");
        let expired = verify_signature(SECRET, id, Some("2000"), Some(&sig), 2_000).unwrap_err();
        assert_eq!((expired.status(), expired.code.as_str()), (403, "url_expired"));
    }

    #[test]
    fn tampering_with_any_part_breaks_the_signature() {
        let sig = signature(SECRET, "gen_abc_0", 2_000);
        let cases = [
            ("gen_abc_1", Some("2000"), Some(sig.as_str())),
            ("gen_abc_0", Some("2001"), Some(sig.as_str())),
            ("gen_abc_0", Some("2000"), Some("00")),
            ("gen_abc_0", Some("2000"), None),
            ("gen_abc_0", None, Some(sig.as_str())),
            ("gen_abc_0", Some("soon"), Some(sig.as_str())),
        ];
        for (id, expires, given) in cases {
            let err = verify_signature(SECRET, id, expires, given, 1_000).unwrap_err();
            assert_eq!((err.status(), err.code.as_str()), (403, "invalid_signature"), "{id} {expires:?} {given:?}");
        }
        let other_secret = signature("another-secret-another-secret-xx", "gen_abc_0", 2_000);
        assert!(verify_signature(SECRET, "gen_abc_0", Some("2000"), Some(&other_secret), 1_000).is_err());
    }

    #[test]
    fn url_key_is_not_the_jwt_secret() {
        assert_ne!(url_signing_key(SECRET), HMAC::mac(b"", SECRET.as_bytes()));
        assert_ne!(&url_signing_key(SECRET)[..], SECRET.as_bytes());
    }

    #[test]
    fn image_ids_round_trip() {
        let gen = "gen_3f2b1c9e-8d7a-4b6c-9e5f-0a1b2c3d4e5f";
        assert_eq!(parse_image_id(&image_id(gen, 3, KeyMode::Live)), Some((gen, 3, KeyMode::Live)));
        assert_eq!(parse_image_id(&image_id(gen, 2, KeyMode::Test)), Some((gen, 2, KeyMode::Test)));
        assert_eq!(object_key(gen, 3, KeyMode::Live), format!("images/{gen}/3"));
        assert_eq!(object_key(gen, 0, KeyMode::Test), format!("test-images/{gen}/0"));
        for bad in ["gen_x", "abc_0", "gen_x_", "gen_x_-1", "gen_x_99", "gen_x_t", "gen_x_tt1"] {
            assert_eq!(parse_image_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_signature_that_is_not_hex_or_too_short_is_invalid() {
        for given in ["zz", "00", &"0".repeat(63), &"0".repeat(66)] {
            let err = verify_signature(SECRET, "gen_abc_0", Some("2000"), Some(given), 1_000).unwrap_err();
            assert_eq!(err.code, Code::InvalidSignature, "{given}");
        }
    }

    #[test]
    fn data_urls_carry_type_and_bytes() {
        let image = Image { mime_type: "image/png".into(), bytes: vec![1, 2, 3], usage: None, turn: None };
        assert_eq!(data_url(&image), "data:image/png;base64,AQID");
    }
}
