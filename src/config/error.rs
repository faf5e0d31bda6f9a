//! Configuration errors.
//!
//! A config error is read by a person fixing a file, often during an
//! incident, so every error says where (origin, key path such as
//! `pools[1].endpoints[0].weight`, and line/column when known) and what to
//! write instead. `weir check`, startup and reload all print these verbatim.
//!
//! No code path in the loader panics on any input: malformed files are
//! reported through this type, never through `unwrap` (a panic on reload
//! would take down a running proxy because of a typo).

use std::fmt::Write as _;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The path that was read.
        path: String,
        /// The underlying IO error. Part of the message rather than a
        /// `source`: reload results show the message alone, and a source
        /// would make the binary's error chain print it twice.
        error: std::io::Error,
    },

    /// The document is not valid YAML or does not fit the schema (unknown
    /// key, wrong type, missing required key, unparsable duration).
    #[error("{origin}{}: {message}", place(key_path, *line, *column))]
    Parse {
        /// Where the text came from (usually the file path).
        origin: String,
        /// Key path of the offending value, e.g. `pools[0].balance`; empty
        /// for errors at the document root.
        key_path: String,
        /// 1-based line, when the parser knows it.
        line: Option<usize>,
        /// 1-based column, when the parser knows it.
        column: Option<usize>,
        /// What is wrong, and how to fix it.
        message: String,
    },

    /// The document is well-formed but violates a rule (duplicate name,
    /// unknown pool, bad address, weight out of range, ...).
    #[error("{origin}{}: {message}", place(key_path, *line, *column))]
    Invalid {
        /// Where the text came from (usually the file path).
        origin: String,
        /// Key path of the offending value, e.g. `routes[1].pool`.
        key_path: String,
        /// 1-based line of the value, when it could be located.
        line: Option<usize>,
        /// 1-based column of the value, when it could be located.
        column: Option<usize>,
        /// What is wrong, and how to fix it.
        message: String,
    },
}

impl ConfigError {
    /// The key path the error is about (`routes[1].pool`), if any.
    pub fn key_path(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { key_path, .. } | ConfigError::Invalid { key_path, .. } => {
                Some(key_path)
            }
        }
    }

    /// The 1-based line the error points at, if known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { line, .. } | ConfigError::Invalid { line, .. } => *line,
        }
    }

    /// The 1-based column the error points at, if known.
    pub fn column(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { column, .. } | ConfigError::Invalid { column, .. } => *column,
        }
    }
}

/// Formats the `: key.path (line L, column C)` part of a message.
fn place(key_path: &str, line: Option<usize>, column: Option<usize>) -> String {
    let mut out = String::new();
    if !key_path.is_empty() {
        out.push_str(": ");
        out.push_str(key_path);
    }
    match (line, column) {
        (Some(l), Some(c)) => {
            let _ = write!(out, " (line {l}, column {c})");
        }
        (Some(l), None) => {
            let _ = write!(out, " (line {l})");
        }
        _ => {}
    }
    out
}

/// Appends "did you mean `x`?" to serde's "unknown field/variant" messages,
/// which list the accepted names but leave the reader to spot the typo.
pub(crate) fn with_suggestion(message: String) -> String {
    let start = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|p| message.find(p).map(|i| i + p.len()));
    let Some(rest) = start.and_then(|i| message.get(i..)) else {
        return message;
    };
    let Some((word, tail)) = rest.split_once('`') else {
        return message;
    };
    // The accepted names are the backtick-quoted words after the typo.
    let candidates = tail.split('`').skip(1).step_by(2);
    match did_you_mean(word, candidates) {
        Some(best) => format!("{message}; did you mean `{best}`?"),
        None => message,
    }
}

/// The candidate closest to `word` within edit distance 2, if any. Very short
/// words need a closer match, or every two-letter typo would "match" `h2c`.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = if word.chars().count() <= 3 { 1 } else { 2 };
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars (names are short, so O(n·m) is fine).
#[allow(
    clippy::indexing_slicing,
    reason = "both rows have b.len() + 1 entries and j < b.len(), so every index is in range"
)]
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("blance", "balance"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestion_from_serde_messages() {
        let m = with_suggestion(
            "unknown field `blance`, expected one of `name`, `balance`, `load`".into(),
        );
        assert!(m.ends_with("did you mean `balance`?"), "{m}");
        let m = with_suggestion(
            "unknown variant `roundrobin`, expected one of `round_robin`, `least_connections`"
                .into(),
        );
        assert!(m.ends_with("did you mean `round_robin`?"), "{m}");
        let m = with_suggestion("unknown variant `h3`, expected `http1` or `h2c`".into());
        assert!(!m.contains("did you mean"), "{m}");
        let m = with_suggestion("unknown field `zzzzzz`, expected `name`".into());
        assert!(!m.contains("did you mean"), "{m}");
        let m = with_suggestion("invalid type: string".into());
        assert_eq!(m, "invalid type: string");
    }

    #[test]
    fn display_formats() {
        let e = ConfigError::Invalid {
            origin: "config.yaml".into(),
            key_path: "pools[1].endpoints[0].weight".into(),
            line: Some(14),
            column: Some(17),
            message: "weight must be at least 1".into(),
        };
        assert_eq!(
            e.to_string(),
            "config.yaml: pools[1].endpoints[0].weight (line 14, column 17): weight must be at least 1"
        );
        let e = ConfigError::Parse {
            origin: "c.yaml".into(),
            key_path: String::new(),
            line: None,
            column: None,
            message: "empty".into(),
        };
        assert_eq!(e.to_string(), "c.yaml: empty");
    }
}
