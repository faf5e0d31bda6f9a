//! Config loading through the public API: the shipped example, defaults, and
//! one test per rejection rule, each checking that the error names the key
//! path (and the line, where the file contains the offending value).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use weir::config::{
    Algorithm, Config, ConfigError, HostHeader, HostMatch, LoadMetric, UpstreamProtocol,
};

/// The smallest valid config. Line numbers below refer to this layout.
const BASE: &str = "\
listeners:
  - name: public
    bind: 0.0.0.0:8080
routes:
  - pool: app
pools:
  - name: app
    endpoints:
      - address: 127.0.0.1:9001
";

fn load(yaml: &str) -> Config {
    Config::from_yaml(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn reject(yaml: &str) -> ConfigError {
    match Config::from_yaml(yaml, "test.yaml") {
        Ok(c) => panic!("accepted: {c:?}\n---\n{yaml}"),
        Err(e) => e,
    }
}

/// Asserts the key path, line and a fragment of the message, and that the
/// rendered error carries origin and key path.
#[track_caller]
fn assert_rejected(yaml: &str, key_path: &str, line: Option<usize>, fragment: &str) {
    let e = reject(yaml);
    let text = e.to_string();
    assert_eq!(e.key_path(), Some(key_path), "{text}");
    assert_eq!(e.line(), line, "{text}");
    assert!(text.contains(fragment), "missing {fragment:?} in: {text}");
    if key_path.is_empty() {
        assert!(text.starts_with("test.yaml"), "{text}");
    } else {
        assert!(
            text.starts_with(&format!("test.yaml: {key_path}")),
            "{text}"
        );
    }
    if let Some(line) = line {
        assert!(text.contains(&format!("(line {line}, column ")), "{text}");
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------- valid files

#[test]
fn example_file_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].bind, addr("0.0.0.0:8080"));
    assert_eq!(config.admin.bind, addr("127.0.0.1:9901"));
    assert_eq!(config.headers.via.as_deref(), Some("weir"));

    assert_eq!(config.routes.len(), 3);
    assert_eq!(
        config.routes[0].hosts,
        vec![
            HostMatch::Exact("api.example.com".into()),
            HostMatch::Suffix(".api.example.com".into()),
        ]
    );
    assert_eq!(config.routes[0].path_prefix, "/v1");
    assert_eq!(
        config.routes[1].hosts,
        vec![HostMatch::Exact("static.example.com".into())]
    );
    assert_eq!(config.routes[2].name, "route2");
    assert!(config.routes[2].hosts.is_empty());

    assert_eq!(config.pools.len(), 2);
    let api = &config.pools[0];
    assert_eq!(api.balance.algorithm, Algorithm::LeastConnections);
    assert_eq!(api.balance.load, LoadMetric::PeakEwma);
    assert_eq!(api.timeouts.connect, Duration::from_secs(1));
    assert_eq!(api.timeouts.idle, Duration::from_secs(90));
    assert_eq!(api.endpoints[0].weight, 2);
    assert_eq!(api.endpoints[1].weight, 1);
    assert_eq!(config.pools[1].endpoints[1].address, addr("[::1]:9002"));
    assert_eq!(
        config.summary(),
        "1 listener(s), 3 route(s), 2 pool(s), 4 static endpoint(s)"
    );
}

#[test]
fn defaults_are_applied() {
    let c = load(BASE);
    assert_eq!(c.admin.bind, addr("127.0.0.1:9901"));
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    assert!(c.access_log.enabled);
    assert_eq!(c.headers.via, None);

    let r = &c.routes[0];
    assert_eq!(r.name, "route0");
    assert!(r.hosts.is_empty());
    assert_eq!(r.path_prefix, "/");
    assert_eq!(r.pool, "app");

    let p = &c.pools[0];
    assert_eq!(p.balance.algorithm, Algorithm::RoundRobin);
    assert_eq!(p.balance.load, LoadMetric::InFlight);
    assert_eq!(p.balance.peak_ewma.default_rtt, Duration::from_millis(30));
    assert_eq!(p.balance.peak_ewma.decay, Duration::from_secs(10));
    assert_eq!(p.protocol, UpstreamProtocol::Http1);
    assert_eq!(p.host_header, HostHeader::Preserve);
    assert_eq!(p.max_idle_per_endpoint, 64);
    assert_eq!(p.timeouts.connect, Duration::from_secs(2));
    assert_eq!(p.timeouts.response_header, Duration::from_secs(60));
    assert_eq!(p.timeouts.idle, Duration::from_secs(60));
    assert_eq!(p.endpoints[0].address, addr("127.0.0.1:9001"));
    assert_eq!(p.endpoints[0].weight, 1);
}

#[test]
fn global_timeouts_feed_pool_defaults() {
    let c = load(&format!(
        "{BASE}timeouts:\n  connect: 250ms\n  response_header: 1.5s\n  upstream_idle: 1m\n  \
         header_read: 100us\n  client_idle: 1h\n  shutdown_grace: 0s\n"
    ));
    let t = c.pools[0].timeouts;
    assert_eq!(t.connect, Duration::from_millis(250));
    assert_eq!(t.response_header, Duration::from_millis(1500));
    assert_eq!(t.idle, Duration::from_secs(60));
    assert_eq!(c.server.header_read_timeout, Duration::from_micros(100));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(3600));
    assert_eq!(c.server.shutdown_grace, Duration::ZERO);
}

