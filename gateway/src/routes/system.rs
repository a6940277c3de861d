//! Health, readiness, the OpenAPI document and its docs page.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, description = "alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyReport {
    /// Kafka, Redis and the change notices are OK, and the views sink has reported.
    pub ready: bool,
    /// Ready, but the views lag behind (`views.stale`) or the sink has stopped reporting
    /// (`views.ok` false): reads are served and marked stale.
    pub degraded: bool,
    /// Kafka answers a metadata request for the command topics.
    pub kafka: Check,
    /// Redis answers PING.
    pub redis: Check,
    /// The views sink is alive (a recent heartbeat); its lag is reported, not judged.
    pub views: ViewsCheck,
    /// The change-notice subscription is connected.
    pub notices: Check,
}

/// The views sink as the gateway last saw it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViewsCheck {
    /// The sink has reported and its last heartbeat is at most `views_max_staleness_ms` old
    /// (always true with `PICKPLE_VIEWS_IGNORE_READINESS`).
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Records the views are behind (the largest partition's lag), when the sink reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// The lag is over `views_max_lag`, or the sink has stopped reporting: reads are served
    /// with `Pickple-Views-Stale: true`.
    pub stale: bool,
    /// Sink partitions that reported.
    pub partitions: usize,
    /// Why the views are stale or not live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn check(r: Result<(), String>) -> Check {
    match r {
        Ok(()) => Check {
            ok: true,
            error: None,
        },
        Err(e) => Check {
            ok: false,
            error: Some(e),
        },
    }
}

/// Readiness: Kafka metadata, Redis PING, a views sink that has reported, and the change
/// notices. A lagging sink, or one that stopped reporting (restarting, waiting for a broker),
/// does not fail it: the gateway serves stale views (degraded), and the body says why. 503 with
/// the failing checks.
#[utoipa::path(get, path = "/ready", tag = "system",
    responses(
        (status = 200, description = "ready; `degraded` (and `views.stale`) when the views lag over the maximum or the sink has stopped reporting (then `views.ok` is false)", body = ReadyReport),
        (status = 503, description = "not ready: Kafka, Redis or the notices fail, or the views sink has never reported", body = ReadyReport)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let (kafka, redis) = tokio::join!(
        state.kafka.check(pickple_schemas::topic::ORDER_COMMANDS),
        state.views.ping()
    );
    let r = state.views.refresh_readiness().await;
    let views_ok = r.live || state.views.ignores_readiness();
    let views = ViewsCheck {
        ok: views_ok,
        error: (!views_ok).then(|| r.reason.clone().unwrap_or_else(|| "not live".into())),
        lag: r.max_lag,
        stale: r.stale(),
        partitions: r.partitions,
        reason: r.reason.clone(),
    };
    let notices = if state.notifier.is_connected() {
        Ok(())
    } else {
        Err("not subscribed to change notices".to_string())
    };
    let servable = views.ok || r.servable();
    let ready = kafka.is_ok() && redis.is_ok() && servable && notices.is_ok();
    let report = ReadyReport {
        ready,
        degraded: ready && views.stale,
        kafka: check(kafka),
        redis: check(redis),
        views,
        notices: check(notices),
    };
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// The OpenAPI 3.1 document of this API.
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
        .into_response()
}

/// A small self-contained page listing the routes of `/openapi.json` (no CDN).
pub async fn docs() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pickple API</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
.op{border:1px solid #ddd;border-radius:6px;margin:.5rem 0;padding:.5rem .8rem}
.m{display:inline-block;width:4.5rem;font-weight:bold;text-transform:uppercase}
.get{color:#1565c0}.post{color:#2e7d32}.put{color:#ef6c00}.patch{color:#6a1b9a}.delete{color:#c62828}
code{background:#f4f4f4;padding:0 .3rem}details pre{background:#f8f8f8;padding:.5rem;overflow:auto}
</style></head><body>
<h1>Pickple API</h1>
<p>The machine-readable document is <a href="/openapi.json"><code>/openapi.json</code></a>.
Writes answer <code>202 Accepted</code> with the entity id and a <code>Location</code>;
reads accept <code>?wait=&lt;seconds&gt;</code> (long-poll), with <code>&amp;status=</code>
or <code>&amp;after_version=</code>; a wait answers <code>200</code> with the view either way,
with <code>Pickple-Wait: met</code> once the condition holds or <code>Pickple-Wait: timeout</code>
(the current view) when the wait ends first, never a 5xx (a view that does not exist then is a
<code>404</code>). Reads answer with <code>Pickple-Views-Lag</code> (records the views are
behind) and, when that is over the maximum, <code>Pickple-Views-Stale: true</code>; a refused
command shows in the view's <code>rejection</code>.
Errors: <code>{"error":{"code","message","fields"?}}</code>.</p>
<div id="ops">loading…</div>
<script>
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
  const out=document.getElementById('ops'); out.textContent='';
  for(const [path,item] of Object.entries(doc.paths)){
    for(const [method,op] of Object.entries(item)){
      const d=document.createElement('details'); d.className='op';
      const s=document.createElement('summary');
      s.innerHTML='<span class="m '+method+'">'+method+'</span><code></code> ';
      s.querySelector('code').textContent=path;
      s.append(op.summary||op.description||'');
      const pre=document.createElement('pre'); pre.textContent=JSON.stringify(op,null,2);
      d.append(s,pre); out.append(d);
    }
  }
}).catch(e=>{document.getElementById('ops').textContent='cannot load /openapi.json: '+e});
</script></body></html>"#;
