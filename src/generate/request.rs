//! What a generation asks for, parsed once into types that are valid everywhere after.
//! Shared by `/v1/generate` and the OpenAI-compatible `/v1/images/generations`.

use super::inputs::{self, InputSpec};
use crate::body::JsonObject;
use crate::config::Config;
use crate::error::{ApiError, ApiResult, Code};
use crate::models::{Capabilities, Resolution, EXTREME_RATIOS, STANDARD_RATIOS};

pub const MAX_PROMPT_CHARS: usize = 4000;
pub const MAX_IMAGES: u32 = 4;

/// A documented output size and how it maps onto Gemini's `imageConfig`.
#[derive(Debug, PartialEq, Eq)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
    pub aspect_ratio: &'static str,
    pub image_size: &'static str,
}

/// The sizes a request may ask for. Gemini picks pixels from an aspect ratio and a size
/// class (1K, 2K, 4K); each entry names the closest ratio and the smallest class that
/// covers the longer side.
pub const SIZES: &[ImageSize] = &[
    ImageSize { width: 1024, height: 1024, aspect_ratio: "1:1", image_size: "1K" },
    ImageSize { width: 1536, height: 1024, aspect_ratio: "3:2", image_size: "2K" },
    ImageSize { width: 1024, height: 1536, aspect_ratio: "2:3", image_size: "2K" },
    ImageSize { width: 1792, height: 1024, aspect_ratio: "16:9", image_size: "2K" },
    ImageSize { width: 1024, height: 1792, aspect_ratio: "9:16", image_size: "2K" },
    ImageSize { width: 2048, height: 2048, aspect_ratio: "1:1", image_size: "2K" },
];

impl ImageSize {
    pub fn parse(value: &str) -> ApiResult<&'static ImageSize> {
        SIZES.iter().find(|s| s.label() == value).ok_or_else(|| {
            let allowed: Vec<String> = SIZES.iter().map(ImageSize::label).collect();
            ApiError::invalid_value("size", format!("size must be one of {}", allowed.join(", ")))
        })
    }

    pub fn label(&self) -> String {
        format!("{}x{}", self.width, self.height)
    }
}

/// What the output is asked to be, however it was asked: a documented `size`, or an
/// `aspect_ratio` and a `resolution`. Both become Gemini's `imageConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub aspect_ratio: &'static str,
    pub resolution: Resolution,
    /// The pixels asked for: the documented size's, or the ratio at the resolution's long
    /// edge (what the synthetic provider draws; Gemini decides its own, reported per image).
    pub width: u32,
    pub height: u32,
    /// Input images and no ratio asked: the model follows the inputs, and no
    /// `aspectRatio` goes upstream. `aspect_ratio` is then the model's ratio nearest the
    /// first input's (see [`Output::follow`]).
    pub follows_inputs: bool,
}

impl Output {
    fn from_size(size: &ImageSize) -> Output {
        let resolution = Resolution::parse(size.image_size).unwrap_or(Resolution::R1K);
        Output {
            aspect_ratio: size.aspect_ratio,
            resolution,
            width: size.width,
            height: size.height,
            follows_inputs: false,
        }
    }

