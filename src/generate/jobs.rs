//! What a queue message carries (`GENERATIONS`), and sending one. A leaf: the engine
//! sends generation jobs, `notify` sends webhook retries, `queue` reads both.

use crate::error::{ApiError, ApiResult, Code};
use crate::http::RequestContext;
use serde::Serialize;

pub const QUEUE_BINDING: &str = "GENERATIONS";

/// What a queue message carries, as JSON text.
#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Run generation `generation_id`; `origin` makes its image URLs absolute.
    Generate { generation_id: String, origin: String },
    /// Deliver (again) the event `webhook_id` of a generation: the same body every time.
    Webhook { generation_id: String, user_id: String, url: String, webhook_id: String, body: String, attempt: u32 },
}

impl Job {
    /// A message's text back into a job; None for anything else. Read through
    /// `serde_json::Value` by hand: a derived Deserialize of an internally tagged enum
    /// links serde's buffering `Content` machinery (about 5 KB of wasm) for two shapes.
    pub fn parse(text: &str) -> Option<Job> {
        let serde_json::Value::Object(mut fields) = serde_json::from_str(text).ok()? else { return None };
        let mut text_field = |name: &str| match fields.remove(name) {
            Some(serde_json::Value::String(value)) => Some(value),
            _ => None,
        };
        match text_field("kind")?.as_str() {
            "generate" => {
                Some(Job::Generate { generation_id: text_field("generation_id")?, origin: text_field("origin")? })
            }
            "webhook" => Some(Job::Webhook {
                generation_id: text_field("generation_id")?,
                user_id: text_field("user_id")?,
                url: text_field("url")?,
                webhook_id: text_field("webhook_id")?,
                body: text_field("body")?,
                attempt: fields.get("attempt")?.as_u64()?.try_into().ok()?,
            }),
            _ => None,
        }
    }

    /// `generate` or `webhook`, for the log.
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Generate { .. } => "generate",
            Job::Webhook { .. } => "webhook",
        }
    }

    /// The generation it is about, for the log.
    pub fn generation_id(&self) -> &str {
        match self {
            Job::Generate { generation_id, .. } | Job::Webhook { generation_id, .. } => generation_id,
        }
    }
}

/// Sends a job to the queue, to be taken after `delay_seconds`.
pub async fn send(rc: &RequestContext, job: &Job, delay_seconds: u32) -> ApiResult<()> {
    let unavailable = |cause: String| {
        ApiError::new(Code::QueueUnavailable, "the generation queue is unavailable; try again later").caused_by(cause)
    };
    let queue = rc.env.queue(QUEUE_BINDING).map_err(|err| unavailable(format!("queue binding: {err}")))?;
    let text = serde_json::to_string(job).map_err(|err| unavailable(err.to_string()))?;
    // `queue.send(body, {contentType, delaySeconds})`, called on the binding itself:
    // worker's `send_raw` builds the options through serde_wasm_bindgen, whose serializer
    // was otherwise dead weight in the wasm.
    use worker::js_sys::{Object, Reflect};
    use worker::wasm_bindgen::JsValue;
    let binding: &JsValue = queue.as_ref();
    let sent = async {
        let options = Object::new();
        Reflect::set(&options, &"contentType".into(), &"text".into())?;
        if delay_seconds > 0 {
            Reflect::set(&options, &"delaySeconds".into(), &JsValue::from(delay_seconds))?;
        }
        let send = crate::js::method(binding, "send")?;
        crate::js::resolved(send.call2(binding, &JsValue::from_str(&text), &options)?).await
    };
    sent.await.map(|_| ()).map_err(|err| unavailable(format!("queue send: {}", worker::Error::from(err))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_travel_as_tagged_json() {
        let job = Job::Generate { generation_id: "gen_1".into(), origin: "https://x".into() };
        let text = serde_json::to_string(&job).unwrap();
        assert_eq!(text, r#"{"kind":"generate","generation_id":"gen_1","origin":"https://x"}"#);
        assert_eq!(Job::parse(&text).unwrap(), job);
        assert_eq!((job.kind(), job.generation_id()), ("generate", "gen_1"));
        let webhook = Job::Webhook {
            generation_id: "gen_1".into(),
            user_id: "u".into(),
            url: "https://hook".into(),
            webhook_id: "msg_1".into(),
            body: "{\"a\":1}".into(),
            attempt: 3,
        };
        assert_eq!(Job::parse(&serde_json::to_string(&webhook).unwrap()).unwrap(), webhook);
        assert_eq!(webhook.kind(), "webhook");
        for bad in [
            "",
            "[]",
            r#"{"kind":"other","generation_id":"g","origin":"o"}"#,
            r#"{"kind":"generate","generation_id":"g"}"#,
            r#"{"kind":"generate","generation_id":1,"origin":"o"}"#,
            r#"{"kind":"webhook","generation_id":"g","user_id":"u","url":"x","webhook_id":"w","body":"b","attempt":-1}"#,
        ] {
            assert_eq!(Job::parse(bad), None, "{bad}");
        }
    }
}
