//! The active configuration as JSON for `GET /config`: every setting that
//! shapes traffic, and no secret. Verification shows only its scheme, because
//! the compiled verifier keeps nothing else that is safe to show.

use serde_json::{json, Value};

use super::{Config, PathPattern};

impl Config {
    /// The configuration as JSON, secrets left out.
    pub fn to_redacted_json(&self) -> Value {
        let server = &self.server;
        let (limits, fanout) = (&server.limits, &server.fanout);
        let millis = |d: std::time::Duration| d.as_millis() as u64;
        let upstreams: serde_json::Map<String, Value> = self
            .upstreams
            .iter()
            .map(|(name, u)| {
                let value = json!({
                    "targets": u.targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "connect_timeout_ms": millis(u.connect_timeout),
                    "timeout_ms": millis(u.timeout),
                    "response_timeout_ms": millis(u.response_timeout),
                    "idle_timeout_ms": millis(u.idle_timeout),
                    "health": { "path": u.health.http_path, "interval_ms": millis(u.health.interval) },
                    "tls_sni": u.tls_sni,
                });
                (name.clone(), value)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "host": r.host,
                    "path": match &r.path {
                        PathPattern::Exact(path) => path.clone(),
                        PathPattern::Prefix(prefix) => format!("{prefix}/*"),
                    },
                    "methods": r.methods.as_ref().map(|ms| ms.iter().map(|m| m.to_string()).collect::<Vec<_>>()),
                    "upstream": r.upstreams,
                    "events": !r.events.labels().collect::<Vec<_>>().is_empty(),
                    "dedupe": r.dedupe.is_some(),
                    "max_body": r.max_body,
                    "max_decoded_body": r.max_decoded_body,
                    "allow": r.allow.to_string(),
                    "rate_limit": r.rate_limit.as_ref().map(|l| json!({
                        "rate": l.rate.to_string(),
                        "burst": l.burst,
                        "per": l.by.to_string(),
                        "max_keys": l.max_keys,
                    })),
                    "verify": { "scheme": r.verifier.scheme() },
                    "handshake": r.handshake.as_ref().map(|h| h.kind().as_str()),
                    "delivery": match r.delivery {
                        super::Delivery::Direct => json!("direct"),
                        super::Delivery::Queued(retry) => json!({
                            "mode": "queued",
                            "attempts": retry.attempts,
                            "backoff_ms": millis(retry.backoff),
                            "max_backoff_ms": millis(retry.max_backoff),
                            "max_age_ms": millis(retry.max_age),
                        }),
                    },
                })
            })
            .collect();
        json!({
            "source": self.source.display().to_string(),
            "sha256": self.source_hash,
            "server": {
                "listen": server.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "tls": server.tls.as_ref().map(|t| json!({
                    "listen": t.listen.to_string(),
                    "cert": t.cert.display().to_string(),
                })),
                "admin": server.admin.to_string(),
                "max_body": server.max_body,
                "max_decoded_body": server.max_decoded_body,
                "trusted_proxies": server.trusted_proxies.to_string(),
                "allow": server.allow.to_string(),
                "max_inflight": server.max_inflight,
                "shutdown_grace_ms": millis(server.shutdown_grace),
                "threads": server.threads,
                "client_timeout_ms": millis(server.client_timeout),
                "watch": server.watch,
                "upstream_keepalive_pool": server.upstream_keepalive_pool,
                "client_header": server.client_header.as_ref().map(|h| h.as_str()),
                "max_connections": limits.max_connections,
                // null: keep-alive off (`"0s"`).
                "keepalive_timeout_ms": limits.keepalive_timeout.map(millis),
                "max_requests_per_connection": limits.max_requests_per_connection,
                "header_timeout_ms": millis(limits.header_timeout),
                "body_timeout_ms": millis(limits.body_timeout),
                "send_timeout_ms": millis(limits.send_timeout),
                "max_header_count": limits.max_header_count,
                "max_head_size": limits.max_head_size,
                "fanout": {
                    "queue": fanout.queue,
                    "max_bytes": fanout.max_bytes,
                    "concurrency": fanout.concurrency,
                    "attempts": fanout.attempts,
                    "backoff_ms": millis(fanout.backoff),
                    "max_backoff_ms": millis(fanout.max_backoff),
                    "attempt_timeout_ms": millis(fanout.attempt_timeout),
                    "stored": fanout.stored,
                },
                "log_format": format!("{:?}", server.log_format).to_lowercase(),
                "admin_token": server.admin_token.is_some(),
                "admin_hosts": server.admin_hosts,
                "allow_no_routes": server.allow_no_routes,
            },
            "upstreams": upstreams,
            "routes": routes,
            "storage": self.storage.as_ref().map(|s| {
                let mut storage = json!({
                    "max_bytes": s.max_bytes,
                    "retention_ms": millis(s.retention),
                    "concurrency": s.concurrency,
                });
                match &s.backend {
                    super::storage::Backend::Redb { path } => {
                        storage["backend"] = "redb".into();
                        storage["path"] = path.display().to_string().into();
                    }
                    super::storage::Backend::Redis { lease } => {
                        storage["backend"] = "redis".into();
                        storage["lease_ms"] = millis(*lease).into();
                    }
                }
                storage
            }),
            // The URL with its password replaced by `[redacted]`.
            "cluster": self.cluster.as_ref().map(|c| json!({
                "redis": c.redis.redacted(),
                "key_prefix": c.key_prefix,
                "on_unavailable": c.on_unavailable.as_str(),
                "connect_timeout_ms": millis(c.connect_timeout),
                "command_timeout_ms": millis(c.command_timeout),
                "claim_lease_ms": c.claim_lease.map(millis),
            })),
        })
    }
}
