//! `http_proxy` / `no_proxy` for `iocomp get`, as curl reads them:
//! `http_proxy` in lower case only (never `HTTP_PROXY`: a CGI program gets a
//! request's `Proxy:` header under that name, "httpoxy"); `no_proxy`, then
//! `NO_PROXY`. A proxy is
//! `[http://]host[:port]` (port 1080 when none is given, as in curl); the
//! request then goes to the proxy with an absolute-form target
//! (`GET http://host:port/path HTTP/1.1`). `no_proxy` is a comma-separated
//! list: `*` bypasses the proxy for every host; a name matches itself and
//! every name below it (`example.com` and `.example.com` both match
//! `a.example.com`); an IP address matches itself. Case does not matter, and
//! a port on an entry is ignored.
//!
//! An `https://` URL uses `https_proxy` / `HTTPS_PROXY` instead, through a
//! tunnel: `CONNECT host:port` to the proxy, then TLS with the origin inside
//! it, so the proxy never sees the request in plain text (see
//! [`crate::get`]). The proxy itself is spoken to in plain HTTP
//! (`http://` or no scheme); an `https://` proxy is not supported.

use crate::target::{Target, TargetError};

/// The proxy curl would use for `t` with this environment.
pub fn for_target(t: &Target) -> Result<Option<Target>, TargetError> {
    from(t, &|k| std::env::var(k).ok())
}

/// [`for_target`] with the environment given as a lookup (for tests).
pub fn from(
    t: &Target,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Target>, TargetError> {
    if t.raw {
        return Ok(None);
    }
    let first = |a: &str, b: &str| env(a).or_else(|| env(b)).filter(|v| !v.trim().is_empty());
    let (lower, proxy) = if t.https {
        ("https_proxy", first("https_proxy", "HTTPS_PROXY"))
    } else {
        // Lower case only (httpoxy), as curl.
        let v = env("http_proxy").filter(|v| !v.trim().is_empty());
        ("http_proxy", v)
    };
    let Some(proxy) = proxy else {
        return Ok(None);
    };
    if let Some(list) = first("no_proxy", "NO_PROXY") {
        if bypass(&list, &t.host) {
            return Ok(None);
        }
    }
    parse_proxy(proxy.trim(), lower).map(Some)
}

/// `[http://]host[:port][/]`, port 1080 by default; `var` names the variable in errors.
fn parse_proxy(s: &str, var: &str) -> Result<Target, TargetError> {
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let mut t = Target::parse(&with_scheme, false).map_err(|e| match e {
        TargetError::Malformed(m) => TargetError::Malformed(format!("{var}: {m}")),
        TargetError::Unsupported(m) => TargetError::Unsupported(format!("{var}: {m}")),
    })?;
    if t.https {
        return Err(TargetError::Unsupported(format!(
            "{var}: {s}: a proxy spoken to over TLS (https://) is not supported; give http://host:port"
        )));
    }
    // Target::parse gives 80 for a missing port; tell that from an explicit one.
    let authority = with_scheme
        .split_once("://")
        .map_or("", |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or("");
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    if !has_port {
        t.port = 1080;
    }
    t.path = "/".into();
    Ok(t)
}

/// Whether `no_proxy` (`list`) exempts `host`.
pub fn bypass(list: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host_is_ip = host.parse::<std::net::IpAddr>().is_ok();
    list.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let e = entry
            .strip_prefix('[')
            .map_or(entry, |r| r.split(']').next().unwrap_or(r));
        // A port (`host:80`) is ignored, but not an IPv6 literal's colons.
        let e = match e.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => e,
        };
        let e = e.trim_end_matches('.').to_ascii_lowercase();
        if e.is_empty() {
            return false;
        }
        if host_is_ip || e.parse::<std::net::IpAddr>().is_ok() {
            return host == e;
        }
        let e = e.strip_prefix('.').unwrap_or(&e);
        host == e || host.ends_with(&format!(".{e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn no_proxy_rules_like_curls() {
        assert!(bypass("*", "anything.example"));
        assert!(bypass("example.com", "example.com"));
        assert!(bypass("example.com", "a.b.Example.COM"));
        assert!(bypass(".example.com", "a.example.com"));
        assert!(bypass(".example.com", "example.com"));
        assert!(!bypass("example.com", "badexample.com"));
        assert!(!bypass("a.example.com", "example.com"));
        assert!(bypass("foo, 127.0.0.1 ,bar", "127.0.0.1"));
        assert!(!bypass("127.0.0.1", "127.0.0.10"));
        assert!(bypass("localhost:8080", "localhost"));
        assert!(bypass("[::1]", "::1"));
        assert!(bypass("::1", "::1"));
        assert!(!bypass("", "example.com"));
        assert!(!bypass("*.example.com", "a.example.com"));
    }

    #[test]
    fn proxy_from_the_environment() {
        let t = Target::parse("http://example.com:8000/f", false).unwrap();
        assert_eq!(from(&t, &env(&[])).unwrap(), None);
        let p = from(&t, &env(&[("http_proxy", "proxy.local")]))
            .unwrap()
            .unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.local", 1080));
        let p = from(&t, &env(&[("http_proxy", "http://[::1]:3128/")]))
            .unwrap()
            .unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 3128));
        // HTTP_PROXY in capitals is not read (httpoxy: a CGI program gets a
        // request's `Proxy:` header as HTTP_PROXY), as curl does not.
        assert_eq!(from(&t, &env(&[("HTTP_PROXY", "b:2")])).unwrap(), None);
        let p = from(&t, &env(&[("http_proxy", "a:1"), ("HTTP_PROXY", "b:2")]))
            .unwrap()
            .unwrap();
        assert_eq!(p.host, "a");
        assert_eq!(
            from(
                &t,
                &env(&[("http_proxy", "a:1"), ("NO_PROXY", "example.com")])
            )
            .unwrap(),
            None
        );
        assert_eq!(
            from(&t, &env(&[("http_proxy", "a:1"), ("no_proxy", "*")])).unwrap(),
            None
        );
        assert!(from(&t, &env(&[("http_proxy", "https://a:1")])).is_err());
        // https:// uses https_proxy only.
        let s = Target::parse("https://example.com/f", false).unwrap();
        assert_eq!(from(&s, &env(&[("http_proxy", "a:1")])).unwrap(), None);
        let p = from(&s, &env(&[("HTTPS_PROXY", "b:2")])).unwrap().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("b", 2));
        assert_eq!(
            from(
                &s,
                &env(&[("https_proxy", "b:2"), ("no_proxy", "example.com")])
            )
            .unwrap(),
            None
        );
        assert!(from(&t, &env(&[("https_proxy", "b:2")])).unwrap().is_none());
        let raw = Target::parse("example.com:9/f", true).unwrap();
        assert_eq!(from(&raw, &env(&[("http_proxy", "a:1")])).unwrap(), None);
    }
}
