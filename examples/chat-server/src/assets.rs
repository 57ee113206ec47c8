//! Static files, compiled into the binary: the server needs no asset directory, no CDN, and
//! works offline.
//!
//! Pages link them as `/assets/<name>?v=<version>`, where the version is a hash of the
//! contents; so they can be cached for a year and a new build is still picked up at once.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;

use crate::api::ApiPath;

/// (name, content type, contents).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../assets/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../assets/icon.svg"),
    ),
];

/// A short hash of every asset (FNV-1a), for cache-busting URLs.
pub(crate) static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (_, _, body) in ASSETS {
        for b in body.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{:08x}", h as u32)
});

/// `GET /assets/{file}`.
pub(crate) async fn serve(ApiPath(file): ApiPath<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// `GET /favicon.ico`: browsers ask for it whatever the page says; the SVG icon serves.
pub(crate) async fn favicon() -> Response {
    serve(ApiPath("icon.svg".to_string())).await
}
