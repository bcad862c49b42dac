//! Where a client command goes: `http://host[:port]/path` or
//! `https://host[:port]/path` for HTTP, or
//! `host:port/name` for the line protocol (`--raw`). IPv6 literals go in
//! brackets (`http://[::1]:8182/a`, `[::1]:8182/a`).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// A parsed target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host as written (brackets removed from an IPv6 literal).
    pub host: String,
    /// Port (80 when an `http://` URL has none, 443 for `https://`).
    pub port: u16,
    /// For HTTP the request target (starts with `/`); for the line protocol
    /// the file name sent (no leading `/`).
    pub path: String,
    /// Line protocol (`--raw`) rather than HTTP.
    pub raw: bool,
    /// `https://`: HTTP inside TLS.
    pub https: bool,
}

/// Why a target could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Not parsable.
    Malformed(String),
    /// `https://` and other schemes.
    Unsupported(String),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Malformed(s) => write!(f, "malformed URL: {s}"),
            TargetError::Unsupported(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for TargetError {}

impl Target {
    /// Parses `s`: with `raw`, `host:port/name` (an `http://` prefix is also
    /// accepted, and its port kept); without, an `http://` URL.
    pub fn parse(s: &str, raw: bool) -> Result<Target, TargetError> {
        let bad = |why: &str| TargetError::Malformed(format!("{s:?}: {why}"));
        let lower = s.to_ascii_lowercase();
        let https = lower.starts_with("https://");
        if https && raw {
            return Err(TargetError::Unsupported(format!(
                "{s}: --raw (the line protocol) has no https://"
            )));
        }
        let (rest, default_port) = if lower.starts_with("http://") {
            (&s[7..], Some(80))
        } else if https {
            (&s[8..], Some(443))
        } else if raw {
            (s, None)
        } else if let Some(i) = s.find("://") {
            return Err(TargetError::Unsupported(format!(
                "{s}: the scheme {:?} is not supported (http:// and https:// only)",
                &s[..i]
            )));
        } else {
            return Err(bad(
                "expected http://host[:port]/path (or --raw for host:port/name)",
            ));
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // Userinfo is not supported; a fragment never goes on the wire.
        if authority.contains('@') {
            return Err(bad("user:password@ is not supported"));
        }
        let path = path.split('#').next().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
        let port = match (port, default_port) {
            (Some(p), _) => p,
            (None, Some(p)) => p,
            (None, None) => return Err(bad("a port is required: host:port/name")),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        // An internationalized name needs IDNA (its xn-- form) for DNS, SNI
        // and the certificate check: refused before any lookup or CONNECT.
        if !host.is_ascii() {
            return Err(TargetError::Unsupported(format!(
                "{s:?}: a non-ASCII host name (IDN) is not supported; give its ASCII (xn--) form"
            )));
        }
        let path = if raw {
            let name = path.trim_start_matches('/');
            if name.is_empty() {
                return Err(bad("no file name after host:port/"));
            }
            name.to_string()
        } else {
            path
        };
        Ok(Target {
            host,
            port,
            path,
            raw,
            https,
        })
    }

    /// The port a URL of this scheme has when it names none.
    fn default_port(&self) -> u16 {
        if self.https {
            443
        } else {
            80
        }
    }

    /// `host:port` for a `Host` header (brackets around an IPv6 literal; the
    /// port only when it is not the scheme's default).
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The addresses the host resolves to (blocking DNS lookup).
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no address", self.host),
            ));
        }
        Ok(addrs)
    }

    /// The last path segment, percent-decoded where that gives UTF-8, without
    /// query: the default output file name (`index.html` for a directory).
    pub fn file_name(&self) -> String {
        let path = self.path.split('?').next().unwrap_or("");
        let last = path.rsplit('/').next().unwrap_or("");
        let decoded = percent_decode(last);
        let name = decoded.trim();
        if name.is_empty() || name == "." || name == ".." {
            "index.html".to_string()
        } else {
            name.to_string()
        }
    }

    /// Resolves a redirect's `Location` against this target.
    pub fn join(&self, location: &str) -> Result<Target, TargetError> {
        let lower = location.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Target::parse(location, false);
        }
        if let Some(rest) = location.strip_prefix("//") {
            let scheme = if self.https { "https" } else { "http" };
            return Target::parse(&format!("{scheme}://{rest}"), false);
        }
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        Ok(Target {
            path,
            ..self.clone()
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.raw {
            write!(f, "{}/{}", host_port(&self.host, self.port), self.path)
        } else {
            let scheme = if self.https { "https" } else { "http" };
            write!(f, "{scheme}://{}{}", self.host_header(), self.path)
        }
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(a: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = a.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), Some(p.parse().ok()?))),
        Some(_) => None,
        None => Some((a.to_string(), None)),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) if !s.contains(['/', '\0']) => s,
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_raw_and_ipv6() {
        let t = Target::parse("http://127.0.0.1:8182/a/b%20c.txt?x=1#f", false).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8182));
        assert_eq!(t.path, "/a/b%20c.txt?x=1");
        assert_eq!(t.file_name(), "b c.txt");
        let t = Target::parse("http://[::1]/", false).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.file_name().as_str()),
            ("::1", 80, "index.html")
        );
        assert_eq!(t.host_header(), "[::1]");
        let t = Target::parse("[::1]:9/f.bin", true).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 9, "f.bin")
        );
        let t = Target::parse("HTTPS://x/f", false).unwrap();
        assert_eq!(
            (t.https, t.port, t.host_header().as_str()),
            (true, 443, "x")
        );
        assert_eq!(t.to_string(), "https://x/f");
        let t = Target::parse("https://x:80/f", false).unwrap();
        assert_eq!(t.host_header(), "x:80");
        assert!(matches!(
            Target::parse("https://x/f", true),
            Err(TargetError::Unsupported(_))
        ));
        assert!(matches!(
            Target::parse("ftp://x/", false),
            Err(TargetError::Unsupported(_))
        ));
        assert!(Target::parse("host/x", true).is_err());
        assert!(Target::parse("127.0.0.1:1/x", false).is_err());
        assert!(Target::parse("http://h:99999/", false).is_err());
        assert!(matches!(
            Target::parse("https://bücher.example/x", false),
            Err(TargetError::Unsupported(_))
        ));
        assert!(Target::parse("https://xn--bcher-kva.example/x", false).is_ok());
    }

    #[test]
    fn joins_redirects() {
        let t = Target::parse("http://h:1/d/f", false).unwrap();
        assert_eq!(t.join("g").unwrap().path, "/d/g");
        assert_eq!(t.join("/x").unwrap().path, "/x");
        assert_eq!(t.join("http://o:2/y").unwrap().port, 2);
        let s = Target::parse("https://h/d/f", false).unwrap();
        assert!(s.join("g").unwrap().https);
        assert!(s.join("//o/g").unwrap().https);
        // join resolves an https -> http Location as written; the driver
        // refuses to follow it unless --allow-downgrade.
        assert!(!s.join("http://o/g").unwrap().https);
    }
}
