//! Any bytes given to `Config::from_yaml` give a config or an error, never
//! a panic: the config file is operator input, and a reload must not be
//! able to take the proxy down.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // from_yaml takes text; non-UTF-8 files are rejected earlier by
    // `Config::load`, so lossy conversion still reaches every parser path.
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = weir::Config::from_yaml(&text, "fuzz.yaml") {
        // What startup and reload do with a valid config next.
        let _ = config.warnings();
        let _ = config.summary();
        let _ = config.watched_files();
    }
});
