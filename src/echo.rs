//! The built-in echo upstream used by `hookgate demo`: it answers every request
//! with a JSON description of what it received (method, path, headers, body).
//!
//! For demonstration only; tests use their own recording upstreams.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

/// Bodies above this are summarised rather than echoed.
const MAX_ECHOED_BODY: usize = 64 * 1024;

pub struct Echo;

#[async_trait]
impl ServeHttp for Echo {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body = Vec::new();
        let mut truncated = false;
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) if body.len() < MAX_ECHOED_BODY => body.extend_from_slice(&chunk),
                Ok(Some(_)) => truncated = true,
                Ok(None) => break,
                Err(e) => {
                    return Response::builder()
                        .status(StatusCode::BAD_REQUEST)
                        .body(format!("echo: cannot read the body: {e}").into_bytes())
                        .expect("valid response");
                }
            }
        }
        let head = session.req_header();
        let headers: serde_json::Map<String, serde_json::Value> = head
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into(),
                )
            })
            .collect();
        let echoed = serde_json::json!({
            "echo": {
                "method": head.method.as_str(),
                "path": String::from_utf8_lossy(head.raw_path()),
                "headers": headers,
                "body_bytes": body.len(),
                "body_truncated": truncated,
                "body": String::from_utf8_lossy(&body),
            }
        });
        let out = serde_json::to_vec_pretty(&echoed).expect("JSON values serialise");
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, out.len())
            .body(out)
            .expect("valid response")
    }
}
