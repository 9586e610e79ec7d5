//! What a client receives: a finished generation in the native or OpenAI shape, and a
//! stored generation as history shows it (with image URLs signed at read time). Every
//! shape here is a typed `Serialize` struct the OpenAPI document is derived from.

use super::inputs::{self, InputRecord};
use super::request::{GenerationRequest, Shape};
use super::status::Status;
use super::store::RecordRow;
use crate::auth::KeyMode;
use crate::error::ApiResult;
use crate::http::{self, ListObject, RequestContext};
use crate::metering::{Micros, Tokens};
use crate::models::Resolution;
use crate::storage;
use serde::Serialize;

/// `object: "generation"` on a generation.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum GenerationObject {
    Generation,
}

/// A delivered image as the client receives it.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct DeliveredImage {
    /// A signed Worker URL, a public R2 URL, or (with no R2 bucket) a `data:` URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The image bytes, base64, with `response_format: "b64_json"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::image_mime_type"))]
    pub mime_type: String,
    /// Pixels, as the image's own header declares them: what came back, not what was asked.
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// A finished generation, ready to be rendered in either API shape.
pub struct Generated {
    pub id: String,
    pub created_ms: u64,
    pub request: GenerationRequest,
    pub images: Vec<DeliveredImage>,
    /// What it was made from, in order.
    pub inputs: Vec<InputRecord>,
    /// The images of `n` that did not come back (and are not charged): a JSON array of
    /// [`ImageFailure`], as stored.
    pub failures: Failures,
    /// What its delivered images cost.
    pub usage: Usage,
    pub quota_limit: u32,
    pub quota_remaining: u32,
}

/// What a generation used and cost: the sums over the calls whose images were delivered
/// (failed images are not charged). The same object on the native and OpenAI routes:
/// OpenAI's images `usage` fields, with `cost_usd` and the flags beside them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct Usage {
    pub input_tokens: u64,
    pub input_tokens_details: InputTokens,
    /// Image, text and reasoning (thinking) tokens together.
    pub output_tokens: u64,
    pub output_tokens_details: OutputTokens,
    /// `input_tokens` + `output_tokens`.
    pub total_tokens: u64,
    /// What Google bills for these tokens at this deployment's prices: exact, half-up to
    /// the micro-dollar.
    pub cost_usd: Micros,
    /// Some figure is the model's documented one rather than Google's report (an answer
    /// without usage, or a test key's synthetic image).
    pub estimated: bool,
    /// Drawn by a test key: nothing was billed, and no live budget counts it.
    pub test: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct InputTokens {
    pub text_tokens: u64,
    pub image_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct OutputTokens {
    pub image_tokens: u64,
    pub text_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn new(tokens: Tokens, cost: Micros, estimated: bool, mode: KeyMode) -> Usage {
        Usage {
            input_tokens: tokens.input(),
            input_tokens_details: InputTokens { text_tokens: tokens.input_text, image_tokens: tokens.input_image },
            output_tokens: tokens.output(),
            output_tokens_details: OutputTokens {
                image_tokens: tokens.output_image,
                text_tokens: tokens.output_text,
                reasoning_tokens: tokens.reasoning,
            },
            total_tokens: tokens.input() + tokens.output(),
            cost_usd: cost,
            estimated,
            test: mode == KeyMode::Test,
        }
    }

    /// As stored with a generation: the values of `store::USAGE_COLUMNS`, in order.
    pub fn stored(columns: [i64; 7], mode: KeyMode) -> Usage {
        let [input_text, input_image, output_image, output_text, reasoning, cost, estimated] =
            columns.map(|n| u64::try_from(n).unwrap_or(0));
        let tokens = Tokens { input_text, input_image, output_image, output_text, reasoning };
        Usage::new(tokens, Micros(cost), estimated != 0, mode)
    }
}

/// One image of a generation of several that did not come back: its place among the `n`
/// asked for, and the error it would have been on its own. It is not charged.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct ImageFailure {
    pub index: u32,
    pub code: String,
    pub message: String,
}

