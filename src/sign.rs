//! `hookgate sign`: the headers of a correctly signed delivery for a route, and a
//! ready `curl` line, so a setup can be tested the way a provider's CLI would.
//!
//! Signing is the route's own [`crate::verify::Verifier::sign`]; this module only
//! picks the body and URL and formats the output.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{Config, PathPattern, RouteSettings};
use crate::verify;

/// The sample body signed when `--body` is not given.
pub const SAMPLE_BODY: &str =
    r#"{"event_type":"hookgate.test","data":{"message":"signed by hookgate sign"}}"#;

/// What `hookgate sign` prints.
pub struct Signed {
    pub headers: Vec<(String, String)>,
    pub url: String,
    pub curl: String,
}

/// What to sign beyond the route: all optional.
#[derive(Debug, Default, Clone, Copy)]
pub struct SignOptions<'a> {
    /// The body file; [`SAMPLE_BODY`] when absent.
    pub body: Option<&'a Path>,
    /// The URL the curl line targets; the first listener + the route's path when absent.
    pub url: Option<&'a str>,
    /// The event type, for schemes whose provider sends it in a header.
    pub event: Option<&'a str>,
}

/// Signs the body (or the sample) for `route_name` as of `now`.
pub fn sign(
    config: &Config,
    route_name: &str,
    options: &SignOptions<'_>,
    now: SystemTime,
) -> Result<Signed, String> {
    let (body_file, url) = (options.body, options.url);
    let route = config.route(route_name).ok_or_else(|| {
        let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        format!(
            "no route named {route_name:?}; routes: {}",
            names.join(", ")
        )
    })?;
    // An Asana handshake route verifies with the secret its handshake handed over; its
    // configured verifier holds a random stand-in, whose signatures would never verify.
    let handed_over = asana_verifier(config, route_name, route)?;
    let verifier = handed_over.as_deref().unwrap_or(&route.verifier);
    let body = match body_file {
        Some(path) => {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
        }
        None => SAMPLE_BODY.as_bytes().to_vec(),
    };
    let url = url.map_or_else(|| default_url(config, route), str::to_string);
    let path_and_query = path_of(&url);
    // Sign the request as it will be sent: URL-bound schemes (Twilio) look at the Content-Type.
    let mut content_type = content_type(&body);
    let mut body_file = body_file;
    let mut body = body;
    // Schemes that carry the signature in the body (Mailgun) rewrite it; the curl line then
    // sends the signed body inline instead of the file.
    if let Some(signed_body) = verifier.sign_body(&body, now) {
        let (signed, signed_type) = signed_body?;
        body = signed;
        content_type = signed_type;
        body_file = None;
    }
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    let request = verify::Request {
        method: "POST",
        path_and_query: &path_and_query,
        headers: &headers,
        body: &body,
    };
    let mut signed = verifier.sign(&request, now)?;
    if !signed
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        signed.push(("Content-Type".to_string(), content_type.to_string()));
    }
    if let Some(event) = options.event {
        signed.push(event_header(verifier, event)?);
    }
    let curl = curl_line(&url, &signed, body_file, &body);
    Ok(Signed {
        headers: signed,
        url,
        curl,
    })
}

/// The verifier of an Asana handshake route: built from the kept `X-Hook-Secret` (the file;
/// the `[storage]` store is held open by the running gateway), `None` for other routes.
fn asana_verifier(
    config: &Config,
    route_name: &str,
    route: &RouteSettings,
) -> Result<Option<std::sync::Arc<verify::Verifier>>, String> {
    let Some(keeper) = route.handshake.as_ref().and_then(|h| h.asana()) else {
        return Ok(None);
    };
    if config.storage.is_some() {
        return Err(format!(
            "route {route_name:?} is signed with the secret Asana handed over, which is kept in the [storage] store the running gateway holds open; sign with it yourself (hex HMAC-SHA256 of the body in X-Hook-Signature)"
        ));
    }
    keeper.verifier(None).map(Some).ok_or_else(|| {
        format!(
            "route {route_name:?} is signed with the secret Asana hands over in its X-Hook-Secret handshake, and none is kept in {} yet: create the webhook in Asana first",
            keeper.path().display()
        )
    })
}

/// The header a provider carries its event type in (none of them is covered by the signature):
/// the provider row's event header when the route names one, else the scheme's provider's.
fn event_header(verifier: &verify::Verifier, event: &str) -> Result<(String, String), String> {
    if let Some(row) = verifier.provider_row() {
        return match row.event_header() {
            Some(name) => Ok((name.to_string(), event.to_string())),
            None => Err(format!(
                "provider {:?} carries the event type in the body ({}); put it in the file given to --body",
                row.name, row.event
            )),
        };
    }
    let name = match verifier.scheme() {
        "github" => "X-GitHub-Event",
        "gitlab" => "X-Gitlab-Event",
        "shopify" => "X-Shopify-Topic",
        "linear" => "Linear-Event",
        "twitch" => "Twitch-Eventsub-Subscription-Type",
        other => {
            return Err(format!(
                "scheme {other:?} carries the event type in the body; put it in the file given to --body"
            ))
        }
    };
    Ok((name.to_string(), event.to_string()))
}

fn default_url(config: &Config, route: &RouteSettings) -> String {
    let listener = config
        .server
        .listen
        .first()
        .copied()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
    let host = if listener.ip().is_unspecified() {
        format!("127.0.0.1:{}", listener.port())
    } else {
        listener.to_string()
    };
    let path = match &route.path {
        PathPattern::Exact(path) => path.clone(),
        PathPattern::Prefix(prefix) if prefix.is_empty() => "/".to_string(),
        PathPattern::Prefix(prefix) => prefix.clone(),
    };
    format!("http://{host}{path}")
}

/// The origin-form target of an absolute URL (`/path?query`).
fn path_of(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    match after_scheme.find('/') {
        Some(index) => after_scheme[index..].to_string(),
        None => "/".to_string(),
    }
}

fn content_type(body: &[u8]) -> &'static str {
    if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

fn curl_line(
    url: &str,
    headers: &[(String, String)],
    body_file: Option<&Path>,
    body: &[u8],
) -> String {
    let mut line = format!("curl -i -X POST {}", shell_quote(url));
    for (name, value) in headers {
        line.push_str(&format!(" -H {}", shell_quote(&format!("{name}: {value}"))));
    }
    match body_file {
        Some(path) => line.push_str(&format!(
            " --data-binary @{}",
            shell_quote(&PathBuf::from(path).display().to_string())
        )),
        None => line.push_str(&format!(
            " --data-binary {}",
            shell_quote(&String::from_utf8_lossy(body))
        )),
    }
    line
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_paths() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(path_of("http://127.0.0.1:8080/hooks/a?x=1"), "/hooks/a?x=1");
        assert_eq!(path_of("https://example.com"), "/");
    }
}
