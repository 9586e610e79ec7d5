//! The few calls the Worker makes on platform objects itself, where worker's wrappers
//! convert far more than is used (R2 put and get, a queue send, a request body's reader):
//! a method by name, a property, a promise awaited. See docs/decisions/0006.

use worker::js_sys::{Function, Promise, Reflect};
use worker::wasm_bindgen::{JsCast, JsValue};

/// `target[name]`, as a function to call on `target`.
pub fn method(target: &JsValue, name: &str) -> Result<Function, JsValue> {
    Reflect::get(target, &name.into())?.dyn_into()
}

/// `target[name]` (undefined when absent).
pub fn property(target: &JsValue, name: &str) -> JsValue {
    Reflect::get(target, &name.into()).unwrap_or_default()
}

/// What a call that answers a promise resolves to.
pub async fn resolved(promise: JsValue) -> Result<JsValue, JsValue> {
    worker::wasm_bindgen_futures::JsFuture::from(promise.dyn_into::<Promise>()?).await
}