/// A generation's failures as JSON (`[]` when none), passed through as stored: they are
/// only ever shown, never read.
pub type Failures = Box<serde_json::value::RawValue>;

/// The failures stored with a generation (NULL: none).
pub fn failures(stored: Option<String>) -> Failures {
    stored
        .and_then(|json| serde_json::value::RawValue::from_string(json).ok())
        .unwrap_or_else(|| serde_json::value::RawValue::from_string("[]".to_string()).unwrap_or_default())
}

/// The failures as stored with a generation: JSON, or NULL when every image came back.
pub fn failures_json(failures: &[ImageFailure]) -> Option<String> {
    (!failures.is_empty()).then(|| serde_json::to_string(failures).unwrap_or_default())
}

/// Which of a generation's images were delivered and stored, in order: the index of each
/// stored object key (`images/{id}/{index}`). With none stored (no bucket), all `n`.
pub fn delivered_indices(object_keys: Option<&str>, n: i64) -> Vec<usize> {
    match object_keys.and_then(|keys| serde_json::from_str::<Vec<String>>(keys).ok()) {
        Some(keys) => keys.iter().filter_map(|key| key.rsplit('/').next()?.parse().ok()).collect(),
        None => (0..usize::try_from(n).unwrap_or(0)).collect(),
    }
}

/// `POST /v1/generate`: the generation and its images.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct GenerationResponse<'a> {
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::generation_id"))]
    id: &'a str,
    object: GenerationObject,
    /// The first image's URL (`images[0].url`), for the common `n = 1`.
    url: Option<&'a str>,
    prompt: &'a str,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::timestamp"))]
    created_at: String,
    model: &'a str,
    /// What was asked, in pixels: the documented size, or the aspect ratio at the
    /// resolution's long edge. What came back is each image's `width` and `height`.
    #[cfg_attr(test, schemars(regex(pattern = r"^\d+x\d+$")))]
    size: String,
    aspect_ratio: &'a str,
    resolution: Resolution,
    style: super::request::Style,
    n: u32,
    images: &'a [DeliveredImage],
    /// What it was made from, in the order given (empty when drawn from text alone).
    inputs: &'a [InputRecord],
    /// With `n` > 1, the images that did not come back (the others did, and only they are
    /// charged). Empty when every image came back.
    #[cfg_attr(test, schemars(with = "Vec<ImageFailure>"))]
    failures: &'a serde_json::value::RawValue,
    usage: &'a Usage,
}

/// `POST /v1/images/generations` and `/v1/images/edits`: OpenAI's Images API answer.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct OpenAiImagesResponse<'a> {
    /// Unix seconds.
    created: u64,
    data: Vec<OpenAiImage<'a>>,
    /// OpenAI's token usage (`result.usage` in its SDKs), with this service's cost.
    usage: &'a Usage,
}

/// One image in OpenAI's shape: `url` or `b64_json`, as asked.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct OpenAiImage<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    b64_json: Option<&'a str>,
    /// Always null: the prompt is sent as given.
    revised_prompt: Option<&'a str>,
}

impl Generated {
    pub fn quota_headers(&self) -> [(&'static str, String); 2] {
        quota_headers(self.quota_limit, self.quota_remaining)
    }

    pub fn native(&self) -> GenerationResponse<'_> {
        GenerationResponse {
            id: &self.id,
            object: GenerationObject::Generation,
            url: self.images.first().and_then(|image| image.url.as_deref()),
            prompt: &self.request.prompt,
            created_at: crate::time::iso_from_millis(self.created_ms),
            model: &self.request.model,
            size: self.request.output.label(),
            aspect_ratio: self.request.output.aspect_ratio,
            resolution: self.request.output.resolution,
            style: self.request.style,
            n: self.request.n,
            images: &self.images,
            inputs: &self.inputs,
            failures: &self.failures,
            usage: &self.usage,
        }
    }

