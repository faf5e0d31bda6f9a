//! `rewrite:` middleware config: the request path changed before it is
//! forwarded; the query is kept as it came.
//!
//! ```yaml
//! rewrite: { strip_prefix: /api }                       # /api/users → /users
//! rewrite: { replace_prefix: { from: /v1, to: /v2 } }   # /v1/x → /v2/x
//! rewrite: { regex: { pattern: "^/u/(\\d+)$", replacement: "/users/$1" } }
//! ```
//!
//! Exactly one of the three. Prefixes are plain string prefixes, like
//! route prefixes; a path the rule does not match is forwarded unchanged.

use serde::Deserialize;

use crate::config::error::ConfigError;
use crate::config::validate::Validator;

/// `rewrite:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with one of `strip_prefix`, `replace_prefix` or `regex`"
)]
pub struct RawRewrite {
    /// Prefix removed from the path.
    pub strip_prefix: Option<String>,
    /// Prefix replaced by another.
    pub replace_prefix: Option<RawReplacePrefix>,
    /// A regular expression replacement on the path.
    pub regex: Option<RawRegex>,
}

/// `replace_prefix:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `from` and `to`")]
pub struct RawReplacePrefix {
    /// The prefix matched.
    pub from: String,
    /// What it becomes.
    pub to: String,
}

/// `regex:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `pattern` and `replacement`"
)]
pub struct RawRegex {
    /// A regular expression (Rust `regex` syntax) matched against the path.
    pub pattern: String,
    /// The replacement; `$1`, `${name}` refer to capture groups.
    pub replacement: String,
}

/// The validated `rewrite:` middleware.
#[derive(Clone, Debug)]
pub enum RewriteConfig {
    /// Remove this prefix (the path keeps a leading `/`).
    StripPrefix(String),
    /// Replace `from` with `to`.
    ReplacePrefix {
        /// The prefix matched.
        from: String,
        /// Its replacement.
        to: String,
    },
    /// Replace the first match of `pattern` (the whole path is searched).
    Regex {
        /// The compiled pattern.
        pattern: regex::Regex,
        /// The replacement, with `$n` / `${name}` references.
        replacement: String,
    },
}

impl PartialEq for RewriteConfig {
    fn eq(&self, other: &Self) -> bool {
        use RewriteConfig::*;
        match (self, other) {
            (StripPrefix(a), StripPrefix(b)) => a == b,
            (ReplacePrefix { from: f1, to: t1 }, ReplacePrefix { from: f2, to: t2 }) => {
                f1 == f2 && t1 == t2
            }
            (
                Regex {
                    pattern: p1,
                    replacement: r1,
                },
                Regex {
                    pattern: p2,
                    replacement: r2,
                },
            ) => p1.as_str() == p2.as_str() && r1 == r2,
            _ => false,
        }
    }
}

pub(in crate::config) fn validate(
    v: &Validator<'_>,
    key: &str,
    raw: RawRewrite,
) -> Result<RewriteConfig, ConfigError> {
    let set = [
        raw.strip_prefix.is_some(),
        raw.replace_prefix.is_some(),
        raw.regex.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(v.err(
            key,
            "set exactly one of `strip_prefix`, `replace_prefix` or `regex`",
        ));
    }
    if let Some(p) = raw.strip_prefix {
        prefix(v, &format!("{key}.strip_prefix"), &p)?;
        return Ok(RewriteConfig::StripPrefix(p));
    }
    if let Some(r) = raw.replace_prefix {
        prefix(v, &format!("{key}.replace_prefix.from"), &r.from)?;
        prefix(v, &format!("{key}.replace_prefix.to"), &r.to)?;
        return Ok(RewriteConfig::ReplacePrefix {
            from: r.from,
            to: r.to,
        });
    }
    let Some(r) = raw.regex else {
        return Err(v.err(
            key,
            "set one of `strip_prefix`, `replace_prefix` or `regex`",
        ));
    };
    let pattern = regex::Regex::new(&r.pattern).map_err(|e| {
        v.err(
            format!("{key}.regex.pattern"),
            format!("not a valid regular expression: {e}"),
        )
    })?;
    Ok(RewriteConfig::Regex {
        pattern,
        replacement: r.replacement,
    })
}

fn prefix(v: &Validator<'_>, key: &str, p: &str) -> Result<(), ConfigError> {
    if !p.starts_with('/') {
        return Err(v.err(key, format!("`{p}` must start with `/`, e.g. `/{p}`")));
    }
    if p.contains(['?', '#']) || p.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(v.err(
            key,
            format!("`{p}` must be a path: no `?`, `#`, spaces or control characters"),
        ));
    }
    Ok(())
}
