//! The router: the embedded page, the JSON API, and the error type every handler answers
//! with (`{"error": "..."}` and a 4xx status). Every route sits behind [`super::guard`]
//! (Host, Origin, token, request timeout), one layer for all of them.
//!
//! | route | what |
//! |---|---|
//! | `GET /` , `/app.js`, `/style.css` | the page (embedded) |
//! | `GET /api/info` | models, presets, tasks, methods, limits |
//! | `POST /api/context` | start a context-attribution job → `202 {"job": id}` |
//! | `POST /api/circuit` | start a circuit job → `202 {"job": id}` |
//! | `GET /api/jobs/{id}` | status, progress, result |
//! | `POST /api/jobs/{id}/cancel` | ask a job to stop |
//! | `GET /api/jobs/{id}/files/{name}` | `result.json` (context) or `graph.json` (circuit) |
//!
//! A job id is 32 hex digits of randomness ([`super::jobs::new_job_id`]); no route lists them.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::guard::{self, Guard};
use super::jobs::{Refusal, is_job_id};
use super::{AppState, circuit_job, context_job, presets};
use crate::options::{OutOfRange, overlay};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// A request the server refuses: a status and a message for the person who sent it.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status (4xx for the client's mistakes).
    pub status: StatusCode,
    /// What went wrong, in words.
    pub message: String,
    /// Extra fields of the JSON body (e.g. the busy job's id).
    pub extra: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, message: String) -> Self {
        Self {
            status,
            message,
            extra: None,
        }
    }

    /// 400: the request is malformed or names something unknown.
    pub fn bad_request(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 413: a body or a text over its limit.
    pub fn too_large(message: String) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 422: well-formed, but over a limit or not runnable (e.g. longer than the window).
    pub fn unprocessable(message: String) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 422 for one field out of range; the body's `field` names it.
    pub fn out_of_range(field: &str, message: String) -> Self {
        Self {
            extra: Some(json!({ "field": field })),
            ..Self::unprocessable(message)
        }
    }

    /// 401: no token, or a wrong one.
    pub fn unauthorized(message: String) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403: the request comes through a name or an origin that is not this server's.
    pub fn forbidden(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// The answer to an options struct's failed `validate`: 422 naming the field for an
    /// [`OutOfRange`], 422 with the message otherwise.
    pub fn invalid_options(error: &anyhow::Error) -> Self {
        match error.downcast_ref::<OutOfRange>() {
            Some(e) => Self::out_of_range(e.field, e.to_string()),
            None => Self::unprocessable(format!("invalid parameters: {error:#}")),
        }
    }
}

/// [`overlay`] with an error that names the field at fault: a JSON number that the field's
/// type cannot hold (a negative count, a count over 2^64) is out of range, `422` naming the
/// field; anything else (an unknown field, a wrong type, an unknown name) is a `400`.
pub fn overlay_request<T: Serialize + DeserializeOwned>(
    base: &T,
    patch: &Map<String, Value>,
) -> Result<T, ApiError> {
    overlay(base, patch).map_err(|all| {
        // Find the one field that fails on its own (the error of the whole has no path).
        for (key, value) in patch {
            let one = Map::from_iter([(key.clone(), value.clone())]);
            let Err(e) = overlay(base, &one) else {
                continue;
            };
            let text = format!("{e:#}");
            if value.is_number() && !text.contains("unknown field") {
                return ApiError::out_of_range(key, format!("{key} is {value}: {text}"));
            }
            let text = if text.contains(key.as_str()) {
                text
            } else {
                format!("{key}: {text}")
            };
            return ApiError::bad_request(format!("invalid parameters: {text}"));
        }
        ApiError::bad_request(format!("invalid parameters: {all:#}"))
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message});
        if let (Some(Value::Object(extra)), Value::Object(map)) = (self.extra, &mut body) {
            map.extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}

/// The JSON body, or an [`ApiError`] that says why it could not be read (malformed JSON,
/// wrong content type, body over the size limit).
fn body(payload: Result<Json<Value>, JsonRejection>, limit: usize) -> Result<Value, ApiError> {
    match payload {
        Ok(Json(value)) => Ok(value),
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("the request body is larger than the limit of {limit} bytes")
            } else {
                rejection.body_text()
            };
            Err(ApiError::new(status, message))
        }
    }
}