    /// For output that follows the inputs: the ratio among `offered` nearest to
    /// `width`x`height` (the first input's), at the same resolution.
    pub fn follow(&mut self, width: u32, height: u32, offered: &[String]) {
        if width == 0 || height == 0 {
            return;
        }
        let log_ratio = |w: f64, h: f64| (w / h).ln();
        let wanted = log_ratio(f64::from(width), f64::from(height));
        let nearest = STANDARD_RATIOS
            .iter()
            .chain(&EXTREME_RATIOS)
            .filter(|ratio| offered.iter().any(|o| o == *ratio))
            .filter_map(|ratio| {
                let (w, h) = ratio.split_once(':')?;
                // Whole numbers: `f64::from_str` would link core's float parser.
                let (w, h): (u32, u32) = (w.parse().ok()?, h.parse().ok()?);
                Some((*ratio, (log_ratio(f64::from(w), f64::from(h)) - wanted).abs()))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((ratio, _)) = nearest {
            *self = Output { follows_inputs: true, ..Output::from_ratio(ratio, self.resolution) };
        }
    }

    /// `aspect_ratio` (one of Gemini's) at `resolution`: the long edge is the resolution's,
    /// the short one follows the ratio, rounded to an even number of pixels.
    pub fn from_ratio(aspect_ratio: &'static str, resolution: Resolution) -> Output {
        let (w, h) = aspect_ratio
            .split_once(':')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .unwrap_or((1, 1));
        let long = resolution.long_edge();
        let short = |a: u32, b: u32| ((long * a + b) / (2 * b) * 2).max(2);
        let (width, height) = if w >= h { (long, short(h, w)) } else { (short(w, h), long) };
        Output { aspect_ratio, resolution, width, height, follows_inputs: false }
    }

    pub fn label(&self) -> String {
        format!("{}x{}", self.width, self.height)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Style {
    Natural,
    Artistic,
}

crate::db::text_column!(Style: Style::Natural, Style::Artistic);

impl Style {
    pub fn as_str(self) -> &'static str {
        match self {
            Style::Natural => "natural",
            Style::Artistic => "artistic",
        }
    }

    /// The instruction appended to the prompt sent upstream (documented in the README).
    pub fn instruction(self) -> &'static str {
        match self {
            Style::Natural => "Style: natural and photorealistic, with true-to-life lighting and colour.",
            Style::Artistic => "Style: artistic and expressive, with painterly texture and bold, stylised colour.",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(rename_all = "snake_case"))]
pub enum ResponseFormat {
    Url,
    B64Json,
}

/// Which API shape the request came in; a few fields differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Native,
    OpenAi,
}

/// What a generation's record keeps of its request.
pub struct StoredRequest {
    pub prompt: String,
    pub model: String,
    pub size: String,
    pub aspect_ratio: String,
    pub resolution: String,
    pub follows_inputs: bool,
    pub style: String,
    pub n: u32,
    pub webhook_url: Option<String>,
    pub previous: Option<Previous>,
}

#[derive(Debug, PartialEq)]
pub struct GenerationRequest {
    pub prompt: String,
    pub output: Output,
    pub style: Style,
    pub n: u32,
    pub model: String,
    pub response_format: ResponseFormat,
    /// Reference images, in the order given (taken out of the body before it is parsed:
    /// see `generate::inputs`).
    pub inputs: Vec<InputSpec>,
    /// Where to announce the outcome: makes the request asynchronous (`background`).
    pub webhook_url: Option<String>,
    /// The generation (and its image) this one continues, as the next turn of a conversation.
    pub previous: Option<Previous>,
}

/// `previous_generation_id` and `previous_image_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub generation_id: String,
    pub image_index: u32,
}

impl GenerationRequest {
    /// `inputs` are the request's images, already parsed: from the JSON `images` field or
    /// the multipart files.
    pub fn parse(
        mut body: JsonObject,
        inputs: Vec<InputSpec>,
        config: &Config,
        shape: Shape,
    ) -> ApiResult<GenerationRequest> {
        let prompt = parse_prompt(&body.required_str("prompt", Code::PromptRequired)?)?;
        let size = match body.optional_str("size")? {
            None => None,
            Some(size) if shape == Shape::OpenAi && size == "auto" => None,
            Some(size) => Some(ImageSize::parse(&size)?),
        };
        // OpenAI's route has no such fields: there they are unknown parameters.
        let (aspect_ratio, resolution) = match shape {
            Shape::Native => (body.optional_str("aspect_ratio")?, body.optional_str("resolution")?),
            Shape::OpenAi => (None, None),
        };
        let style = match body.optional_str("style")?.as_deref() {
            None | Some("natural") => Style::Natural,
            Some("artistic") => Style::Artistic,
            // OpenAI's DALL-E 3 calls its expressive style "vivid".
            Some("vivid") if shape == Shape::OpenAi => Style::Artistic,
            Some(_) => {
                let allowed = if shape == Shape::OpenAi { "natural, vivid or artistic" } else { "natural or artistic" };
                return Err(ApiError::invalid_value("style", format!("style must be {allowed}")));
            }
        };
        let n = body.optional_u32("n", 1..=MAX_IMAGES)?.unwrap_or(1);
        let model = match body.optional_str("model")? {
            None => config.gemini_model.clone(),
            Some(model) if config.gemini_models.contains(&model) => model,
            // OpenAI SDK users keep their model names; those mean "the default model".
            Some(model) if shape == Shape::OpenAi && is_openai_model(&model) => config.gemini_model.clone(),
            Some(_) => {
                return Err(ApiError::invalid_value(
                    "model",
                    format!("model must be one of {}", config.gemini_models.join(", ")),
                ))
            }
        };
        let caps = config.model_caps.iter().find(|(id, _)| *id == model).map(|(_, caps)| caps);
        let mut output = output(size, aspect_ratio.as_deref(), resolution.as_deref(), &model, caps)?;
        output.follows_inputs = !inputs.is_empty() && size.is_none() && aspect_ratio.is_none();
        if let Some(caps) = caps {
            let most = caps.max_input_images as usize;
            if inputs.len() > most {
                return Err(ApiError::validation(
                    Code::UnsupportedByModel,
                    inputs::param(most),
                    format!("{model} takes at most {most} input images; this request has {}", inputs.len()),
                ));
            }
        }
        let response_format = match body.optional_str("response_format")?.as_deref() {
            None | Some("url") => ResponseFormat::Url,
            Some("b64_json") => ResponseFormat::B64Json,
            Some(_) => {
                return Err(ApiError::invalid_value("response_format", "response_format must be url or b64_json"))
            }
        };
        let previous = match shape {
            Shape::Native => parse_previous(&mut body)?,
            Shape::OpenAi => None,
        };
        let webhook_url = body.optional_str("webhook_url")?;
        if let Some(url) = &webhook_url {
            crate::webhooks::check_url(url, config.webhook_allow_http_localhost)?;
        }
        if shape == Shape::OpenAi {
            // Optional hints in OpenAI's API that do not change what is returned.
            for hint in ["user", "quality", "moderation"] {
                body.ignore(hint);
            }
            body.finish_with(Code::UnknownParameterOpenAi)?;
        } else {
            body.finish()?;
        }
        Ok(GenerationRequest { prompt, output, style, n, model, response_format, inputs, webhook_url, previous })
    }

