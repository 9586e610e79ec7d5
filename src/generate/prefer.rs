//! The `Prefer` header (RFC 7240): `respond-async` and `wait=N` make a generation
//! asynchronous. Pure.

pub const MAX_WAIT_SECONDS: u32 = 60;

/// What a `Prefer` header asks for. Unknown preferences are ignored, as the RFC says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Preference {
    pub respond_async: bool,
    /// `wait=N`, at most [`MAX_WAIT_SECONDS`].
    pub wait_seconds: Option<u32>,
}

impl Preference {
    pub fn parse(header: Option<&str>) -> Preference {
        let mut preference = Preference::default();
        for token in header.unwrap_or_default().split([',', ';']) {
            let token = token.trim();
            let (name, value) = token.split_once('=').map_or((token, ""), |(n, v)| (n.trim(), v.trim()));
            match name.to_ascii_lowercase().as_str() {
                "respond-async" => preference.respond_async = true,
                "wait" => {
                    if let Ok(seconds) = value.trim_matches('"').parse::<u64>() {
                        preference.wait_seconds = Some(seconds.min(u64::from(MAX_WAIT_SECONDS)) as u32);
                    }
                }
                _ => {}
            }
        }
        preference
    }

    pub fn is_async(&self) -> bool {
        self.respond_async || self.wait_seconds.is_some()
    }

    /// `Preference-Applied`.
    pub fn applied(&self) -> String {
        match (self.respond_async, self.wait_seconds) {
            (true, Some(wait)) => format!("respond-async, wait={wait}"),
            (false, Some(wait)) => format!("wait={wait}"),
            _ => "respond-async".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_headers() {
        assert_eq!(Preference::parse(None), Preference::default());
        assert!(!Preference::parse(Some("return=minimal")).is_async());
        assert!(!Preference::parse(Some("")).is_async());
        let p = Preference::parse(Some("respond-async"));
        assert!(p.is_async() && p.respond_async && p.wait_seconds.is_none());
        assert_eq!(p.applied(), "respond-async");
        assert_eq!(
            Preference::parse(Some("respond-async, wait=10")),
            Preference { respond_async: true, wait_seconds: Some(10) }
        );
        assert_eq!(Preference::parse(Some("respond-async, wait=10")).applied(), "respond-async, wait=10");
        assert_eq!(Preference::parse(Some("wait=600")).wait_seconds, Some(60), "at most 60 seconds");
        assert_eq!(Preference::parse(Some("Wait = \"5\"; handling=lenient")).wait_seconds, Some(5));
        assert!(Preference::parse(Some("RESPOND-ASYNC")).respond_async, "names are case-insensitive");
        assert_eq!(Preference::parse(Some("wait=soon")).wait_seconds, None, "ignored, as the RFC says");
        assert_eq!(Preference::parse(Some("wait=-1")).wait_seconds, None);
        assert_eq!(Preference::parse(Some("wait=0")).wait_seconds, Some(0));
        assert!(Preference::parse(Some("wait=0")).is_async(), "wait=0 still asks for the asynchronous path");
        assert_eq!(Preference::parse(Some("wait=5")).applied(), "wait=5");
    }
}
