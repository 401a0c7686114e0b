//! The gateway's Pingora `HttpServerApp`: the request path, in order.
//!
//! ```text
//! 0. take an in-flight slot                          -> 503 overloaded ([server] max_inflight)
//! 1. one reading of the request: framing, then the canonical target and the
//!    authority                                      -> 400 bad_request (+ reason; framing: closed)
//!    match the route by host + path (+ method)      -> 404 no_route / 405 method_not_allowed
//!    (a 405 only to a client one route of that host and path allows: 403 else)
//! 2. client address: the peer, or X-Forwarded-For through trusted proxies only
//! 3. the route's IP allowlist                       -> 403 ip_not_allowed
//! 4. the route's rate limit                         -> 429 rate_limited + Retry-After
//!    (with [cluster]: shared in Redis; Redis down   -> 503 cluster_unavailable, or local)
//! 5. read the body, bounded by the route's max_body -> 413 body_too_large (Content-Length first)
//!    an unsigned setup handshake (route `handshake`) -> answered (Meta, Dropbox, X, Graph,
//!                                                      Asana) | 400 | 403 | 409
//!    undo its Content-Encoding when the route reads -> 415 unsupported_content_encoding
//!    the body (module `encoding`)                       / 400 bad_request / 413 body_too_large
//! 6. verify the signature or token of the route     -> 401 signature_missing | signature_invalid
//!                                                      | timestamp_out_of_range
//!    a signed setup handshake in the verified body   -> answered (Slack, Zoom, Twitch, Discord)
//! 7. duplicate delivery id (route `dedupe`)         -> 200 duplicate / 409 duplicate_in_flight
//!    (with [cluster]: shared in Redis; Redis down   -> 503 cluster_unavailable, or local)
//! 8. event type -> the route's upstream(s)          -> 422 event_unmatched / 400 bad_request
//! 9. forward the verified bytes to a healthy target -> 503 upstream_unavailable / 502 / 504
//!    of the primary upstream; relay its answer to the sender; after a 2xx,
//!    remember the delivery id and queue copies for the fan-out upstreams
//! 10. metrics + one access-log line (logging phase)
//! ```
//! Steps 0–4 cost no body read: a refused request closes its connection. A
//! decoded body lives from step 5 to step 8 (which wait only for a `[cluster]`
//! dedupe check) and is dropped before step 9.
//! The phases only delegate: matching is `routing`, client address and
//! allowlists `allowlist`, limits `ratelimit`, verification `verify`,
//! target choice `upstream`, body reading `body`, the exchange `forward`,
//! answers `reply`. Only a [`Verified`] body can be forwarded (typestate).
//!
//! The gateway is a Pingora [`HttpServerApp`], not a `pingora-proxy` `ProxyHttp`:
//! it reads the body, verifies and forwards in one pass and always answers
//! itself (DESIGN.md §2), so the proxy framework's phases, modules and its large
//! per-request futures were pure cost (docs/performance.md). HTTP/1 requests
//! are read and answered by hookgate's own session (`request`), in
//! `keepalive`'s connection loop; `downstream::Downstream` gives the request
//! path one type over it and Pingora's session, which still serves HTTP/2
//! (with its connection loop). Pingora also provides the listeners, TLS and
//! new upstream connections (`connections` keeps the idle ones). A request
//! head that cannot be read gets the same JSON 400 as any other bad request
//! (431 over `max_head_size` or `max_header_count`, 408 past `header_timeout`);
//! its access-log line names the method and path when the request line had
//! arrived whole and valid, and leaves them empty otherwise.

mod agreement;
mod body;
mod client;
mod connections;
mod copies;
mod downstream;
mod forward;
mod framing;
mod handshake;
mod headers;
mod keepalive;
mod queued;
mod reply;
mod request;
mod response;
mod within;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use crate::admission::{Counted, InflightLimit, InflightSlot};
use crate::allowlist;
use crate::cluster::{ClusterClient, Operation};
use crate::config::cluster::OnUnavailable;
use crate::dedupe::{Admission, Claim, IN_FLIGHT_RETRY_AFTER_SECS};
use crate::encoding;
use crate::events::Target;
use crate::fanout::{Fanout, Payload};
use crate::metrics::{ClientLimit, Metrics, Outcome, RouteHandles, UNMATCHED_ROUTE};
use crate::routing::RouteMatch;
use crate::state::{Route, SharedState, Snapshot};
use crate::target::{self, Authority};
use crate::verify::{self, Verified};
use body::BodyError;
pub use client::ConnectionLimit;
pub use connections::UpstreamConnections;
pub use copies::{CopyMetrics, CopySender};
use downstream::{Downstream, Downstream as Session, HeadRead};
use forward::ForwardError;
use headers::UpstreamHead;
pub use reply::{Refusal, Reply};

/// The gateway service: shared state, metrics and the upstream connections.
pub struct Gateway {
    state: SharedState,
    metrics: Arc<Metrics>,
    connections: Arc<UpstreamConnections>,
    inflight_limit: InflightLimit,
    fanout: Arc<Fanout>,
    /// Metric series of requests that matched no route.
    unmatched: RouteHandles,
    /// The store and background delivery of queued routes, when `[storage]` is set.
    queue: Option<Arc<crate::delivery::Queue>>,
    /// Where Asana handshake secrets are kept, when `[storage]` is set (else in files).
    handshake_secrets: Option<Arc<dyn crate::handshake::SecretStore>>,
    /// The shared Redis of `[cluster]`: rate limits and dedupe across instances.
    cluster: Option<Arc<ClusterClient>>,
}

impl Gateway {
    /// `inflight_limit` is shared with the reloader, which adjusts its maximum;
    /// `fanout` delivers the background copies; `connections` keeps upstream
    /// connections alive between requests (housekeeping prunes it).
    pub fn new(
        state: SharedState,
        metrics: Arc<Metrics>,
        inflight_limit: InflightLimit,
        fanout: Arc<Fanout>,
        connections: Arc<UpstreamConnections>,
    ) -> Self {
        Gateway {
            state,
            metrics,
            connections,
            inflight_limit,
            fanout,
            unmatched: RouteHandles::new(UNMATCHED_ROUTE, []),
            queue: None,
            handshake_secrets: None,
            cluster: None,
        }
    }

