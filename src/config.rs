//! Settings from wrangler.toml `[vars]`, secrets and `.dev.vars`, with the defaults the
//! README's configuration table documents.
//!
//! Parsed from a lookup function so the rules (defaults, ranges, what counts as missing)
//! are tested natively. Secrets live in the isolate's cached `Config` for the isolate's
//! life (a new deployment or `wrangler secret put` starts new isolates); they never reach
//! a log, an error or a `Debug` line. `docs/operations.md` documents every setting, and
//! `tests/config_docs.rs` fails when a name, default or range there, here or in
//! wrangler.toml differs.

use crate::error::ApiError;

pub const DEFAULT_GEMINI_API_BASE: &str = "https://generativelanguage.googleapis.com";
pub const DEFAULT_GEMINI_MODEL: &str = "gemini-3.1-flash-image";
/// Webhook retries: after 1, 5, 15 and 40 minutes, so five attempts span about an hour.
pub const DEFAULT_WEBHOOK_RETRY_DELAYS: [u32; 4] = [60, 300, 900, 2400];
/// JWT_SECRET also keys image-URL signatures; shorter secrets are refused as misconfiguration.
pub const MIN_SECRET_LEN: usize = 32;

use crate::metering::Micros;

#[derive(Clone)]
pub struct Config {
    jwt_secret: Option<String>,
    google_api_key: Option<String>,
    pub gemini_api_base: String,
    pub gemini_model: String,
    /// The models a request may name; always contains `gemini_model`.
    pub gemini_models: Vec<String>,
    /// What each of `gemini_models` can do, in the same order (`GEMINI_MODEL_CAPS`).
    pub model_caps: Vec<(String, crate::models::Capabilities)>,
    pub bcrypt_cost: u32,
    pub daily_image_quota: u32,
    pub rate_limit_per_minute: u32,
    pub image_url_ttl_seconds: u64,
    pub public_image_base: Option<String>,
    /// Overall time budget for one image's upstream calls, retries included.
    pub gemini_deadline_ms: u64,
    /// Failed logins per email that lock it, and the window they count in.
    pub login_max_failures: u32,
    pub login_window_seconds: u64,
    /// Registrations allowed per client IP per window.
    pub register_max_per_ip: u32,
    pub register_window_seconds: u64,
    /// Failed logins per client IP (any emails) that lock that IP, in the login window.
    pub login_max_failures_per_ip: u32,
    /// The most images per day a key may have (its own quota, or the default).
    pub max_key_daily_image_quota: u32,
    /// Live images per account per UTC day across all its keys, unless the account has
    /// its own ceiling (set by an admin).
    pub account_daily_image_quota: u32,
    /// Live images per UTC day for the whole deployment.
    pub deployment_daily_live_images: u32,
    pub max_active_keys_per_account: u32,
    /// Money ceilings per UTC day (None: none): what one account's live keys may spend
    /// unless an admin set its own, what the whole deployment's may, and the most any key
    /// may spend (its own `daily_budget_usd`, else this).
    pub account_daily_budget: Option<Micros>,
    pub deployment_daily_budget: Option<Micros>,
    pub max_key_daily_budget: Option<Micros>,
    pub registration: Registration,
    /// Days a test key's images are kept in R2.
    pub test_image_retention_days: u32,
    /// `WEBHOOK_ALLOW_HTTP_LOCALHOST = "true"`: webhook URLs may be `http://127.0.0.1` or
    /// `http://localhost` (local development and the tests); otherwise only `https://`.
    pub webhook_allow_http_localhost: bool,
    /// Seconds before each webhook retry (`WEBHOOK_RETRY_DELAYS_SECONDS`, comma-separated):
    /// its length is the number of retries after the first attempt.
    pub webhook_retry_delays: Vec<u32>,
    /// Seconds a queued generation waits before a consumer may take it
    /// (`QUEUE_DELAY_SECONDS`, default 0): room to smooth bursts, or to cancel.
    pub queue_delay_seconds: u32,
    /// `QUEUE_DUPLICATE_DELIVERY = "true"` sends every generation message twice: a fault
    /// drill for at-least-once delivery (the tests use it). Refused unless
    /// `ALLOW_TEST_DRILLS = "true"`.
    pub queue_duplicate_delivery: bool,
    /// `QUEUE_FAIL_GENERATION_JOBS = "true"`: the consumer fails every generation job before
    /// taking it, as if D1 were down, so each is retried until it dead-letters: a drill of
    /// the dead-letter path (the tests use it). Refused unless `ALLOW_TEST_DRILLS = "true"`.
    pub queue_fail_generation_jobs: bool,
    /// Keys webhook signing secrets (`WEBHOOK_SECRET_KEY`, a secret); unset, they derive
    /// from JWT_SECRET, and rotating that changes every account's webhook secret.
    webhook_secret_key: Option<String>,
    /// `LOG_SQL = "true"` logs the text of every D1 statement (the test suite's query-plan
    /// check reads them). Off in production: it is noise, though it never holds a value.
    pub log_sql: bool,
}

