//! One-line JSON logs. Callers pass what happened and a detail that holds no secret:
//! never a key, token, password or request body.

pub fn error(event: &str, detail: &str) {
    emit("error", event, detail);
}

pub fn info(event: &str, detail: &str) {
    emit("info", event, detail);
}

/// One line per request: what was asked, how it ended, and how many D1 round trips it took.
pub fn request(request_id: &str, method: &str, path: &str, status: u16, d1_queries: u32) {
    let line = serde_json::json!({
        "level": "info", "event": "request", "request_id": request_id, "method": method,
        "path": path, "status": status, "d1_queries": d1_queries,
    });
    write("info", &line.to_string());
}

fn emit(level: &str, event: &str, detail: &str) {
    let line = serde_json::json!({"level": level, "event": event, "detail": detail}).to_string();
    write(level, &line);
}

#[cfg_attr(not(target_arch = "wasm32"), allow(unused_variables))]
fn write(level: &str, line: &str) {
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