    /// Stores and answers 202 on `delivery = "queued"` routes through `queue`.
    pub fn with_queue(mut self, queue: Option<Arc<crate::delivery::Queue>>) -> Self {
        self.queue = queue;
        self
    }

    /// Keeps Asana handshake secrets in `secrets` (the durable store) instead of files.
    pub fn with_handshake_secrets(
        mut self,
        secrets: Option<Arc<dyn crate::handshake::SecretStore>>,
    ) -> Self {
        self.handshake_secrets = secrets;
        self
    }

    /// Keeps rate limits and dedupe in `cluster`'s Redis, shared by every instance.
    pub fn with_cluster(mut self, cluster: Option<Arc<ClusterClient>>) -> Self {
        self.cluster = cluster;
        self
    }
}

/// Per-request state, carried from `request_filter` to `logging`.
pub struct RequestContext {
    started: Instant,
    snapshot: Option<Arc<Snapshot>>,
    route: Option<usize>,
    request_id: String,
    /// The TCP peer.
    peer: Option<IpAddr>,
    /// The client by the X-Forwarded-For rule (the peer unless it is a trusted proxy).
    client: Option<IpAddr>,
    /// Whether the peer is one of `[server] trusted_proxies`.
    trusted_peer: bool,
    /// The origin-form target to forward, when it differs from the received one
    /// (`target`: a canonicalized path or an absolute-form target).
    forward_target: Option<String>,
    /// Where the origin-form part of the received target starts (after an
    /// absolute-form authority): what URL-signing senders signed.
    origin_at: usize,
    /// The authority routing decided on (`target::read_authority`).
    authority: Option<Authority>,
    /// Framing is in doubt: answer with `Connection: close` and drop the connection.
    close: bool,
    outcome: Option<Outcome>,
    status: Option<u16>,
    body_bytes: usize,
    upstream: Option<String>,
    target: Option<SocketAddr>,
    upstream_status: Option<u16>,
    upstream_time: Option<Duration>,
    detail: Option<String>,
    /// Why a 400 was answered, shown to the sender (never secret).
    reason: Option<String>,
    /// The event as extracted, for `X-Hookgate-Event` and the access log.
    event: Option<String>,
    /// Counts the request in `hookgate_inflight_requests` while it lives.
    _counted: Counted,
    /// Its admission under `[server] max_inflight`, released on drop.
    admission: Option<InflightSlot>,
    /// A GET let through to a route without GET only because it may be the route's
    /// handshake: anything else is 405.
    handshake_only: bool,
}

impl RequestContext {
    fn route_name(&self) -> Option<&str> {
        let snapshot = self.snapshot.as_ref()?;
        self.route.map(|index| snapshot.routes[index].name())
    }
}

#[async_trait]
impl HttpServerApp for Gateway {
    /// One HTTP/2 request (HTTP/1 connections are served by `keepalive`'s
    /// loop on hookgate's own session): read the head, answer it, log it.
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let mut downstream = Downstream::Pingora(session);
        if !self.serve_request(&mut downstream, shutdown).await {
            return None;
        }
        let Downstream::Pingora(session) = downstream else {
            return None;
        };
        let persistent = HttpPersistentSettings::for_session(&session);
        session
            .finish()
            .await
            .ok()
            .flatten()
            .map(|stream| ReusedHttpStream::from_reusable_stream(stream, persistent))
    }
}

impl Gateway {
    /// One request on a new or reused connection: read the head, answer it,
    /// log it. `true` when the connection may carry another request (the
    /// caller still checks the session's own verdict).
    pub(crate) async fn serve_request(
        &self,
        session: &mut Session,
        shutdown: &ShutdownWatch,
    ) -> bool {
        let limits = self.state.load().config.server.limits;
        let deadline = client::head_deadline(&limits);
        let mut stopping = shutdown.clone();
        let read = tokio::select! {
            // biased: a request already buffered is served rather than dropped
            biased;
            // Pingora's coarse timer, made only when the head is not in yet.
            read = within::within(|| deadline, session.read_request(client::head_limits(&limits))) => read,
            // shutting down: an idle keep-alive connection is closed
            _ = stopping.wait_for(|stop| *stop) => return false,
        };
        match read {
            Some(Ok(HeadRead::Read)) => {}
            Some(Ok(HeadRead::Closed)) => return false,
            Some(Err(e)) => {
                let limit = match *e.etype() {
                    request::HEAD_TOO_LARGE => Some(ClientLimit::MaxHeadSize),
                    request::TOO_MANY_HEADERS => Some(ClientLimit::MaxHeaderCount),
                    _ => None,
                };
                if let Some(limit) = limit {
                    self.metrics.client_limit_hit(limit);
                    self.refuse_head(session, &Reply::HEADER_TOO_LARGE, &e)
                        .await;
                } else if e.etype() == &ErrorType::InvalidHTTPHeader
                    || e.etype() == &request::HOST_DIFFERS
                {
                    self.refuse_head(session, &Reply::BAD_REQUEST, &e).await;
                }
                session.shutdown().await;
                return false;
            }
            None => {
                self.metrics.client_limit_hit(ClientLimit::HeaderTimeout);
                let late = Error::explain(
                    ErrorType::ReadTimedout,
                    format!("the request head took longer than {deadline:?} (header_timeout)"),
                );
                self.refuse_head(session, &Reply::REQUEST_TIMEOUT, &late)
                    .await;
                session.shutdown().await;
                return false;
            }
        }
        client::apply(session, &limits, &self.metrics);
        // For Pingora's HTTP/1 session (h2c listeners); hookgate's own reads the
        // signal again as it writes the answer head (`request`).
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        let mut ctx = self.new_ctx();
        let error = match client::check_head(session, &limits) {
            // Boxed: a connection waiting in `read_request` above holds this
            // future's ~6 KB only while a request is being handled.
            Ok(()) => Box::pin(self.handle(session, &mut ctx)).await.err(),
            Err(limit) => {
                self.metrics.client_limit_hit(limit);
                ctx.request_id = headers::new_request_id();
                let refusal = Refusal::new(Reply::HEADER_TOO_LARGE)
                    .detail(format!("{} exceeded", limit.as_str()))
                    .close();
                self.refuse(session, &mut ctx, refusal).await.err()
            }
        };
        if error
            .as_ref()
            .is_some_and(|e| e.etype() == &ErrorType::WriteTimedout)
        {
            self.metrics.client_limit_hit(ClientLimit::SendTimeout);
        }
        if error.is_some() && session.response_written().is_none() {
            // Only a head that cannot be re-serialized gets here; answering is best effort.
            let _ = session.respond_error(500).await;
        }
        self.log_request(session, Some(session.req_header()), error.as_deref(), &ctx);
        error.is_none() && !ctx.close
    }
}

