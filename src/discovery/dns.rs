//! placeholder
#![allow(missing_docs, dead_code)]
use super::{Discovery, DiscoveryError, EndpointSet};
pub struct Dns(crate::config::DnsConfig);
impl Dns {
    pub fn new(c: crate::config::DnsConfig) -> Self {
        Dns(c)
    }
}
impl Discovery for Dns {
    async fn next(&mut self) -> Result<EndpointSet, DiscoveryError> {
        Err(DiscoveryError::Unreachable("wip".into()))
    }
}
