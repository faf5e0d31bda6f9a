//! `redirect`: answers with a redirect (`Location`) to another scheme,
//! host, port or path, keeping the query. A request already at its target
//! passes on, so a scheme redirect can sit on a route that both the HTTP
//! and the HTTPS listener serve. A request without a host cannot be
//! redirected to a scheme or port alone and passes on too.
//!
//! A scheme change without `port:` drops the request's port (the new
//! scheme's default port, as Traefik does); the default port of the
//! scheme is never written.

use std::sync::Arc;

use http::header::{HeaderValue, LOCATION};

use crate::config::middleware::redirect::PathChange;
use crate::config::middleware::RedirectConfig;
use crate::error::{Refusal, RefusalKind};

use super::Request;

/// A compiled `redirect`.
#[derive(Debug)]
pub struct Redirect {
    config: RedirectConfig,
}

/// Where a request is, or where it should go.
#[derive(Debug, PartialEq, Eq)]
struct Place<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
    path: std::borrow::Cow<'a, str>,
}

impl Redirect {
    /// The redirect of `config`.
    pub fn new(config: &RedirectConfig) -> Self {
        Redirect {
            config: config.clone(),
        }
    }

    /// The `Location` for a request, or `None` when it is already there.
    pub fn location(
        &self,
        tls: bool,
        host: &str,
        path: &str,
        query: Option<&str>,
    ) -> Option<String> {
        let (host_now, port_now) = split_host(host)?;
        let scheme_now = if tls { "https" } else { "http" };
        let here = Place {
            scheme: scheme_now,
            host: host_now,
            port: port_now.filter(|p| Some(*p) != default_port(scheme_now)),
            path: path.into(),
        };
        let c = &self.config;
        let scheme = c.scheme.unwrap_or(scheme_now);
        let port = match c.port {
            Some(p) => Some(p),
            None if scheme != scheme_now => None,
            None => here.port,
        };
        let there = Place {
            scheme,
            host: c.host.as_deref().unwrap_or(host_now),
            port: port.filter(|p| Some(*p) != default_port(scheme)),
            path: match &c.path {
                PathChange::Keep => path.into(),
                PathChange::Replace(p) => p.as_str().into(),
                PathChange::ReplacePrefix { from, to } => match path.strip_prefix(from.as_str()) {
                    Some(rest) => format!("{to}{rest}").into(),
                    None => path.into(),
                },
            },
        };
        let same_host = there.host.eq_ignore_ascii_case(here.host);
        if same_host
            && there.scheme == here.scheme
            && there.port == here.port
            && there.path == here.path
        {
            return None;
        }
        let mut loc = format!("{}://{}", there.scheme, there.host);
        if let Some(p) = there.port {
            loc.push_str(&format!(":{p}"));
        }
        // A target with bytes a URL cannot hold as they are (HTTP/2 lets
        // non-ASCII through) goes out percent-encoded: `Location` stays
        // visible ASCII.
        super::rewrite::encode_into(&mut loc, &there.path, b"/");
        if let Some(q) = query {
            loc.push('?');
            super::rewrite::encode_into(&mut loc, q, b"/?");
        }
        Some(loc)
    }

    pub(super) fn apply(&self, name: &Arc<str>, req: &mut Request<'_>) -> Result<(), Box<Refusal>> {
        let Some(loc) = self.location(req.tls, req.host, req.uri.path(), req.uri.query()) else {
            return Ok(());
        };
        let Ok(value) = HeaderValue::try_from(loc) else {
            return Ok(());
        };
        let mut refusal = Refusal::new(name, RefusalKind::Redirect(self.config.status), "redirect");
        refusal.headers.insert(LOCATION, value);
        Err(Box::new(refusal))
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `host[:port]` (the host already validated by the proxy), the IPv6
/// brackets kept on the host; `None` for an empty host.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    if host.is_empty() {
        return None;
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => (name, port.parse().ok()),
        _ => (host, None),
    };
    Some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn redirect(
        scheme: Option<&'static str>,
        host: Option<&str>,
        port: Option<u16>,
        path: PathChange,
    ) -> Redirect {
        Redirect::new(&RedirectConfig {
            scheme,
            host: host.map(str::to_owned),
            port,
            path,
            status: StatusCode::PERMANENT_REDIRECT,
        })
    }

    #[test]
    fn scheme_redirects_drop_the_port_and_keep_the_query() {
        let r = redirect(Some("https"), None, None, PathChange::Keep);
        assert_eq!(
            r.location(false, "example.com:8080", "/a/b", Some("x=1&y"))
                .as_deref(),
            Some("https://example.com/a/b?x=1&y")
        );
        assert_eq!(r.location(true, "example.com", "/a", None), None);
        assert_eq!(r.location(false, "", "/a", None), None);
        assert_eq!(
            r.location(false, "[2001:db8::1]:80", "/", None).as_deref(),
            Some("https://[2001:db8::1]/")
        );
    }

    #[test]
    fn host_port_and_path_redirects() {
        let r = redirect(None, Some("www.example.com"), None, PathChange::Keep);
        assert_eq!(
            r.location(true, "example.com", "/p", None).as_deref(),
            Some("https://www.example.com/p")
        );
        assert_eq!(r.location(true, "WWW.example.com", "/p", None), None);
        let r = redirect(Some("https"), None, Some(8443), PathChange::Keep);
        assert_eq!(
            r.location(false, "h:8080", "/", None).as_deref(),
            Some("https://h:8443/")
        );
        let r = redirect(
            None,
            None,
            None,
            PathChange::ReplacePrefix {
                from: "/old".into(),
                to: "/new".into(),
            },
        );
        assert_eq!(
            r.location(false, "h", "/old/x", Some("q")).as_deref(),
            Some("http://h/new/x?q")
        );
        assert_eq!(r.location(false, "h", "/other", None), None);
        let r = redirect(None, None, None, PathChange::Replace("/gone".into()));
        assert_eq!(
            r.location(false, "h:81", "/x", None).as_deref(),
            Some("http://h:81/gone")
        );
        // Bytes a URL cannot hold as they are go out percent-encoded.
        let r = redirect(Some("https"), None, None, PathChange::Keep);
        assert_eq!(
            r.location(false, "h", "/caf\u{e9}", Some("q=\u{e9}&x=%41"))
                .as_deref(),
            Some("https://h/caf%C3%A9?q=%C3%A9&x=%41")
        );
    }
}
