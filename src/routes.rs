//! The route table: which handler a method and path reach. Pure, so 404 and 405 are
//! decided (and tested) without a request object.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Register,
    Login,
    Me,
    CreateKey,
    ListKeys,
    RevokeKey(String),
    Generate,
    ImagesGenerations,
    ImagesEdits,
    GetImage(String),
    ListGenerations,
    GetGeneration(String),
    CancelGeneration(String),
    GetWebhookSecret,
    RotateWebhookSecret,
    Usage,
    OpenApi,
    Logout,
    ChangePassword,
    Models,
    Estimate,
    /// `/v1/admin/...`: resolved after the caller proves to be an admin, so that to anyone
    /// else even a wrong method there is the 404 of a route that does not exist.
    Admin(AdminRoute),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRoute {
    ListAccounts,
    CreateAccount,
    UpdateAccount(String),
    Usage,
    WrongMethod(&'static [&'static str]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    MethodNotAllowed(&'static [&'static str]),
}

const GET: &[&str] = &["GET", "HEAD"];
const POST: &[&str] = &["POST"];
const GET_POST: &[&str] = &["GET", "HEAD", "POST"];
const DELETE: &[&str] = &["DELETE"];

/// Resolves `method path` to a route. HEAD is served wherever GET is.
pub fn resolve(method: &str, path: &str) -> Result<Route, RouteError> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let (allowed, route): (&'static [&'static str], Option<Route>) = match segments.as_slice() {
        ["health"] => (GET, Some(Route::Health)),
        ["v1", "auth", "register"] => (POST, Some(Route::Register)),
        ["v1", "auth", "login"] => (POST, Some(Route::Login)),
        ["v1", "auth", "me"] => (GET, Some(Route::Me)),
        ["v1", "auth", "logout"] => (POST, Some(Route::Logout)),
        ["v1", "auth", "password"] => (POST, Some(Route::ChangePassword)),
        ["v1", "admin", rest @ ..] => return Ok(Route::Admin(admin(method, rest))),
        ["v1", "keys"] => {
            let route = match method {
                "POST" => Some(Route::CreateKey),
                "GET" | "HEAD" => Some(Route::ListKeys),
                _ => None,
            };
            (GET_POST, route)
        }
        ["v1", "keys", id] if valid_id_segment(id) => (DELETE, Some(Route::RevokeKey(id.to_string()))),
        ["v1", "generate"] => (POST, Some(Route::Generate)),
        ["v1", "images", "generations"] => (POST, Some(Route::ImagesGenerations)),
        ["v1", "images", "edits"] => (POST, Some(Route::ImagesEdits)),
        ["v1", "images", id] if valid_id_segment(id) => (GET, Some(Route::GetImage(id.to_string()))),
        ["v1", "generations"] => (GET, Some(Route::ListGenerations)),
        ["v1", "generations", id] if valid_id_segment(id) => (GET, Some(Route::GetGeneration(id.to_string()))),
        ["v1", "generations", id, "cancel"] if valid_id_segment(id) => {
            (POST, Some(Route::CancelGeneration(id.to_string())))
        }
        ["v1", "webhook_secret"] => {
            let route = match method {
                "POST" => Some(Route::RotateWebhookSecret),
                "GET" | "HEAD" => Some(Route::GetWebhookSecret),
                _ => None,
            };
            (GET_POST, route)
        }
        ["v1", "usage"] => (GET, Some(Route::Usage)),
        ["v1", "openapi.json"] => (GET, Some(Route::OpenApi)),
        ["v1", "models"] => (GET, Some(Route::Models)),
        ["v1", "estimate"] => (POST, Some(Route::Estimate)),
        _ => return Err(RouteError::NotFound),
    };
    match route {
        Some(route) if allowed.contains(&method) => Ok(route),
        _ => Err(RouteError::MethodNotAllowed(allowed)),
    }
}

fn admin(method: &str, rest: &[&str]) -> AdminRoute {
    let (allowed, route) = match rest {
        ["accounts"] => match method {
            "GET" | "HEAD" => (GET_POST, Some(AdminRoute::ListAccounts)),
            "POST" => (GET_POST, Some(AdminRoute::CreateAccount)),
            _ => (GET_POST, None),
        },
        ["accounts", id] if valid_id_segment(id) => (POST, Some(AdminRoute::UpdateAccount(id.to_string()))),
        ["usage"] => (GET, Some(AdminRoute::Usage)),
        // Unknown admin paths are answered by the admin handler too (a 404 either way).
        _ => (&[][..], None),
    };
    match route {
        Some(route) if allowed.contains(&method) => route,
        _ => AdminRoute::WrongMethod(allowed),
    }
}