    pub fn openai(&self) -> OpenAiImagesResponse<'_> {
        let data = self
            .images
            .iter()
            .map(|image| match &image.b64_json {
                Some(b64) => OpenAiImage { url: None, b64_json: Some(b64), revised_prompt: None },
                None => OpenAiImage { url: image.url.as_deref(), b64_json: None, revised_prompt: None },
            })
            .collect();
        OpenAiImagesResponse { created: self.created_ms / 1000, data, usage: &self.usage }
    }

    /// The JSON body in the route's shape.
    pub fn render(&self, shape: Shape) -> ApiResult<String> {
        match shape {
            Shape::Native => http::to_json(&self.native()),
            Shape::OpenAi => http::to_json(&self.openai()),
        }
    }
}

/// `object: "estimate"`.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum EstimateObject {
    Estimate,
}

/// `POST /v1/estimate`: a request's cost before it is made.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct Estimate<'a> {
    pub object: EstimateObject,
    pub model: &'a str,
    pub resolution: Resolution,
    pub n: u32,
    pub input_images: u32,
    /// What Google documents for it: the image tokens of the resolution, about four bytes
    /// a prompt token, 258 tokens per 768-pixel tile of each input; no text or thinking.
    pub typical: Usage,
    /// What its reservation holds against the money budgets: a token per prompt byte,
    /// each input at the most Gemini bills an image of its size (at least 1,120), the
    /// image tokens, and 2,000 tokens of text and thinking per image. An answer costs more
    /// only if Gemini reports more than that allowance.
    pub worst_case: Usage,
}

/// `x-quota-limit-images` and `x-quota-remaining-images`.
pub fn quota_headers(limit: u32, remaining: u32) -> [(&'static str, String); 2] {
    [("x-quota-limit-images", limit.to_string()), ("x-quota-remaining-images", remaining.to_string())]
}

// ---------------------------------------------------------------- history

/// `GET /v1/generations`: a page of history.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct GenerationList {
    pub object: ListObject,
    pub data: Vec<GenerationRecord>,
    /// True when older generations follow; pass `last_id` as `starting_after` for them.
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}

impl GenerationList {
    pub fn new(data: Vec<GenerationRecord>, has_more: bool) -> GenerationList {
        GenerationList {
            object: ListObject::List,
            has_more,
            first_id: data.first().map(|r| r.id.clone()),
            last_id: data.last().map(|r| r.id.clone()),
            data,
        }
    }
}

/// A generation as history shows it, with image URLs signed now.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct GenerationRecord {
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::generation_id"))]
    id: String,
    object: GenerationObject,
    status: Status,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::uuid"))]
    api_key_id: String,
    prompt: String,
    model: String,
    /// What was asked, in pixels (see `GenerationResponse`).
    size: String,
    /// Gemini's aspect ratio and resolution, however they were asked (null on generations
    /// older than these fields).
    aspect_ratio: Option<String>,
    resolution: Option<String>,
    style: super::request::Style,
    n: i64,
    /// The first image's URL, or null when none is stored.
    url: Option<String>,
    images: Vec<HistoryImage>,
    /// What it was made from, in order: earlier generations (follow `generation_id` to
    /// walk an edit chain) or uploaded bytes (their SHA-256). Empty when drawn from text.
    inputs: Vec<InputRecord>,
    /// Why a failed generation failed: the error envelope's `code` and `message`.
    error: Option<Failure>,
    /// With `n` > 1, the images that did not come back (not charged). Empty otherwise.
    #[cfg_attr(test, schemars(with = "Vec<ImageFailure>"))]
    failures: Failures,
    /// What it used and cost once it ended (zero when it failed or was canceled: nothing
    /// is charged then); null while it is queued or running.
    usage: Option<Usage>,
    /// The generation it continued, as the next turn of a conversation (null: none).
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::optional_generation_id"))]
    previous_generation_id: Option<String>,
    /// The id of the conversation's first generation (its own id when it continued none):
    /// `GET /v1/generations?conversation_id=` lists the conversation.
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::generation_id"))]
    conversation_id: String,
    /// Where an asynchronous generation announces its outcome, and how that went (null
    /// when it has no webhook_url).
    webhook: Option<WebhookState>,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::timestamp"))]
    created_at: String,
}

