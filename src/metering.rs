//! What a generation cost, in Gemini's terms: the tokens its answers report
//! (`usageMetadata`), the deployment's prices per million tokens, and money as an integer
//! number of micro-dollars, never a float. Pure: the engine meters each answer with it,
//! the reservation reserves its worst case, `POST /v1/estimate` shows both estimates.

use serde::Serialize;

/// Money: an integer number of micro-dollars (US$ 0.000001).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Micros(pub u64);

/// Shown as the API shows money: a decimal string with six decimals.
impl Serialize for Micros {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_decimal())
    }
}

#[cfg(test)]
impl schemars::JsonSchema for Micros {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Usd".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[0-9]+\\.[0-9]{6}$",
            "description": "US dollars, a decimal string with six decimals (exact: micro-dollars)."})
    }
}

impl Micros {
    /// The largest amount D1 stores exactly (a JS number's exact integers).
    pub const MAX_STORED: i64 = (1 << 53) - 1;

    /// As D1 stores it; an amount past [`Micros::MAX_STORED`] (no setting allows one)
    /// saturates there.
    pub fn stored(self) -> i64 {
        i64::try_from(self.0).map_or(Self::MAX_STORED, |m| m.min(Self::MAX_STORED))
    }

    /// A decimal string with six decimals (`"0.067200"`), as the API shows money.
    pub fn to_decimal(self) -> String {
        format!("{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }

    /// A non-negative decimal of at most six decimals (`"0.5"`, `"120"`, `"0.000001"`);
    /// None for anything else (a sign, an exponent, a seventh decimal, over 10^12 dollars).
    pub fn parse(text: &str) -> Option<Micros> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 12 || fraction.len() > 6 || !digits(whole) || !digits(fraction) {
            return None;
        }
        if text.ends_with('.') {
            return None;
        }
        let whole: u64 = whole.parse().ok()?;
        let scale = 10u64.pow(6 - fraction.len() as u32);
        let fraction: u64 = if fraction.is_empty() { 0 } else { fraction.parse().ok()? };
        Some(Micros(whole * 1_000_000 + fraction * scale))
    }
}

/// A model's prices, each in micro-dollars per million tokens (so a token of a price `p`
/// costs `p / 1,000,000` micro-dollars), shown in US dollars per million tokens. Thinking
/// is billed as output text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct Prices {
    #[serde(rename = "input_text_per_million_usd")]
    pub input_text: Micros,
    #[serde(rename = "input_image_per_million_usd")]
    pub input_image: Micros,
    #[serde(rename = "output_image_per_million_usd")]
    pub output_image: Micros,
    #[serde(rename = "output_text_per_million_usd")]
    pub output_text: Micros,
}

impl Prices {
    /// The setting's names of the four prices, in field order.
    pub const NAMES: [&'static str; 4] = [
        "input_text_per_million_usd",
        "input_image_per_million_usd",
        "output_image_per_million_usd",
        "output_text_per_million_usd",
    ];

    /// The price named `name` (one of [`Prices::NAMES`]).
    pub fn named(&mut self, name: &str) -> Option<&mut Micros> {
        match name {
            "input_text_per_million_usd" => Some(&mut self.input_text),
            "input_image_per_million_usd" => Some(&mut self.input_image),
            "output_image_per_million_usd" => Some(&mut self.output_image),
            "output_text_per_million_usd" => Some(&mut self.output_text),
            _ => None,
        }
    }
}

/// The tokens of one generation (the sums over its calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input_text: u64,
    pub input_image: u64,
    pub output_image: u64,
    pub output_text: u64,
    /// Thinking: billed as output text, reported apart.
    pub reasoning: u64,
}

/// The most tokens of one kind one answer is believed to report: upstream is untrusted,
/// and every count must stay exact in D1 (a JS number) however many are summed.
pub const MAX_REPORTED_TOKENS: u64 = 1 << 32;