/// Ids in paths are UUIDs or `gen_` + UUID; anything else cannot name a resource (nor
/// does it in a body: `previous_generation_id`).
pub fn valid_id_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 64
        && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether a request may call Gemini, which bills each call whether or not the client is
/// still there to receive the answer: such a request runs to completion (`app`).
pub fn bills_upstream(method: &str, path: &str) -> bool {
    matches!(resolve(method, path), Ok(Route::Generate | Route::ImagesGenerations | Route::ImagesEdits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_routes_resolve() {
        assert_eq!(resolve("GET", "/health"), Ok(Route::Health));
        assert_eq!(resolve("HEAD", "/health"), Ok(Route::Health));
        assert_eq!(resolve("POST", "/v1/auth/register"), Ok(Route::Register));
        assert_eq!(resolve("POST", "/v1/keys"), Ok(Route::CreateKey));
        assert_eq!(resolve("POST", "/v1/estimate"), Ok(Route::Estimate));
        assert_eq!(resolve("GET", "/v1/estimate"), Err(RouteError::MethodNotAllowed(POST)));
        assert_eq!(resolve("GET", "/v1/keys"), Ok(Route::ListKeys));
        assert_eq!(
            resolve("DELETE", "/v1/keys/0b5c2f1e-aaaa-4bbb-8ccc-123456789abc"),
            Ok(Route::RevokeKey("0b5c2f1e-aaaa-4bbb-8ccc-123456789abc".into()))
        );
        assert_eq!(resolve("GET", "/v1/generations/gen_x"), Ok(Route::GetGeneration("gen_x".into())));
        assert_eq!(resolve("POST", "/v1/images/generations"), Ok(Route::ImagesGenerations));
        assert_eq!(resolve("POST", "/v1/images/edits"), Ok(Route::ImagesEdits));
        assert!(bills_upstream("POST", "/v1/generate") && bills_upstream("POST", "/v1/images/edits"));
        assert!(!bills_upstream("GET", "/v1/generate") && !bills_upstream("POST", "/v1/keys"));
        assert_eq!(resolve("POST", "/v1/generations/gen_x/cancel"), Ok(Route::CancelGeneration("gen_x".into())));
        assert_eq!(resolve("GET", "/v1/generations/gen_x/cancel"), Err(RouteError::MethodNotAllowed(&["POST"])));
        assert_eq!(resolve("POST", "/v1/webhook_secret"), Ok(Route::RotateWebhookSecret));
        assert_eq!(resolve("GET", "/v1/webhook_secret"), Ok(Route::GetWebhookSecret));
        assert_eq!(resolve("GET", "/v1/images/edits"), Err(RouteError::MethodNotAllowed(&["POST"])));
        assert_eq!(resolve("GET", "/v1/images/gen_1"), Ok(Route::GetImage("gen_1".into())));
        assert_eq!(resolve("GET", "/v1/openapi.json"), Ok(Route::OpenApi));
    }

    #[test]
    fn wrong_method_on_known_route_is_405_with_allowed_methods() {
        assert_eq!(resolve("GET", "/v1/generate"), Err(RouteError::MethodNotAllowed(POST)));
        assert_eq!(resolve("DELETE", "/v1/keys"), Err(RouteError::MethodNotAllowed(GET_POST)));
        assert_eq!(resolve("POST", "/health"), Err(RouteError::MethodNotAllowed(GET)));
        assert_eq!(resolve("GET", "/v1/keys/abc"), Err(RouteError::MethodNotAllowed(DELETE)));
    }

    #[test]
    fn unknown_paths_are_404() {
        for path in ["/nope", "/v1", "/v1/keys/a/b", "/v1/keys/", "/health/", "/v1/images/a%2Fb", "//health"] {
            assert_eq!(resolve("GET", path), Err(RouteError::NotFound), "{path}");
        }
    }

    #[test]
    fn admin_paths_are_resolved_whatever_the_method() {
        assert_eq!(resolve("GET", "/v1/admin/accounts"), Ok(Route::Admin(AdminRoute::ListAccounts)));
        assert_eq!(resolve("POST", "/v1/admin/accounts"), Ok(Route::Admin(AdminRoute::CreateAccount)));
        assert_eq!(
            resolve("POST", "/v1/admin/accounts/abc"),
            Ok(Route::Admin(AdminRoute::UpdateAccount("abc".into())))
        );
        assert_eq!(resolve("DELETE", "/v1/admin/usage"), Ok(Route::Admin(AdminRoute::WrongMethod(GET))));
        assert_eq!(resolve("GET", "/v1/admin/nothing"), Ok(Route::Admin(AdminRoute::WrongMethod(&[]))));
    }

    #[test]
    fn images_generations_is_not_mistaken_for_an_image_id() {
        assert_eq!(resolve("GET", "/v1/images/generations"), Err(RouteError::MethodNotAllowed(POST)));
    }
}