    /// The request of a queued generation, rebuilt from its stored record by the queue
    /// consumer (the inputs come from R2 separately). Asynchronous answers are URLs.
    pub fn stored(record: StoredRequest) -> GenerationRequest {
        let aspect_ratio = crate::models::ratio(&record.aspect_ratio);
        let resolution = Resolution::parse(&record.resolution).unwrap_or(Resolution::R1K);
        let (width, height) = record
            .size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .unwrap_or((resolution.long_edge(), resolution.long_edge()));
        GenerationRequest {
            prompt: record.prompt,
            output: Output {
                aspect_ratio: aspect_ratio.unwrap_or("1:1"),
                resolution,
                width,
                height,
                follows_inputs: record.follows_inputs,
            },
            style: if record.style == "artistic" { Style::Artistic } else { Style::Natural },
            n: record.n,
            model: record.model,
            response_format: ResponseFormat::Url,
            inputs: Vec::new(),
            webhook_url: record.webhook_url,
            previous: record.previous,
        }
    }

    /// The text sent upstream: the prompt, then the style's instruction.
    pub fn upstream_text(&self) -> String {
        format!("{}\n\n{}", self.prompt, self.style.instruction())
    }
}

/// [`GenerationRequest::upstream_text`] of a stored generation (its prompt and style name).
pub fn upstream_text_of(prompt: &str, style: &str) -> String {
    let style = if style == Style::Artistic.as_str() { Style::Artistic } else { Style::Natural };
    format!("{prompt}\n\n{}", style.instruction())
}

impl GenerationRequest {}

/// `previous_generation_id` (a generation id) and `previous_image_index` (which of its
/// images, default 0); the index alone is an error.
fn parse_previous(body: &mut JsonObject) -> ApiResult<Option<Previous>> {
    let id = body.optional_str("previous_generation_id")?;
    let index = body.optional_u32("previous_image_index", 0..=MAX_IMAGES - 1)?;
    match (id, index) {
        (None, None) => Ok(None),
        (None, Some(_)) => {
            Err(ApiError::invalid_value("previous_image_index", "previous_image_index needs previous_generation_id"))
        }
        (Some(id), index) => {
            let plausible = id.starts_with("gen_") && crate::routes::valid_id_segment(&id);
            if !plausible {
                return Err(ApiError::invalid_value(
                    "previous_generation_id",
                    "previous_generation_id must be a generation id (gen_...)",
                ));
            }
            Ok(Some(Previous { generation_id: id, image_index: index.unwrap_or(0) }))
        }
    }
}

#[cfg(test)]
pub use doc_schemas::*;

/// Schemas of the request values, for the OpenAPI document.
#[cfg(test)]
mod doc_schemas {
    use super::SIZES;

