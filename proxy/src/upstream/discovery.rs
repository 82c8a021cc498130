//! Pingora `ServiceDiscovery` over the arc-swapped config: static addresses and weights,
//! with the stable worker id carried in `Backend::ext` (pingora identifies a backend by
//! address + weight only; routing never relies on that).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as PSocketAddr;

use super::Registry;

/// The worker id stored in a [`Backend`]'s extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerId(pub String);

/// Discovery reading the registry's current config.
pub struct ConfigDiscovery {
    registry: Arc<Registry>,
}

impl ConfigDiscovery {
    pub fn new(registry: Arc<Registry>) -> Box<ConfigDiscovery> {
        Box::new(ConfigDiscovery { registry })
    }
}

/// Backends for the current config.
pub fn backends(registry: &Registry) -> BTreeSet<Backend> {
    registry
        .workers()
        .live()
        .map(|w| {
            let w = &w.spec;
            let mut b = Backend {
                addr: PSocketAddr::Inet(w.address),
                weight: w.weight as usize,
                ext: Default::default(),
            };
            b.ext.insert(WorkerId(w.id.clone()));
            b
        })
        .collect()
}

#[async_trait]
impl ServiceDiscovery for ConfigDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((backends(&self.registry), HashMap::new()))
    }
}