impl Gateway {
    fn new_ctx(&self) -> RequestContext {
        RequestContext {
            started: Instant::now(),
            snapshot: None,
            route: None,
            request_id: String::new(),
            peer: None,
            client: None,
            trusted_peer: false,
            forward_target: None,
            origin_at: 0,
            authority: None,
            close: false,
            outcome: None,
            status: None,
            body_bytes: 0,
            upstream: None,
            target: None,
            upstream_status: None,
            upstream_time: None,
            detail: None,
            reason: None,
            event: None,
            _counted: Counted::new(&self.metrics.inflight),
            admission: None,
            handshake_only: false,
        }
    }

    /// One request whose head was read: the numbered steps of the module doc,
    /// then the answer. It always answers unless the connection broke; `Err`
    /// means the connection must not be reused.
    async fn handle(&self, session: &mut Session, ctx: &mut RequestContext) -> Result<()> {
        let snapshot = self.state.load_full();
        ctx.snapshot = Some(snapshot.clone());
        match self.steps(&snapshot, session, ctx).await {
            Ok(relayed) => relayed,
            Err(refusal) => self.refuse(session, ctx, refusal).await,
        }
    }

    /// Steps 0–9. Each step either hands the next one what it decided or
    /// refuses; nothing is written to the sender before step 9.
    async fn steps(
        &self,
        snapshot: &Snapshot,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<Relayed, Refusal> {
        self.identify(session, ctx);
        ctx.admission = Some(self.admit_request()?); // 0
        let client = self.client_address(snapshot, session, ctx); // 2
        let route = self.route(snapshot, session, ctx, client)?; // 1
        allow(route, client)?; // 3
        self.rate_limit(route, client, session).await?; // 4
        let body = self.read_body(snapshot, session, ctx, route).await?; // 5
        if let Some(answer) = handshake::unsigned(
            &self.metrics,
            route,
            session,
            &body,
            self.handshake_secrets.as_deref(),
        )? {
            return Ok(handshake::answer(session, ctx, answer).await);
        }
        if ctx.handshake_only {
            return Err(Refusal::new(Reply::METHOD_NOT_ALLOWED));
        }
        let decoded = self.decode_body(route, session, &body, ctx)?; // 5
        let admitted = match self
            .verify_and_admit(snapshot, route, session, &body, decoded.as_deref(), ctx)
            .await?
        {
            Checked::Admitted(admitted) => admitted, // 6, 7, 8
            Checked::Handshake(answer) => return Ok(handshake::answer(session, ctx, answer).await),
        };
        drop(decoded);
        self.forward_primary(snapshot, session, ctx, route, admitted)
            .await // 9
    }

    /// The peer and the request id, for every answer and log line.
    fn identify(&self, session: &Session, ctx: &mut RequestContext) {
        ctx.peer = session.peer_ip();
        ctx.request_id = headers::sender_request_id(session.req_header())
            .map(str::to_string)
            .unwrap_or_else(headers::new_request_id);
    }

    /// Step 0: a slot under `[server] max_inflight`.
    fn admit_request(&self) -> Result<InflightSlot, Refusal> {
        self.inflight_limit
            .try_acquire()
            .ok_or_else(|| Refusal::new(Reply::OVERLOADED).detail("max_inflight reached"))
    }

    /// Step 2: the client address, decided before routing so that every access
    /// line has it: the peer, or `X-Forwarded-For` through trusted proxies only.
    fn client_address(
        &self,
        snapshot: &Snapshot,
        session: &Session,
        ctx: &mut RequestContext,
    ) -> IpAddr {
        let trusted_proxies = &snapshot.config.server.trusted_proxies;
        let client = match ctx.peer {
            Some(peer) => {
                ctx.trusted_peer = trusted_proxies.contains(peer.to_canonical());
                let forwarded_for = session.req_header().headers.get_all("x-forwarded-for");
                allowlist::client_addr(
                    peer,
                    forwarded_for.iter().map(|v| v.as_bytes()),
                    trusted_proxies,
                )
            }
            // A Unix socket peer: only an allow-all list lets it in.
            None => IpAddr::from([0, 0, 0, 0]),
        };
        ctx.client = Some(client);
        client
    }

    /// Step 1: one reading of the request (framing, the canonical target, the
    /// authority, the headers a backend reads differently), then the route by
    /// host, path and method.
    fn route<'s>(
        &self,
        snapshot: &'s Snapshot,
        session: &Session,
        ctx: &mut RequestContext,
        client: IpAddr,
    ) -> Result<&'s Route, Refusal> {
        framing::check(session).map_err(|reason| Refusal::bad_request(reason).close())?;
        let head = session.req_header();
        let target = target::read_target(head.raw_path()).map_err(Refusal::bad_request)?;
        let authority = target::read_authority(
            &target,
            &head.headers,
            head.uri.authority().map(|a| a.as_str()),
            head.version,
        )
        .map_err(Refusal::bad_request)?;
        agreement::check(head, target.query, ctx.trusted_peer).map_err(Refusal::bad_request)?;
        let forwarded = target.forwarded();
        if forwarded.as_bytes() != head.raw_path() {
            ctx.forward_target = Some(forwarded.into_owned());
        }
        ctx.origin_at = head.raw_path().len() - target.received.len();
        let host = authority.as_ref().map(Authority::host);
        let found = snapshot.table.find(host, &target.route_path, &head.method);
        ctx.authority = authority;
        match found {
            RouteMatch::Found(index) => {
                ctx.route = Some(index);
                Ok(&snapshot.routes[index])
            }
            RouteMatch::NoRoute => Err(Refusal::new(Reply::NO_ROUTE)),
            RouteMatch::MethodNotAllowed(index) => {
                let routes = snapshot.table.target_routes(index);
                let permits = |&i: &usize| snapshot.routes[i].settings.allow.permits(client);
                let some_route_permits = routes.iter().any(permits);
                // A GET handshake reaches the route of this host and path that
                // answers one, even when it is limited to other methods, and only
                // it: unless that route denies the client and another lets it in,
                // for whom the GET is no handshake and gets the 405 below.
                if head.method == http::Method::GET {
                    let answers_get = |&&i: &&usize| {
                        let handshake = snapshot.routes[i].settings.handshake.as_ref();
                        handshake.is_some_and(|h| h.kind().is_get())
                    };
                    if let Some(&handshake) = routes.iter().find(answers_get) {
                        if permits(&handshake) || !some_route_permits {
                            ctx.route = Some(handshake);
                            ctx.handshake_only = true;
                            return Ok(&snapshot.routes[handshake]);
                        }
                    }
                }
                ctx.route = Some(index);
                // What a target takes is told only to a client that one of its
                // routes lets in (step 3); any other gets that route's 403.
                if !some_route_permits {
                    allow(&snapshot.routes[index], client)?;
                }
                Err(Refusal::new(Reply::METHOD_NOT_ALLOWED))
            }
        }
    }

    /// Step 5: the whole body, bounded by the route's `max_body` and
    /// `[server] body_timeout`; a form body may not override the method.
    async fn read_body(
        &self,
        snapshot: &Snapshot,
        session: &mut Session,
        ctx: &mut RequestContext,
        route: &Route,
    ) -> Result<bytes::Bytes, Refusal> {
        let server = &snapshot.config.server;
        session.set_read_timeout(Some(server.client_timeout));
        let body = body::read_bounded(session, route.settings.max_body, server.limits.body_timeout)
            .await
            .map_err(|error| self.body_refusal(route, error))?;
        ctx.body_bytes = body.len();
        route.metrics.observe_body(&self.metrics, body.len());
        agreement::check_form_body(session.req_header(), &body).map_err(Refusal::bad_request)?;
        Ok(body)
    }

    /// The answer to a body that could not be read (step 5). After any body
    /// error the rest of the stream cannot be trusted to start a request,
    /// whatever state the session reports: the connection is closed.
    fn body_refusal(&self, route: &Route, error: BodyError) -> Refusal {
        let refusal = match error {
            BodyError::TooLarge => Refusal::new(Reply::BODY_TOO_LARGE)
                .detail(format!("body over max_body {}", route.settings.max_body)),
            BodyError::Malformed(why) => Refusal::bad_request(why),
            BodyError::Late => {
                self.metrics.client_limit_hit(ClientLimit::BodyTimeout);
                Refusal::new(Reply::REQUEST_TIMEOUT)
                    .detail("the body took longer than body_timeout")
            }
            BodyError::Read(e) => {
                let refusal = match e.etype() {
                    ErrorType::ReadTimedout => Refusal::new(Reply::REQUEST_TIMEOUT),
                    ErrorType::Custom("InvalidChunk") => {
                        // What is wrong with the chunk (`request::chunk_size`).
                        let why = e.context.as_ref().map(ToString::to_string);
                        let why = why.as_deref().unwrap_or("not plain chunks");
                        Refusal::bad_request(format!("invalid chunked body: {why}"))
                    }
                    _ => Refusal::new(Reply::BAD_REQUEST),
                };
                // `Error`'s own text starts with a space.
                let error = e.to_string();
                refusal.detail(format!("reading the request body: {}", error.trim_start()))
            }
        };
        refusal.close()
    }

    /// Step 5, last part: a body with a `Content-Encoding` is decoded (under the
    /// route's `max_decoded_body`) when the route reads it: its signature covers
    /// the decoded bytes, its event or delivery id is in the body, or it is a
    /// form (whose `_method` field the app would act on). Otherwise the coded
    /// bytes are forwarded unread, whatever the coding. `None`: nothing decoded.
    /// On a route whose signature covers the bytes as sent, they are verified
    /// before decoding.
    fn decode_body(
        &self,
        route: &Route,
        session: &Session,
        body: &bytes::Bytes,
        ctx: &RequestContext,
    ) -> Result<Option<Vec<u8>>, Refusal> {
        let head = session.req_header();
        if !head.headers.contains_key(http::header::CONTENT_ENCODING)
            || !(reads_body(route) || agreement::declares_form(head))
        {
            return Ok(None);
        }
        let count = |coding: &str, result: &str| {
            self.metrics
                .decoded_bodies
                .with_label_values(&[route.name(), coding, result])
                .inc();
        };
        let coding = match encoding::read(&head.headers) {
            Ok(Some(coding)) => coding,
            Ok(None) => return Ok(None),
            Err(error) => {
                count("other", error.label());
                let reply = match error {
                    encoding::CodingError::Malformed => Reply::BAD_REQUEST,
                    _ => Reply::UNSUPPORTED_CONTENT_ENCODING,
                };
                return Err(Refusal::new(reply)
                    .reason(&error)
                    .detail(format!("Content-Encoding: {error}")));
            }
        };
        if !route.settings.verifier.signs_decoded() {
            // The signature covers the bytes as sent: a forgery is refused before any
            // decoding work (a bomb costs its sender ~1000x less than it costs to decode).
            // Step 6 verifies again, over the few compressed bytes.
            self.verify(route, session, body, None, ctx)?;
        }
        let decoded =
            encoding::decode(coding, body, route.settings.max_decoded_body).map_err(|error| {
                count(coding.as_str(), error.label());
                let (reply, detail) = match &error {
                    encoding::DecodeError::TooLarge { .. } => (Reply::BODY_TOO_LARGE, None),
                    encoding::DecodeError::Corrupt { detail, .. } => {
                        (Reply::BAD_REQUEST, detail.as_deref())
                    }
                };
                Refusal::new(reply).reason(&error).detail(match detail {
                    Some(detail) => format!("{error} ({detail})"),
                    None => error.to_string(),
                })
            })?;
        count(coding.as_str(), "decoded");
        agreement::check_form_body(head, &decoded).map_err(Refusal::bad_request)?;
        Ok(Some(decoded))
    }

    /// Steps 6–8: verify the body and the head, then a signed handshake, the
    /// duplicate delivery and the event. All read the verified body
    /// (`decoded`, when step 5 decoded it); the answer is decided first.
    async fn verify_and_admit<'r>(
        &self,
        snapshot: &Snapshot,
        route: &'r Route,
        session: &Session,
        body: &bytes::Bytes,
        decoded: Option<&[u8]>,
        ctx: &mut RequestContext,
    ) -> Result<Checked<'r>, Refusal> {
        let verified = self.verify(route, session, body, decoded, ctx)?;
        let headers = &session.req_header().headers;
        if let Some(answer) = handshake::signed(&self.metrics, route, headers, verified.body())? {
            return Ok(Checked::Handshake(answer));
        }
        self.admit(snapshot, route, &verified, body, headers, ctx)
            .await
            .map(Checked::Admitted)
    }

    /// Step 6: the route's verifier over the request as received, reading
    /// `decoded` as its body when step 5 decoded it. An Asana handshake route
    /// verifies with the secret its handshake handed over.
    fn verify<'a>(
        &self,
        route: &Route,
        session: &'a Session,
        body: &'a bytes::Bytes,
        decoded: Option<&'a [u8]>,
        ctx: &RequestContext,
    ) -> Result<Verified<'a>, Refusal> {
        let head = session.req_header();
        let request = verify::Request {
            method: head.method.as_str(),
            // As received (in origin form): what URL-signing senders signed.
            path_and_query: raw_target(head).get(ctx.origin_at..).unwrap_or("/"),
            headers: &head.headers,
            body,
        };
        let handed_over = route
            .settings
            .handshake
            .as_ref()
            .and_then(|h| h.asana())
            .and_then(|secret| secret.verifier(self.handshake_secrets.as_deref()));
        let verifier = handed_over.as_ref().unwrap_or(&route.settings.verifier);
        let verified = match decoded {
            None => verifier.verify(&request, SystemTime::now()),
            Some(decoded) => verifier.verify_decoded(&request, decoded, SystemTime::now()),
        };
        verified.map_err(|error| {
            (route.metrics).count_signature_failure(
                &self.metrics,
                verifier.scheme(),
                error.reason(),
            );
            let refusal = Refusal::new(Reply::for_verify_error(&error));
            match &error {
                verify::VerifyError::Ambiguous(why) => refusal.reason(why),
                _ => refusal,
            }
            .detail(&error)
        })
    }

    /// Step 9: forward the verified bytes to the primary upstream and relay its
    /// answer; after a 2xx, remember the delivery id and queue the copies.
    async fn forward_primary(
        &self,
        snapshot: &Snapshot,
        session: &mut Session,
        ctx: &mut RequestContext,
        route: &Route,
        admitted: Admitted<'_>,
    ) -> Result<Relayed, Refusal> {
        let tls = session.is_tls();
        let downstream = session.req_header();
        let head = headers::upstream_head(
            downstream,
            admitted.body.len(),
            &headers::Forwarding {
                target: ctx
                    .forward_target
                    .as_deref()
                    .unwrap_or(raw_target(downstream)),
                authority: ctx.authority.as_ref().map(Authority::header),
                peer: ctx.peer,
                trusted_peer: ctx.trusted_peer,
                client: ctx.client,
                client_header: snapshot.config.server.client_header.as_ref(),
                tls,
                local_port: session.local_port(),
                request_id: &ctx.request_id,
                route: route.name(),
                event: ctx.event.as_deref(),
            },
        );
        let head = match head {
            Ok(head) => head,
            // A value of the gateway's own that cannot be sent: no answer fits.
            Err(e) => return Ok(Err(e)),
        };
        if let crate::config::Delivery::Queued(retry) = route.settings.delivery {
            return self
                .accept_queued(session, ctx, route, admitted, &head, retry)
                .await;
        }
        let Some(pool) = snapshot.pools.get(admitted.primary) else {
            // Config validation makes this unreachable; answer rather than panic.
            return Err(Refusal::new(Reply::UPSTREAM_UNAVAILABLE)
                .detail(format!("upstream {} not in the snapshot", admitted.primary)));
        };
        ctx.upstream = Some(admitted.primary.to_string());
        // Only a delivery the primary accepted is remembered: after a failure the
        // provider retries, and must get through. It is remembered once the 2xx
        // head is read, before the answer is relayed, so a sender that retries
        // as soon as it sees the answer gets "duplicate", not 409.
        // A failed forward forgets the id before the answer goes out, here or
        // (the upstream gave no answer) below, so the sender's retry gets through.
        // With a store, the copies of an accepted delivery are stored (fsynced)
        // before the answer is relayed: once the sender has its 2xx, a crash
        // or restart loses no copy. Without one, or when the store refuses,
        // they go to the in-memory fan-out queue after the answer.
        let claim = std::sync::Mutex::new(admitted.claim);
        let take_claim = || claim.lock().unwrap_or_else(|p| p.into_inner()).take();
        let store = self
            .queue
            .as_ref()
            .filter(|_| self.fanout.config().stored && !admitted.copies.is_empty());
        let stored = AtomicBool::new(false);
        let (request_id, event) = (&ctx.request_id, &ctx.event);
        let (copies, body) = (admitted.copies, &admitted.body);
        let remember = |status: u16| {
            let accepted = (200..300).contains(&status);
            let confirm = match take_claim() {
                Some(claim) if accepted => claim.confirm(Instant::now()),
                Some(claim) => claim.release(),
                None => crate::dedupe::Confirm::done(),
            };
            let (stored, head) = (&stored, &head);
            async move {
                confirm.await;
                if let (true, Some(queue)) = (accepted, store) {
                    let copy = StoredCopy {
                        route: route.name(),
                        upstreams: copies,
                        head,
                        body,
                        request_id,
                        event: event.as_deref(),
                    };
                    stored.store(self.store_copies(queue, copy).await, Ordering::Relaxed);
                }
            }
        };
        let request = forward::Outgoing {
            head: &head,
            body: &admitted.body,
            request_id: &ctx.request_id,
        };
        let forwarded = forward::forward(
            &self.connections,
            session,
            pool,
            request,
            &mut ctx.target,
            remember,
        )
        .await;
        if forwarded.is_err() {
            if let Some(claim) = take_claim() {
                claim.release().await;
            }
        }
        let forwarded = forwarded.map_err(|error| match error {
            ForwardError::Unavailable => {
                Refusal::new(Reply::UPSTREAM_UNAVAILABLE).detail("no healthy target")
            }
            ForwardError::Failed(e) => Refusal::new(Reply::UPSTREAM_ERROR).detail(&e),
            ForwardError::TimedOut(e) => Refusal::new(Reply::UPSTREAM_TIMEOUT).detail(&e),
        })?;
        ctx.status = Some(forwarded.status);
        ctx.upstream_status = Some(forwarded.status);
        ctx.upstream_time = Some(forwarded.upstream_time);
        if (200..300).contains(&forwarded.status) && !stored.load(Ordering::Relaxed) {
            // Only a delivery the primary accepted is copied: after a failure
            // the provider retries, and copies would double. An accepted one is
            // copied even when its answer then failed to reach the sender: the
            // app has it.
            self.queue_copies(route.name(), admitted.copies, &head, &admitted.body);
        }
        Ok(match forwarded.interrupted {
            None => {
                ctx.outcome = Some(Outcome::Forwarded);
                Ok(())
            }
            Some(cut) if cut.by_client => {
                ctx.outcome = Some(Outcome::ClientInterrupted);
                ctx.detail = Some(format!("answer not written to the sender: {}", cut.error));
                Err(cut.error)
            }
            Some(cut) => {
                ctx.outcome = Some(Outcome::UpstreamError);
                ctx.detail = Some(format!("response interrupted: {}", cut.error));
                Err(cut.error)
            }
        })
    }

    /// A request head that could not be read: the head reader refused it
    /// (garbage request line, a bad or conflicting `Content-Length`, a `Host`
    /// that differs from an absolute-form target's authority: 400; over
    /// `max_head_size` or `max_header_count` while read: 431) or it did not
    /// arrive in time (408). The JSON answer, counted and logged like every
    /// other refusal, then the connection is closed.
    async fn refuse_head(&self, session: &mut Session, reply: &Reply, error: &Error) {
        let mut ctx = self.new_ctx();
        ctx.request_id = headers::new_request_id();
        ctx.peer = session.peer_ip();
        ctx.client = ctx.peer;
        // Never the error's context: for a parse error it holds up to 2 KiB of the
        // raw head, signatures and tokens included. Its cause (httparse's kind of
        // error) or, without one, the fixed explanation is enough.
        ctx.detail = Some(match &error.cause {
            _ if reply.status == 431 => format!(
                "{} (the head was not read further)",
                error.context.as_ref().map_or("", |c| c.as_str())
            ),
            Some(cause) => format!("invalid request head: {cause}"),
            None => format!(
                "invalid request head: {}",
                error.context.as_ref().map_or("", |c| c.as_str())
            ),
        });
        ctx.outcome = Some(reply.outcome);
        ctx.status = Some(reply.status);
        // Not `refuse`: without a parsed head the session cannot tell whether a
        // body is unread, and the connection is closed anyway.
        let reason = match *error.etype() {
            request::HOST_DIFFERS => Some(target::TargetError::HostDiffers.reason()),
            _ if reply.status == 400 => Some("the request head is not valid HTTP"),
            _ => None,
        };
        let _ = reply::send(session, reply, None, &ctx.request_id, true, [], reason).await;
        // The log names the method and path when the request line had arrived
        // whole and valid (never a field: fields may carry secrets).
        let line = tracing::enabled!(target: "hookgate::access", tracing::Level::INFO)
            .then(|| session.refused_request_line())
            .flatten();
        self.log_request(session, line.as_ref(), None, &ctx);
    }

    /// Metrics and the access-log line of one request. `head`: the request's
    /// head, or the request line of a refused one (`None` without either).
    fn log_request(
        &self,
        session: &Session,
        head: Option<&pingora::http::RequestHeader>,
        error: Option<&Error>,
        ctx: &RequestContext,
    ) {
        let outcome = ctx.outcome.unwrap_or(Outcome::BadRequest);
        let elapsed = ctx.started.elapsed();
        let handles = match (&ctx.snapshot, ctx.route) {
            (Some(snapshot), Some(index)) => &snapshot.routes[index].metrics,
            _ => &self.unmatched,
        };
        handles.count_request(&self.metrics, outcome);
        handles.observe_duration(&self.metrics, elapsed.as_secs_f64());
        if let (Some(upstream), Some(status)) = (&ctx.upstream, ctx.upstream_status) {
            let seconds = ctx.upstream_time.map(|time| time.as_secs_f64());
            handles.upstream_answered(&self.metrics, upstream, status, seconds);
        }
        let route = ctx.route_name().unwrap_or(UNMATCHED_ROUTE);
        tracing::info!(
            target: "hookgate::access",
            request_id = %ctx.request_id,
            route = %route,
            client = %ctx.client.map(|ip| ip.to_string()).unwrap_or_default(),
            method = head.map_or("", |head| head.method.as_str()),
            path = head.map_or("", |head| head.uri.path()),
            status = ctx.status.or_else(|| session.response_written()).unwrap_or(0),
            outcome = outcome.as_str(),
            event = ctx.event.as_deref().unwrap_or(""),
            upstream = ctx.upstream.as_deref().unwrap_or(""),
            upstream_target = %ctx.target.map(|t| t.to_string()).unwrap_or_default(),
            upstream_status = ctx.upstream_status.unwrap_or(0),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            upstream_ms = ctx.upstream_time.map_or(0.0, |t| t.as_secs_f64() * 1000.0),
            body_bytes = ctx.body_bytes,
            detail = ctx.detail.as_deref().or(error.map(|_| "connection error")).unwrap_or(""),
        );
    }
}