    /// One of the documented output sizes.
    pub fn size_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let sizes: Vec<String> = SIZES.iter().map(|s| s.label()).collect();
        schemars::json_schema!({"type": "string", "enum": sizes})
    }

    /// A request's `size`: one of the documented sizes.
    pub struct Size;

    impl schemars::JsonSchema for Size {
        fn schema_name() -> std::borrow::Cow<'static, str> {
            "Size".into()
        }

        fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
            size_schema(generator)
        }
    }

    /// OpenAI's `size`: a documented size, or `auto` (the default size).
    pub struct OpenAiSize;

    impl schemars::JsonSchema for OpenAiSize {
        fn schema_name() -> std::borrow::Cow<'static, str> {
            "OpenAISize".into()
        }

        fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
            let mut sizes: Vec<String> = SIZES.iter().map(|s| s.label()).collect();
            sizes.push("auto".into());
            schemars::json_schema!({"type": "string", "enum": sizes})
        }
    }

    /// One reference image of `images`: a `data:` URL, inline base64, or an earlier image.
    pub fn input_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "array",
            "maxItems": 14,
            "description": "Reference images, sent to the model before the prompt in this order (at most the model's max_input_images, see GET /v1/models). PNG, JPEG or WebP, judged by their bytes; at most 7,000,000 bytes each and 20,000,000 together, decoded.",
            "items": {"oneOf": [
                {"type": "string", "pattern": "^data:image/(png|jpeg|webp)(;[^,]*)?;base64,", "description": "a data: URL"},
                {"type": "object", "additionalProperties": false, "required": ["b64_json"],
                 "description": "bytes as base64",
                 "properties": {
                     "b64_json": {"type": "string", "contentEncoding": "base64"},
                     "mime_type": {"type": "string", "enum": ["image/png", "image/jpeg", "image/webp"],
                                   "description": "if given, must agree with the bytes"}}},
                {"type": "object", "additionalProperties": false, "required": ["generation_id"],
                 "description": "an image this account generated earlier (404 if not)",
                 "properties": {
                     "generation_id": {"type": "string", "pattern": "^gen_"},
                     "index": {"type": "integer", "minimum": 0, "default": 0}}}
            ]}
        })
    }

    /// A file part of a multipart form.
    pub fn binary_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "binary"})
    }

    /// Several file parts under one name.
    pub fn binaries_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": 14})
    }

    /// OpenAI's `style`: `vivid` is OpenAI's name for `artistic`.
    pub struct OpenAiStyle;

    impl schemars::JsonSchema for OpenAiStyle {
        fn schema_name() -> std::borrow::Cow<'static, str> {
            "OpenAIStyle".into()
        }

        fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
            schemars::json_schema!({"type": "string", "enum": ["natural", "vivid", "artistic"]})
        }
    }
}

// The documented request bodies. `GenerationRequest::parse` is what runs; a test in
// `openapi::document` holds these to it, both ways.

