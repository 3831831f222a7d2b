//! `GET /openapi.json`: the OpenAPI document of every route, kept beside the router
//! and checked against it by a test.

use super::with_cache;
use axum::http::header;
use axum::response::{IntoResponse, Response};

const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> Response {
    with_cache(
        ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response(),
        "max-age=3600",
    )
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;

    /// Every route the router declares is in the document, and nothing else.
    #[test]
    fn the_document_covers_every_route() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        let documented: std::collections::BTreeSet<String> =
            doc["paths"].as_object().unwrap().keys().cloned().collect();
        let router = include_str!("mod.rs");
        let mut routed = std::collections::BTreeSet::new();
        let mut rest = router;
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + 7..];
            let start = rest.find('"').unwrap() + 1;
            let end = start + rest[start..].find('"').unwrap();
            routed.insert(rest[start..end].to_owned());
        }
        assert!(routed.len() > 25, "{routed:?}");
        assert_eq!(documented, routed);
    }
}