/// An asynchronous generation's webhook: each attempt is recorded.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct WebhookState {
    url: String,
    attempts: u32,
    /// The receiver's HTTP status at the last attempt (null: no answer, or none yet).
    last_status: Option<u16>,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::timestamp"))]
    delivered_at: Option<String>,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct HistoryImage {
    url: String,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::image_mime_type"))]
    mime_type: String,
    /// Pixels of what came back (null for generations older than this field).
    width: Option<u32>,
    height: Option<u32>,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct Failure {
    code: String,
    message: Option<String>,
}

impl GenerationRecord {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }
}

/// One history record, with image URLs signed now.
pub fn record(rc: &RequestContext, origin: &str, row: RecordRow) -> ApiResult<GenerationRecord> {
    record_with(row, |id, index, mode| storage::stored_image_url(rc, origin, id, index, mode))
}

/// [`record`] with the URL signer given: pure, so the shape is tested natively.
fn record_with(row: RecordRow, url: impl Fn(&str, usize, KeyMode) -> ApiResult<String>) -> ApiResult<GenerationRecord> {
    // Only what was stored can be shown again.
    let stored = row.object_keys.as_deref().map(|keys| delivered_indices(Some(keys), row.n));
    let mode = row.mode.unwrap_or(KeyMode::Live);
    let usage = row.status.is_final().then(|| Usage::stored(row.usage(), mode));
    let mime_type = row.mime_type.unwrap_or_else(|| "image/png".into());
    let images = stored
        .unwrap_or_default()
        .into_iter()
        .map(|index| {
            Ok(HistoryImage {
                url: url(&row.id, index, mode)?,
                mime_type: mime_type.clone(),
                width: row.width,
                height: row.height,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(GenerationRecord {
        url: images.first().map(|image| image.url.clone()),
        images,
        id: row.id,
        object: GenerationObject::Generation,
        status: row.status,
        api_key_id: row.api_key_id,
        prompt: row.prompt,
        model: row.model,
        size: row.size,
        aspect_ratio: row.aspect_ratio,
        resolution: row.resolution,
        style: row.style,
        n: row.n,
        inputs: inputs::parse_records(row.inputs.as_deref()),
        error: row.error_code.map(|code| Failure { code, message: row.error_message }),
        failures: failures(row.failures),
        usage,
        previous_generation_id: row.previous_generation_id,
        conversation_id: row.conversation_id,
        webhook: row.webhook_url.map(|url| WebhookState {
            url,
            attempts: row.webhook_attempts,
            last_status: row.webhook_last_status,
            delivered_at: row.webhook_delivered_at,
        }),
        created_at: row.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::request::Style;

    fn row() -> RecordRow {
        RecordRow {
            id: "gen_1".into(),
            api_key_id: "k".into(),
            status: Status::Succeeded,
            prompt: "a banana".into(),
            model: "gemini-3.1-flash-image".into(),
            size: "1024x1024".into(),
            style: Style::Natural,
            n: 2,
            object_keys: Some(r#"["images/gen_1/0","images/gen_1/1"]"#.into()),
            mime_type: Some("image/jpeg".into()),
            error_code: None,
            created_at: "2026-11-30T00:00:00.000Z".into(),
            mode: Some(KeyMode::Test),
            width: Some(640),
            height: Some(480),
            aspect_ratio: Some("4:3".into()),
            resolution: Some("1K".into()),
            inputs: None,
            error_message: None,
            webhook_url: None,
            webhook_attempts: 0,
            webhook_last_status: None,
            webhook_delivered_at: None,
            failures: None,
            input_text_tokens: 12,
            input_image_tokens: 0,
            output_image_tokens: 2_240,
            output_text_tokens: 26,
            reasoning_tokens: 130,
            cost_micros: 135_368,
            usage_estimated: 0,
            previous_generation_id: None,
            conversation_id: "gen_1".into(),
        }
    }

    fn signer(id: &str, index: usize, mode: KeyMode) -> ApiResult<String> {
        Ok(format!("https://x/{id}/{index}/{}", mode.as_str()))
    }

    #[test]
    fn a_record_shows_each_stored_image_with_a_fresh_url_and_its_first_as_url() {
        let record = serde_json::to_value(record_with(row(), signer).unwrap()).unwrap();
        assert_eq!(record["url"], "https://x/gen_1/0/test");
        assert_eq!(record["images"].as_array().unwrap().len(), 2);
        assert_eq!(record["images"][1]["url"], "https://x/gen_1/1/test");
        assert_eq!(record["images"][1]["mime_type"], "image/jpeg");
        assert_eq!((record["images"][0]["width"].as_u64(), record["status"].as_str()), (Some(640), Some("succeeded")));
        assert_eq!((record["error"].is_null(), record["webhook"].is_null()), (true, true));
        assert_eq!(record["inputs"], serde_json::json!([]));
        assert_eq!(record["failures"], serde_json::json!([]));
        assert_eq!(
            record["usage"],
            serde_json::json!({"input_tokens": 12, "input_tokens_details": {"text_tokens": 12, "image_tokens": 0},
                "output_tokens": 2_396, "output_tokens_details": {"image_tokens": 2_240, "text_tokens": 26, "reasoning_tokens": 130},
                "total_tokens": 2_408, "cost_usd": "0.135368", "estimated": false, "test": true})
        );
    }

    #[test]
    fn an_unfinished_record_has_no_usage_yet_and_an_ended_one_shows_what_was_charged() {
        let running = RecordRow { status: Status::Running, ..row() };
        assert!(serde_json::to_value(record_with(running, signer).unwrap()).unwrap()["usage"].is_null());
        let failed =
            RecordRow { status: Status::Failed, object_keys: None, cost_micros: 0, output_image_tokens: 0, ..row() };
        let usage = &serde_json::to_value(record_with(failed, signer).unwrap()).unwrap()["usage"];
        assert_eq!(
            (usage["cost_usd"].as_str(), usage["output_tokens_details"]["image_tokens"].as_u64()),
            (Some("0.000000"), Some(0))
        );
    }

    #[test]
    fn a_failed_record_has_no_images_and_says_why() {
        let failed = RecordRow {
            status: Status::Failed,
            object_keys: None,
            mime_type: None,
            error_code: Some("upstream_error".into()),
            error_message: Some("Gemini failed".into()),
            webhook_url: Some("https://hook".into()),
            webhook_attempts: 2,
            webhook_last_status: Some(500),
            mode: None,
            ..row()
        };
        let record = serde_json::to_value(record_with(failed, signer).unwrap()).unwrap();
        assert_eq!((record["url"].is_null(), record["images"].as_array().unwrap().len()), (true, 0));
        assert_eq!(record["error"], serde_json::json!({"code": "upstream_error", "message": "Gemini failed"}));
        assert_eq!(
            record["webhook"],
            serde_json::json!({"url": "https://hook", "attempts": 2, "last_status": 500, "delivered_at": null})
        );
    }

    #[test]
    fn a_partly_successful_record_shows_the_images_that_came_back_at_their_own_indices() {
        let partial = RecordRow {
            n: 4,
            object_keys: Some(r#"["test-images/gen_1/0","test-images/gen_1/2","test-images/gen_1/3"]"#.into()),
            failures: Some(r#"[{"index":1,"code":"upstream_error","message":"no"}]"#.into()),
            ..row()
        };
        let record = serde_json::to_value(record_with(partial, signer).unwrap()).unwrap();
        let urls: Vec<&str> = record["images"].as_array().unwrap().iter().map(|i| i["url"].as_str().unwrap()).collect();
        assert_eq!(urls, ["https://x/gen_1/0/test", "https://x/gen_1/2/test", "https://x/gen_1/3/test"]);
        assert_eq!(record["failures"], serde_json::json!([{"index": 1, "code": "upstream_error", "message": "no"}]));
        assert_eq!(delivered_indices(Some(r#"["images/g/0","images/g/3"]"#), 4), vec![0, 3]);
        assert_eq!(failures(None).get(), "[]");
    }

    #[test]
    fn rows_from_before_the_mode_column_sign_as_live() {
        let old = RecordRow { mode: None, ..row() };
        assert_eq!(record_with(old, signer).unwrap().images[0].url, "https://x/gen_1/0/live");
    }
}
