//! The models this deployment offers and what each can do: its output resolutions, aspect
//! ratios and the most reference images it takes. Configuration, not code: defaults by
//! model family from Google's documentation (2026-11), and `GEMINI_MODEL_CAPS` (JSON) to
//! override any of them per model. A leaf: `config` builds the table, `GET /v1/models`
//! (`catalog`) lists it.

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
    if model.starts_with("gemini-3.1-flash-image") {
        Capabilities { resolutions: vec![R512, R1K, R2K, R4K], aspect_ratios: ratios(true), max_input_images: 14 }
    } else if model.starts_with("gemini-3") {
        Capabilities { resolutions: vec![R1K, R2K, R4K], aspect_ratios: ratios(false), max_input_images: 14 }
    } else if model.starts_with("gemini-2.5-flash-image") {
        Capabilities { resolutions: vec![R1K], aspect_ratios: ratios(false), max_input_images: 3 }
    } else {
        // An unknown model: what every image model so far has offered.
        Capabilities { resolutions: vec![R1K], aspect_ratios: ratios(false), max_input_images: 3 }
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
/// "max_input_images": 3}}`, any field optional). A model it names that is not in
/// `GEMINI_MODELS`, or a value out of form, is an error (a misconfiguration).
pub fn table(models: &[String], overrides: Option<&str>) -> Result<Vec<(String, Capabilities)>, BadCaps> {
    // Read through serde_json's Value, which the Worker links anyway, rather than derived
    // Deserialize impls that would add their own code to the wasm for a setting.
    let mut overrides = match overrides {
        None => serde_json::Map::new(),
        Some(json) => match serde_json::from_str(json) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err(BadCaps),
        },
    };
    let mut table = Vec::with_capacity(models.len());
    for model in models {
        let mut caps = defaults(model);
        if let Some(change) = overrides.remove(model) {
            apply(&mut caps, change)?;
        }
        let sane = !caps.resolutions.is_empty()
            && !caps.aspect_ratios.is_empty()
            && caps.aspect_ratios.iter().all(|r| valid_ratio(r))
            && caps.max_input_images <= 64;
        if !sane {
            return Err(BadCaps);
        }
        table.push((model.clone(), caps));
    }
    if !overrides.is_empty() {
        return Err(BadCaps);
    }
    Ok(table)
}

/// One model's override: each field it names replaces the default; any other is an error.
fn apply(caps: &mut Capabilities, change: serde_json::Value) -> Result<(), BadCaps> {
    let serde_json::Value::Object(fields) = change else { return Err(BadCaps) };
    let strings = |value: &serde_json::Value| -> Result<Vec<String>, BadCaps> {
        value.as_array().ok_or(BadCaps)?.iter().map(|v| v.as_str().map(str::to_string).ok_or(BadCaps)).collect()
    };
    for (name, value) in fields {
        match name.as_str() {
            "resolutions" => {
                caps.resolutions =
                    strings(&value)?.iter().map(|r| Resolution::parse(r).ok_or(BadCaps)).collect::<Result<_, _>>()?
            }
            "aspect_ratios" => caps.aspect_ratios = strings(&value)?,
            "max_input_images" => {
                caps.max_input_images = value.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or(BadCaps)?
            }
            _ => return Err(BadCaps),
        }
    }
    Ok(())
}

/// `GEMINI_MODEL_CAPS` is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadCaps;

#[cfg(test)]
mod tests {
    use super::*;

    fn models(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn defaults_follow_the_model_family() {
        let table =
            table(&models(&["gemini-3.1-flash-image", "gemini-3-pro-image", "gemini-2.5-flash-image"]), None).unwrap();
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
            Some(r#"{"m-2": {"resolutions": ["1K", "2K"], "max_input_images": 5}}"#),
        )
        .unwrap();
        assert_eq!(table[1].1.resolutions, vec![Resolution::R1K, Resolution::R2K]);
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
            assert_eq!(table(&allowed, Some(bad)).unwrap_err(), BadCaps, "{bad}");
        }
    }
}
