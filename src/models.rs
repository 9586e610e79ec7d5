//! The models this deployment offers and what each can do: its output resolutions, aspect
//! ratios, the most reference images it takes, the output image tokens Google bills per
//! resolution, and its prices. Configuration, not code: defaults by model family from
//! Google's documentation and pricing page (read 2026-11-30), `GEMINI_MODEL_CAPS` (JSON) to
//! override the capabilities per model and `GEMINI_PRICES` (JSON) the prices. `config`
//! builds the table, `GET /v1/models` (`catalog`) lists it.

use crate::metering::{Micros, Prices};
use serde::Serialize;

/// Gemini's `imageConfig.imageSize`, by the pixels of the longer edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum Resolution {
    #[serde(rename = "512")]
    R512,
    #[serde(rename = "1K")]
    R1K,
    #[serde(rename = "2K")]
    R2K,
    #[serde(rename = "4K")]
    R4K,
}

impl Resolution {
    pub const ALL: [Resolution; 4] = [Resolution::R512, Resolution::R1K, Resolution::R2K, Resolution::R4K];

    pub fn parse(value: &str) -> Option<Resolution> {
        Self::ALL.into_iter().find(|r| r.as_str() == value)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::R512 => "512",
            Resolution::R1K => "1K",
            Resolution::R2K => "2K",
            Resolution::R4K => "4K",
        }
    }

    /// Pixels of the longer edge.
    pub fn long_edge(self) -> u32 {
        match self {
            Resolution::R512 => 512,
            Resolution::R1K => 1024,
            Resolution::R2K => 2048,
            Resolution::R4K => 4096,
        }
    }
}

/// The aspect ratios every current Gemini image model takes.
pub const STANDARD_RATIOS: [&str; 10] = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"];
/// The extreme ratios some models add.
pub const EXTREME_RATIOS: [&str; 4] = ["1:4", "4:1", "1:8", "8:1"];

/// The ratio named `name`, if it is one of Gemini's (standard or extreme).
pub fn ratio(name: &str) -> Option<&'static str> {
    STANDARD_RATIOS.iter().chain(&EXTREME_RATIOS).find(|r| **r == name).copied()
}

/// What one model can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct Capabilities {
    pub resolutions: Vec<Resolution>,
    pub aspect_ratios: Vec<String>,
    /// The most reference images one request may carry.
    pub max_input_images: u32,
    /// Output image tokens Google bills for one image, per resolution it offers.
    pub image_tokens: ImageTokens,
    /// US dollars per million tokens of each kind (thinking is billed as output text).
    pub pricing: Prices,
}

/// Output image tokens of one image, by resolution (absent: not offered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct ImageTokens {
    #[serde(rename = "512", skip_serializing_if = "Option::is_none")]
    pub r512: Option<u64>,
    #[serde(rename = "1K", skip_serializing_if = "Option::is_none")]
    pub r1k: Option<u64>,
    #[serde(rename = "2K", skip_serializing_if = "Option::is_none")]
    pub r2k: Option<u64>,
    #[serde(rename = "4K", skip_serializing_if = "Option::is_none")]
    pub r4k: Option<u64>,
}

impl ImageTokens {
    fn slot(&mut self, resolution: Resolution) -> &mut Option<u64> {
        match resolution {
            Resolution::R512 => &mut self.r512,
            Resolution::R1K => &mut self.r1k,
            Resolution::R2K => &mut self.r2k,
            Resolution::R4K => &mut self.r4k,
        }
    }

    /// One image's tokens at `resolution`; a resolution with no documented figure counts
    /// as the most any offered one does (never below what could be billed).
    pub fn at(&self, resolution: Resolution) -> u64 {
        let all = [self.r512, self.r1k, self.r2k, self.r4k];
        let documented = match resolution {
            Resolution::R512 => self.r512,
            Resolution::R1K => self.r1k,
            Resolution::R2K => self.r2k,
            Resolution::R4K => self.r4k,
        };
        documented.unwrap_or_else(|| all.into_iter().flatten().max().unwrap_or(0))
    }
}

/// Dollars per million tokens, as the defaults are written.
fn usd(whole: u64, micros: u64) -> Micros {
    Micros(whole * 1_000_000 + micros)
}

