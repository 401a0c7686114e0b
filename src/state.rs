//! The running gateway's state: one immutable [`Snapshot`] built from a
//! [`Config`] (route table, compiled routes, upstream pools), swapped atomically
//! so a request keeps the snapshot it started with.
//!
//! Owns building a snapshot and holding the current one; loading files is
//! `config`'s job and reacting to edits is `reload`'s. A snapshot built to
//! replace another keeps what did not change: the pool (with its health state
//! and pooled connections) of an upstream whose settings are equal, and the
//! limiter (with its buckets) of a route of the same name and rate limit, and
//! the dedupe store (with its remembered ids) of a route of the same name and
//! dedupe settings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::{Config, RouteSettings};
use crate::dedupe::DedupeStore;
use crate::metrics::RouteHandles;
use crate::ratelimit::RouteLimiter;
use crate::routing::RouteTable;
use crate::upstream::UpstreamPool;

/// A route ready to serve: its settings and its per-route state (limiter
/// buckets, remembered delivery ids). Upstreams are looked up by name in
/// [`Snapshot::pools`], since event rules may pick any of them.
pub struct Route {
    pub settings: RouteSettings,
    pub limiter: Option<Arc<RouteLimiter>>,
    pub dedupe: Option<Arc<DedupeStore>>,
    /// Its metric series, resolved once.
    pub metrics: RouteHandles,
}

impl Route {
    pub fn name(&self) -> &str {
        &self.settings.name
    }
}

/// Everything a request needs, consistent for its whole lifetime.
pub struct Snapshot {
    pub config: Config,
    pub table: RouteTable,
    /// In the config's order; `RouteMatch::Found(i)` indexes this.
    pub routes: Vec<Route>,
    pub pools: BTreeMap<String, Arc<UpstreamPool>>,
    pub loaded_at: SystemTime,
}

impl Snapshot {
    /// A first snapshot.
    pub fn build(config: Config) -> Result<Snapshot, String> {
        Snapshot::build_from(config, None)
    }

    /// A snapshot replacing `previous`, keeping its unchanged pools and limiters.
    pub fn rebuild(config: Config, previous: &Snapshot) -> Result<Snapshot, String> {
        Snapshot::build_from(config, Some(previous))
    }

    fn build_from(config: Config, previous: Option<&Snapshot>) -> Result<Snapshot, String> {
        let pools = config
            .upstreams
            .iter()
            .map(|(name, settings)| {
                let kept = previous
                    .and_then(|p| p.pools.get(name))
                    .filter(|pool| pool.settings() == settings)
                    .cloned();
                let pool = match kept {
                    Some(pool) => pool,
                    None => Arc::new(UpstreamPool::new(settings)?),
                };
                Ok((name.clone(), pool))
            })
            .collect::<Result<BTreeMap<_, _>, String>>()?;
        let routes = config
            .routes
            .iter()
            .map(|settings| {
                if let Some(missing) = settings
                    .events
                    .upstreams()
                    .find(|u| !pools.contains_key(*u))
                {
                    return Err(format!(
                        "route {}: unknown upstream {missing}",
                        settings.name
                    ));
                }
                let before = previous
                    .and_then(|p| p.routes.iter().find(|r| r.settings.name == settings.name));
                let kept_dedupe = before
                    .and_then(|r| r.dedupe.clone())
                    .filter(|store| Some(store.config()) == settings.dedupe.as_ref());
                let dedupe = kept_dedupe.or_else(|| {
                    settings
                        .dedupe
                        .clone()
                        .map(|config| Arc::new(DedupeStore::new(config)))
                });
                let kept_limiter = before
                    .and_then(|r| r.limiter.clone())
                    .filter(|limiter| Some(limiter.config()) == settings.rate_limit.as_ref());
                let limiter = kept_limiter.or_else(|| {
                    settings
                        .rate_limit
                        .as_ref()
                        .map(|limit| Arc::new(RouteLimiter::new(limit)))
                });
                Ok(Route {
                    metrics: RouteHandles::new(&settings.name, pools.keys().map(String::as_str)),
                    settings: settings.clone(),
                    limiter,
                    dedupe,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Snapshot {
            table: RouteTable::new(&config.routes),
            routes,
            pools,
            config,
            loaded_at: SystemTime::now(),
        })
    }
}

/// The current snapshot, shared by the proxy, the admin listener and the health checker.
pub type SharedState = Arc<ArcSwap<Snapshot>>;

pub fn shared(snapshot: Snapshot) -> SharedState {
    Arc::new(ArcSwap::from_pointee(snapshot))
}
