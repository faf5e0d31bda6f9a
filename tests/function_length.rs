//! Every function in `src/` fits on one screen: at most [`MAX_LINES`]
//! lines from its `fn` line to its closing brace, or it says why it is
//! longer in a `// Long: <reason>` comment directly above it (above its
//! doc comment and attributes, or among them). Test functions (`#[test]`,
//! `#[tokio::test]`) are exempt: table-driven tests are legitimately long.
//!
//! Functions are found in the source with comments, strings and char
//! literals blanked out (line breaks kept, so line numbers stay true): each
//! `fn name` whose signature reaches a `{` before a `;` has the body that
//! brace opens, closed by brace matching.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

/// The longest a function may be, in lines including its signature.
const MAX_LINES: usize = 80;

/// One `fn` item found in a source file.
#[derive(Debug, PartialEq)]
struct Function {
    name: String,
    /// 1-based line of the `fn` keyword.
    line: usize,
    /// Lines from the `fn` keyword to the closing brace, both included.
    lines: usize,
    /// Carries `#[test]` or `#[tokio::test]`.
    is_test: bool,
    /// Has a `// Long: <reason>` comment above it.
    long_ok: bool,
}

/// The source with comments, string literals (plain, byte and raw) and
/// char literals replaced by spaces, line breaks kept; lifetimes and labels
/// pass through.
fn blank(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < chars.len() {
        let skip = literal_or_comment_len(&chars, i);
        if skip == 0 {
            out.push(chars[i]);
            i += 1;
        } else {
            for &c in &chars[i..i + skip] {
                out.push(if c == '\n' { '\n' } else { ' ' });
            }
            i += skip;
        }
    }
    out
}

