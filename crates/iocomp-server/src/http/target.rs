//! Request-targets (RFC 9112 §3.2): origin-form, absolute-form and asterisk-form.
//!
//! A served method's target must be origin-form (`/path?query`), absolute-form
//! with the `http` scheme (`http://host:port/path?query`, whose authority
//! then replaces `Host`, RFC 9112 §3.2.2), or `*` for OPTIONS. Fragments
//! (`#`) are never part of a request-target and are refused, as is userinfo
//! (`user@host`, deprecated by RFC 9110 §4.2.4 and a phishing vector). The
//! path and query stay percent-encoded; `http::percent` decodes them.

use crate::http::error::HttpError;

/// The bytes allowed in a `Host` value: RFC 3986 authority without userinfo
/// (unreserved, sub-delims, `:`, `[`, `]` and `%` for escapes and zone ids).
static HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let allowed = b"-._~!$&'()*+,;=:[]%";
    let mut i = 0;
    while i < allowed.len() {
        table[allowed[i] as usize] = true;
        i += 1;
    }
    let mut b = 0usize;
    while b < 256 {
        if (b as u8).is_ascii_alphanumeric() {
            table[b] = true;
        }
        b += 1;
    }
    table
};

/// Whether `b` may appear in a `Host` value.
#[inline]
pub(crate) fn is_host_byte(b: u8) -> bool {
    HOST_BYTES[usize::from(b)]
}

/// Splits `target` at the first `?` into the path and the query.
pub(crate) fn split_query(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    match target.iter().position(|&b| b == b'?') {
        Some(q) => (target.get(..q).unwrap_or(target), target.get(q + 1..)),
        None => (target, None),
    }
}

/// The path, query and (for absolute-form) host of a GET/HEAD/OPTIONS target.
pub(crate) type Target<'a> = (&'a [u8], Option<&'a [u8]>, Option<&'a [u8]>);

/// Validates the request-target of a served method and splits it; the
/// asterisk form `*` only when `asterisk` (the method is OPTIONS).
pub(crate) fn split_target(target: &[u8], asterisk: bool) -> Result<Target<'_>, HttpError> {
    if target.contains(&b'#') {
        return Err(HttpError::BadTarget);
    }
    if target == b"*" {
        return match asterisk {
            true => Ok((target, None, None)),
            false => Err(HttpError::BadTarget),
        };
    }
    if target.first() == Some(&b'/') {
        let (path, query) = split_query(target);
        return Ok((path, query, None));
    }
    let scheme = target.get(..7).ok_or(HttpError::BadTarget)?;
    if !scheme.eq_ignore_ascii_case(b"http://") {
        return Err(HttpError::BadTarget);
    }
    let rest = target.get(7..).unwrap_or(b"");
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, tail) = rest.split_at_checked(end).ok_or(HttpError::BadTarget)?;
    if authority.is_empty() || !authority.iter().all(|&b| is_host_byte(b)) {
        return Err(HttpError::BadTarget);
    }
    let (path, query) = split_query(tail);
    let path = if path.is_empty() { &b"/"[..] } else { path };
    Ok((path, query, Some(authority)))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Split<'a> = (&'a [u8], Option<&'a [u8]>, Option<&'a [u8]>);

    fn split(target: &[u8]) -> Result<Split<'_>, HttpError> {
        split_target(target, false)
    }

    #[test]
    fn origin_form() {
        assert_eq!(split(b"/"), Ok((&b"/"[..], None, None)));
        assert_eq!(split(b"/a?b?c"), Ok((&b"/a"[..], Some(&b"b?c"[..]), None)));
        assert_eq!(split(b"/a?"), Ok((&b"/a"[..], Some(&b""[..]), None)));
        assert_eq!(split(b"//a"), Ok((&b"//a"[..], None, None)));
    }

    #[test]
    fn absolute_form() {
        assert_eq!(split(b"http://h"), Ok((&b"/"[..], None, Some(&b"h"[..]))));
        assert_eq!(
            split(b"HTTP://h:1/x?y"),
            Ok((&b"/x"[..], Some(&b"y"[..]), Some(&b"h:1"[..])))
        );
        for bad in [
            &b"http://"[..],
            b"http:///",
            b"http://u@h/",
            b"http://h h/",
            b"https://h/",
            b"http:/",
        ] {
            assert_eq!(split(bad), Err(HttpError::BadTarget), "{bad:?}");
        }
    }

    #[test]
    fn asterisk_and_others() {
        assert_eq!(split_target(b"*", true), Ok((&b"*"[..], None, None)));
        assert_eq!(split(b"*"), Err(HttpError::BadTarget));
        assert_eq!(split(b"x"), Err(HttpError::BadTarget));
        assert_eq!(split(b""), Err(HttpError::BadTarget));
        assert_eq!(split(b"/a#frag"), Err(HttpError::BadTarget));
    }

    #[test]
    fn host_bytes() {
        let ok = b"az09-._~!$&'()*+,;=:[]%";
        assert!(ok.iter().all(|&b| is_host_byte(b)));
        let bad = b" /?#@\"<>{}|^`\x00\x7f\xff";
        assert!(bad.iter().all(|&b| !is_host_byte(b)));
    }
}