/// Output text and thinking reserved per call beside the documented image tokens: Gemini
/// reports a few hundred for an image; more than this is charged in full, and logged.
pub const TEXT_AND_THINKING_ALLOWANCE: u64 = 2_000;
/// An input image as Gemini counts it: 258 tokens per 768x768 tile, at least one tile.
pub const TILE_TOKENS: u64 = 258;
const TILE_PIXELS: u64 = 768;
/// At most, an input image costs this or its tiles, whichever is more (Gemini 3 models
/// bill an image at up to 1,120 tokens at their default media resolution).
pub const INPUT_IMAGE_FLOOR: u64 = 1_120;
/// The dimensions assumed for an input whose header gave none.
const UNKNOWN_INPUT_EDGE: u32 = 4_096;
/// Tokens a prompt may take beyond one per byte (the turn's framing).
const TEXT_OVERHEAD: u64 = 64;

/// An image's width and height, when its header gave them.
pub type Pixels = (Option<u32>, Option<u32>);

/// What one call of a generation sends and asks for, as the estimates need it.
#[derive(Debug, Clone, Copy)]
pub struct CallShape<'a> {
    /// Bytes of the text sent (prompt and style instruction).
    pub text_bytes: usize,
    /// Each input's width and height, when its header gave them.
    pub inputs: &'a [Pixels],
    /// The model's documented output image tokens at the asked resolution.
    pub image_tokens: u64,
}

impl CallShape<'_> {
    fn tiles(width: Option<u32>, height: Option<u32>) -> u64 {
        let side = |pixels: Option<u32>| u64::from(pixels.unwrap_or(UNKNOWN_INPUT_EDGE)).div_ceil(TILE_PIXELS).max(1);
        side(width) * side(height)
    }

    /// What Google documents for it: about four bytes a text token, 258 tokens per input
    /// tile, the model's image tokens; no text or thinking. What test keys report, and the
    /// stand-in for an answer that reported no usage.
    pub fn typical(&self) -> Tokens {
        Tokens {
            input_text: (self.text_bytes as u64).div_ceil(4),
            input_image: self.inputs.iter().map(|(w, h)| TILE_TOKENS * Self::tiles(*w, *h)).sum(),
            output_image: self.image_tokens,
            ..Tokens::default()
        }
    }

    /// The most it may cost, reserved before the call: a token per byte of text, each input
    /// at the most Gemini bills an image of its size, the image tokens, and the allowance
    /// for text and thinking.
    pub fn worst(&self) -> Tokens {
        Tokens {
            input_text: self.text_bytes as u64 + TEXT_OVERHEAD,
            input_image: self
                .inputs
                .iter()
                .map(|(w, h)| (TILE_TOKENS * Self::tiles(*w, *h)).max(INPUT_IMAGE_FLOOR))
                .sum(),
            output_image: self.image_tokens,
            output_text: TEXT_AND_THINKING_ALLOWANCE,
            reasoning: 0,
        }
    }
}

impl Tokens {
    /// `n` calls of these tokens.
    pub fn times(self, n: u32) -> Tokens {
        let n = u64::from(n);
        Tokens {
            input_text: self.input_text * n,
            input_image: self.input_image * n,
            output_image: self.output_image * n,
            output_text: self.output_text * n,
            reasoning: self.reasoning * n,
        }
    }

    /// Sum over kinds of tokens x price / 1,000,000, rounded half-up to the micro-dollar,
    /// once, on the exact total (so n calls cost what their summed tokens cost).
    pub fn cost(&self, prices: &Prices) -> Micros {
        let term = |tokens: u64, price: Micros| u128::from(tokens) * u128::from(price.0);
        let total = term(self.input_text, prices.input_text)
            + term(self.input_image, prices.input_image)
            + term(self.output_image, prices.output_image)
            + term(self.output_text + self.reasoning, prices.output_text);
        Micros(u64::try_from((total + 500_000) / 1_000_000).unwrap_or(u64::MAX))
    }

