//! `headers:` middleware config: fields set, added or removed on the
//! request (before it is forwarded) and on the response (before the client
//! sees it).
//!
//! ```yaml
//! headers:
//!   request:
//!     set: { X-Env: prod }        # replaces every line of that name
//!     add: { X-Tag: edge }        # one more line, the others kept
//!     remove: [X-Debug]
//!   response:
//!     remove: [Server, X-Powered-By]
//!     set: { Strict-Transport-Security: "max-age=31536000" }
//! ```
//!
//! Within one side the order is: `remove`, then `set`, then `add`. Fields
//! that frame the message or belong to one connection (`Content-Length`,
//! `Transfer-Encoding`, `Connection`, `Upgrade`, ...) and `Host` cannot be
//! named: weir sets them itself, and a wrong one would make the message
//! readable two ways (use `pools[].host_header` for the upstream `Host`).

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::config::error::ConfigError;
use crate::config::validate::Validator;

/// `headers:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `request` and/or `response`"
)]
pub struct RawHeadersMiddleware {
    /// Edits of the request.
    pub request: Option<RawHeaderOps>,
    /// Edits of the response.
    pub response: Option<RawHeaderOps>,
}

/// One side's edits as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `set`, `add` and/or `remove`"
)]
pub struct RawHeaderOps {
    /// Name → value; replaces existing lines.
    pub set: Option<BTreeMap<String, String>>,
    /// Name → value; appended.
    pub add: Option<BTreeMap<String, String>>,
    /// Names removed.
    pub remove: Option<Vec<String>>,
}

/// The validated `headers:` middleware.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HeadersConfig {
    /// Applied to the request before it is forwarded.
    pub request: HeaderOps,
    /// Applied to the response before the client gets it.
    pub response: HeaderOps,
}

/// One side's edits, applied `remove`, `set`, `add`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HeaderOps {
    /// Names whose lines are removed.
    pub remove: Vec<HeaderName>,
    /// Lines that replace every line of their name.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Lines appended.
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderOps {
    /// No edit at all.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// Names a middleware may not touch (see the module docs).
pub(super) const RESERVED: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(in crate::config) fn validate(
    v: &Validator<'_>,
    key: &str,
    raw: RawHeadersMiddleware,
) -> Result<HeadersConfig, ConfigError> {
    if raw.request.is_none() && raw.response.is_none() {
        return Err(v.err(key, "nothing to do: add `request:` and/or `response:`"));
    }
    let side = |name: &str, ops: Option<RawHeaderOps>| match ops {
        Some(ops) => self::ops(v, &format!("{key}.{name}"), ops),
        None => Ok(HeaderOps::default()),
    };
    Ok(HeadersConfig {
        request: side("request", raw.request)?,
        response: side("response", raw.response)?,
    })
}

fn ops(v: &Validator<'_>, key: &str, raw: RawHeaderOps) -> Result<HeaderOps, ConfigError> {
    let lines = |what: &str, map: Option<BTreeMap<String, String>>| {
        map.unwrap_or_default()
            .into_iter()
            .map(|(n, value)| {
                let at = format!("{key}.{what}.{n}");
                let name = field_name(v, &at, &n)?;
                let value = HeaderValue::from_str(&value).map_err(|_| {
                    v.err(
                        &at,
                        "the value must be visible ASCII, spaces or tabs (no line breaks)",
                    )
                })?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, ConfigError>>()
    };
    let remove = raw
        .remove
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, n)| field_name(v, &format!("{key}.remove[{i}]"), n))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HeaderOps {
        remove,
        set: lines("set", raw.set)?,
        add: lines("add", raw.add)?,
    })
}

pub(super) fn field_name(
    v: &Validator<'_>,
    key: &str,
    name: &str,
) -> Result<HeaderName, ConfigError> {
    let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        v.err(
            key,
            format!("`{name}` is not a field name (letters, digits and `-`, e.g. `X-Env`)"),
        )
    })?;
    if RESERVED.contains(&parsed.as_str()) {
        return Err(v.err(
            key,
            format!(
                "`{name}` is set by weir itself and cannot be changed by middleware \
                 (for the upstream Host, see `pools[].host_header`)"
            ),
        ));
    }
    Ok(parsed)
}