/// The received request target as text (`target` refused any other).
fn raw_target(head: &pingora::http::RequestHeader) -> &str {
    std::str::from_utf8(head.raw_path()).unwrap_or("/")
}

/// The bytes to forward: exactly the ones a verifier vouched for, shared with
/// the buffered body rather than copied. It can only be made from a
/// [`Verified`], which only `verify` can make, and `forward::forward` takes
/// nothing else: an unverified body cannot reach an upstream.
pub struct VerifiedBody(bytes::Bytes);

impl VerifiedBody {
    fn new(body: &bytes::Bytes, verified: &Verified<'_>) -> Self {
        VerifiedBody(body.slice_ref(verified.wire()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes, for writing upstream.
    pub fn bytes(&self) -> &bytes::Bytes {
        &self.0
    }
}

/// A verified request cleared for forwarding.
struct Admitted<'r> {
    body: VerifiedBody,
    /// Remembers the delivery id once the primary accepted it (dedupe).
    claim: Option<Claim>,
    primary: &'r str,
    copies: &'r [String],
}

/// What steps 6–8 decided: forward, or answer a signed handshake.
enum Checked<'r> {
    Admitted(Admitted<'r>),
    Handshake(crate::handshake::Answer),
}

/// How step 9 ended when it answered: the relay finished, or broke after the
/// answer started (then the connection is not reused).
type Relayed = Result<()>;

impl Gateway {
    /// Steps 7 and 8 for a verified request: duplicate delivery, then the event
    /// and the upstreams it routes to.
    async fn admit<'r>(
        &self,
        snapshot: &Snapshot,
        route: &'r Route,
        verified: &Verified<'_>,
        body: &bytes::Bytes,
        headers: &http::HeaderMap,
        ctx: &mut RequestContext,
    ) -> Result<Admitted<'r>, Refusal> {
        let admission = match (&route.dedupe, &self.cluster) {
            (None, _) => None,
            (Some(store), None) => Some(store.admit(verified, headers, Instant::now())),
            (Some(store), Some(cluster)) => {
                let id = store.config().delivery_id(verified, headers);
                let lease = claim_lease(cluster, snapshot, route);
                let admission = store
                    .admit_clustered(cluster, route.name(), lease, id, Instant::now())
                    .await;
                match admission {
                    Ok(Err(unavailable)) => return Err(cluster_unavailable(&unavailable)),
                    Ok(Ok(admission)) => Some(Ok(admission)),
                    Err(error) => Some(Err(error)),
                }
            }
        };
        let claim = match admission {
            None => None,
            Some(admission) => match admission {
                Ok(Admission::Forward(claim)) => claim,
                Ok(Admission::Duplicate) => {
                    return Err(
                        Refusal::new(Reply::DUPLICATE).detail("delivery id already forwarded")
                    )
                }
                Ok(Admission::InFlight) => {
                    return Err(Refusal::new(Reply::DUPLICATE_IN_FLIGHT)
                        .detail("the same delivery id is being forwarded")
                        .retry_after(IN_FLIGHT_RETRY_AFTER_SECS))
                }
                Err(error) => return Err(Refusal::bad_request(error)),
            },
        };
        let decision = route
            .settings
            .events
            .route(verified, headers)
            .map_err(Refusal::bad_request)?;
        if route.settings.events.has_event() {
            (route.metrics).count_event(&self.metrics, decision.label);
        }
        ctx.event = decision.event.map(|event| event.into_owned());
        match decision.target {
            Target::Reject => Err(Refusal::new(Reply::EVENT_UNMATCHED)),
            target => Ok(Admitted {
                body: VerifiedBody::new(body, verified),
                claim,
                primary: target.primary().unwrap_or(&route.settings.upstreams[0]),
                copies: target.copies(),
            }),
        }
    }

