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
    pub ready: bool,
    /// Kafka answers a metadata request for the command topics.
    pub kafka: Check,
    /// Redis answers PING.
    pub redis: Check,
    /// The views sink is caught up (heartbeat fresh, lag small).
    pub views: Check,
    /// The change-notice subscription is connected.
    pub notices: Check,
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

/// Readiness: Kafka metadata, Redis PING, views caught up. 503 with the failing checks.
#[utoipa::path(get, path = "/ready", tag = "system",
    responses(
        (status = 200, description = "ready", body = ReadyReport),
        (status = 503, description = "not ready", body = ReadyReport)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let (kafka, redis) = tokio::join!(state.kafka.check("order-commands"), state.views.ping());
    let views = if state.config.views_ignore_readiness {
        Ok(())
    } else {
        let r = state.views.refresh_readiness().await;
        if r.caught_up {
            Ok(())
        } else {
            Err(r.reason.unwrap_or_else(|| "not caught up".into()))
        }
    };
    let notices = if state.notifier.is_connected() {
        Ok(())
    } else {
        Err("not subscribed to change notices".to_string())
    };
    let report = ReadyReport {
        ready: kafka.is_ok() && redis.is_ok() && views.is_ok() && notices.is_ok(),
        kafka: check(kafka),
        redis: check(redis),
        views: check(views),
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
reads accept <code>?wait=&lt;seconds&gt;</code> (long-poll) and <code>&amp;status=</code>.
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
