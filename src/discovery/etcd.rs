//! placeholder
#![allow(missing_docs, dead_code)]
use super::{Discovery, DiscoveryError, EndpointSet};
pub struct Etcd(crate::config::EtcdConfig);
impl Etcd {
    pub fn new(c: crate::config::EtcdConfig) -> Self {
        Etcd(c)
    }
}
impl Discovery for Etcd {
    async fn next(&mut self) -> Result<EndpointSet, DiscoveryError> {
        Err(DiscoveryError::Unreachable("wip".into()))
    }
}
