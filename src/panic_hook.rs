//! Panics must still answer with the error envelope. With panic=abort a Rust panic traps
//! the wasm instance inside a microtask, so the request's promise never settles and the
//! runtime would eventually answer a bare 500 of its own. This hook tells the JS guard
//! (js/guard.mjs) that the instance died, and the guard answers every request that was in
//! flight on it with a 500 envelope.

use std::sync::Once;
use worker::js_sys::{Function, Reflect};
use worker::wasm_bindgen::{JsCast, JsValue};

static INSTALL: Once = Once::new();

/// Installs the hook once per instance, chained before the hook already in place.
pub fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            crate::log::error("panic", &info.to_string());
            notify_guard();
            previous(info);
        }));
    });
}

fn notify_guard() {
    let global = worker::js_sys::global();
    if let Ok(callback) = Reflect::get(&global, &JsValue::from_str("__nanobanana_on_panic")) {
        if let Some(callback) = callback.dyn_ref::<Function>() {
            let _ = callback.call0(&JsValue::UNDEFINED);
        }
    }
}
