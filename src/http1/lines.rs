//! Finding the end of a block of CRLF-terminated lines (a request head or
//! a trailer section), strictly: every line ends in CRLF, a bare CR or a
//! bare LF anywhere is an error, and so is a line that starts with
//! whitespace (obs-fold, or junk before the request line).
//!
//! httparse accepts bare LF line endings; weir re-serializes what it
//! parses, but a peer that splits lines differently from weir is exactly
//! what request smuggling feeds on, so these are refused before httparse
//! sees the block. The scan is resumable ([`BlockScan`] remembers how far
//! it got), so feeding a block byte by byte costs linear time.

use memchr::memchr2;

/// Why a block's lines are not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineError {
    /// A LF not preceded by CR.
    BareLf,
    /// A CR not followed by LF.
    BareCr,
    /// A line starting with SP or HTAB.
    LeadingWhitespace,
}

impl LineError {
    /// A short reason, for error messages.
    pub(super) fn reason(self) -> &'static str {
        match self {
            LineError::BareLf => "bare LF",
            LineError::BareCr => "bare CR",
            LineError::LeadingWhitespace => "line starts with whitespace (obs-fold)",
        }
    }
}

/// Resumable scan of a block: where the current line starts and how far
/// the bytes have been seen to hold no CR or LF.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct BlockScan {
    line_start: usize,
    pos: usize,
    lines: usize,
}

impl BlockScan {
    /// Non-empty lines completed so far.
    pub(super) fn lines(&self) -> usize {
        self.lines
    }

    /// Scans `buf` (which must start where the block starts and only have
    /// grown since the last call) within its first `limit` bytes.
    /// `Ok(Some(end))`: the block, final empty line included, is
    /// `buf[..end]`. `Ok(None)`: not within what is there (or within
    /// `limit`; the caller compares `buf.len()` with it).
    pub(super) fn scan(&mut self, buf: &[u8], limit: usize) -> Result<Option<usize>, LineError> {
        let window = buf.get(..limit.min(buf.len())).unwrap_or(buf);
        loop {
            if self.pos == self.line_start {
                if let Some(b' ' | b'\t') = window.get(self.pos) {
                    return Err(LineError::LeadingWhitespace);
                }
            }
            let rest = window.get(self.pos..).unwrap_or_default();
            let Some(found) = memchr2(b'\r', b'\n', rest) else {
                self.pos = window.len();
                return Ok(None);
            };
            let at = self.pos + found;
            if window.get(at) == Some(&b'\n') {
                return Err(LineError::BareLf);
            }
            match window.get(at + 1) {
                None => {
                    // The LF may still come: look at this CR again then.
                    self.pos = at;
                    return Ok(None);
                }
                Some(b'\n') => {}
                Some(_) => return Err(LineError::BareCr),
            }
            if at == self.line_start {
                return Ok(Some(at + 2));
            }
            self.lines += 1;
            self.line_start = at + 2;
            self.pos = at + 2;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn scan_all(buf: &[u8], limit: usize) -> Result<Option<usize>, LineError> {
        BlockScan::default().scan(buf, limit)
    }

    #[test]
    fn block_ends_at_first_empty_line() {
        let buf = b"a: b\r\nc: d\r\n\r\nbody\r\n\r\n";
        let mut scan = BlockScan::default();
        assert_eq!(scan.scan(buf, 100), Ok(Some(14)));
        assert_eq!(scan.lines(), 2);
        assert_eq!(scan_all(b"\r\n", 100), Ok(Some(2)));
    }

    #[test]
    fn bare_lf_bare_cr_and_leading_whitespace_are_errors() {
        assert_eq!(scan_all(b"a: b\nc: d\r\n\r\n", 100), Err(LineError::BareLf));
        assert_eq!(scan_all(b"a: b\r\n\n", 100), Err(LineError::BareLf));
        assert_eq!(scan_all(b"a: \rb\r\n\r\n", 100), Err(LineError::BareCr));
        assert_eq!(
            scan_all(b"a: b\r\n c\r\n\r\n", 100),
            Err(LineError::LeadingWhitespace)
        );
        assert_eq!(
            scan_all(b"a: b\r\n\tc\r\n\r\n", 100),
            Err(LineError::LeadingWhitespace)
        );
    }

    #[test]
    fn resumed_scan_matches_one_pass() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\nrest";
        let mut scan = BlockScan::default();
        let mut found = None;
        for len in 0..=buf.len() {
            if let Some(end) = scan.scan(&buf[..len], 1000).unwrap() {
                found = Some((len, end));
                break;
            }
        }
        assert_eq!(found, Some((33, 33)));
        assert_eq!(scan.lines(), 3);
    }

    #[test]
    fn nothing_past_the_limit_is_looked_at() {
        // The block ends at 12, past the limit of 11: not found.
        assert_eq!(scan_all(b"abcdefgh\r\n\r\n", 11), Ok(None));
        assert_eq!(scan_all(b"abcdefgh\r\n\r\n", 12), Ok(Some(12)));
        // A bare LF past the limit is not seen either.
        assert_eq!(scan_all(b"ab\r\n\n", 4), Ok(None));
    }
}