/// The body of `POST /v1/generate`.
#[cfg(test)]
#[derive(schemars::JsonSchema)]
#[schemars(rename = "GenerateRequest", deny_unknown_fields)]
pub struct GenerateRequestDoc {
    /// 1 to 4000 characters after trimming.
    #[schemars(length(min = 1, max = 4000), pattern(r"\S"))]
    pub prompt: String,
    /// A documented size (default 1024x1024). Or give `aspect_ratio` and `resolution`
    /// instead (not both ways).
    pub size: Option<Size>,
    /// One of Gemini's aspect ratios the model offers (`GET /v1/models`); default 1:1.
    #[schemars(extend("enum" = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9", "1:4", "4:1", "1:8", "8:1"]))]
    pub aspect_ratio: Option<String>,
    /// One of the resolutions the model offers (`GET /v1/models`); default 1K.
    pub resolution: Option<Resolution>,
    /// Reference images to edit or compose from. With images and neither `size` nor
    /// `aspect_ratio`, the output follows the first image's ratio.
    #[schemars(schema_with = "input_schema")]
    pub images: Option<Vec<String>>,
    /// Appends a style instruction to the prompt sent upstream.
    #[schemars(extend("default" = "natural"))]
    pub style: Option<Style>,
    #[schemars(range(min = 1, max = 4), extend("default" = 1))]
    pub n: Option<u32>,
    /// One of GEMINI_MODELS (the served document lists them); default GEMINI_MODEL.
    pub model: Option<String>,
    #[schemars(extend("default" = "url"))]
    pub response_format: Option<ResponseFormat>,
    /// Run asynchronously and POST the outcome here, signed (Standard Webhooks). https://,
    /// at most 2048 characters. Needs the account's webhook secret (`POST /v1/webhook_secret`).
    #[schemars(length(max = 2048), url)]
    pub webhook_url: Option<String>,
    /// Continue this generation, as the next turn of its conversation: Gemini receives
    /// every earlier turn of the chain (their text, the earlier images they named, and
    /// each model turn with its thought signatures as received), then this one. The same
    /// account's, drawn with a key of the same mode (else 422 `mode_mismatch`); at most 8
    /// generations and 14 MiB of replayed images in a conversation (else 422
    /// `conversation_too_long`). Uploads of earlier turns are not kept, so not replayed.
    #[schemars(schema_with = "crate::openapi::schema::generation_id")]
    pub previous_generation_id: Option<String>,
    /// Which image of `previous_generation_id` to continue from, when it has several.
    #[schemars(range(min = 0, max = 3), extend("default" = 0))]
    pub previous_image_index: Option<u32>,
}

/// The body of `POST /v1/images/generations`: OpenAI's Images API request.
#[cfg(test)]
#[derive(schemars::JsonSchema)]
#[schemars(rename = "OpenAIImagesRequest", deny_unknown_fields)]
pub struct OpenAiImagesRequestDoc {
    /// 1 to 4000 characters after trimming.
    #[schemars(length(min = 1, max = 4000), pattern(r"\S"))]
    pub prompt: String,
    #[schemars(range(min = 1, max = 4), extend("default" = 1))]
    pub n: Option<u32>,
    #[schemars(extend("default" = "auto"))]
    pub size: Option<OpenAiSize>,
    #[schemars(extend("default" = "natural"))]
    pub style: Option<OpenAiStyle>,
    /// One of GEMINI_MODELS; OpenAI names (dall-e-*, gpt-image-*) mean the default.
    pub model: Option<String>,
    #[schemars(extend("default" = "url"))]
    pub response_format: Option<ResponseFormat>,
    /// Accepted and ignored, as an optional hint.
    pub user: Option<String>,
    /// Accepted and ignored, as an optional hint.
    pub quality: Option<String>,
    /// Accepted and ignored, as an optional hint.
    pub moderation: Option<String>,
    /// Run asynchronously and POST the outcome here (see `GenerateRequest`).
    #[schemars(length(max = 2048), url)]
    pub webhook_url: Option<String>,
}