#[test]
fn pool_options_are_mapped() {
    let c = load(
        "\
listeners: [{name: a, bind: \"[::]:80\"}]
admin: {bind: \"127.0.0.1:0\"}
access_log: {enabled: false}
routes: [{pool: grpc}]
pools:
  - name: grpc
    balance: power_of_two_choices
    load: peak_ewma
    peak_ewma: {default_rtt: 5ms, decay: 2s}
    protocol: h2c
    host_header: endpoint
    max_idle_per_endpoint: 0
    endpoints: [{address: \"10.0.0.1:50051\", weight: 1000000}]
",
    );
    assert_eq!(c.admin.bind, addr("127.0.0.1:0"));
    assert!(!c.access_log.enabled);
    let p = &c.pools[0];
    assert_eq!(p.balance.algorithm, Algorithm::PowerOfTwoChoices);
    assert_eq!(p.balance.load, LoadMetric::PeakEwma);
    assert_eq!(p.balance.peak_ewma.default_rtt, Duration::from_millis(5));
    assert_eq!(p.balance.peak_ewma.decay, Duration::from_secs(2));
    assert_eq!(p.protocol, UpstreamProtocol::H2c);
    assert_eq!(p.host_header, HostHeader::Endpoint);
    assert_eq!(p.max_idle_per_endpoint, 0);
    assert_eq!(p.endpoints[0].weight, 1_000_000);
}

#[test]
fn host_patterns_are_normalised() {
    let c = load(&BASE.replace(
        "  - pool: app\n",
        "  - pool: app\n    hosts: [API.Example.COM., \"*.Example.org\"]\n  - pool: app\n    host: Web.Example.net\n",
    ));
    assert_eq!(
        c.routes[0].hosts,
        vec![
            HostMatch::Exact("api.example.com".into()),
            HostMatch::Suffix(".example.org".into()),
        ]
    );
    assert_eq!(
        c.routes[1].hosts,
        vec![HostMatch::Exact("web.example.net".into())]
    );
}

#[test]
fn port_zero_listeners_do_not_conflict() {
    // Tests bind port 0 everywhere; the OS picks distinct ports.
    load(&format!(
        "{}admin: {{bind: \"127.0.0.1:0\"}}\n",
        BASE.replace(
            "    bind: 0.0.0.0:8080\n",
            "    bind: 127.0.0.1:0\n  - name: b\n    bind: 127.0.0.1:0\n"
        )
    ));
}

// ------------------------------------------------------- document-level errors

#[test]
fn empty_document() {
    for text in ["", "\n\n", "# nothing here\n", "---\n"] {
        assert_rejected(text, "", None, "the document is empty");
    }
}

#[test]
fn document_not_a_mapping() {
    assert_rejected(
        "- a\n- b\n",
        "",
        Some(1),
        "expected a mapping with `listeners`, `routes` and `pools`",
    );
}

#[test]
fn yaml_syntax_error_has_line() {
    let e = reject(&format!("{BASE}admin:\n  bind: 1.2.3.4:5\n   x: 1\n"));
    assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
    assert_eq!(e.line(), Some(12), "{e}");
    assert!(!e.to_string().contains(" at line "), "{e}");
}

#[test]
fn missing_sections() {
    let no_listeners = BASE.replace("listeners:\n  - name: public\n    bind: 0.0.0.0:8080\n", "");
    assert_rejected(&no_listeners, "listeners", None, "at least one listener");
    assert_rejected(
        &BASE.replace(
            "listeners:\n  - name: public\n    bind: 0.0.0.0:8080\n",
            "listeners: []\n",
        ),
        "listeners",
        Some(1),
        "at least one listener",
    );
    assert_rejected(
        &BASE.replace("routes:\n  - pool: app\n", ""),
        "routes",
        None,
        "at least one route",
    );
    assert_rejected(
        &BASE.replace("routes:\n  - pool: app\n", "routes: []\n"),
        "routes",
        Some(4),
        "at least one route",
    );
    let no_pools = "listeners: [{name: a, bind: \"0.0.0.0:80\"}]\nroutes: [{pool: x}]\n";
    assert_rejected(no_pools, "pools", None, "at least one pool");
}

#[test]
fn unknown_key_suggests_correction() {
    let yaml = BASE.replace(
        "  - name: app\n",
        "  - name: app\n    blance: least_connections\n",
    );
    let e = reject(&yaml);
    assert_eq!(e.key_path(), Some("pools[0].blance"));
    assert_eq!(e.line(), Some(8));
    let text = e.to_string();
    assert!(text.contains("unknown field `blance`"), "{text}");
    assert!(text.ends_with("did you mean `balance`?"), "{text}");
}

#[test]
fn unknown_top_level_key() {
    assert_rejected(
        &format!("{BASE}timeout:\n  connect: 1s\n"),
        "timeout",
        Some(10),
        "did you mean `timeouts`?",
    );
    // Far from every known key: no suggestion.
    let e = reject(&format!("{BASE}zzzzzzzz: 1\n"));
    assert!(!e.to_string().contains("did you mean"), "{e}");
}

#[test]
fn unknown_enum_value_suggests_correction() {
    assert_rejected(
        &BASE.replace(
            "  - name: app\n",
            "  - name: app\n    balance: roundrobin\n",
        ),
        "pools[0].balance",
        Some(8),
        "did you mean `round_robin`?",
    );
}

#[test]
fn missing_required_key_has_line() {
    assert_rejected(
        &BASE.replace("  - pool: app\n", "  - path_prefix: /x\n"),
        "routes[0]",
        Some(5),
        "missing field `pool`",
    );
}

// ------------------------------------------------------------------ listeners

#[test]
fn duplicate_listener_name() {
    assert_rejected(
        &BASE.replace(
            "    bind: 0.0.0.0:8080\n",
            "    bind: 0.0.0.0:8080\n  - name: public\n    bind: 0.0.0.0:8081\n",
        ),
        "listeners[1].name",
        Some(4),
        "duplicate listener name `public`",
    );
}

#[test]
fn duplicate_listener_bind() {
    assert_rejected(
        &BASE.replace(
            "    bind: 0.0.0.0:8080\n",
            "    bind: 0.0.0.0:8080\n  - name: other\n    bind: 0.0.0.0:8080\n",
        ),
        "listeners[1].bind",
        Some(5),
        "already used by listeners[0]",
    );
    // A wildcard and a specific address on the same port cannot both bind.
    assert_rejected(
        &BASE.replace(
            "    bind: 0.0.0.0:8080\n",
            "    bind: 0.0.0.0:8080\n  - name: other\n    bind: 127.0.0.1:8080\n",
        ),
        "listeners[1].bind",
        Some(5),
        "already used by listeners[0]",
    );
}

#[test]
fn bad_listener_bind() {
    assert_rejected(
        &BASE.replace("0.0.0.0:8080", "0.0.0.0"),
        "listeners[0].bind",
        Some(3),
        "not a socket address",
    );
    assert_rejected(
        &BASE.replace("0.0.0.0:8080", "localhost:8080"),
        "listeners[0].bind",
        Some(3),
        "not hostnames",
    );
}

#[test]
fn admin_bind_equal_to_listener_bind() {
    assert_rejected(
        &format!("{BASE}admin:\n  bind: 0.0.0.0:8080\n"),
        "admin.bind",
        Some(11),
        "also used by listeners[0]",
    );
    // The default admin address counts too.
    assert_rejected(
        &BASE.replace("0.0.0.0:8080", "127.0.0.1:9901"),
        "listeners[0].bind",
        Some(3),
        "admin listener",
    );
}

// --------------------------------------------------------------------- routes

#[test]
fn duplicate_route_name() {
    assert_rejected(
        &BASE.replace(
            "  - pool: app\n",
            "  - name: main\n    pool: app\n  - name: main\n    pool: app\n",
        ),
        "routes[1].name",
        Some(7),
        "duplicate route name `main`",
    );
    // A default name can collide with an explicit one.
    assert_rejected(
        &BASE.replace(
            "  - pool: app\n",
            "  - name: route1\n    pool: app\n  - pool: app\n",
        ),
        "routes[1].name",
        Some(7),
        "duplicate route name `route1`",
    );
}

#[test]
fn route_names_unknown_pool() {
    let yaml = BASE.replace("  - pool: app\n", "  - pool: app\n  - pool: apq\n");
    let e = reject(&yaml);
    assert_eq!(e.key_path(), Some("routes[1].pool"));
    assert_eq!(e.line(), Some(6));
    let text = e.to_string();
    assert!(text.contains("pool `apq`, which is not defined"), "{text}");
    assert!(text.contains("(pools: `app`)"), "{text}");
    assert!(text.contains("did you mean `app`?"), "{text}");

    let e = reject(&BASE.replace("  - pool: app\n", "  - pool: database\n"));
    assert!(!e.to_string().contains("did you mean"), "{e}");
}

#[test]
fn path_prefix_must_start_with_slash() {
    assert_rejected(
        &BASE.replace("  - pool: app\n", "  - pool: app\n    path_prefix: api\n"),
        "routes[0].path_prefix",
        Some(6),
        "must start with `/`",
    );
}

#[test]
fn host_and_hosts_together() {
    assert_rejected(
        &BASE.replace(
            "  - pool: app\n",
            "  - pool: app\n    host: a.com\n    hosts: [b.com]\n",
        ),
        "routes[0].host",
        Some(6),
        "either `host` or `hosts`",
    );
}

#[test]
fn bad_host_patterns() {
    let cases = [
        ("\"*\"", "`*` alone"),
        ("\"a.*.com\"", "only allowed as a whole first label"),
        ("\"*example.com\"", "only allowed as a whole first label"),
        ("\"\"", "must not be empty"),
        ("\"api.example.com:8080\"", "without the port"),
        ("\"a b.com\"", "contains ` `"),
        ("\"a..com\"", "empty label"),
    ];
    for (host, fragment) in cases {
        assert_rejected(
            &BASE.replace(
                "  - pool: app\n",
                &format!("  - pool: app\n    hosts:\n      - ok.com\n      - {host}\n"),
            ),
            "routes[0].hosts[1]",
            Some(8),
            fragment,
        );
    }
    assert_rejected(
        &BASE.replace("  - pool: app\n", "  - pool: app\n    host: \"*\"\n"),
        "routes[0].host",
        Some(6),
        "`*` alone",
    );
}

// ---------------------------------------------------------------------- pools

#[test]
fn duplicate_pool_name() {
    assert_rejected(
        &format!("{BASE}  - name: app\n    endpoints: [{{address: \"127.0.0.1:9002\"}}]\n"),
        "pools[1].name",
        Some(10),
        "duplicate pool name `app`",
    );
}

#[test]
fn pool_without_endpoints() {
    assert_rejected(
        &BASE.replace(
            "    endpoints:\n      - address: 127.0.0.1:9001\n",
            "    endpoints: []\n",
        ),
        "pools[0].endpoints",
        Some(8),
        "pool `app` has no endpoints and no discovery source",
    );
    // Absent key: points at the pool itself.
    assert_rejected(
        &BASE.replace("    endpoints:\n      - address: 127.0.0.1:9001\n", ""),
        "pools[0].endpoints",
        Some(7),
        "pool `app` has no endpoints and no discovery source",
    );
}

#[test]
fn duplicate_endpoint_address() {
    assert_rejected(
        &format!("{BASE}      - address: 127.0.0.1:9001\n"),
        "pools[0].endpoints[1].address",
        Some(10),
        "duplicate endpoint 127.0.0.1:9001",
    );
}

#[test]
fn bad_endpoint_addresses() {
    let cases = [
        (
            "backend.internal:8080",
            "hostnames are resolved by a `dns` discovery source",
        ),
        (
            "localhost:80",
            "hostnames are resolved by a `dns` discovery source",
        ),
        ("10.0.0.1", "has no port"),
        ("10.0.0.1:99999", "not a socket address"),
        ("10.0.0.1:0", "port 0"),
        ("0.0.0.0:80", "wildcard"),
    ];
    for (address, fragment) in cases {
        assert_rejected(
            &BASE.replace("127.0.0.1:9001", address),
            "pools[0].endpoints[0].address",
            Some(9),
            fragment,
        );
    }
}

#[test]
fn weight_out_of_range() {
    let with_weight = |w: &str| format!("{BASE}        weight: {w}\n");
    assert_rejected(
        &with_weight("0"),
        "pools[0].endpoints[0].weight",
        Some(10),
        "weight must be at least 1",
    );
    assert_rejected(
        &with_weight("-3"),
        "pools[0].endpoints[0].weight",
        Some(10),
        "weight must be at least 1 (got -3)",
    );
    assert_rejected(
        &with_weight("1000001"),
        "pools[0].endpoints[0].weight",
        Some(10),
        "weight must be at most 1000000",
    );
    assert_rejected(
        &with_weight("99999999999999999999"),
        "pools[0].endpoints[0].weight",
        Some(10),
        "",
    );
    // A type error is reported by the parser, in the same words.
    assert_rejected(
        &with_weight("1.5"),
        "pools[0].endpoints[0].weight",
        Some(10),
        "expected a whole number from 1 to 1000000",
    );
}

#[test]
fn weight_error_display() {
    let e = reject(&format!("{BASE}        weight: 0\n"));
    assert!(
        e.to_string().starts_with(
            "test.yaml: pools[0].endpoints[0].weight (line 10, column 17): weight must be at least 1"
        ),
        "{e}"
    );
}

#[test]
fn peak_ewma_needs_load_aware_balance() {
    assert_rejected(
        &BASE.replace("  - name: app\n", "  - name: app\n    load: peak_ewma\n"),
        "pools[0].load",
        Some(8),
        "needs `balance: least_connections`",
    );
    assert_rejected(
        &BASE.replace(
            "  - name: app\n",
            "  - name: app\n    balance: round_robin\n    load: peak_ewma\n",
        ),
        "pools[0].load",
        Some(9),
        "round robin",
    );
}

// ------------------------------------------------------------------ durations

#[test]
fn bad_durations_are_parse_errors_with_line() {
    let cases = [
        ("5", "has no unit; add one of `us`, `ms`, `s`, `m` or `h`"),
        ("5d", "unknown unit `d`"),
        ("-1s", "negative"),
        ("\"\"", "empty duration"),
        ("fast", "does not start with a number"),
    ];
    for (value, fragment) in cases {
        let e = reject(&format!("{BASE}timeouts:\n  upstream_idle: {value}\n"));
        assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
        assert_eq!(e.key_path(), Some("timeouts.upstream_idle"), "{e}");
        assert_eq!(e.line(), Some(11), "{e}");
        assert!(e.to_string().contains(fragment), "{value}: {e}");
    }
    assert_rejected(
        &BASE.replace(
            "  - name: app\n",
            "  - name: app\n    timeouts: {idle: 10}\n",
        ),
        "pools[0].timeouts.idle",
        Some(8),
        "has no unit",
    );
}

#[test]
fn zero_timeouts_rejected_where_meaningless() {
    for key in ["connect", "response_header", "header_read"] {
        assert_rejected(
            &format!("{BASE}timeouts:\n  {key}: 0s\n"),
            &format!("timeouts.{key}"),
            Some(11),
            "must be greater than 0",
        );
    }
    for key in ["connect", "response_header"] {
        assert_rejected(
            &BASE.replace(
                "  - name: app\n",
                &format!("  - name: app\n    timeouts:\n      {key}: 0ms\n"),
            ),
            &format!("pools[0].timeouts.{key}"),
            Some(9),
            "must be greater than 0",
        );
    }
    assert_rejected(
        &BASE.replace(
            "  - name: app\n",
            "  - name: app\n    balance: least_connections\n    peak_ewma: {decay: 0s}\n",
        ),
        "pools[0].peak_ewma.decay",
        Some(9),
        "must be greater than 0",
    );
}

#[test]
fn max_stale_below_one_second_is_rejected() {
    let with = |max_stale: &str| {
        BASE.replace(
            "  - name: app\n",
            &format!(
                "  - name: app\n    discovery:\n      - http: {{url: \"http://127.0.0.1:1/x\", max_stale: {max_stale}}}\n"
            ),
        )
    };
    assert_rejected(
        &with("500ms"),
        "pools[0].discovery[0].http.max_stale",
        Some(9),
        "must be at least 1s",
    );
    let config = load(&with("1s"));
    assert_eq!(
        config.pools[0].discovery[0].max_stale,
        Some(Duration::from_secs(1))
    );
}

// -------------------------------------------------------------------- headers

#[test]
fn via_must_be_a_token() {
    assert_rejected(
        &format!("{BASE}headers:\n  via: \"my proxy\"\n"),
        "headers.via",
        Some(11),
        "not a valid Via pseudonym",
    );
}

#[test]
fn read_error_names_the_path() {
    let e = Config::load(Path::new("/nonexistent/weir.yaml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/weir.yaml"), "{e}");
    assert_eq!(e.key_path(), None);
    assert_eq!(e.line(), None);
}
