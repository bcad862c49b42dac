//! [`Scripted`]: loopback HTTP servers (and proxies) whose every answer a
//! test writes, and [`Version`], one version of a file as such a server
//! serves it (200, 206, 416, with or without validators).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::net::read_head;
use super::IO_TIMEOUT;

/// One request a [`Scripted`] server received: its head as text.
#[derive(Clone, Debug)]
pub struct Req {
    /// The request line and header lines, CRLF-separated (or, for a client
    /// that did not speak HTTP, whatever it sent first).
    pub head: String,
}

impl Req {
    /// The value of header `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// `Range: bytes=A-[B]` as `(A, B)`.
    pub fn range(&self) -> Option<(u64, Option<u64>)> {
        let v = self.header("range")?;
        let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()))
    }

    /// The request line (the first line of the head).
    pub fn first_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }
}

/// What a [`Scripted`] server does with one connection, once it has read the
/// request head: given the connection, the request's number (from 0) and
/// the request.
type Handler = dyn Fn(&mut TcpStream, usize, &Req) + Send + Sync;

/// A loopback server whose every answer a test writes, one request per
/// connection: it reads the request head, records it, lets the test's
/// handler answer, then half-closes and drains until the client closes (so
/// the answer is not cut by a reset). Each connection has its own thread.
/// It stops accepting when dropped (or after 300 s).
pub struct Scripted {
    addr: SocketAddr,
    reqs: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

impl Scripted {
    /// A server that answers the `n`th request with `reply(n, req)`.
    pub fn start(reply: impl Fn(usize, &Req) -> Vec<u8> + Send + Sync + 'static) -> Scripted {
        Scripted::serve(move |s, n, req| {
            let _ = s.write_all(&reply(n, req));
        })
    }

    /// A server that answers every request with `reply` and then holds the
    /// connection open for `hold` before it closes (a stall, or a server that
    /// never answers when `reply` is empty).
    pub fn canned(reply: impl Into<Vec<u8>>, hold: Duration) -> Scripted {
        let reply = reply.into();
        Scripted::serve(move |s, _, _| {
            let _ = s.write_all(&reply);
            thread::sleep(hold);
        })
    }

    /// A server of one file, `body` with the strong ETag `etag`, that honours
    /// ranges and `If-Range` as RFC 9110 says.
    pub fn file(body: Vec<u8>, etag: &'static str) -> Scripted {
        Scripted::start(move |_, req| Version::tagged(&body, etag, true).answer(req))
    }

    /// A server whose `handler` does what it will with each connection.
    pub fn serve(
        handler: impl Fn(&mut TcpStream, usize, &Req) + Send + Sync + 'static,
    ) -> Scripted {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let reqs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (r, st) = (reqs.clone(), stop.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !st.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((s, _)) = l.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (r, handler) = (r.clone(), handler.clone());
                thread::spawn(move || answer(s, &r, &*handler));
            }
        });
        Scripted { addr, reqs, stop }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }
}

/// One connection of a [`Scripted`] server.
fn answer(mut s: TcpStream, reqs: &Mutex<Vec<Req>>, handler: &Handler) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let head = read_head(&mut s);
    let req = Req {
        head: String::from_utf8_lossy(&head).into_owned(),
    };
    let n = {
        let mut v = reqs.lock().unwrap();
        v.push(req.clone());
        v.len() - 1
    };
    handler(&mut s, n, &req);
    let _ = s.shutdown(Shutdown::Write);
    // Drain until the client closes, so the answer is not cut by a reset.
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut sink = [0u8; 4096];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One version of a file as a [`Scripted`] server serves it.
#[derive(Clone, Copy)]
pub struct Version<'a> {
    /// The bytes.
    pub body: &'a [u8],
    /// `ETag` (quoted), if sent.
    pub etag: Option<&'a str>,
    /// `Last-Modified`, if sent.
    pub last_modified: Option<&'a str>,
    /// Whether a mismatching `If-Range` makes the answer a 200 (RFC 9110
    /// §13.1.5); a broken server or cache ignores it and sends the range anyway.
    pub honours_if_range: bool,
}

impl<'a> Version<'a> {
    /// `body` with the strong (or weak: `W/"…"`) ETag `etag`.
    pub fn tagged(body: &'a [u8], etag: &'a str, honours_if_range: bool) -> Version<'a> {
        Version {
            body,
            etag: Some(etag),
            last_modified: None,
            honours_if_range,
        }
    }

    /// `body` with no validator at all.
    pub fn bare(body: &'a [u8]) -> Version<'a> {
        Version {
            body,
            etag: None,
            last_modified: None,
            honours_if_range: false,
        }
    }

    /// The answer to `req` as a server of this version gives it: a 200, a 206
    /// of `Range: bytes=A-[B]`, or a 416 `bytes */LEN`.
    pub fn answer(&self, req: &Req) -> Vec<u8> {
        let len = self.body.len() as u64;
        let mut validators = String::new();
        if let Some(e) = self.etag {
            validators.push_str(&format!("ETag: {e}\r\n"));
        }
        if let Some(lm) = self.last_modified {
            validators.push_str(&format!("Last-Modified: {lm}\r\n"));
        }
        let if_range_ok = match req.header("if-range") {
            None => true,
            Some(v) => {
                !self.honours_if_range
                    || Some(v.as_str()) == self.etag
                    || Some(v.as_str()) == self.last_modified
            }
        };
        let range = req.range().filter(|_| if_range_ok);
        let (status, first, last) = match range {
            None => ("200 OK", 0, len.saturating_sub(1)),
            Some((a, _)) if a >= len => {
                return format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\n{validators}Content-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n"
                )
                .into_bytes();
            }
            Some((a, b)) => ("206 Partial Content", a, b.unwrap_or(len - 1).min(len - 1)),
        };
        let body = if len == 0 {
            &[][..]
        } else {
            &self.body[first as usize..=last as usize]
        };
        let mut out = format!(
            "HTTP/1.1 {status}\r\n{validators}Content-Length: {}\r\n",
            body.len()
        );
        if status.starts_with("206") {
            out.push_str(&format!("Content-Range: bytes {first}-{last}/{len}\r\n"));
        }
        out.push_str("Accept-Ranges: bytes\r\n\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        out
    }
}

/// A `200 OK` with `Content-Length` and `extra` header lines (each ending in
/// CRLF) before the body `body`.
pub fn ok_with(extra: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 200 OK\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

/// `body` in chunked framing (RFC 9112 §7.1), `per` bytes a chunk.
pub fn chunked(body: &[u8], per: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for c in body.chunks(per) {
        v.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        v.extend_from_slice(c);
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"0\r\n\r\n");
    v
}

/// A `302 Found` to `location`.
pub fn redirect(location: &str) -> Vec<u8> {
    format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

/// `data` gzip-compressed (RFC 1952) at `level`.
pub fn gzip(data: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