/// The form of `POST /v1/images/edits`: OpenAI's edits request, `multipart/form-data`.
#[cfg(test)]
#[derive(schemars::JsonSchema)]
#[schemars(rename = "OpenAIImageEditRequest", deny_unknown_fields)]
pub struct OpenAiEditRequestDoc {
    /// One image to edit (PNG, JPEG or WebP, at most 7,000,000 bytes). Or use `image[]`.
    #[schemars(schema_with = "binary_schema")]
    pub image: Option<String>,
    /// Several images to compose from, in order (what the openai SDK sends for a list).
    #[schemars(rename = "image[]", schema_with = "binaries_schema")]
    pub images: Option<Vec<String>>,
    /// What to change, 1 to 4000 characters.
    #[schemars(length(min = 1, max = 4000))]
    pub prompt: String,
    /// Refused with 400 `unsupported_parameter`: Gemini edits by instruction, not by mask.
    #[schemars(schema_with = "binary_schema")]
    pub mask: Option<String>,
    #[schemars(range(min = 1, max = 4), extend("default" = 1))]
    pub n: Option<u32>,
    /// `auto` (the default) follows the first image's ratio.
    #[schemars(extend("default" = "auto"))]
    pub size: Option<OpenAiSize>,
    #[schemars(extend("default" = "natural"))]
    pub style: Option<OpenAiStyle>,
    /// One of GEMINI_MODELS; OpenAI names (dall-e-*, gpt-image-*) mean the default.
    pub model: Option<String>,
    #[schemars(extend("default" = "url"))]
    pub response_format: Option<ResponseFormat>,
    /// Accepted and ignored, as an optional hint.
    pub user: Option<String>,
    /// Accepted and ignored, as an optional hint.
    pub quality: Option<String>,
    /// Accepted and ignored, as an optional hint.
    pub moderation: Option<String>,
    /// Run asynchronously and POST the outcome here (see `GenerateRequest`).
    #[schemars(length(max = 2048), url)]
    pub webhook_url: Option<String>,
}

/// The output asked for, checked against what the model offers (422
/// `unsupported_by_model` naming the parameter and what the model allows). `size` and
/// `aspect_ratio`/`resolution` are two ways to ask: giving both is 422
/// `conflicting_parameters`.
fn output(
    size: Option<&'static ImageSize>,
    aspect_ratio: Option<&str>,
    resolution: Option<&str>,
    model: &str,
    caps: Option<&Capabilities>,
) -> ApiResult<Output> {
    if size.is_some() && (aspect_ratio.is_some() || resolution.is_some()) {
        let param = if aspect_ratio.is_some() { "aspect_ratio" } else { "resolution" };
        return Err(ApiError::validation(
            Code::ConflictingParameters,
            param,
            "give size, or aspect_ratio and resolution, not both",
        ));
    }
    let output = match size {
        Some(size) => Output::from_size(size),
        None => {
            let ratio = match aspect_ratio {
                None => "1:1",
                Some(ratio) => crate::models::ratio(ratio).ok_or_else(|| {
                    ApiError::invalid_value("aspect_ratio", "aspect_ratio must be one of Gemini's ratios, like 16:9")
                })?,
            };
            let resolution = match resolution {
                None => Resolution::R1K,
                Some(raw) => Resolution::parse(raw)
                    .ok_or_else(|| ApiError::invalid_value("resolution", "resolution must be 512, 1K, 2K or 4K"))?,
            };
            Output::from_ratio(ratio, resolution)
        }
    };
    let Some(caps) = caps else { return Ok(output) };
    let (ratio_param, resolution_param) =
        if size.is_some() { ("size", "size") } else { ("aspect_ratio", "resolution") };
    let unsupported = |param: &str, asked: &str, what: &str, offered: Vec<&str>| {
        let message = format!("{model} does not draw {asked}; its {what} are {}", offered.join(", "));
        ApiError::validation(Code::UnsupportedByModel, param, message)
    };
    if !caps.aspect_ratios.iter().any(|r| r == output.aspect_ratio) {
        let offered = caps.aspect_ratios.iter().map(String::as_str).collect();
        return Err(unsupported(ratio_param, output.aspect_ratio, "aspect ratios", offered));
    }
    if !caps.resolutions.contains(&output.resolution) {
        let offered = caps.resolutions.iter().map(|r| r.as_str()).collect();
        let asked = format!("at {}", output.resolution.as_str());
        return Err(unsupported(resolution_param, &asked, "resolutions", offered));
    }
    Ok(output)
}

fn is_openai_model(model: &str) -> bool {
    model.starts_with("dall-e-") || model.starts_with("gpt-image-")
}

