//! The request pipeline: request id, config, routing, and the one place where errors
//! become envelopes and are logged (once, with the request id and the cause). Handlers
//! stay thin and return `ApiResult<Response>`.

use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::http::{self, RequestContext};
use crate::log::RequestLine;
use crate::routes::{self, Route, RouteError};
use crate::{accounts, admin, catalog, generate, health, keys, openapi, storage, usage, webhooks};
use worker::{Context, Env, Request, Response};

/// [`handle`], run under `ctx.wait_until`, the response awaited from it. A client that
/// disconnects cancels its request's own work, but not work it waits until: once Gemini
/// has been called (and bills the call), the images are stored, recorded and charged, and
/// show in history, whether or not anyone is still there to receive them. Cloudflare
/// allows such work 30 seconds after the disconnect; a generation cut off after that is
/// ended by the cron (which keeps the images that were stored).
pub async fn handle_to_completion(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    use worker::wasm_bindgen::{JsCast, JsValue};
    use worker::wasm_bindgen_futures::{future_to_promise, JsFuture};
    // A second handle on the same execution context, for the work to carry.
    let context: &JsValue = ctx.as_ref().as_ref();
    let work_ctx = Context::new(context.clone().unchecked_into());
    let promise = future_to_promise(async move {
        let response = handle(req, env, work_ctx).await.map_err(JsValue::from)?;
        Ok(JsValue::from(worker::web_sys::Response::from(response)))
    });
    let finished = JsFuture::from(promise.clone());
    ctx.wait_until(async move {
        let _ = finished.await;
    });
    let response = JsFuture::from(promise).await.map_err(worker::Error::from)?;
    Ok(Response::from(response.unchecked_into::<worker::web_sys::Response>()))
}

pub async fn handle(mut req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let request_id =
        http::header(&req, "x-request-id").filter(|id| http::sane_request_id(id)).unwrap_or_else(http::new_request_id);
    let method = req.method().to_string();
    let path = req.path();

    let mut d1_queries = 0;
    let result = match Config::for_env(&env) {
        Ok(config) => {
            let rc = RequestContext {
                env,
                ctx,
                config,
                request_id: request_id.clone(),
                now_ms: crate::time::now_millis(),
                d1_queries: Default::default(),
            };
            let result = dispatch(&mut req, &rc, &method, &path).await;
            d1_queries = rc.d1_queries.get();
            result
        }
        Err(invalid) => Err(ApiError::from(invalid)),
    };

    // The one log line of this request; a 5xx carries its code and cause.
    let (mut response, failure) = match result {
        Ok(response) => (response, None),
        Err(err) => (http::error_response(&err, &request_id)?, Some(err).filter(|err| err.status() >= 500)),
    };
    response.headers_mut().set("x-request-id", &request_id)?;
    crate::log::request(&RequestLine {
        request_id: &request_id,
        method: &method,
        path: &path,
        status: response.status_code(),
        d1_queries,
        wasm_memory_bytes: crate::log::wasm_memory_bytes(),
        code: failure.as_ref().map(|err| err.code.as_str()),
        cause: failure.as_ref().and_then(|err| err.cause.as_deref()),
    });
    Ok(response)
}

async fn dispatch(req: &mut Request, rc: &RequestContext, method: &str, path: &str) -> ApiResult<Response> {
    let route = match routes::resolve(method, path) {
        Ok(route) => route,
        Err(RouteError::NotFound) => return Err(ApiError::route_not_found(method, path)),
        Err(RouteError::MethodNotAllowed(allowed)) => return Err(ApiError::method_not_allowed(method, allowed)),
    };
    match route {
        Route::Health => health::health(rc).await,
        Route::Register => accounts::register(req, rc).await,
        Route::Login => accounts::login(req, rc).await,
        Route::Me => accounts::me(req, rc).await,
        Route::CreateKey => keys::create(req, rc).await,
        Route::ListKeys => keys::list(req, rc).await,
        Route::RevokeKey(id) => keys::revoke(req, rc, &id).await,
        Route::Generate => generate::routes::generate(req, rc).await,
        Route::ImagesGenerations => generate::routes::openai_images(req, rc).await,
        Route::ImagesEdits => generate::routes::openai_edits(req, rc).await,
        Route::GetImage(id) => storage::serve(req, rc, &id).await,
        Route::ListGenerations => generate::routes::list(req, rc).await,
        Route::GetGeneration(id) => generate::routes::get(req, rc, &id).await,
        Route::CancelGeneration(id) => generate::routes::cancel(req, rc, &id).await,
        Route::GetWebhookSecret => webhooks::get(req, rc).await,
        Route::RotateWebhookSecret => webhooks::rotate(req, rc).await,
        Route::Usage => usage::get(req, rc).await,
        Route::OpenApi => openapi::serve(rc).await,
        Route::Models => catalog::list(&rc.config),
        Route::Estimate => generate::routes::estimate(req, rc).await,
        Route::Logout => accounts::logout(req, rc).await,
        Route::ChangePassword => accounts::change_password(req, rc).await,
        Route::Admin(route) => admin::handle(req, rc, route).await,
    }
}
