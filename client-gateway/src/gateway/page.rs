//! `GET /`: the browser page, one self-contained HTML file compiled into the binary
//! (inline CSS and JavaScript, no CDN: it works offline and behind any proxy).

use axum::http::header;
use axum::response::IntoResponse;

/// The page's source, `src/gateway/page.html`.
pub const INDEX_HTML: &str = include_str!("page.html");

#[tracing::instrument(name = "http_page", level = "debug", skip_all)]
pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
}