/// The defaults for a model, by family.
pub fn defaults(model: &str) -> Capabilities {
    let ratios = |extreme: bool| {
        let mut all: Vec<String> = STANDARD_RATIOS.iter().map(|r| r.to_string()).collect();
        if extreme {
            all.extend(EXTREME_RATIOS.iter().map(|r| r.to_string()));
        }
        all
    };
    use Resolution::*;
    let tokens = |r512, r1k, r2k, r4k| ImageTokens { r512, r1k, r2k, r4k };
    let prices = |input: Micros, output_image: Micros, output_text: Micros| Prices {
        input_text: input,
        input_image: input,
        output_image,
        output_text,
    };
    if model.starts_with("gemini-3.1-flash-image") {
        Capabilities {
            resolutions: vec![R512, R1K, R2K, R4K],
            aspect_ratios: ratios(true),
            max_input_images: 14,
            image_tokens: tokens(Some(747), Some(1_120), Some(1_680), Some(2_520)),
            pricing: prices(usd(0, 500_000), usd(60, 0), usd(3, 0)),
        }
    } else if model.starts_with("gemini-3") {
        Capabilities {
            resolutions: vec![R1K, R2K, R4K],
            aspect_ratios: ratios(false),
            max_input_images: 14,
            image_tokens: tokens(None, Some(1_120), Some(1_120), Some(2_000)),
            pricing: prices(usd(2, 0), usd(120, 0), usd(12, 0)),
        }
    } else {
        // 2.5 Flash Image, and an unknown model: what every image model so far has offered,
        // at 2.5 Flash Image's prices.
        let max_input_images = 3;
        Capabilities {
            resolutions: vec![R1K],
            aspect_ratios: ratios(false),
            max_input_images,
            image_tokens: tokens(None, Some(1_290), None, None),
            pricing: prices(usd(0, 300_000), usd(30, 0), usd(2, 500_000)),
        }
    }
}

/// `W:H` with both sides whole numbers from 1 to 64.
fn valid_ratio(ratio: &str) -> bool {
    ratio.split_once(':').is_some_and(|(w, h)| {
        [w, h].iter().all(|side| side.parse::<u32>().is_ok_and(|n| (1..=64).contains(&n)) && !side.starts_with('0'))
    })
}

/// Each allowed model with its capabilities: the defaults, overridden by
/// `GEMINI_MODEL_CAPS` (`{"model": {"resolutions": ["1K"], "aspect_ratios": ["1:1"],
/// "max_input_images": 3, "image_tokens": {"1K": 1290}}}`, any field optional) and by
/// `GEMINI_PRICES` (`{"model": {"output_image_per_million_usd": "60", ...}}`, prices as
/// decimal strings, any field optional). A model either names that is not in
/// `GEMINI_MODELS`, or a value out of form, is an error (a misconfiguration).
pub fn table(
    models: &[String],
    overrides: Option<&str>,
    prices: Option<&str>,
) -> Result<Vec<(String, Capabilities)>, BadCaps> {
    // Read through serde_json's Value, which the Worker links anyway, rather than derived
    // Deserialize impls that would add their own code to the wasm for a setting.
    let object = |json: Option<&str>| match json.map(serde_json::from_str) {
        None => Ok(serde_json::Map::new()),
        Some(Ok(serde_json::Value::Object(map))) => Ok(map),
        Some(_) => Err(BadCaps::Caps),
    };
    let (mut overrides, mut prices) = (object(overrides)?, object(prices).map_err(|_| BadCaps::Prices)?);
    let mut table = Vec::with_capacity(models.len());
    for model in models {
        let mut caps = defaults(model);
        if let Some(change) = overrides.remove(model) {
            apply(&mut caps, change)?;
        }
        if let Some(change) = prices.remove(model) {
            price(&mut caps.pricing, change).map_err(|_| BadCaps::Prices)?;
        }
        let sane = !caps.resolutions.is_empty()
            && !caps.aspect_ratios.is_empty()
            && caps.aspect_ratios.iter().all(|r| valid_ratio(r))
            && caps.max_input_images <= 64;
        if !sane {
            return Err(BadCaps::Caps);
        }
        table.push((model.clone(), caps));
    }
    if !prices.is_empty() {
        return Err(BadCaps::Prices);
    }
    if !overrides.is_empty() {
        return Err(BadCaps::Caps);
    }
    Ok(table)
}