    pub fn input(&self) -> u64 {
        self.input_text + self.input_image
    }

    /// Output includes reasoning.
    pub fn output(&self) -> u64 {
        self.output_image + self.output_text + self.reasoning
    }
}

/// The sum of two calls' tokens (a generation of `n` images is `n` calls).
impl std::ops::Add for Tokens {
    type Output = Tokens;

    fn add(self, other: Tokens) -> Tokens {
        Tokens {
            input_text: self.input_text.saturating_add(other.input_text),
            input_image: self.input_image.saturating_add(other.input_image),
            output_image: self.output_image.saturating_add(other.output_image),
            output_text: self.output_text.saturating_add(other.output_text),
            reasoning: self.reasoning.saturating_add(other.reasoning),
        }
    }
}

/// Gemini's `usageMetadata`, the fields that are billed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UsageMetadata {
    pub prompt_token_count: Option<u64>,
    pub prompt_tokens_details: ByModality,
    pub candidates_token_count: Option<u64>,
    pub candidates_tokens_details: ByModality,
    pub thoughts_token_count: Option<u64>,
}

/// A `usageMetadata` larger than this is not read (Gemini's are a few hundred bytes): it
/// is read as a `serde_json::Value` tree, which must stay small whatever upstream sends.
pub const MAX_USAGE_BYTES: usize = 16 * 1024;

impl UsageMetadata {
    /// Reads it from its JSON; None when it is not an object, or too large to read.
    pub fn parse(json: &str) -> Option<UsageMetadata> {
        use serde_json::Value;
        if json.len() > MAX_USAGE_BYTES {
            return None;
        }
        let usage: Value = serde_json::from_str(json).ok()?;
        usage.as_object()?;
        let count = |name: &str| usage.get(name).and_then(Value::as_u64);
        let details = |name: &str| match usage.get(name).and_then(Value::as_array) {
            None => ByModality::default(),
            Some(items) => ByModality {
                present: !items.is_empty(),
                image: items
                    .iter()
                    .filter(|item| {
                        item.get("modality").and_then(Value::as_str).is_some_and(|m| m.eq_ignore_ascii_case("IMAGE"))
                    })
                    .filter_map(|item| item.get("tokenCount").and_then(Value::as_u64))
                    .fold(0, u64::saturating_add),
            },
        };
        Some(UsageMetadata {
            prompt_token_count: count("promptTokenCount"),
            prompt_tokens_details: details("promptTokensDetails"),
            candidates_token_count: count("candidatesTokenCount"),
            candidates_tokens_details: details("candidatesTokensDetails"),
            thoughts_token_count: count("thoughtsTokenCount"),
        })
    }
}

/// A `[{modality, tokenCount}]` list, summed: its IMAGE tokens, and whether it had any entry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ByModality {
    pub image: u64,
    pub present: bool,
}

/// What one answer's tokens were, and whether they had to be estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metered {
    pub tokens: Tokens,
    /// `usageMetadata` was missing or lacked the split by modality: the output image is
    /// counted as the model documents it for the resolution (`documented_image_tokens`).
    pub estimated: bool,
}

