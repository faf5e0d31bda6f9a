//! Routing a request by host and path: `normalize_host` and
//! `RoutingTable::resolve` see raw client input and must never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weir::routing::{normalize_host, RoutingTable};

/// Exact hosts, wildcards of different depths, overlapping prefixes and a
/// catch-all, so every branch of `resolve` is reachable.
const ROUTES: &str = r#"
listeners:
  - name: main
    bind: "127.0.0.1:1"
routes:
  - name: api
    hosts: [api.example.com, "*.api.example.com"]
    path_prefix: /v1
    pool: p
  - name: api-root
    host: api.example.com
    pool: p
  - name: deep
    hosts: ["*.b.api.example.com"]
    path_prefix: /v1/x/
    pool: p
  - name: static
    host: static.example.com
    path_prefix: /assets
    pool: p
  - name: catch-all
    pool: p
pools:
  - name: p
    endpoints:
      - address: "127.0.0.1:2"
"#;

fn table() -> &'static RoutingTable<usize> {
    static TABLE: OnceLock<RoutingTable<usize>> = OnceLock::new();
    TABLE.get_or_init(|| {
        // A harness bug, not a finding: fail loudly on the first input.
        let config = weir::Config::from_yaml(ROUTES, "routes.yaml").expect("fixed routes");
        let mut n = 0;
        RoutingTable::new(&config.routes, |_| {
            n += 1;
            Some(n)
        })
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte splits the rest into host and path.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (host, path) = rest.split_at(usize::from(split).min(rest.len()));
    let host = String::from_utf8_lossy(host);
    let path = String::from_utf8_lossy(path);
    let table = table();
    // Raw, as if normalisation were skipped, and normalised as the proxy does.
    let _ = table.resolve(&host, &path);
    if let Some(h) = normalize_host(&host) {
        let _ = table.resolve(&h, &path);
    }
});