/// How many chars the comment or literal starting at `chars[i]` spans
/// (0 if none starts there).
fn literal_or_comment_len(chars: &[char], i: usize) -> usize {
    let at = |k: usize| chars.get(k).copied();
    let ident_before = i > 0 && is_ident(chars[i - 1]);
    match chars[i] {
        '/' if at(i + 1) == Some('/') => (i..chars.len())
            .find(|&k| chars[k] == '\n')
            .map_or(chars.len() - i, |k| k - i),
        '/' if at(i + 1) == Some('*') => block_comment_len(chars, i),
        '"' => quoted_len(chars, i, '"'),
        'b' if !ident_before && at(i + 1) == Some('"') => 1 + quoted_len(chars, i + 1, '"'),
        'b' if !ident_before && at(i + 1) == Some('\'') => 1 + quoted_len(chars, i + 1, '\''),
        'b' if !ident_before && at(i + 1) == Some('r') => match raw_string_len(chars, i + 1) {
            0 => 0,
            n => 1 + n,
        },
        'r' if !ident_before => raw_string_len(chars, i),
        // A char literal (`'{'`, `'\''`, `'\u{7d}'`), not a lifetime.
        '\'' if at(i + 1) == Some('\\') || at(i + 2) == Some('\'') => quoted_len(chars, i, '\''),
        _ => 0,
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A `"…"` or `'…'` literal opening at `chars[i]`, escapes honoured.
fn quoted_len(chars: &[char], i: usize, quote: char) -> usize {
    let mut k = i + 1;
    while k < chars.len() {
        match chars[k] {
            '\\' => k += 2,
            c if c == quote => return k + 1 - i,
            _ => k += 1,
        }
    }
    chars.len() - i
}

/// A `r"…"` / `r#"…"#` literal opening at `chars[i] == 'r'`, or 0 (a raw
/// identifier `r#name` or a plain `r`).
fn raw_string_len(chars: &[char], i: usize) -> usize {
    let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
    let open = i + 1 + hashes;
    if chars.get(open) != Some(&'"') {
        return 0;
    }
    let closing: Vec<char> = std::iter::once('"')
        .chain(std::iter::repeat_n('#', hashes))
        .collect();
    (open + 1..chars.len())
        .find(|&k| chars[k..].starts_with(&closing))
        .map_or(chars.len() - i, |k| k + closing.len() - i)
}

/// A `/* … */` comment opening at `chars[i]`; these nest.
fn block_comment_len(chars: &[char], i: usize) -> usize {
    let (mut depth, mut k) = (0usize, i);
    while k + 1 < chars.len() {
        match (chars[k], chars[k + 1]) {
            ('/', '*') => {
                depth += 1;
                k += 2;
            }
            ('*', '/') => {
                depth -= 1;
                k += 2;
                if depth == 0 {
                    return k - i;
                }
            }
            _ => k += 1,
        }
    }
    chars.len() - i
}

/// Every `fn` item with a body in `src`.
fn functions(src: &str) -> Vec<Function> {
    let code = blank(src);
    let chars: Vec<char> = code.chars().collect();
    // line_at[k]: the 1-based line of chars[k].
    let line_at: Vec<usize> = chars
        .iter()
        .scan(1, |line, &c| {
            let at = *line;
            *line += usize::from(c == '\n');
            Some(at)
        })
        .collect();
    let above = Preambles::new(src, &code);
    let mut found = Vec::new();
    for k in 0..chars.len() {
        let is_keyword = chars[k..].starts_with(&['f', 'n'])
            && (k == 0 || !is_ident(chars[k - 1]))
            && chars.get(k + 2).is_some_and(|c| c.is_whitespace());
        if !is_keyword {
            continue;
        }
        let name_at = (k + 2..chars.len()).find(|&n| !chars[n].is_whitespace());
        let Some(name_at) = name_at.filter(|&n| is_ident(chars[n])) else {
            continue; // `fn(u8) -> u8` types, `fn $name` in macros
        };
        let name: String = chars[name_at..]
            .iter()
            .take_while(|&&c| is_ident(c))
            .collect();
        let Some(end) = body_end(&chars, name_at) else {
            continue; // a declaration without a body
        };
        let line = line_at[k];
        let (is_test, long_ok) = above.read(line);
        found.push(Function {
            name,
            line,
            lines: line_at[end] - line + 1,
            is_test,
            long_ok,
        });
    }
    found
}

/// The index of the `}` closing the body of the function whose signature
/// starts at `from`, or `None` if a `;` ends the signature first.
fn body_end(chars: &[char], from: usize) -> Option<usize> {
    let mut nesting = 0usize; // parentheses and brackets in the signature
    let mut open = None;
    for (k, &c) in chars.iter().enumerate().skip(from) {
        match c {
            '(' | '[' => nesting += 1,
            ')' | ']' => nesting = nesting.saturating_sub(1),
            ';' if nesting == 0 => return None,
            '{' if nesting == 0 => {
                open = Some(k);
                break;
            }
            _ => {}
        }
    }
    let mut depth = 0usize;
    for (k, &c) in chars.iter().enumerate().skip(open?) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// What is written above functions: the lines of a file, as written and
/// blanked, and which of them are attributes.
struct Preambles<'a> {
    src: Vec<&'a str>,
    code: Vec<&'a str>,
    in_attribute: Vec<bool>,
}

impl<'a> Preambles<'a> {
    fn new(src: &'a str, code: &'a str) -> Self {
        Self {
            src: src.lines().collect(),
            code: code.lines().collect(),
            in_attribute: attribute_lines(code),
        }
    }

    /// Whether the function on 1-based `line` is a test and whether it has
    /// a `// Long:` reason, read from the block of attribute, doc comment
    /// and comment lines directly above it (and from its own line, for an
    /// attribute written before `fn`).
    fn read(&self, line: usize) -> (bool, bool) {
        let mut attributes = self.code[line - 1].to_owned();
        let mut long_ok = false;
        for l in (0..line - 1).rev() {
            let text = self.src[l].trim();
            let is_comment = !text.is_empty() && self.code[l].trim().is_empty();
            if !(is_comment || self.in_attribute[l]) {
                break;
            }
            if let Some(reason) = text.strip_prefix("// Long:") {
                long_ok |= !reason.trim().is_empty();
            }
            attributes.push_str(self.code[l]);
        }
        let compact: String = attributes.split_whitespace().collect();
        let is_test = compact.contains("#[test]") || compact.contains("#[tokio::test");
        (is_test, long_ok)
    }
}

/// For each line of blanked `code`, whether it belongs to an outer
/// attribute (`#[…]`) that opens a line, following the attribute over
/// the lines it spans.
fn attribute_lines(code: &str) -> Vec<bool> {
    let mut covered = vec![false; code.lines().count()];
    for line in code.lines().enumerate().filter_map(|(n, l)| {
        let t = l.trim_start();
        t.starts_with("#[").then_some(n)
    }) {
        // Follow the attribute to its closing bracket.
        let mut depth = 0i32;
        for (n, l) in code.lines().enumerate().skip(line) {
            covered[n] = true;
            for c in l.chars() {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    _ => {}
                }
            }
            if depth <= 0 {
                break;
            }
        }
    }
    covered
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `path:line name (N lines)` for each function of `src` that is too
/// long and neither a test nor exempted.
fn violations(path: &str, src: &str) -> Vec<String> {
    functions(src)
        .into_iter()
        .filter(|f| f.lines > MAX_LINES && !f.is_test && !f.long_ok)
        .map(|f| format!("{path}:{} {} ({} lines)", f.line, f.name, f.lines))
        .collect()
}

#[test]
fn no_function_in_src_is_too_long() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut too_long = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(root).unwrap().display().to_string();
        too_long.extend(violations(&rel, &std::fs::read_to_string(file).unwrap()));
    }
    assert!(
        too_long.is_empty(),
        "functions over {MAX_LINES} lines without a `// Long: <why>` comment above them:\n{}",
        too_long.join("\n")
    );
}

