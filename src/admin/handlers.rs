//! The admin API's routes. Each handler turns a request into calls to the
//! owning core (a domain's shard by `shard_of`) or to every core, and
//! merges the answers.

use super::api::{Count, ErrorBody, Filter, Status, Target, Trace};
use super::AdminState;
use crate::runtime::control::{Request, Response, CALL_TIMEOUT};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;

type St = State<Arc<AdminState>>;
type ApiResult<T> = Result<Json<T>, (StatusCode, Json<ErrorBody>)>;

fn fail(code: StatusCode, error: impl Into<String>) -> (StatusCode, Json<ErrorBody>) {
    (
        code,
        Json(ErrorBody {
            error: error.into(),
        }),
    )
}

/// Every route, behind the token check.
pub(super) fn router(state: Arc<AdminState>, metrics_open: bool) -> Router {
    let api = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/queues", get(queues))
        .route("/v1/destinations", get(destinations))
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .route("/v1/flush", post(flush))
        .route("/v1/bounce", post(bounce))
        .route("/v1/delete", post(delete))
        .route("/v1/trace/{id}", get(trace))
        .route("/v1/reload", post(reload));
    let metrics = Router::new().route("/metrics", get(metrics));
    let guard = middleware::from_fn_with_state(state.clone(), require_token);
    let app = if metrics_open {
        api.layer(guard).merge(metrics)
    } else {
        api.merge(metrics).layer(guard)
    };
    app.with_state(state)
}

async fn require_token(State(st): St, req: axum::extract::Request, next: Next) -> HttpResponse {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if !super::auth::authorized(given, &st.token) {
        let mut r = fail(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    next.run(req).await
}

/// Asks one core, or all when `shard` is `None`, with a deadline.
async fn ask(
    st: &AdminState,
    shard: Option<usize>,
    req: Request,
) -> Result<Vec<Response>, (StatusCode, Json<ErrorBody>)> {
    let call = async {
        match shard {
            Some(s) => vec![st.control.ask(s, req).await],
            None => st.control.ask_all(req).await,
        }
    };
    let answers = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| fail(StatusCode::GATEWAY_TIMEOUT, "a core did not answer in time"))?;
    for a in &answers {
        if let Response::Error(e) = a {
            return Err(fail(StatusCode::CONFLICT, e.clone()));
        }
    }
    Ok(answers)
}

fn owner(st: &AdminState, domain: Option<&str>) -> Option<usize> {
    domain.map(|d| crate::shard::hash::shard_of(d, st.control.cores()))
}

async fn status(State(st): St) -> ApiResult<Status> {
    let shards = ask(&st, None, Request::Status)
        .await?
        .into_iter()
        .filter_map(|r| match r {
            Response::Status(s) => Some(s),
            _ => None,
        })
        .collect();
    Ok(Json(Status {
        uptime_secs: st.started.elapsed().as_secs_f64(),
        cores: st.control.cores(),
        shards,
    }))
}

async fn queues(State(st): St) -> ApiResult<Vec<super::api::QueueInfo>> {
    let mut out = Vec::new();
    for r in ask(&st, None, Request::Queues).await? {
        if let Response::Queues(q) = r {
            out.extend(q);
        }
    }
    Ok(Json(out))
}

async fn destinations(
    State(st): St,
    Query(t): Query<Target>,
) -> ApiResult<Vec<super::api::DestInfo>> {
    let shard = owner(&st, t.domain.as_deref());
    let mut out = Vec::new();
    for r in ask(&st, shard, Request::Destinations(t)).await? {
        if let Response::Destinations(d) = r {
            out.extend(d);
        }
    }
    Ok(Json(out))
}

fn total(answers: Vec<Response>) -> Json<Count> {
    let count = answers
        .into_iter()
        .map(|r| match r {
            Response::Count(n) => n,
            _ => 0,
        })
        .sum();
    Json(Count { count })
}

fn check_target(t: &Target) -> Result<(), (StatusCode, Json<ErrorBody>)> {
    if t.domain.is_none() && t.queue.is_none() {
        return Err(fail(StatusCode::BAD_REQUEST, "give a domain or a queue"));
    }
    Ok(())
}

async fn set_paused(st: &AdminState, t: Target, paused: bool) -> ApiResult<Count> {
    check_target(&t)?;
    let shard = owner(st, t.domain.as_deref());
    Ok(total(ask(st, shard, Request::Pause(t, paused)).await?))
}

async fn pause(State(st): St, Json(t): Json<Target>) -> ApiResult<Count> {
    set_paused(&st, t, true).await
}

async fn resume(State(st): St, Json(t): Json<Target>) -> ApiResult<Count> {
    set_paused(&st, t, false).await
}

async fn flush(State(st): St, Json(t): Json<Target>) -> ApiResult<Count> {
    check_target(&t)?;
    let shard = owner(&st, t.domain.as_deref());
    Ok(total(ask(&st, shard, Request::Flush(t)).await?))
}

async fn remove(st: &AdminState, f: Filter, bounce: bool) -> ApiResult<Count> {
    if f.is_empty() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "give at least one of domain, sender, message_id",
        ));
    }
    f.id().map_err(|e| fail(StatusCode::BAD_REQUEST, e))?;
    let shard = owner(st, f.domain.as_deref());
    Ok(total(ask(st, shard, Request::Remove(f, bounce)).await?))
}