/// `REGISTRATION`: whether anyone may sign up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Open,
    /// Sign-up answers 403 `registration_closed`; an admin can still create accounts.
    Closed,
}

/// A setting that is present but unusable. Named, never echoed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting(pub &'static str);

impl From<InvalidSetting> for ApiError {
    fn from(err: InvalidSetting) -> Self {
        ApiError::server_misconfigured(err.0)
    }
}

impl std::fmt::Debug for Config {
    // Hand-written so that a stray `{:?}` can never print a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<set>"))
            .field("google_api_key", &self.google_api_key.as_ref().map(|_| "<set>"))
            .field("gemini_api_base", &self.gemini_api_base)
            .field("gemini_model", &self.gemini_model)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// This isolate's settings, read once: a Worker's vars and secrets cannot change under a
    /// running isolate (a new deployment or `wrangler secret put` starts new ones).
    static CACHED: std::cell::RefCell<Option<std::rc::Rc<Config>>> = const { std::cell::RefCell::new(None) };
}

impl Config {
    /// The settings of the Worker's environment, parsed on an isolate's first request and
    /// kept (measured: parsing ~40 settings, each a crossing into JS, cost about a tenth of
    /// a small request's CPU). An invalid setting is not kept: every request reports it.
    pub fn for_env(env: &worker::Env) -> Result<std::rc::Rc<Config>, InvalidSetting> {
        if let Some(config) = CACHED.with(|cached| cached.borrow().clone()) {
            return Ok(config);
        }
        let config = std::rc::Rc::new(Config::from_lookup(|name| env.var(name).ok().map(|v| v.to_string()))?);
        CACHED.with(|cached| *cached.borrow_mut() = Some(config.clone()));
        Ok(config)
    }

    /// Reads every setting through `lookup` (name -> value); empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, InvalidSetting> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());

        let gemini_model = get("GEMINI_MODEL").unwrap_or_else(|| DEFAULT_GEMINI_MODEL.to_string());
        let mut gemini_models: Vec<String> = get("GEMINI_MODELS")
            .map(|list| list.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect())
            .unwrap_or_default();
        if !gemini_models.contains(&gemini_model) {
            gemini_models.insert(0, gemini_model.clone());
        }
        if gemini_models.iter().any(|m| !valid_model_name(m)) {
            return Err(InvalidSetting("GEMINI_MODELS"));
        }

        let model_caps =
            crate::models::table(&gemini_models, get("GEMINI_MODEL_CAPS").as_deref(), get("GEMINI_PRICES").as_deref())
                .map_err(|bad| match bad {
                    crate::models::BadCaps::Caps => InvalidSetting("GEMINI_MODEL_CAPS"),
                    crate::models::BadCaps::Prices => InvalidSetting("GEMINI_PRICES"),
                })?;

        let gemini_api_base = get("GEMINI_API_BASE")
            .unwrap_or_else(|| DEFAULT_GEMINI_API_BASE.to_string())
            .trim_end_matches('/')
            .to_string();
        if !(gemini_api_base.starts_with("https://") || gemini_api_base.starts_with("http://")) {
            return Err(InvalidSetting("GEMINI_API_BASE"));
        }

        let public_image_base = get("PUBLIC_IMAGE_BASE").map(|b| b.trim_end_matches('/').to_string());

