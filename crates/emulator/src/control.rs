//! The control API under `/_emulator/`: seed, reset, clock, faults, request log, state, tokens
//! and storage grants. It needs no token and is not throttled or faulted; the emulator only
//! listens on loopback. Every route is documented in `docs/emulator.md`.

use std::sync::Arc;

use axum::http::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{FaultConfig, Seed};
use crate::model::StateDump;
use crate::server::{Answer, Req};
use crate::state::{App, EmulatorState};

fn bad_request(message: String) -> Answer {
    Answer::arm_error(&crate::model::ArmError::new(
        400,
        "InvalidControlRequest",
        message,
    ))
}

fn parse<T: for<'de> Deserialize<'de>>(req: &Req) -> Result<T, Answer> {
    let body: &[u8] = if req.body.is_empty() {
        b"{}"
    } else {
        &req.body
    };
    serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("invalid JSON body for {}: {e}", req.path)))
}

fn ok(v: Value) -> Answer {
    crate::server::json_answer(200, v)
}

pub(crate) async fn handle(app: &Arc<App>, req: &Req) -> Answer {
    let state = EmulatorState { app: app.clone() };
    let rest = req.path.trim_start_matches("/_emulator").trim_matches('/');
    let segs: Vec<&str> = rest.split('/').collect();
    dispatch(app, &state, req, &segs)
        .await
        .unwrap_or_else(|a| a)
}

async fn dispatch(
    app: &Arc<App>,
    state: &EmulatorState,
    req: &Req,
    segs: &[&str],
) -> Result<Answer, Answer> {
    Ok(match (req.method.clone(), segs) {
        (Method::GET, ["health"]) => {
            ok(json!({"status": "ok", "now": crate::model::ts(state.now())}))
        }
        (Method::POST, ["seed"]) => {
            let seed: Seed = parse(req)?;
            state.seed(&seed).map_err(|e| bad_request(e.to_string()))?;
            ok(json!({"services": seed.services.len()}))
        }
        (Method::POST, ["reset"]) => {
            state.reset().map_err(|e| bad_request(e.to_string()))?;
            ok(json!({"reset": true}))
        }
        (Method::GET, ["clock"]) => {
            let offset = app.inner.lock().offset.num_milliseconds();
            ok(json!({"now": crate::model::ts(state.now()), "offset_ms": offset}))
        }
        (Method::POST, ["clock", "advance"]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Advance {
                seconds: f64,
            }
            let a: Advance = parse(req)?;
            if !a.seconds.is_finite() || a.seconds < 0.0 {
                return Err(bad_request(
                    "`seconds` must be a non-negative number (the clock never goes back)".into(),
                ));
            }
            state.advance_clock(std::time::Duration::from_secs_f64(a.seconds));
            crate::ops::settle(app).await;
            ok(json!({"now": crate::model::ts(state.now())}))
        }
        (Method::GET, ["faults"]) => {
            ok(serde_json::to_value(state.faults()).expect("faults serialize"))
        }
        (Method::PUT, ["faults"]) => {
            let f: FaultConfig = parse(req)?;
            state
                .set_faults(f.clone())
                .map_err(|e| bad_request(e.to_string()))?;
            ok(serde_json::to_value(f).expect("faults serialize"))
        }
        (Method::GET, ["requests"]) => ok(json!({"requests": state.request_log()})),
        (Method::DELETE, ["requests"]) => {
            state.clear_request_log();
            ok(json!({"cleared": true}))
        }
        (Method::GET, ["state"]) => {
            ok(serde_json::to_value(state.dump_state()).expect("state serializes"))
        }
        (Method::PUT, ["state"]) => {
            let dump: StateDump = parse(req)?;
            state
                .load_state(dump)
                .map_err(|e| bad_request(e.to_string()))?;
            ok(json!({"loaded": true}))
        }
        (Method::POST, ["tokens"]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Mint {
                #[serde(default = "hour")]
                lifetime_secs: u64,
            }
            fn hour() -> u64 {
                3600
            }
            let mint: Mint = parse(req)?;
            let t = state.mint_token(std::time::Duration::from_secs(mint.lifetime_secs));
            ok(
                json!({"access_token": t.token.expose(), "token_type": "Bearer", "expires_on": t.expires_on.timestamp()}),
            )
        }
        (Method::POST, ["storage", account, "grants"]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Grant {
                principal: String,
            }
            let g: Grant = parse(req)?;
            state
                .grant(account, &g.principal)
                .map_err(|e| bad_request(e.to_string()))?;
            ok(json!({"account": account, "principal": g.principal}))
        }
        _ => {
            return Err(crate::server::json_answer(
                404,
                json!({"error": {"code": "UnknownControlRoute", "message": format!("no control route {} {}", req.method, req.path)}}),
            ));
        }
    })
}