/// A function named `name` whose body has `body_lines` lines, so
/// `body_lines + 2` in all.
fn synthetic(name: &str, body_lines: usize) -> String {
    let body: String = (0..body_lines)
        .map(|n| format!("    let _v{n} = {n};\n"))
        .collect();
    format!("fn {name}() {{\n{body}}}\n")
}

#[test]
fn the_scanner_measures_short_and_long_functions() {
    let src = format!(
        "//! module docs\n{}\n/// Docs.\n#[inline]\n{}",
        synthetic("short", 3),
        synthetic("long", 90)
    );
    let found = functions(&src);
    let summary: Vec<_> = found
        .iter()
        .map(|f| (f.name.as_str(), f.line, f.lines))
        .collect();
    assert_eq!(summary, [("short", 2, 5), ("long", 10, 92)]);
    assert!(found.iter().all(|f| !f.is_test && !f.long_ok));
}

#[test]
fn a_long_comment_exempts_only_the_function_it_heads() {
    let src = format!(
        "// Long: one table of cases.\n/// Docs.\n#[allow(\n    dead_code\n)]\n{}\n// Long:\n{}\n// Long: not directly above.\n\n{}",
        synthetic("exempt", 90),
        synthetic("no_reason", 90),
        synthetic("separated", 90)
    );
    let found = functions(&src);
    let exempt: Vec<_> = found.iter().map(|f| (f.name.as_str(), f.long_ok)).collect();
    assert_eq!(
        exempt,
        [("exempt", true), ("no_reason", false), ("separated", false)]
    );
}

#[test]
fn test_functions_are_recognised() {
    let src = "#[test]\nfn plain() {}\n\
               #[tokio::test(start_paused = true)]\nasync fn paused() {}\n\
               #[cfg(test)]\nfn helper() {}\n";
    let tests: Vec<_> = functions(src)
        .iter()
        .map(|f| (f.name.clone(), f.is_test))
        .collect();
    assert_eq!(
        tests,
        [
            ("plain".into(), true),
            ("paused".into(), true),
            ("helper".into(), false)
        ]
    );
}

#[test]
fn braces_in_strings_chars_and_comments_do_not_count() {
    let src = "fn tricky<'a>(s: &'a str) -> bool {\n\
               \x20   let open = '{'; let close = '}'; let q = '\\'';\n\
               \x20   let t = \"}}} \\\" {\"; let r = r#\"}\"#; let b = b'}';\n\
               \x20   // }\n\
               \x20   /* } /* nested } */ } */\n\
               \x20   'outer: loop { break 'outer; }\n\
               \x20   s.is_empty() && open != close && q != ' ' && !t.is_empty()\n\
               }\n\
               fn after() {}\n\
               trait T { fn declared(&self); fn provided(&self) { let f: fn(u8) = drop; } }\n";
    let found: Vec<_> = functions(src)
        .iter()
        .map(|f| (f.name.clone(), f.line, f.lines))
        .collect();
    assert_eq!(
        found,
        [
            ("tricky".into(), 1, 8),
            ("after".into(), 9, 1),
            ("provided".into(), 10, 1)
        ]
    );
}

#[test]
fn long_tests_are_exempt_but_long_helpers_in_test_modules_are_not() {
    let src = format!(
        "#[cfg(test)]\nmod tests {{\n#[test]\n{}\n#[tokio::test]\nasync {}\n{}\n{}}}\n",
        synthetic("table", 90),
        synthetic("async_table", 90),
        synthetic("helper", 90),
        synthetic("fits", MAX_LINES - 2),
    );
    assert_eq!(
        violations("src/x.rs", &src),
        ["src/x.rs:191 helper (92 lines)"]
    );
}