    /// Stores the fan-out copies of an accepted direct delivery as one queued
    /// event (one tracked delivery per copy upstream), retried as `[server]
    /// fanout` says (`attempts`, `backoff`, `max_backoff`) for at most the
    /// default `max_age`. `false` when the store refused it (full or failing:
    /// counted in `hookgate_store_errors_total` by `accept`); the caller then
    /// queues the copies in memory.
    async fn store_copies(&self, queue: &crate::delivery::Queue, copy: StoredCopy<'_>) -> bool {
        let fanout = self.fanout.config();
        let retry = crate::config::RetryPolicy {
            attempts: fanout.attempts,
            backoff: fanout.backoff,
            max_backoff: fanout.max_backoff,
            ..crate::config::RetryPolicy::default()
        };
        let event = crate::delivery::store::NewEvent {
            route: copy.route.to_string(),
            upstreams: copy.upstreams.to_vec(),
            method: copy.head.method().as_str().to_string(),
            head: copy.head.wire().clone(),
            body: copy.body.bytes().clone(),
            request_id: copy.request_id.to_string(),
            event: copy.event.map(str::to_string),
            received_ms: crate::delivery::store::now_ms(),
            retry,
        };
        match queue.accept(event).await {
            Ok(event_id) => {
                tracing::debug!(route = copy.route, %event_id, "fan-out copies stored");
                true
            }
            Err(_) => false,
        }
    }

