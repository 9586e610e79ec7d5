//! What a generation cost, in Gemini's terms: the tokens its answers report
//! (`usageMetadata`), the deployment's prices per million tokens, and money as an integer
//! number of micro-dollars, never a float. Pure: the engine, the budgets and the usage
//! report (issue 22) are to build on it; nothing calls it yet.

use serde::Deserialize;

/// Money: an integer number of micro-dollars (US$ 0.000001).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Micros(pub u64);

impl Micros {
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
/// costs `p / 1,000,000` micro-dollars). Thinking is billed as output text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prices {
    pub input_text: Micros,
    pub input_image: Micros,
    pub output_image: Micros,
    pub output_text: Micros,
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

impl Tokens {
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
            input_text: self.input_text + other.input_text,
            input_image: self.input_image + other.input_image,
            output_image: self.output_image + other.output_image,
            output_text: self.output_text + other.output_text,
            reasoning: self.reasoning + other.reasoning,
        }
    }
}

/// Gemini's `usageMetadata`, the fields that are billed.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    pub prompt_token_count: Option<u64>,
    #[serde(default)]
    pub prompt_tokens_details: Vec<ModalityCount>,
    pub candidates_token_count: Option<u64>,
    #[serde(default)]
    pub candidates_tokens_details: Vec<ModalityCount>,
    pub thoughts_token_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModalityCount {
    pub modality: String,
    #[serde(default)]
    pub token_count: u64,
}

/// What one answer's tokens were, and whether they had to be estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metered {
    pub tokens: Tokens,
    /// `usageMetadata` was missing or lacked the split by modality: the output image is
    /// counted as the model documents it for the resolution (`documented_image_tokens`).
    pub estimated: bool,
}

/// One answer's tokens from its `usageMetadata` (None: the answer had none). Without the
/// split by modality, input counts as text and output as the documented image tokens plus
/// the rest as text; an image is never counted below what the model documents for it.
pub fn meter(usage: Option<&UsageMetadata>, documented_image_tokens: u64) -> Metered {
    let Some(usage) = usage else {
        return Metered {
            tokens: Tokens { output_image: documented_image_tokens, ..Tokens::default() },
            estimated: true,
        };
    };
    let of = |details: &[ModalityCount], modality: &str| {
        details.iter().filter(|d| d.modality.eq_ignore_ascii_case(modality)).map(|d| d.token_count).sum::<u64>()
    };
    let prompt = usage.prompt_token_count.unwrap_or(0);
    let (input_text, input_image) = if usage.prompt_tokens_details.is_empty() {
        (prompt, 0)
    } else {
        let image = of(&usage.prompt_tokens_details, "IMAGE");
        (prompt.saturating_sub(image), image)
    };
    let candidates = usage.candidates_token_count.unwrap_or(0);
    let split = !usage.candidates_tokens_details.is_empty();
    let output_image = if split { of(&usage.candidates_tokens_details, "IMAGE") } else { documented_image_tokens };
    let output_text = candidates.saturating_sub(output_image);
    let estimated = usage.prompt_token_count.is_none() || usage.candidates_token_count.is_none() || !split;
    Metered {
        tokens: Tokens {
            input_text,
            input_image,
            output_image,
            output_text,
            reasoning: usage.thoughts_token_count.unwrap_or(0),
        },
        estimated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let reported: UsageMetadata = serde_json::from_str(
            r#"{"promptTokenCount": 270, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12},
                {"modality": "IMAGE", "tokenCount": 258}], "candidatesTokenCount": 1150,
                "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}, {"modality": "TEXT", "tokenCount": 30}],
                "thoughtsTokenCount": 170, "totalTokenCount": 1590}"#,
        )
        .unwrap();
        let metered = meter(Some(&reported), 1_120);
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
        let bare: UsageMetadata =
            serde_json::from_str(r#"{"promptTokenCount": 12, "candidatesTokenCount": 1290}"#).unwrap();
        let metered = meter(Some(&bare), 1_120);
        assert_eq!(
            (metered.tokens.input_text, metered.tokens.output_image, metered.tokens.output_text),
            (12, 1_120, 170)
        );
        assert!(metered.estimated);
        let none = meter(None, 2_000);
        assert_eq!((none.tokens.output_image, none.estimated), (2_000, true));
        // A report below the documented tokens (with no split) is raised to them.
        let low: UsageMetadata =
            serde_json::from_str(r#"{"promptTokenCount": 5, "candidatesTokenCount": 10}"#).unwrap();
        assert_eq!(meter(Some(&low), 1_120).tokens.output_image, 1_120);
    }
}