/// The router over `state`, every route behind `guard`.
pub fn router(state: AppState, guard: Guard) -> Router {
    let limit = state.limits.max_body_bytes;
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/api/info", get(info))
        .route("/api/context", post(start_context))
        .route("/api/circuit", post(start_circuit))
        .route("/api/jobs/{id}", get(job_status))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/jobs/{id}/files/{name}", get(job_file))
        .fallback(|| async { ApiError::not_found("no such page or API route".into()) })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::new(guard),
            guard::check,
        ))
        .with_state(state)
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// `GET /api/info`.
async fn info(State(state): State<AppState>) -> Json<Value> {
    let mut models: Vec<Value> = state
        .models
        .iter()
        .map(|m| {
            let c = m.model.config();
            let graph = crate::circuit::graph_for(&m.model);
            json!({
                "name": m.name,
                "kind": "decoder-only",
                "n_layers": c.n_layers,
                "n_heads": c.n_heads,
                "d_model": c.d_model,
                "n_ctx": c.n_ctx,
                "d_vocab": c.d_vocab,
                "edges": graph.n_edges(),
            })
        })
        .collect();
    // Encoder-decoders serve context attribution only (no circuit graph).
    models.extend(state.seq2seq.iter().map(|m| {
        let c = m.model.model.config();
        json!({
            "name": m.name,
            "kind": "encoder-decoder",
            "n_layers": c.n_decoder_layers,
            "n_encoder_layers": c.n_encoder_layers,
            "n_heads": c.n_heads,
            "d_model": c.d_model,
            "n_ctx": c.n_ctx,
            "d_vocab": c.d_vocab,
        })
    }));
    let served = state.model_names();
    let presets: Vec<_> = presets::all()
        .into_iter()
        .filter(|p| served.contains(&p.model))
        .collect();
    let tasks: Vec<&str> = fidelis_tasks::Task::ALL.iter().map(|t| t.name()).collect();
    let methods: &[&str] = <fidelis_attribution::EdgeMethod as strum::VariantNames>::VARIANTS;
    Json(json!({
        "models": models,
        "device": state.device,
        "presets": presets,
        "tasks": tasks,
        "circuit_methods": methods,
        "limits": state.limits,
        "running_jobs": state.jobs.running(),
    }))
}

fn refused(model: &str, refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Busy => ApiError {
            status: StatusCode::CONFLICT,
            message: format!(
                "busy: model {model:?} is running another job; wait for it to finish or cancel it"
            ),
            extra: Some(json!({"busy": true})),
        },
        Refusal::TooMany(n) => ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("busy: {n} jobs are running, the most this server allows"),
            extra: Some(json!({"busy": true})),
        },
        Refusal::Spawn(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot start a job thread: {e}"),
        ),
    }
}

fn accepted(id: String) -> Response {
    (StatusCode::ACCEPTED, Json(json!({"job": id}))).into_response()
}

/// `POST /api/context`.
async fn start_context(
    State(state): State<AppState>,
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let value = body(payload, state.limits.max_body_bytes)?;
    let req = context_job::ContextRequest::from_value(value)?;
    let prepared = context_job::prepare(&state, req)?;
    let model = prepared.model_name.clone();
    let id = state
        .jobs
        .start("context", &model, move |job| {
            context_job::run(job, prepared)
        })
        .map_err(|r| refused(&model, r))?;
    Ok(accepted(id))
}

/// `POST /api/circuit`.
async fn start_circuit(
    State(state): State<AppState>,
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let value = body(payload, state.limits.max_body_bytes)?;
    let serde_json::Value::Object(req) = value else {
        return Err(ApiError::bad_request(
            "invalid parameters: the body must be a JSON object".into(),
        ));
    };
    let prepared = circuit_job::prepare(&state, req)?;
    let model = prepared.model_name().to_string();
    let id = state
        .jobs
        .start("circuit", &model, move |job| {
            circuit_job::run(job, prepared)
        })
        .map_err(|r| refused(&model, r))?;
    Ok(accepted(id))
}

/// A job id of the right form (32 hex digits), or a 404 that does not echo it.
fn job_id(text: &str) -> Result<&str, ApiError> {
    if is_job_id(text) {
        Ok(text)
    } else {
        Err(ApiError::not_found("no such job".into()))
    }
}

/// `GET /api/jobs/{id}`.
async fn job_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let job = state.jobs.get(id).ok_or_else(|| {
        ApiError::not_found(format!(
            "no job {id} (finished jobs are kept a while, then forgotten)"
        ))
    })?;
    let status = serde_json::to_value(job.status())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(status))
}

/// `POST /api/jobs/{id}/cancel`.
async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    if !state.jobs.cancel(id) {
        return Err(ApiError::not_found(format!("no job {id}")));
    }
    Ok(Json(json!({"job": id, "cancelling": true})))
}

/// `GET /api/jobs/{id}/files/{name}`.
async fn job_file(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    let job = state
        .jobs
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    let text = job
        .file(&name)
        .ok_or_else(|| ApiError::not_found(format!("job {id} has no file {name:?} (yet)")))?;
    let disposition = format!("attachment; filename=\"{name}\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        text,
    )
        .into_response())
}
