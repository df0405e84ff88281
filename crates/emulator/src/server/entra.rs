//! Microsoft Entra ID: the client-credentials token endpoints (v2.0 and v1) and the IMDS-like
//! managed identity endpoint. Tokens are opaque and live in the emulator's state.

use super::*;

pub(super) const ARM_RESOURCE: &str = "https://management.azure.com/";

pub(super) fn audience_of(resource: &str) -> Audience {
    let r = resource.trim_end_matches("/.default").trim_end_matches('/');
    if r.eq_ignore_ascii_case("https://management.azure.com")
        || r.eq_ignore_ascii_case("https://management.core.windows.net")
    {
        Audience::Arm
    } else {
        Audience::Other(r.to_owned())
    }
}

pub(super) fn token(app: &App, route: &Route, req: &Req) -> Answer {
    if app.inner.lock().faults.token_endpoint_down {
        let mut a = Answer::json(
            503,
            json!({"error": "temporarily_unavailable",
            "error_description": "AADSTS90033: A transient error has occurred. Please try again.",
            "error_codes": [90033]}),
        );
        a.error_code = Some("temporarily_unavailable".into());
        return a.header("retry-after", "1".into());
    }
    let lifetime = app.config.token_lifetime_secs;
    match route {
        Route::ManagedIdentity => {
            if !app.config.managed_identity_endpoint {
                return Answer::empty(404);
            }
            if req.method != Method::GET {
                return Answer::oauth_error(
                    app.now(),
                    405,
                    "invalid_request",
                    50011,
                    "The managed identity endpoint accepts GET only.",
                );
            }
            let metadata = req.headers.get("metadata").and_then(|v| v.to_str().ok());
            if !metadata.is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                let mut a = Answer::json(
                    400,
                    json!({"error": "invalid_request", "error_description": "Required metadata header not specified"}),
                );
                a.error_code = Some("invalid_request".into());
                return a;
            }
            let Some(resource) = req.query.get("resource") else {
                let mut a = Answer::json(
                    400,
                    json!({"error": "invalid_request", "error_description": "Required query variable 'resource' is missing"}),
                );
                a.error_code = Some("invalid_request".into());
                return a;
            };
            if let Some(cid) = req.query.get("client_id")
                && !app
                    .config
                    .managed_identity_client_ids
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(cid))
            {
                let mut a = Answer::json(
                    400,
                    json!({"error": "invalid_request", "error_description": "Identity not found"}),
                );
                a.error_code = Some("invalid_request".into());
                return a;
            }
            let mut inner = app.inner.lock();
            let (tok, exp) = app.mint_token(
                &mut inner,
                audience_of(resource),
                chrono::Duration::seconds(lifetime as i64),
            );
            let now = app.now_with(&inner).timestamp();
            Answer::json(
                200,
                json!({
                    "access_token": tok.expose(),
                    "client_id": req.query.get("client_id").cloned().unwrap_or_else(|| "00000000-0000-0000-0000-0000000001d1".into()),
                    "expires_in": lifetime.to_string(),
                    "expires_on": exp.timestamp().to_string(),
                    "ext_expires_in": lifetime.to_string(),
                    "not_before": now.to_string(),
                    "resource": resource,
                    "token_type": "Bearer",
                }),
            )
        }
        Route::TokenV2 { tenant } | Route::TokenV1 { tenant } => {
            let v1 = matches!(route, Route::TokenV1 { .. });
            if req.method != Method::POST {
                return Answer::oauth_error(
                    app.now(),
                    405,
                    "invalid_request",
                    900561,
                    "The endpoint only accepts POST requests.",
                );
            }
            let form: BTreeMap<String, String> = url::form_urlencoded::parse(&req.body)
                .into_owned()
                .collect();
            match form.get("grant_type").map(String::as_str) {
                Some("client_credentials") => {}
                Some(other) => {
                    return Answer::oauth_error(
                        app.now(),
                        400,
                        "unsupported_grant_type",
                        70003,
                        &format!("The app requested an unsupported grant type '{other}'."),
                    );
                }
                None => {
                    return Answer::oauth_error(
                        app.now(),
                        400,
                        "invalid_request",
                        900144,
                        "The request body must contain the following parameter: 'grant_type'.",
                    );
                }
            }
            let Some(client_id) = form.get("client_id") else {
                return Answer::oauth_error(
                    app.now(),
                    400,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'client_id'.",
                );
            };
            let resource = if v1 {
                form.get("resource")
                    .cloned()
                    .unwrap_or_else(|| ARM_RESOURCE.into())
            } else {
                match form.get("scope") {
                    Some(s) if s.ends_with("/.default") => s.clone(),
                    Some(s) => {
                        return Answer::oauth_error(
                            app.now(),
                            400,
                            "invalid_scope",
                            1002012,
                            &format!(
                                "The provided value for scope {s} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                            ),
                        );
                    }
                    None => {
                        return Answer::oauth_error(
                            app.now(),
                            400,
                            "invalid_request",
                            900144,
                            "The request body must contain the following parameter: 'scope'.",
                        );
                    }
                }
            };
            let tenant_ok = tenant.eq_ignore_ascii_case(&app.config.tenant_id)
                || app
                    .config
                    .apps
                    .iter()
                    .any(|a| a.tenant.eq_ignore_ascii_case(tenant));
            if !tenant_ok {
                return Answer::oauth_error(
                    app.now(),
                    400,
                    "invalid_request",
                    90002,
                    &format!(
                        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                    ),
                );
            }
            let Some(app_reg) = app
                .config
                .apps
                .iter()
                .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
            else {
                return Answer::oauth_error(
                    app.now(),
                    400,
                    "unauthorized_client",
                    700016,
                    &format!(
                        "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
                    ),
                );
            };
            let secret_ok = form
                .get("client_secret")
                .is_some_and(|s| s == app_reg.client_secret.expose());
            if !secret_ok {
                return Answer::oauth_error(
                    app.now(),
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
                );
            }
            let mut inner = app.inner.lock();
            let (tok, exp) = app.mint_token(
                &mut inner,
                audience_of(&resource),
                chrono::Duration::seconds(lifetime as i64),
            );
            let now = app.now_with(&inner).timestamp();
            if v1 {
                Answer::json(
                    200,
                    json!({
                        "token_type": "Bearer",
                        "expires_in": lifetime.to_string(),
                        "ext_expires_in": lifetime.to_string(),
                        "expires_on": exp.timestamp().to_string(),
                        "not_before": now.to_string(),
                        "resource": resource,
                        "access_token": tok.expose(),
                    }),
                )
            } else {
                Answer::json(
                    200,
                    json!({
                        "token_type": "Bearer",
                        "expires_in": lifetime,
                        "ext_expires_in": lifetime,
                        "access_token": tok.expose(),
                    }),
                )
            }
        }
        _ => Answer::empty(404),
    }
}