        Ok(Config {
            jwt_secret: get("JWT_SECRET"),
            google_api_key: get("GOOGLE_API_KEY"),
            gemini_api_base,
            gemini_model,
            gemini_models,
            model_caps,
            bcrypt_cost: number(&get, "BCRYPT_COST", 10, 4..=14)?,
            daily_image_quota: number(&get, "DAILY_IMAGE_QUOTA", 100, 1..=10_000_000)?,
            // 0 switches the per-key limiter off (no bucket read or written at all).
            rate_limit_per_minute: number(&get, "RATE_LIMIT_PER_MINUTE", 60, 0..=1_000_000)?,
            image_url_ttl_seconds: number(&get, "IMAGE_URL_TTL_SECONDS", 3600, 1..=31_536_000)?,
            public_image_base,
            gemini_deadline_ms: number(&get, "GEMINI_DEADLINE_MS", 90_000, 100..=600_000)?,
            login_max_failures: number(&get, "LOGIN_MAX_FAILURES", 5, 1..=1000)?,
            login_window_seconds: number(&get, "LOGIN_WINDOW_SECONDS", 900, 1..=86_400)?,
            register_max_per_ip: number(&get, "REGISTER_MAX_PER_IP", 20, 1..=1_000_000)?,
            register_window_seconds: number(&get, "REGISTER_WINDOW_SECONDS", 3600, 1..=86_400)?,
            login_max_failures_per_ip: number(&get, "LOGIN_MAX_FAILURES_PER_IP", 50, 1..=1_000_000)?,
            max_key_daily_image_quota: number(&get, "MAX_KEY_DAILY_IMAGE_QUOTA", 1000, 1..=10_000_000)?,
            account_daily_image_quota: number(&get, "ACCOUNT_DAILY_IMAGE_QUOTA", 200, 0..=10_000_000)?,
            deployment_daily_live_images: number(&get, "DEPLOYMENT_DAILY_LIVE_IMAGES", 1000, 0..=100_000_000)?,
            max_active_keys_per_account: number(&get, "MAX_ACTIVE_KEYS_PER_ACCOUNT", 20, 1..=10_000)?,
            account_daily_budget: money(&get, "ACCOUNT_DAILY_BUDGET_USD")?,
            deployment_daily_budget: money(&get, "DEPLOYMENT_DAILY_BUDGET_USD")?,
            max_key_daily_budget: money(&get, "MAX_KEY_DAILY_BUDGET_USD")?,
            registration: match get("REGISTRATION").as_deref() {
                None | Some("open") => Registration::Open,
                Some("closed") => Registration::Closed,
                Some(_) => return Err(InvalidSetting("REGISTRATION")),
            },
            test_image_retention_days: number(&get, "TEST_IMAGE_RETENTION_DAYS", 7, 1..=3650)?,
            log_sql: get("LOG_SQL").as_deref() == Some("true"),
            webhook_allow_http_localhost: get("WEBHOOK_ALLOW_HTTP_LOCALHOST").as_deref() == Some("true"),
            webhook_retry_delays: match get("WEBHOOK_RETRY_DELAYS_SECONDS") {
                None => DEFAULT_WEBHOOK_RETRY_DELAYS.to_vec(),
                Some(list) => {
                    let delays: Option<Vec<u32>> = list
                        .split(',')
                        .map(|d| d.trim().parse::<u32>().ok().filter(|d| (1..=43_200).contains(d)))
                        .collect();
                    delays
                        .filter(|d| !d.is_empty() && d.len() <= 20)
                        .ok_or(InvalidSetting("WEBHOOK_RETRY_DELAYS_SECONDS"))?
                }
            },
            queue_delay_seconds: number(&get, "QUEUE_DELAY_SECONDS", 0, 0..=43_200)?,
            queue_duplicate_delivery: drill(&get, "QUEUE_DUPLICATE_DELIVERY")?,
            queue_fail_generation_jobs: drill(&get, "QUEUE_FAIL_GENERATION_JOBS")?,
            webhook_secret_key: get("WEBHOOK_SECRET_KEY"),
        })
    }

    /// The HS256 key for account tokens (and, derived, image URLs).
    pub fn jwt_secret(&self) -> Result<&str, ApiError> {
        match self.jwt_secret.as_deref() {
            Some(secret) if secret.len() >= MIN_SECRET_LEN => Ok(secret),
            _ => Err(ApiError::server_misconfigured("JWT_SECRET")
                .caused_by("JWT_SECRET is missing or shorter than 32 characters")),
        }
    }

    /// What webhook signing secrets derive from: WEBHOOK_SECRET_KEY, else JWT_SECRET.
    pub fn webhook_secret_key(&self) -> Result<&str, ApiError> {
        match self.webhook_secret_key.as_deref() {
            Some(key) if key.len() >= MIN_SECRET_LEN => Ok(key),
            Some(_) => Err(ApiError::server_misconfigured("WEBHOOK_SECRET_KEY")
                .caused_by("WEBHOOK_SECRET_KEY is shorter than 32 characters")),
            None => self.jwt_secret(),
        }
    }

    pub fn google_api_key(&self) -> Option<&str> {
        self.google_api_key.as_deref()
    }

    /// What `model` can do and costs, if this deployment offers it.
    pub fn caps(&self, model: &str) -> Option<&crate::models::Capabilities> {
        self.model_caps.iter().find(|(id, _)| id == model).map(|(_, caps)| caps)
    }

    /// [`Config::caps`], else its family's defaults: for a generation recorded under a
    /// model this deployment has since stopped offering, which still has to be priced.
    pub fn caps_or_defaults(&self, model: &str) -> std::borrow::Cow<'_, crate::models::Capabilities> {
        match self.caps(model) {
            Some(caps) => std::borrow::Cow::Borrowed(caps),
            None => std::borrow::Cow::Owned(crate::models::defaults(model)),
        }
    }
}

