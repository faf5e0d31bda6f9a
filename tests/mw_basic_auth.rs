//! `basic_auth` middleware against a live weir: real htpasswd files of
//! bcrypt hashes (made with the `bcrypt` crate, and with Apache's
//! `htpasswd -B` when it is installed), right, wrong, missing and
//! malformed credentials, the 401 challenge, the user passed upstream
//! (a client's own copy removed), `Authorization` stripped when configured,
//! the rejection metric, the file's errors at load, and an edited file
//! reloading the users (a changed password stops working at once).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use common::*;
use http::StatusCode;

/// A config with one `basic_auth` middleware named `auth` (its mapping
/// is `mw`) on the only route, over `backend`.
fn config(backend: SocketAddr, mw: &str, note: &str) -> String {
    format!(
        "# {note}\nlisteners:\n  - name: main\n    bind: \"127.0.0.1:0\"\n\
         admin:\n  bind: \"127.0.0.1:0\"\n\
         access_log:\n  enabled: false\n\
         middleware:\n  - name: auth\n    basic_auth: {mw}\n\
         routes:\n  - pool: p\n    middleware: [auth]\n\
         pools:\n  - name: p\n    endpoints:\n      - address: \"{backend}\"\n"
    )
}

/// An htpasswd file of `users` hashed by the `bcrypt` crate (cost 4, the
/// least, to keep the test fast; `$2y$` as `htpasswd -B` writes).
fn htpasswd(path: &Path, users: &[(&str, &str)]) {
    let mut text = String::from("# made by the test\n\n");
    for (user, password) in users {
        let hash = bcrypt::hash_with_result(password, 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        text += &format!("{user}:{hash}\n");
    }
    std::fs::write(path, text).unwrap();
}

fn basic(user_pass: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass);
    format!("Basic {b64}")
}