    /// Queues one background copy per fan-out upstream; a copy the queue
    /// cannot take is counted and logged, never silently lost.
    fn queue_copies(
        &self,
        route: &str,
        copies: &[String],
        head: &UpstreamHead,
        body: &VerifiedBody,
    ) {
        if copies.is_empty() {
            return;
        }
        let payload = Arc::new(Payload {
            method: head.method().clone(),
            head: head.wire().clone(),
            body: body.bytes().clone(),
        });
        for upstream in copies {
            if let Err(dropped) = self.fanout.enqueue(route, upstream, payload.clone()) {
                let reason = dropped.reason.label();
                self.metrics
                    .fanout_dropped
                    .with_label_values(&[route, upstream, reason])
                    .inc();
                tracing::warn!(route, upstream = %upstream, reason, "fan-out copy dropped");
            }
        }
    }

    /// The one writer of refusals: the JSON answer (with `Retry-After` and
    /// `Connection: close` when the refusal asks for them), and the fields the
    /// access log and the request metrics read from `ctx`. The connection is
    /// also closed when the request body may still be unread.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        refusal: Refusal,
    ) -> Result<()> {
        let Refusal {
            reply,
            reason,
            detail,
            retry_after,
            close,
        } = refusal;
        ctx.outcome = Some(reply.outcome);
        ctx.status = Some(reply.status);
        ctx.close |= close;
        ctx.detail = detail.or(ctx.detail.take());
        ctx.reason = reason;
        let close = ctx.close || !session.is_body_done();
        let retry_after =
            retry_after.map(|secs| ("Retry-After", bytes::Bytes::from(secs.to_string())));
        // A 405's route is the one that refused the method: `Allow` names what
        // its host and path take (RFC 9110 §15.5.6).
        let allow = match (&ctx.snapshot, ctx.route) {
            (Some(snapshot), Some(index)) if reply.status == 405 => {
                Some(("Allow", snapshot.table.allow(index)))
            }
            _ => None,
        };
        reply::send(
            session,
            &reply,
            ctx.route_name(),
            &ctx.request_id,
            close,
            retry_after.into_iter().chain(allow),
            ctx.reason.as_deref(),
        )
        .await
    }
}

