//! `GET /v1/models`: the models a request may name on this deployment, with what each can
//! do, in OpenAI's list shape. Public, like the OpenAPI document.

use crate::config::Config;
use crate::error::ApiResult;
use crate::http::{self, ListObject};
use crate::models::Capabilities;
use serde::Serialize;
use worker::Response;

/// `object: "model"`.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ModelObject {
    Model,
}

/// A model as `GET /v1/models` lists it: OpenAI's model object, with its capabilities.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct Model<'a> {
    id: &'a str,
    object: ModelObject,
    /// Unix seconds the model was published; 0: not known to this service.
    created: u64,
    owned_by: &'static str,
    /// True for `GEMINI_MODEL`, used when a request names none.
    default: bool,
    capabilities: &'a Capabilities,
}

/// `GET /v1/models`.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct ModelList<'a> {
    object: ListObject,
    data: Vec<Model<'a>>,
}

pub fn list(config: &Config) -> ApiResult<Response> {
    let data = config
        .model_caps
        .iter()
        .map(|(id, capabilities)| Model {
            id,
            object: ModelObject::Model,
            created: 0,
            owned_by: "google",
            default: *id == config.gemini_model,
            capabilities,
        })
        .collect();
    let mut response = http::json(200, &ModelList { object: ListObject::List, data })?;
    response.headers_mut().set("cache-control", "public, max-age=300")?;
    Ok(response)
}