fn number<T>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, InvalidSetting>
where
    T: Into<u64> + TryFrom<u64> + Copy,
{
    let (low, high) = ((*range.start()).into(), (*range.end()).into());
    let value = whole(get(name), default.into(), low..=high).ok_or(InvalidSetting(name))?;
    T::try_from(value).map_err(|_| InvalidSetting(name))
}

/// A whole-number setting's value (unset: `default`), if it is in `range`. Apart from
/// [`number`] and never inlined: one copy of the parsing for every setting.
#[inline(never)]
fn whole(raw: Option<String>, default: u64, range: std::ops::RangeInclusive<u64>) -> Option<u64> {
    match raw {
        None => Some(default),
        Some(raw) => raw.parse::<u64>().ok().filter(|value| range.contains(value)),
    }
}

/// The most a money setting may say: a billion dollars a day.
pub const MAX_DAILY_BUDGET: Micros = Micros(1_000_000_000 * 1_000_000);

/// A daily budget in US dollars (`"25"`, `"0.50"`; at most six decimals); unset: none.
fn money(get: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<Option<Micros>, InvalidSetting> {
    match get(name) {
        None => Ok(None),
        Some(raw) => Micros::parse(&raw).filter(|m| *m <= MAX_DAILY_BUDGET).map(Some).ok_or(InvalidSetting(name)),
    }
}

/// A fault drill (`true` turns it on). Drills break things on purpose for the tests, so
/// each is refused as a misconfiguration unless `ALLOW_TEST_DRILLS = "true"` says this
/// deployment is a test one.
fn drill(get: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<bool, InvalidSetting> {
    match get(name).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") if get("ALLOW_TEST_DRILLS").as_deref() == Some("true") => Ok(true),
        Some(_) => Err(InvalidSetting(name)),
    }
}

/// Model names go into a URL path: keep them to the characters Google's names use.
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, InvalidSetting> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = config(&[]).unwrap();
        assert_eq!(c.gemini_api_base, DEFAULT_GEMINI_API_BASE);
        assert_eq!(c.gemini_model, "gemini-3.1-flash-image");
        assert_eq!(c.gemini_models, vec!["gemini-3.1-flash-image".to_string()]);
        assert_eq!(c.bcrypt_cost, 10);
        assert_eq!(c.daily_image_quota, 100);
        assert_eq!(c.rate_limit_per_minute, 60);
        assert_eq!(c.image_url_ttl_seconds, 3600);
        assert_eq!(c.public_image_base, None);
        assert!(c.google_api_key().is_none());
    }

    #[test]
    fn missing_or_short_jwt_secret_is_misconfiguration() {
        let err = config(&[]).unwrap().jwt_secret().unwrap_err();
        assert_eq!((err.status(), err.code.as_str()), (500, "server_misconfigured"));
        assert!(config(&[("JWT_SECRET", "short")]).unwrap().jwt_secret().is_err());
        let long = "x".repeat(32);
        assert_eq!(config(&[("JWT_SECRET", &long)]).unwrap().jwt_secret().unwrap(), long);
    }

    #[test]
    fn bcrypt_cost_must_be_4_to_14() {
        assert_eq!(config(&[("BCRYPT_COST", "4")]).unwrap().bcrypt_cost, 4);
        assert_eq!(config(&[("BCRYPT_COST", "15")]).unwrap_err(), InvalidSetting("BCRYPT_COST"));
        assert_eq!(config(&[("BCRYPT_COST", "ten")]).unwrap_err(), InvalidSetting("BCRYPT_COST"));
    }

    #[test]
    fn model_allowlist_always_includes_the_default() {
        let c = config(&[("GEMINI_MODEL", "gemini-3-pro-image"), ("GEMINI_MODELS", "a-1, b-2,")]).unwrap();
        assert_eq!(c.gemini_models, vec!["gemini-3-pro-image", "a-1", "b-2"]);
        assert!(config(&[("GEMINI_MODELS", "ok,../evil")]).is_err());
    }

    #[test]
    fn model_capabilities_come_with_the_allowed_models() {
        let c = config(&[("GEMINI_MODELS", "gemini-3-pro-image")]).unwrap();
        let names: Vec<&str> = c.model_caps.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(names, vec!["gemini-3.1-flash-image", "gemini-3-pro-image"]);
        assert_eq!(
            config(&[("GEMINI_MODEL_CAPS", r#"{"not-offered": {}}"#)]).unwrap_err(),
            InvalidSetting("GEMINI_MODEL_CAPS")
        );
    }

    #[test]
    fn prices_and_money_ceilings_are_exact_decimals() {
        let c = config(&[
            ("GEMINI_MODELS", "gemini-3-pro-image"),
            ("GEMINI_PRICES", r#"{"gemini-3-pro-image": {"output_image_per_million_usd": "100.5"}}"#),
            ("ACCOUNT_DAILY_BUDGET_USD", "25"),
            ("MAX_KEY_DAILY_BUDGET_USD", "0.000001"),
        ])
        .unwrap();
        let pro = &c.caps("gemini-3-pro-image").unwrap().pricing;
        assert_eq!((pro.output_image, pro.input_text), (Micros(100_500_000), Micros(2_000_000)));
        assert_eq!(c.caps("gemini-3.1-flash-image").unwrap().pricing.output_image, Micros(60_000_000));
        assert_eq!(
            (c.account_daily_budget, c.deployment_daily_budget, c.max_key_daily_budget),
            (Some(Micros(25_000_000)), None, Some(Micros(1)))
        );
        for bad in [
            r#"{"gemini-3.1-flash-image": {"output_image_per_million_usd": 60}}"#,
            r#"{"gemini-3.1-flash-image": {"output_image_per_million_usd": "-1"}}"#,
            r#"{"gemini-3.1-flash-image": {"output_image_per_million_usd": "1000000.000001"}}"#,
            r#"{"gemini-3.1-flash-image": {"thinking_per_million_usd": "1"}}"#,
            r#"{"not-offered": {}}"#,
            "[]",
        ] {
            assert_eq!(config(&[("GEMINI_PRICES", bad)]).unwrap_err(), InvalidSetting("GEMINI_PRICES"), "{bad}");
        }
        for bad in ["-1", "1e3", "0.0000001", "ten", "1000000001"] {
            assert_eq!(
                config(&[("DEPLOYMENT_DAILY_BUDGET_USD", bad)]).unwrap_err(),
                InvalidSetting("DEPLOYMENT_DAILY_BUDGET_USD")
            );
        }
    }

    #[test]
    fn trailing_slashes_are_dropped_from_bases() {
        let c = config(&[("GEMINI_API_BASE", "http://127.0.0.1:9/"), ("PUBLIC_IMAGE_BASE", "https://img.example/")])
            .unwrap();
        assert_eq!(c.gemini_api_base, "http://127.0.0.1:9");
        assert_eq!(c.public_image_base.as_deref(), Some("https://img.example"));
    }

    #[test]
    fn drills_need_the_test_flag() {
        for drill in ["QUEUE_DUPLICATE_DELIVERY", "QUEUE_FAIL_GENERATION_JOBS"] {
            assert_eq!(config(&[(drill, "true")]).unwrap_err(), InvalidSetting(drill), "{drill} alone is refused");
            assert_eq!(config(&[(drill, "yes"), ("ALLOW_TEST_DRILLS", "true")]).unwrap_err(), InvalidSetting(drill));
            assert!(config(&[(drill, "false")]).is_ok());
        }
        let c = config(&[("QUEUE_DUPLICATE_DELIVERY", "true"), ("ALLOW_TEST_DRILLS", "true")]).unwrap();
        assert!(c.queue_duplicate_delivery && !c.queue_fail_generation_jobs);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c =
            config(&[("JWT_SECRET", "super-secret-value-0123456789abcdef"), ("GOOGLE_API_KEY", "AIzaSECRET")]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("super-secret") && !shown.contains("AIzaSECRET"), "{shown}");
    }
}