fn parse_prompt(raw: &str) -> ApiResult<String> {
    let prompt = raw.trim();
    if prompt.is_empty() {
        return Err(ApiError::validation(Code::PromptRequired, "prompt", "prompt must not be empty"));
    }
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(ApiError::validation(
            Code::PromptTooLong,
            "prompt",
            format!("prompt must be at most {MAX_PROMPT_CHARS} characters"),
        ));
    }
    Ok(prompt.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::parse_object;

    fn config() -> Config {
        Config::from_lookup(|name| match name {
            "GEMINI_MODELS" => Some("gemini-3.1-flash-image,gemini-3-pro-image".into()),
            _ => None,
        })
        .unwrap()
    }

    fn parse(raw: &str, shape: Shape) -> ApiResult<GenerationRequest> {
        let mut body = parse_object(raw.as_bytes()).unwrap();
        let inputs = inputs::parse_json(body.take("images"))?;
        GenerationRequest::parse(body, inputs, &config(), shape)
    }

    #[test]
    fn defaults() {
        let r = parse(r#"{"prompt": "  a banana  "}"#, Shape::Native).unwrap();
        assert_eq!(r.prompt, "a banana");
        assert_eq!(r.output.label(), "1024x1024");
        assert_eq!((r.output.aspect_ratio, r.output.resolution), ("1:1", Resolution::R1K));
        assert_eq!(
            (r.style, r.n, r.model.as_str(), r.response_format),
            (Style::Natural, 1, "gemini-3.1-flash-image", ResponseFormat::Url)
        );
    }

    #[test]
    fn every_documented_size_maps_to_gemini() {
        let expected = [
            ("1024x1024", "1:1", "1K"),
            ("1536x1024", "3:2", "2K"),
            ("1024x1536", "2:3", "2K"),
            ("1792x1024", "16:9", "2K"),
            ("1024x1792", "9:16", "2K"),
            ("2048x2048", "1:1", "2K"),
        ];
        for (label, ratio, class) in expected {
            let size = ImageSize::parse(label).unwrap();
            assert_eq!((size.aspect_ratio, size.image_size), (ratio, class), "{label}");
        }
        assert_eq!(SIZES.len(), expected.len());
    }

    #[test]
    fn aspect_ratio_and_resolution_ask_for_the_output_directly() {
        let r = parse(r#"{"prompt": "x", "aspect_ratio": "16:9", "resolution": "2K"}"#, Shape::Native).unwrap();
        assert_eq!(
            (r.output.aspect_ratio, r.output.resolution, r.output.label()),
            ("16:9", Resolution::R2K, "2048x1152".into())
        );
        let tall = parse(r#"{"prompt": "x", "aspect_ratio": "1:8", "resolution": "512"}"#, Shape::Native).unwrap();
        assert_eq!(tall.output.label(), "64x512");
        let defaults = parse(r#"{"prompt": "x", "resolution": "4K"}"#, Shape::Native).unwrap();
        assert_eq!((defaults.output.aspect_ratio, defaults.output.label()), ("1:1", "4096x4096".into()));
        let from_size = parse(r#"{"prompt": "x", "size": "1792x1024"}"#, Shape::Native).unwrap();
        assert_eq!((from_size.output.aspect_ratio, from_size.output.resolution), ("16:9", Resolution::R2K));
    }

    #[test]
    fn what_the_model_does_not_offer_is_422_naming_the_parameter_and_what_it_allows() {
        let cases = [
            (
                r#"{"prompt": "x", "model": "gemini-3-pro-image", "resolution": "512"}"#,
                "unsupported_by_model",
                "resolution",
            ),
            (
                r#"{"prompt": "x", "model": "gemini-3-pro-image", "aspect_ratio": "8:1"}"#,
                "unsupported_by_model",
                "aspect_ratio",
            ),
            (
                r#"{"prompt": "x", "size": "1024x1024", "aspect_ratio": "1:1"}"#,
                "conflicting_parameters",
                "aspect_ratio",
            ),
            (r#"{"prompt": "x", "size": "1024x1024", "resolution": "1K"}"#, "conflicting_parameters", "resolution"),
        ];
        for (raw, code, param) in cases {
            let err = parse(raw, Shape::Native).unwrap_err();
            assert_eq!((err.status(), err.code.as_str(), err.param.as_deref()), (422, code, Some(param)), "{raw}");
        }
        let err =
            parse(r#"{"prompt": "x", "model": "gemini-3-pro-image", "resolution": "512"}"#, Shape::Native).unwrap_err();
        assert!(err.message.contains("1K, 2K, 4K"), "{}", err.message);
        for (raw, param) in [
            (r#"{"prompt": "x", "aspect_ratio": "7:5"}"#, "aspect_ratio"),
            (r#"{"prompt": "x", "resolution": "8K"}"#, "resolution"),
        ] {
            assert_eq!(parse(raw, Shape::Native).unwrap_err().code, Code::InvalidValue, "{param}");
        }
        let openai = parse(r#"{"prompt": "x", "resolution": "2K"}"#, Shape::OpenAi).unwrap_err();
        assert_eq!((openai.status(), openai.param.as_deref()), (400, Some("resolution")));
    }

    #[test]
    fn style_changes_the_upstream_text() {
        let natural = parse(r#"{"prompt": "a cat"}"#, Shape::Native).unwrap();
        let artistic = parse(r#"{"prompt": "a cat", "style": "artistic"}"#, Shape::Native).unwrap();
        assert!(natural.upstream_text().starts_with("a cat\n\n") && natural.upstream_text().contains("photorealistic"));
        assert!(artistic.upstream_text().contains("painterly"));
    }

    #[test]
    fn validation_errors_are_422_with_param() {
        let cases = [
            (r#"{}"#, "prompt_required", "prompt"),
            (r#"{"prompt": "   "}"#, "prompt_required", "prompt"),
            (r#"{"prompt": 3}"#, "invalid_type", "prompt"),
            (r#"{"prompt": "x", "n": 0}"#, "out_of_range", "n"),
            (r#"{"prompt": "x", "n": 5}"#, "out_of_range", "n"),
            (r#"{"prompt": "x", "n": "2"}"#, "invalid_type", "n"),
            (r#"{"prompt": "x", "seed": 1}"#, "unknown_parameter", "seed"),
        ];
        for (raw, code, param) in cases {
            let err = parse(raw, Shape::Native).unwrap_err();
            assert_eq!((err.status(), err.code.as_str(), err.param.as_deref()), (422, code, Some(param)), "{raw}");
        }
        let long = format!(r#"{{"prompt": "{}"}}"#, "é".repeat(4001));
        assert_eq!(parse(&long, Shape::Native).unwrap_err().code.as_str(), "prompt_too_long");
        assert!(parse(&format!(r#"{{"prompt": "{}"}}"#, "é".repeat(4000)), Shape::Native).is_ok());
    }

    #[test]
    fn values_outside_the_documented_sets_are_400() {
        for (raw, param) in [
            (r#"{"prompt": "x", "size": "999x999"}"#, "size"),
            (r#"{"prompt": "x", "style": "vivid"}"#, "style"),
            (r#"{"prompt": "x", "model": "dall-e-3"}"#, "model"),
            (r#"{"prompt": "x", "model": "gemini-9"}"#, "model"),
            (r#"{"prompt": "x", "response_format": "png"}"#, "response_format"),
        ] {
            let err = parse(raw, Shape::Native).unwrap_err();
            assert_eq!(
                (err.status(), err.code.as_str(), err.param.as_deref()),
                (400, "invalid_value", Some(param)),
                "{raw}"
            );
        }
    }

    #[test]
    fn model_may_be_any_allowed_one() {
        assert_eq!(
            parse(r#"{"prompt": "x", "model": "gemini-3-pro-image"}"#, Shape::Native).unwrap().model,
            "gemini-3-pro-image"
        );
    }

    #[test]
    fn openai_shape_accepts_its_hints_and_names() {
        let r = parse(
            r#"{"prompt": "x", "model": "dall-e-3", "style": "vivid", "size": "auto", "user": "u-1", "quality": "hd", "response_format": "b64_json"}"#,
            Shape::OpenAi,
        )
        .unwrap();
        assert_eq!(
            (r.model.as_str(), r.style, r.output.label(), r.response_format),
            ("gemini-3.1-flash-image", Style::Artistic, "1024x1024".to_string(), ResponseFormat::B64Json)
        );
        let err = parse(r#"{"prompt": "x", "output_format": "webp"}"#, Shape::OpenAi).unwrap_err();
        assert_eq!(
            (err.status(), err.code.as_str(), err.param.as_deref()),
            (400, "unknown_parameter", Some("output_format"))
        );
    }
}
