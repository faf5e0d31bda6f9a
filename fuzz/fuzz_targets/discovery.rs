//! Registry answers are remote input: the HTTP list, etcd range, value
//! and watch-message parsers and the Consul health parser must turn any
//! bytes into a result or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::discovery::{consul, etcd, http};

fuzz_target!(|data: &[u8]| {
    let _ = http::parse_list(data);
    let _ = consul::parse_health(data);
    let _ = etcd::parse_value(data);
    let _ = etcd::prefix_end(data);
    if let Ok((mut entries, _revision)) = etcd::parse_range(data) {
        entries.clear();
    }
    if let Ok(msg) = serde_json::from_slice::<serde_json::Value>(data) {
        let mut entries = etcd::Entries::new();
        if let etcd::WatchMessage::Events(events) = etcd::parse_watch_message(&msg) {
            etcd::apply_events(&mut entries, &events);
        }
        // A watch stream wraps each message in `result`; try both shapes.
        let wrapped = serde_json::json!({ "result": msg });
        if let etcd::WatchMessage::Events(events) = etcd::parse_watch_message(&wrapped) {
            etcd::apply_events(&mut entries, &events);
        }
    }
});
