//! Route middleware on arbitrary requests: a chain of `headers`,
//! `rewrite` (a regex), `redirect`, `ip_filter`, `rate_limit` (keyed by a
//! header) and `jwt` (HS256, so no key fetch) must take any path, host and
//! fields without panicking; a rewritten target is still a path (starts
//! with `/`, parses again); a redirect's `Location` is a valid field value
//! naming an http(s) URL; and the parsers that read client fields on
//! their own (`client_ip::resolve`, Basic credentials, the JWT token's
//! source) accept any bytes.
//!
//! Input: lines — the path and query, the host, then `name: value`
//! fields (a name byte 0..=5 alone picks a field the middleware read).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::future::Future as _;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use libfuzzer_sys::fuzz_target;
use weir::error::RefusalKind;
use weir::metrics::Metrics;
use weir::middleware::{basic_auth, client_ip, Chain, Fields, Request, Set};

const KNOWN: [&str; 6] = [
    "x-forwarded-for",
    "authorization",
    "cookie",
    "x-api-key",
    "x-debug",
    "x-forwarded-prefix",
];

const MIDDLEWARE: &str = r#"
middleware:
  - name: edit
    headers: { request: { set: { X-Env: prod }, add: { X-Tag: a }, remove: [X-Debug] } }
  - name: re
    rewrite: { regex: { pattern: "^/(a|b)(.*)$", replacement: "/${1}x y?#$2" } }
  - name: strip
    rewrite: { strip_prefix: /s }
  - name: to-https
    redirect: { scheme: https, status: 308 }
  - name: nets
    ip_filter: { deny: [203.0.113.0/24] }
  - name: limit
    rate_limit: { average: 1000000, key: { header: X-Api-Key }, max_keys: 64 }
  - name: token
    jwt: { secret_file: SECRET, token: { cookie: session } }
"#;

fn chains() -> &'static (Arc<Chain>, Arc<Chain>) {
    static CHAINS: OnceLock<(Arc<Chain>, Arc<Chain>)> = OnceLock::new();
    CHAINS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("weir-fuzz-mw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("jwt.key");
        std::fs::write(&secret, [7u8; 40]).unwrap();
        let yaml = format!(
            "listeners: [{{name: l, bind: \"127.0.0.1:0\"}}]\n\
             trusted_proxies: [127.0.0.0/8]\n{}\
             routes:\n  - {{path_prefix: /, pool: p, middleware: [edit, re, strip, nets, limit]}}\n\
             \x20 - {{path_prefix: /t, pool: p, middleware: [to-https, token]}}\n\
             pools: [{{name: p, endpoints: [{{address: \"127.0.0.1:9\"}}]}}]\n",
            MIDDLEWARE.replace("SECRET", &secret.display().to_string())
        );
        let config = weir::Config::from_yaml(&yaml, "fuzz.yaml").unwrap();
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        let metrics = METRICS.get_or_init(|| Metrics::new().unwrap());
        let set = Set::build(&config.middleware, None);
        let trusted: Arc<[ipnet::IpNet]> = config.trusted_proxies.as_slice().into();
        let chain = |i: usize| set.chain(&config.routes[i], &trusted, metrics).unwrap();
        (chain(0), chain(1))
    })
}

fn fields(lines: &[&[u8]]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (*line, &b""[..]),
        };
        let name = match name {
            [b] if (*b as usize) < KNOWN.len() => HeaderName::from_static(KNOWN[*b as usize]),
            _ => match HeaderName::from_bytes(name) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        if let Ok(v) = HeaderValue::from_bytes(value.trim_ascii()) {
            map.append(name, v);
        }
    }
    map
}

fn check(chain: &Chain, uri: &Uri, host: &str, map: &HeaderMap, peer: IpAddr) {
    let before = uri.path().to_owned();
    let (mut uri, mut map) = (uri.clone(), map.clone());
    let result = {
        let mut req = Request::new(
            &Method::GET,
            &mut uri,
            Version::HTTP_11,
            Fields::new(&mut map, None),
            host,
            false,
            peer,
            tokio::time::Instant::now(),
        );
        let mut run = pin!(chain.run(&mut req));
        // Nothing in these chains waits (no key fetch, no auth service).
        match run.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("the chain waited"),
        }
    };
    match result {
        Ok(_) => {
            let path = uri.path();
            // `*` (OPTIONS's asterisk form) matches no rule and stays.
            assert!(path.starts_with('/') || path == before, "{path}");
            let again: Uri = uri.to_string().parse().expect("a rewritten target parses");
            assert_eq!(again.path(), path);
        }
        Err((refusal, _)) => {
            if let RefusalKind::Redirect(_) = refusal.kind {
                let loc = refusal.headers.get("location").expect("a redirect has a Location");
                let loc = loc.to_str().expect("visible ASCII");
                assert!(loc.starts_with("https://"), "{loc}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let (Some(target), Some(host)) = (lines.next(), lines.next()) else {
        return;
    };
    let rest: Vec<&[u8]> = lines.collect();
    let map = fields(&rest);
    for value in map.get_all("authorization") {
        let _ = basic_auth::parse_basic(value.as_bytes());
    }
    let trusted: [ipnet::IpNet; 1] = ["127.0.0.0/8".parse().unwrap()];
    let mut copy = map.clone();
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let _ = client_ip::resolve(peer, &trusted, &Fields::new(&mut copy, None));
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    if uri.path_and_query().is_none() || uri.scheme().is_some() {
        return;
    }
    // The proxy hands middleware only a host it validated (proxy::host):
    // a reg-name or bracketed IPv6 address, and digits for a port.
    let Ok(host) = std::str::from_utf8(host) else {
        return;
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !p.contains(']') => (n, p),
        _ => (host, ""),
    };
    let name_ok = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => weir::http1::is_reg_name(name.as_bytes()),
    };
    if !name_ok || !port.bytes().all(|b| b.is_ascii_digit()) {
        return;
    }
    let (plain, secured) = chains();
    check(plain, &uri, host, &map, peer);
    check(secured, &uri, host, &map, peer);
});
