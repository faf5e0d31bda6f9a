//! `http` source: a URL that returns the endpoint list as JSON, polled at
//! an interval with `ETag` / `If-None-Match`, so an unchanged list costs
//! the registry a `304` and no body.
//!
//! Accepted bodies: a JSON array, or an object with an `endpoints` array.
//! Each entry is either a string `"ip:port"` or an object
//! `{"address": "ip:port", "weight": N}` (weight optional, default 1).
//! A malformed entry is skipped with a warning; a body that is not one of
//! those shapes is an error (the last good set is kept).
//!
//! A `304 Not Modified` is a successful contact that confirms the last set
//! ([`Update::Unchanged`]). With `max_stale` set, the URL is polled at
//! least every [`super::contact_interval`], even if `interval` is longer.

use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use super::{parse_entry, registry_get, Discovery, DiscoveryError, EndpointSet, Update};
use crate::config::HttpSourceConfig;

/// Polls one URL.
#[derive(Debug)]
pub struct HttpSource {
    config: HttpSourceConfig,
    /// The `ETag` of the last full answer, which this source returned.
    etag: Option<HeaderValue>,
    next_at: Option<Instant>,
    /// Poll at least this often (see [`super::contact_interval`]).
    contact_every: Option<Duration>,
}

impl HttpSource {
    /// A source that will fetch `config.url` at once, then every interval.
    pub fn new(config: HttpSourceConfig) -> Self {
        HttpSource {
            config,
            etag: None,
            next_at: None,
            contact_every: None,
        }
    }

    /// Polls at least every `every`, whatever `interval` says.
    pub fn contact_every(mut self, every: Option<Duration>) -> Self {
        self.contact_every = every;
        self
    }

    /// Time between two polls.
    pub fn interval(&self) -> Duration {
        let i = self.config.interval;
        self.contact_every.map_or(i, |every| i.min(every))
    }

    async fn fetch(&mut self) -> Result<Update, DiscoveryError> {
        let mut headers = Vec::new();
        if let Some(etag) = &self.etag {
            headers.push((http::header::IF_NONE_MATCH, etag.clone()));
        }
        let res = registry_get(&self.config.url, &headers, self.config.timeout).await?;
        if res.status == StatusCode::NOT_MODIFIED && self.etag.is_some() {
            return Ok(Update::Unchanged);
        }
        if !res.status.is_success() {
            return Err(DiscoveryError::BadAnswer(format!(
                "{} answered {}",
                self.config.url, res.status
            )));
        }
        let set = parse_list(&res.body)?;
        self.etag = res.headers.get(http::header::ETAG).cloned();
        Ok(Update::Set(set))
    }
}

impl Discovery for HttpSource {
    async fn next(&mut self) -> Result<Update, DiscoveryError> {
        if let Some(at) = self.next_at {
            tokio::time::sleep_until(at).await;
        }
        self.next_at = Some(Instant::now() + self.interval());
        self.fetch().await
    }
}

/// Parses the JSON body into a set.
pub fn parse_list(body: &[u8]) -> Result<EndpointSet, DiscoveryError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| DiscoveryError::BadAnswer(format!("not JSON: {e}")))?;
    let list = match &value {
        serde_json::Value::Array(list) => list,
        serde_json::Value::Object(map) => match map.get("endpoints") {
            Some(serde_json::Value::Array(list)) => list,
            _ => {
                return Err(DiscoveryError::BadAnswer(
                    "expected a JSON array or an object with an `endpoints` array".into(),
                ))
            }
        },
        _ => {
            return Err(DiscoveryError::BadAnswer(
                "expected a JSON array or an object with an `endpoints` array".into(),
            ))
        }
    };
    let mut set = EndpointSet::new();
    for (i, entry) in list.iter().enumerate() {
        match parse_entry(entry) {
            Ok((addr, weight)) => set.insert(addr, weight, 0),
            Err(why) => {
                tracing::warn!(index = i, entry = %entry, %why, "skipping malformed endpoint entry")
            }
        }
    }
    Ok(set)
}

/// Default poll interval, for docs and tests.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strings_objects_and_skips_garbage() {
        let body = br#"["10.0.0.1:80", {"address": "10.0.0.2:81", "weight": 3},
                        "not-an-address", {"weight": 2}, {"address": "10.0.0.3:82", "weight": 0}, 42]"#;
        let set = parse_list(body).unwrap();
        assert_eq!(set.len(), 2, "{set:?}");
        let w = |a: &str| set.0.get(&a.parse().unwrap()).map(|e| e.weight);
        assert_eq!(w("10.0.0.1:80"), Some(1));
        assert_eq!(w("10.0.0.2:81"), Some(3));
    }

    #[test]
    fn accepts_an_endpoints_object_and_rejects_other_shapes() {
        assert_eq!(
            parse_list(br#"{"endpoints": ["10.0.0.1:80"]}"#)
                .unwrap()
                .len(),
            1
        );
        assert!(parse_list(br#"{"hosts": []}"#).is_err());
        assert!(parse_list(b"<html>").is_err());
        assert!(parse_list(b"\"x\"").is_err());
        assert!(parse_list(b"[]").unwrap().is_empty());
    }
}