/// One answer's tokens from its `usageMetadata`. None (the answer had none): the call's
/// `typical` tokens, estimated. Without the split by modality, input counts as text and
/// output as the documented image tokens plus the rest as text. Each count is capped at
/// [`MAX_REPORTED_TOKENS`].
pub fn meter(usage: Option<&UsageMetadata>, typical: Tokens) -> Metered {
    let Some(usage) = usage else {
        return Metered { tokens: typical, estimated: true };
    };
    let cap = |count: u64| count.min(MAX_REPORTED_TOKENS);
    let prompt = cap(usage.prompt_token_count.unwrap_or(0));
    let input_image = cap(usage.prompt_tokens_details.image).min(prompt);
    let candidates = cap(usage.candidates_token_count.unwrap_or(0));
    let split = usage.candidates_tokens_details.present;
    // Without the split, the image is never counted below what the model documents.
    let output_image = if split { cap(usage.candidates_tokens_details.image) } else { typical.output_image };
    let estimated = usage.prompt_token_count.is_none() || usage.candidates_token_count.is_none() || !split;
    Metered {
        tokens: Tokens {
            input_text: prompt - input_image,
            input_image,
            output_image,
            output_text: candidates.saturating_sub(output_image),
            reasoning: cap(usage.thoughts_token_count.unwrap_or(0)),
        },
        estimated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tokens: u64) -> Tokens {
        Tokens { output_image: tokens, ..Tokens::default() }
    }

    fn usd(text: &str) -> Micros {
        Micros::parse(text).unwrap()
    }

    #[test]
    fn money_is_six_decimals_both_ways() {
        assert_eq!(usd("0.5"), Micros(500_000));
        assert_eq!(usd("120"), Micros(120_000_000));
        assert_eq!(usd("0.000001"), Micros(1));
        assert_eq!(Micros(67_200).to_decimal(), "0.067200");
        assert_eq!(Micros(1_240_000_001).to_decimal(), "1240.000001");
        assert_eq!((Micros(67_200).stored(), Micros(u64::MAX).stored()), (67_200, Micros::MAX_STORED));
        for bad in ["", ".5", "5.", "-1", "1e3", "0.0000001", "1,5", " 1", "1 ", "+1", "1234567890123"] {
            assert_eq!(Micros::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_issues_examples_cost_what_google_bills() {
        let pro =
            Prices { input_text: usd("2"), input_image: usd("2"), output_image: usd("120"), output_text: usd("12") };
        let flash = Prices {
            input_text: usd("0.50"),
            input_image: usd("0.50"),
            output_image: usd("60"),
            output_text: usd("3"),
        };
        // A 4K image from 3 Pro Image: 2,000 output image tokens at $120 per million.
        assert_eq!(Tokens { output_image: 2_000, ..Tokens::default() }.cost(&pro).to_decimal(), "0.240000");
        // A 1K image from 3.1 Flash Image: 1,120 at $60 per million.
        assert_eq!(Tokens { output_image: 1_120, ..Tokens::default() }.cost(&flash).to_decimal(), "0.067200");
        // Rounded half-up once, on the total: 1 text token at $0.50/M is 0.5 micro-dollars.
        assert_eq!(Tokens { input_text: 1, ..Tokens::default() }.cost(&flash), Micros(1));
        assert_eq!(Tokens { input_text: 1, input_image: 1, ..Tokens::default() }.cost(&flash), Micros(1));
        assert_eq!(Tokens { reasoning: 1_000_000, ..Tokens::default() }.cost(&flash), usd("3"));
        // n calls cost what their summed tokens cost, rounded once.
        let one = Tokens { input_text: 1, ..Tokens::default() };
        assert_eq!((one + one + one).cost(&flash), Micros(2), "1.5 micro-dollars rounds half-up to 2");
    }

    #[test]
    fn usage_metadata_is_split_by_modality_and_estimated_when_it_is_not() {
        let reported = UsageMetadata::parse(
            r#"{"promptTokenCount": 270, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12},
                {"modality": "IMAGE", "tokenCount": 258}], "candidatesTokenCount": 1150,
                "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}, {"modality": "TEXT", "tokenCount": 30}],
                "thoughtsTokenCount": 170, "totalTokenCount": 1590}"#,
        )
        .unwrap();
        let metered = meter(Some(&reported), image(1_120));
        assert_eq!(
            metered,
            Metered {
                tokens: Tokens {
                    input_text: 12,
                    input_image: 258,
                    output_image: 1_120,
                    output_text: 30,
                    reasoning: 170
                },
                estimated: false
            }
        );
        assert_eq!((metered.tokens.input(), metered.tokens.output()), (270, 1_320));
        let bare = UsageMetadata::parse(r#"{"promptTokenCount": 12, "candidatesTokenCount": 1290}"#).unwrap();
        let metered = meter(Some(&bare), image(1_120));
        assert_eq!(
            (metered.tokens.input_text, metered.tokens.output_image, metered.tokens.output_text),
            (12, 1_120, 170)
        );
        assert!(metered.estimated);
        let none = meter(None, image(2_000));
        assert_eq!((none.tokens.output_image, none.estimated), (2_000, true));
        // A report below the documented tokens (with no split) is raised to them.
        let low = UsageMetadata::parse(r#"{"promptTokenCount": 5, "candidatesTokenCount": 10}"#).unwrap();
        assert_eq!(meter(Some(&low), image(1_120)).tokens.output_image, 1_120);
    }

    #[test]
    fn details_are_summed_and_hostile_sizes_and_counts_are_capped() {
        let many = format!(
            r#"{{"promptTokenCount": 99999999999999999, "promptTokensDetails": [{}], "candidatesTokenCount": 5000,
                "candidatesTokensDetails": [{{"modality": "IMAGE", "tokenCount": 1000}}, {{"modality": "image", "tokenCount": 120}}]}}"#,
            vec![r#"{"modality": "IMAGE", "tokenCount": 1}"#; 10_000].join(",")
        );
        assert_eq!(UsageMetadata::parse(&many), None, "past MAX_USAGE_BYTES it is not read");
        let many = many.replace(
            &vec![r#"{"modality": "IMAGE", "tokenCount": 1}"#; 10_000].join(","),
            &vec![r#"{"modality": "IMAGE", "tokenCount": 1}"#; 100].join(","),
        );
        let usage = UsageMetadata::parse(&many).unwrap();
        let metered = meter(Some(&usage), image(1_120));
        assert_eq!(metered.tokens.input_image, 100);
        assert_eq!(metered.tokens.input_text, MAX_REPORTED_TOKENS - 100);
        assert_eq!((metered.tokens.output_image, metered.tokens.output_text), (1_120, 3_880));
        assert!(!metered.estimated);
        let huge = UsageMetadata::parse(
            r#"{"promptTokenCount": 1, "candidatesTokenCount": 18446744073709551615, "thoughtsTokenCount": 18446744073709551615,
                "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 18446744073709551615}]}"#,
        )
        .unwrap();
        let tokens = meter(Some(&huge), image(1_120)).tokens;
        assert_eq!((tokens.output_image, tokens.reasoning), (MAX_REPORTED_TOKENS, MAX_REPORTED_TOKENS));
        // Summed over many calls and priced at the highest price a setting takes, still exact.
        let prices = Prices { input_text: Micros(u64::MAX), ..Prices::default() };
        assert!(tokens.times(1).cost(&prices) > Micros(0));
    }

    #[test]
    fn worst_case_covers_what_gemini_reports_and_typical_is_what_it_documents() {
        let inputs = [(Some(1024), Some(768)), (None, None)];
        let call = CallShape { text_bytes: 41, inputs: &inputs, image_tokens: 2_000 };
        let typical = call.typical();
        assert_eq!(
            typical,
            Tokens { input_text: 11, input_image: 258 * 2 + 258 * 36, output_image: 2_000, ..Tokens::default() }
        );
        let worst = call.worst();
        assert_eq!(worst.input_text, 41 + 64);
        assert_eq!(worst.input_image, 1_120 + 258 * 36, "an input costs at least the floor, else its tiles");
        assert_eq!((worst.output_image, worst.output_text), (2_000, TEXT_AND_THINKING_ALLOWANCE));
        let pro =
            Prices { input_text: usd("2"), input_image: usd("2"), output_image: usd("120"), output_text: usd("12") };
        // Four 4K Pro images from a short prompt: n x (0.24 + 0.024 + a little input).
        let four = CallShape { text_bytes: 20, inputs: &[], image_tokens: 2_000 }.worst().times(4);
        assert_eq!(four.cost(&pro).to_decimal(), "1.056672");
    }
}
