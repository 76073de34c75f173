//! A Server-Sent Events fan-out server written the way the axum docs and examples do it:
//! one `tokio::sync::broadcast` channel per topic, `axum::response::sse::Sse` with `KeepAlive`,
//! receivers that lag behind the channel's capacity skip what they missed.
//!
//! `GET /events?topic=T` streams `id: N\ndata: ...\n\n`; `POST /publish?topic=T` with a text body
//! answers `202 {"id":N}` (ids from one AtomicU64, increasing across topics).
//!
//! Usage: `axum-sse-peer [ADDR] [CAPACITY]` (default `127.0.0.1:18082`, 1024).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

/// One published event, shared by every receiver of the topic.
#[derive(Clone, Debug)]
struct Msg {
    id: u64,
    data: Arc<str>,
}

struct AppState {
    topics: Mutex<HashMap<String, broadcast::Sender<Msg>>>,
    next_id: AtomicU64,
    capacity: usize,
}

impl AppState {
    fn sender(&self, topics: &mut HashMap<String, broadcast::Sender<Msg>>, topic: &str) -> broadcast::Sender<Msg> {
        topics.entry(topic.to_owned()).or_insert_with(|| broadcast::channel(self.capacity).0).clone()
    }
}

#[derive(Deserialize)]
struct TopicQuery {
    topic: String,
}

async fn events(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TopicQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = {
        let mut topics = state.topics.lock().unwrap();
        state.sender(&mut topics, &q.topic).subscribe()
    };
    // A comment first, so the client knows the stream is open before the first event.
    let hello = stream::once(async { Ok(Event::default().comment("ok")) });
    let live = BroadcastStream::new(rx).filter_map(|msg| async move {
        match msg {
            Ok(m) => Some(Ok(Event::default().id(m.id.to_string()).data(&*m.data))),
            // Lagged: this receiver fell more than `capacity` events behind; skip ahead.
            Err(_) => None,
        }
    });
    Sse::new(hello.chain(live)).keep_alive(KeepAlive::default())
}

async fn publish(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TopicQuery>,
    body: String,
) -> impl IntoResponse {
    let data: Arc<str> = body.into();
    let id = {
        // Id and send under the lock, so every receiver sees ids in increasing order.
        let mut topics = state.topics.lock().unwrap();
        let id = state.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = state.sender(&mut topics, &q.topic).send(Msg { id, data }); // no receivers: fine
        id
    };
    (StatusCode::ACCEPTED, Json(serde_json::json!({ "id": id })))
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18082".into());
    let capacity = args.next().and_then(|c| c.parse().ok()).unwrap_or(1024);
    let state = Arc::new(AppState { topics: Mutex::default(), next_id: AtomicU64::new(0), capacity });
    let app = Router::new()
        .route("/events", get(events))
        .route("/publish", post(publish))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("axum-sse-peer listening on {addr} (broadcast capacity {capacity})");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("serve");
}