/// GET / with the given extra fields; status, fields and body.
async fn hit(
    c: &HttpClient,
    addr: SocketAddr,
    fields: &[(&str, &str)],
) -> (http::response::Parts, String) {
    let mut req = get(addr, "app", "/");
    for (n, v) in fields {
        req.headers_mut().append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let (parts, body) = send(c, req).await;
    (parts, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn right_wrong_missing_and_malformed_credentials() {
    let backend = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.htpasswd");
    htpasswd(&file, &[("alice", "s3cret"), ("bob", "hunter2")]);
    let mw = format!(
        "{{users_file: \"{}\", user_header: X-Auth-User}}",
        file.display()
    );
    let weir = start(&config(backend.addr, &mw, "v1")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();

    let challenge = "Basic realm=\"weir\", charset=\"UTF-8\"";
    let refused: [(&[(&str, &str)], &str); 6] = [
        (&[], "missing_credentials"),
        (&[("authorization", "Bearer abc")], "missing_credentials"),
        (&[("authorization", "Basic !!!not-base64")], "malformed"),
        (&[("authorization", "Basic YWxpY2U=")], "malformed"), // "alice", no colon
        (
            &[("authorization", &basic("alice:wrong"))],
            "bad_credentials",
        ),
        (
            &[("authorization", &basic("mallory:s3cret"))],
            "bad_credentials",
        ),
    ];
    for (fields, reason) in refused {
        let before = rejections(&weir, "auth", reason).await;
        let (parts, _) = hit(&c, addr, fields).await;
        assert_eq!(parts.status, StatusCode::UNAUTHORIZED, "{fields:?}");
        assert_eq!(parts.headers["www-authenticate"], challenge, "{fields:?}");
        assert_eq!(
            rejections(&weir, "auth", reason).await,
            before + 1.0,
            "{fields:?}"
        );
    }
    assert_eq!(backend.count(), 0, "no refused request reached the backend");

    // Right credentials, twice on one keep-alive connection (the second
    // from the cache), with a spoofed user field that must not survive.
    let good = basic("alice:s3cret");
    for _ in 0..2 {
        let fields = [("authorization", good.as_str()), ("x-auth-user", "admin")];
        let (parts, _) = hit(&c, addr, &fields).await;
        assert_eq!(parts.status, StatusCode::OK);
    }
    let (parts, _) = hit(&c, addr, &[("authorization", &basic("bob:hunter2"))]).await;
    assert_eq!(parts.status, StatusCode::OK);
    let seen = backend.requests();
    assert_eq!(seen.len(), 3);
    for (s, user) in seen.iter().zip(["alice", "alice", "bob"]) {
        let users: Vec<_> = s.headers.get_all("x-auth-user").iter().collect();
        assert_eq!(users, [user], "the client's own X-Auth-User is removed");
        // strip_authorization is off by default: the upstream sees it.
        assert!(s.headers.contains_key("authorization"));
    }
}

#[tokio::test]
async fn a_file_made_by_htpasswd_b_works_and_authorization_can_be_stripped() {
    let backend = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.htpasswd");
    let made_by_apache = std::process::Command::new("htpasswd")
        .args(["-B", "-C", "4", "-b", "-c"])
        .arg(&file)
        .args(["carol", "c0rrect horse"])
        .status()
        .is_ok_and(|s| s.success());
    if made_by_apache {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("carol:$2y$04$"), "{text}");
    } else {
        eprintln!("htpasswd (apache2-utils) not installed: using a bcrypt-crate file");
        htpasswd(&file, &[("carol", "c0rrect horse")]);
    }
    let mw = format!(
        "{{users_file: \"{}\", realm: \"staff only\", strip_authorization: true}}",
        file.display()
    );
    let weir = start(&config(backend.addr, &mw, "v1")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();

    let (parts, _) = hit(&c, addr, &[("authorization", &basic("carol:wrong"))]).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        parts.headers["www-authenticate"],
        "Basic realm=\"staff only\", charset=\"UTF-8\""
    );
    let good = basic("carol:c0rrect horse");
    let (parts, _) = hit(&c, addr, &[("authorization", &good)]).await;
    assert_eq!(parts.status, StatusCode::OK);
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].headers.contains_key("authorization"), "stripped");
    assert!(
        !seen[0].headers.contains_key("x-auth-user"),
        "no user_header set"
    );
}

#[tokio::test]
async fn other_hash_schemes_are_refused_at_load_with_the_file_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.htpasswd");
    let md5 = "bob:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/";
    std::fs::write(&file, format!("# users\n{md5}\n")).unwrap();
    let mw = format!("{{users_file: \"{}\"}}", file.display());
    let yaml = config("127.0.0.1:1".parse().unwrap(), &mw, "bad");
    let err = weir::Config::from_yaml(&yaml, "test.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("middleware[0].basic_auth.users_file"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("apr1"), "{err}");
    assert!(err.contains("htpasswd -B"), "{err}");

    let missing = format!("{{users_file: \"{}\"}}", dir.path().join("nope").display());
    let yaml = config("127.0.0.1:1".parse().unwrap(), &missing, "missing");
    let err = weir::Config::from_yaml(&yaml, "test.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn bad_keys_are_refused_with_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.htpasswd");
    htpasswd(&file, &[("alice", "pw")]);
    let f = file.display();
    let cases = [
        (
            "{realm: weir}".to_owned(),
            "basic_auth",
            "`users_file` is required",
        ),
        (
            format!("{{users_file: \"{f}\", realm: 'a\"b'}}"),
            "basic_auth.realm",
            "realm",
        ),
        (
            format!("{{users_file: \"{f}\", user_header: Authorization}}"),
            "basic_auth.user_header",
            "X-Auth-User",
        ),
        (
            format!("{{users_file: \"{f}\", user_header: Host}}"),
            "basic_auth.user_header",
            "set by weir",
        ),
        (
            format!("{{users_file: \"{f}\", realms: x}}"),
            "",
            "unknown field",
        ),
    ];
    for (mw, at, want) in cases {
        let yaml = config("127.0.0.1:1".parse().unwrap(), &mw, "bad");
        let err = weir::Config::from_yaml(&yaml, "test.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("middleware[0].{at}")) || at.is_empty(),
            "{err}"
        );
        assert!(err.contains(want), "{mw}: {err}");
    }
    std::fs::write(&file, "# nobody\n").unwrap();
    let yaml = config(
        "127.0.0.1:1".parse().unwrap(),
        &format!("{{users_file: \"{f}\"}}"),
        "",
    );
    let err = weir::Config::from_yaml(&yaml, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no users"), "{err}");
}

#[tokio::test]
async fn editing_the_users_file_reloads_the_users_and_drops_cached_passwords() {
    let backend = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.htpasswd");
    htpasswd(&file, &[("alice", "old")]);
    let path = dir.path().join("weir.yaml");
    // A relative users_file: resolved against the config's directory.
    let yaml = config(backend.addr, "{users_file: users.htpasswd}", "v1");
    std::fs::write(&path, yaml).unwrap();
    let weir = weir::Weir::start_from_file(&path).await.unwrap();
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let status = |fields: String| {
        let c = c.clone();
        async move { hit(&c, addr, &[("authorization", &fields)]).await.0.status }
    };
    assert_eq!(status(basic("alice:old")).await, StatusCode::OK);
    assert_eq!(status(basic("carol:new")).await, StatusCode::UNAUTHORIZED);
    let hash = weir.shared().snapshot().config.hash.clone();

    htpasswd(&file, &[("alice", "changed"), ("carol", "new")]);
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while status(basic("carol:new")).await != StatusCode::OK {
        assert!(
            tokio::time::Instant::now() < end,
            "the edit was not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(weir.shared().snapshot().config.hash, hash);
    // alice's old password was cached by the old instance: it is gone.
    assert_eq!(status(basic("alice:old")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(basic("alice:changed")).await, StatusCode::OK);

    // A broken edit is refused; the users of the last good file still work.
    let good = weir.shared().snapshot().config.hash.clone();
    std::fs::write(&file, "carol:plaintext\n").unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = scrape(&weir).await;
        let failures = sample(&s, "weir_config_reloads_total", &[("result", "failure")]);
        if failures.unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "no failed reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(weir.shared().snapshot().config.hash, good);
    assert_eq!(status(basic("carol:new")).await, StatusCode::OK);
}
