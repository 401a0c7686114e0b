//! The running gateway's state: one immutable [`Snapshot`] built from a
//! [`Config`] (route table, compiled routes, upstream pools), swapped atomically
//! so a request keeps the snapshot it started with.
//!
//! Owns building a snapshot and holding the current one; loading files is
//! `config`'s job and reacting to edits will be `reload`'s.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, RouteSettings};
use crate::ratelimit::RouteLimiter;
use crate::routing::RouteTable;
use crate::upstream::UpstreamPool;

/// A route ready to serve: its settings, its upstream pool and its limiter state.
pub struct Route {
    pub settings: RouteSettings,
    pub upstream: Arc<UpstreamPool>,
    pub limiter: Option<Arc<RouteLimiter>>,
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
}

impl Snapshot {
    pub fn build(config: Config) -> Result<Snapshot, String> {
        let pools = config
            .upstreams
            .iter()
            .map(|(name, settings)| Ok((name.clone(), Arc::new(UpstreamPool::new(settings)?))))
            .collect::<Result<BTreeMap<_, _>, String>>()?;
        let routes = config
            .routes
            .iter()
            .map(|settings| {
                let upstream = pools.get(&settings.upstream).cloned().ok_or_else(|| {
                    format!(
                        "route {}: unknown upstream {}",
                        settings.name, settings.upstream
                    )
                })?;
                Ok(Route {
                    settings: settings.clone(),
                    upstream,
                    limiter: settings
                        .rate_limit
                        .as_ref()
                        .map(|limit| Arc::new(RouteLimiter::new(limit))),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Snapshot {
            table: RouteTable::new(&config.routes),
            routes,
            pools,
            config,
        })
    }
}

/// The current snapshot, shared by the proxy, the admin listener and the health checker.
pub type SharedState = Arc<ArcSwap<Snapshot>>;

pub fn shared(snapshot: Snapshot) -> SharedState {
    Arc::new(ArcSwap::from_pointee(snapshot))
}