/// One model's override: each field it names replaces the default; any other is an error.
fn apply(caps: &mut Capabilities, change: serde_json::Value) -> Result<(), BadCaps> {
    let serde_json::Value::Object(fields) = change else { return Err(BadCaps::Caps) };
    let strings = |value: &serde_json::Value| -> Result<Vec<String>, BadCaps> {
        value
            .as_array()
            .ok_or(BadCaps::Caps)?
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or(BadCaps::Caps))
            .collect()
    };
    for (name, value) in fields {
        match name.as_str() {
            "resolutions" => {
                caps.resolutions = strings(&value)?
                    .iter()
                    .map(|r| Resolution::parse(r).ok_or(BadCaps::Caps))
                    .collect::<Result<_, _>>()?
            }
            "aspect_ratios" => caps.aspect_ratios = strings(&value)?,
            "max_input_images" => {
                caps.max_input_images = value.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or(BadCaps::Caps)?
            }
            "image_tokens" => {
                let serde_json::Value::Object(by_resolution) = value else { return Err(BadCaps::Caps) };
                for (resolution, tokens) in by_resolution {
                    let tokens = tokens.as_u64().filter(|n| (1..=1_000_000).contains(n)).ok_or(BadCaps::Caps)?;
                    *caps.image_tokens.slot(Resolution::parse(&resolution).ok_or(BadCaps::Caps)?) = Some(tokens);
                }
            }
            _ => return Err(BadCaps::Caps),
        }
    }
    Ok(())
}

/// One model's prices: each named price (a decimal string of dollars per million tokens,
/// at most $1,000,000) replaces the default; anything else is an error.
fn price(prices: &mut Prices, change: serde_json::Value) -> Result<(), BadCaps> {
    let serde_json::Value::Object(fields) = change else { return Err(BadCaps::Caps) };
    for (name, value) in fields {
        let amount = value.as_str().and_then(Micros::parse).filter(|m| *m <= usd(1_000_000, 0)).ok_or(BadCaps::Caps)?;
        *prices.named(&name).ok_or(BadCaps::Caps)? = amount;
    }
    Ok(())
}

/// `GEMINI_MODEL_CAPS` (or, `BadCaps::Prices`, `GEMINI_PRICES`) is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadCaps {
    Caps,
    Prices,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn defaults_follow_the_model_family() {
        let table =
            table(&models(&["gemini-3.1-flash-image", "gemini-3-pro-image", "gemini-2.5-flash-image"]), None, None)
                .unwrap();
        let [flash, pro, old] = [&table[0].1, &table[1].1, &table[2].1];
        assert_eq!(flash.resolutions, vec![Resolution::R512, Resolution::R1K, Resolution::R2K, Resolution::R4K]);
        assert!(flash.aspect_ratios.contains(&"8:1".to_string()) && flash.max_input_images == 14);
        assert_eq!(pro.resolutions, vec![Resolution::R1K, Resolution::R2K, Resolution::R4K]);
        assert!(!pro.aspect_ratios.contains(&"8:1".to_string()) && pro.aspect_ratios.len() == 10);
        assert_eq!((old.resolutions.len(), old.max_input_images), (1, 3));
    }

    #[test]
    fn overrides_replace_what_they_name() {
        let table = table(
            &models(&["gemini-3-pro-image", "m-2"]),
            Some(r#"{"m-2": {"resolutions": ["1K", "2K"], "max_input_images": 5, "image_tokens": {"2K": 1500}}}"#),
            None,
        )
        .unwrap();
        assert_eq!(table[1].1.resolutions, vec![Resolution::R1K, Resolution::R2K]);
        assert_eq!(
            (table[1].1.image_tokens.at(Resolution::R1K), table[1].1.image_tokens.at(Resolution::R2K)),
            (1_290, 1_500)
        );
        // A resolution with no documented figure counts as the most of those documented.
        assert_eq!(table[1].1.image_tokens.at(Resolution::R4K), 1_500);
        let pro = &table[0].1;
        assert_eq!((pro.image_tokens.at(Resolution::R4K), pro.image_tokens.at(Resolution::R2K)), (2_000, 1_120));
        assert_eq!((table[1].1.max_input_images, table[1].1.aspect_ratios.len()), (5, 10));
        assert_eq!(table[0].1, defaults("gemini-3-pro-image"));
    }

    #[test]
    fn bad_overrides_are_misconfiguration() {
        let allowed = models(&["m-1"]);
        for bad in [
            "not json",
            r#"{"other-model": {"max_input_images": 1}}"#,
            r#"{"m-1": {"resolutions": ["8K"]}}"#,
            r#"{"m-1": {"resolutions": []}}"#,
            r#"{"m-1": {"aspect_ratios": ["wide"]}}"#,
            r#"{"m-1": {"aspect_ratios": ["0:1"]}}"#,
            r#"{"m-1": {"colour": true}}"#,
            r#"{"m-1": {"max_input_images": 100}}"#,
        ] {
            assert_eq!(table(&allowed, Some(bad), None).unwrap_err(), BadCaps::Caps, "{bad}");
        }
    }
}