/// Whether anything the route does reads the body's content, so that a body
/// with a `Content-Encoding` must be decoded first (step 5): a signature over
/// the decoded body, a setup handshake, an event or a delivery id in the body.
fn reads_body(route: &Route) -> bool {
    let settings = &route.settings;
    settings.verifier.signs_decoded()
        || settings.handshake.is_some()
        || settings.events.reads_body()
        || settings
            .dedupe
            .as_ref()
            .is_some_and(|dedupe| matches!(dedupe.key, crate::dedupe::KeySource::Json(_)))
}

/// Step 3: the route's IP allowlist.
fn allow(route: &Route, client: IpAddr) -> Result<(), Refusal> {
    if route.settings.allow.permits(client) {
        Ok(())
    } else {
        Err(Refusal::new(Reply::IP_NOT_ALLOWED)
            .detail(format_args!("client {client} not in the route's allowlist")))
    }
}

impl Gateway {
    /// Step 4: the route's rate limit, decided before the body is read: in
    /// Redis with `[cluster]` (or, while it does not answer, as
    /// `on_unavailable` says), else by this instance's limiter.
    async fn rate_limit(
        &self,
        route: &Route,
        client: IpAddr,
        session: &Session,
    ) -> Result<(), Refusal> {
        let Some(limiter) = &route.limiter else {
            return Ok(());
        };
        let headers = &session.req_header().headers;
        let decided = match &self.cluster {
            None => limiter.check(client, headers),
            Some(cluster) => {
                match crate::ratelimit::check_shared(
                    cluster,
                    route.name(),
                    limiter,
                    client,
                    headers,
                )
                .await
                {
                    Ok(decided) => decided,
                    Err(e) => match cluster.settings().on_unavailable {
                        OnUnavailable::Local => {
                            cluster.count_fallback(Operation::RateLimit);
                            limiter.check(client, headers)
                        }
                        OnUnavailable::Reject => return Err(cluster_unavailable(&e)),
                    },
                }
            }
        };
        decided.map_err(|limited| {
            Refusal::new(Reply::RATE_LIMITED)
                .retry_after(limited.retry_after_secs())
                .detail(limited)
        })
    }
}

