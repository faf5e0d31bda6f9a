//! placeholder
#![allow(missing_docs, dead_code)]
use super::{Discovery, DiscoveryError, EndpointSet};
pub struct Consul(crate::config::ConsulConfig);
impl Consul {
    pub fn new(c: crate::config::ConsulConfig) -> Self {
        Consul(c)
    }
}
impl Discovery for Consul {
    async fn next(&mut self) -> Result<EndpointSet, DiscoveryError> {
        Err(DiscoveryError::Unreachable("wip".into()))
    }
}