async fn bounce(State(st): St, Json(f): Json<Filter>) -> ApiResult<Count> {
    remove(&st, f, true).await
}

async fn delete(State(st): St, Json(f): Json<Filter>) -> ApiResult<Count> {
    remove(&st, f, false).await
}

async fn trace(State(st): St, Path(id): Path<String>) -> ApiResult<Trace> {
    let qid = crate::delivery::control::parse_queue_id(&id)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, e))?;
    let dir = st.shared.config.state_dir.clone();
    let cores = st.control.cores();
    let events = tokio::task::spawn_blocking(move || read_events(&dir, cores, qid))
        .await
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut queued = Vec::new();
    for r in ask(&st, None, Request::Trace(qid)).await? {
        if let Response::Trace(q) = r {
            queued.extend(q);
        }
    }
    Ok(Json(Trace {
        message_id: format!("{qid:016X}"),
        events,
        queued,
    }))
}

/// Delivery-log lines of one message from every shard's log (the rotated
/// `.1` first), ordered by time.
fn read_events(dir: &std::path::Path, cores: usize, id: u64) -> Vec<serde_json::Value> {
    let needle = format!("\"message_id\":\"{id:016X}\"");
    let mut out: Vec<serde_json::Value> = Vec::new();
    for shard in 0..cores {
        for suffix in [".jsonl.1", ".jsonl"] {
            let p = dir.join(format!("delivery-{shard}{suffix}"));
            // Streamed: a log may be a gigabyte (`log_max_bytes`).
            let Ok(f) = std::fs::File::open(&p) else {
                continue;
            };
            out.extend(
                std::io::BufRead::lines(std::io::BufReader::new(f))
                    .map_while(Result::ok)
                    .filter(|l| l.contains(&needle))
                    .filter_map(|l| serde_json::from_str(&l).ok()),
            );
        }
    }
    let time = |v: &serde_json::Value| v.get("time").and_then(|t| t.as_f64()).unwrap_or(0.0);
    out.sort_by(|a, b| time(a).total_cmp(&time(b)));
    out
}

async fn reload(State(st): St) -> ApiResult<Count> {
    let shared = st.shared.clone();
    let result = tokio::task::spawn_blocking(move || crate::runtime::reload(&shared))
        .await
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match result {
        Ok(note) => {
            tracing::info!(%note, "reloaded the configuration (admin API)");
            if note.is_empty() {
                eprintln!("sluice: reloaded");
            } else {
                eprintln!("sluice: reloaded; {note}");
            }
            Ok(Json(Count { count: 1 }))
        }
        Err(e) => Err(fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload refused; keeping the old configuration: {e}"),
        )),
    }
}

async fn metrics(State(st): St) -> HttpResponse {
    let answers = match ask(&st, None, Request::Metrics).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let shards: Vec<_> = answers
        .into_iter()
        .filter_map(|r| match r {
            Response::Metrics(m) => Some(*m),
            _ => None,
        })
        .collect();
    let body = super::metrics::render(st.started.elapsed().as_secs_f64(), &shards);
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], body).into_response()
}
