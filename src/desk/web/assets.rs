//! The console's only static files, compiled into the binary: no CDN, no build step.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("assets/desk.css");
const JS: &str = include_str!("assets/desk.js");

pub async fn serve(Path(name): Path<String>) -> Response {
    let (mime, body) = match name.as_str() {
        "desk.css" => ("text/css; charset=utf-8", CSS),
        "desk.js" => ("text/javascript; charset=utf-8", JS),
        _ => return (StatusCode::NOT_FOUND, "").into_response(),
    };
    ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