/// 503 `cluster_unavailable`: Redis did not answer and `on_unavailable = "reject"`.
fn cluster_unavailable(error: &dyn std::fmt::Display) -> Refusal {
    Refusal::new(Reply::CLUSTER_UNAVAILABLE)
        .retry_after(crate::cluster::UNAVAILABLE_RETRY_AFTER_SECS)
        .detail(format!("cluster: {error}"))
}

/// How long a dedupe claim of `route` is held in Redis: `[cluster] claim_lease`,
/// else the longest `response_timeout` of the upstreams the route can send to
/// plus 5 s (or `command_timeout` if longer), so a live instance never loses
/// its claim mid-forward or before its forwarded mark is written.
fn claim_lease(cluster: &ClusterClient, snapshot: &Snapshot, route: &Route) -> Duration {
    cluster.settings().claim_lease.unwrap_or_else(|| {
        let longest = route
            .settings
            .upstreams
            .iter()
            .map(String::as_str)
            .chain(route.settings.events.upstreams())
            .filter_map(|name| snapshot.config.upstreams.get(name))
            .map(|upstream| upstream.response_timeout)
            .max()
            .unwrap_or_default();
        longest.saturating_add(crate::dedupe::claim_lease_margin(
            cluster.settings().command_timeout,
        ))
    })
}

/// What [`Gateway::store_copies`] stores: an accepted direct delivery and the
/// fan-out upstreams that still need it.
struct StoredCopy<'a> {
    route: &'a str,
    upstreams: &'a [String],
    head: &'a UpstreamHead,
    body: &'a VerifiedBody,
    request_id: &'a str,
    event: Option<&'a str>,
}
