//! One-line JSON logs. Callers pass what happened and a detail that holds no secret:
//! never a key, token, password or request body.

pub fn error(event: &str, detail: &str) {
    emit("error", event, detail);
}

pub fn info(event: &str, detail: &str) {
    emit("info", event, detail);
}

fn emit(level: &str, event: &str, detail: &str) {
    let line = serde_json::json!({"level": level, "event": event, "detail": detail}).to_string();
    #[cfg(target_arch = "wasm32")]
    {
        if level == "error" {
            worker::console_error!("{line}");
        } else {
            worker::console_log!("{line}");
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{line}");
}
