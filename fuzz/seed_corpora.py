#!/usr/bin/env python3
"""Writes the hand-written seed corpora under fuzz/corpus/NAME/.

Run from anywhere: python3 fuzz/seed_corpora.py. Files are named seed-NN; inputs
that live fuzzing adds (hash-named by libFuzzer) are kept alongside.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))

def crlf(*lines):
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

http_request = [
    crlf("GET / HTTP/1.1", "Host: example.com"),
    crlf("GET /index.html HTTP/1.0"),
    crlf("HEAD /big.iso HTTP/1.1", "Host: h", "Range: bytes=0-99,200-299,-50", "If-Range: \"abc\""),
    crlf("GET /a?b=c&d HTTP/1.1", "Host: h", "Accept-Encoding: br;q=0.5, gzip, *;q=0"),
    crlf("GET http://example.com/x HTTP/1.1", "Host: example.com"),
    crlf("OPTIONS * HTTP/1.1", "Host: h"),
    crlf("CONNECT example.com:443 HTTP/1.1", "Host: example.com:443"),
    crlf("GET /../../etc/passwd HTTP/1.1", "Host: h"),
    crlf("GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1", "Host: h"),
    crlf("GET /..%2f..%2fetc%2fpasswd HTTP/1.1", "Host: h"),
    crlf("GET /%00 HTTP/1.1", "Host: h"),
    crlf("GET /a%5c..%5cb HTTP/1.1", "Host: h"),
    crlf("POST / HTTP/1.1", "Host: h", "Content-Length: 5", "Transfer-Encoding: chunked"),
    crlf("GET / HTTP/1.1", "Host: h", "Content-Length: 0", "Content-Length: 5"),
    crlf("GET / HTTP/1.1", "Host: h", "Transfer-Encoding: chunked, identity"),
    crlf("GET / HTTP/1.1", "Host: a", "Host: b"),
    crlf("GET / HTTP/1.1", "Host : h"),
    crlf("GET / HTTP/1.1", " Host: folded"),
    crlf("GET / HTTP/1.1", "Host: h", "X: a\x00b"),
    crlf("GET / HTTP/2.0", "Host: h"),
    crlf("GET / HTTP/1.2", "Host: h"),
    crlf("GET / HTTP/1.1 extra", "Host: h"),
    crlf("GET  / HTTP/1.1", "Host: h"),
    crlf("get / HTTP/1.1", "Host: h"),
    crlf("BREW /pot HTTP/1.1", "Host: h"),
    b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\nHost: h\n\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n",
    b"GET / HTT",
    b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"b" * 9000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n",
    crlf("GET / HTTP/1.1", "Host: h", "Connection: close, keep-alive"),
    crlf("GET / HTTP/1.0", "Connection: keep-alive"),
    crlf("GET / HTTP/1.1", "Host: h", "If-None-Match: W/\"x\", \"y\"", "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT"),
    crlf("GET / HTTP/1.1", "Host: h", "User-Agent: caf\xe9", "Referer: http://r/"),
    crlf("GET /\xff\xfe HTTP/1.1", "Host: h"),
    bytes(range(256)),
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"",
    b"\r\n",
]

range_header = [
    b"1000\nbytes=0-499", b"1000\nbytes=500-", b"1000\nbytes=-200", b"1000\nbytes=0-0,-1",
    b"1000\nbytes=0-99,100-199", b"1000\nbytes=0-99,50-149,300-", b"1000\nbytes=1000-",
    b"1000\nbytes=999-", b"1000\nbytes=-0", b"1000\nbytes=-5000", b"0\nbytes=0-", b"0\nbytes=-1",
    b"1000\nBYTES=0-1", b"1000\nbytes= 0 - 1 , , 5-6", b"1000\nitems=0-1", b"1000\nbytes 0-1",
    b"1000\nbytes=5-1", b"1000\nbytes=a-b", b"1000\nbytes=0-1-2", b"1000\nbytes=",
    b"1000\nbytes=,,,", b"1000\nbytes=0-18446744073709551615",
    b"1000\nbytes=99999999999999999999999999-", b"18446744073709551615\nbytes=0-,-1",
    b"18446744073709551615\nbytes=18446744073709551614-", b"1\nbytes=0-0",
    b"100\n" + b"bytes=" + b",".join(b"%d-%d" % (i * 2, i * 2) for i in range(50)),
    b"100\n" + b"bytes=" + b",".join(b"%d-%d" % (i * 2, i * 2) for i in range(17)),
    b"100\n" + b"bytes=" + b",".join(b"0-0" for _ in range(101)),
    b"100\n" + b"bytes=" + b",".join(b"%d-" % i for i in range(20)),
    b"1000\nbytes=0-999,0-999", b"1000\nbytes=-500,-500,-1", b"10\nbytes=\t1-2\t,\t3-4",
    b"1000\nbytes=0x10-0x20", b"1000\nbytes=+1-2", b"1000\nbytes=1--2",
    b"no length\nbytes=0-5", b"bytes=0-5", b"\xff\xfe\x00bytes=\x00-",
]

conditional = [
    b"GET 784111777\nIf-None-Match: {etag}",
    b"GET 784111777\nIf-None-Match: W/{etag}",
    b"GET 784111777\nIf-None-Match: *",
    b"GET 784111777\nIf-None-Match: \"other\", {etag}",
    b"HEAD 784111777\nIf-None-Match: \"other\"",
    b"POST 784111777\nIf-None-Match: *",
    b"POST 784111777\nIf-None-Match: {etag}",
    b"GET 784111777\nIf-Match: {etag}",
    b"GET 784111777\nIf-Match: W/{etag}",
    b"GET 784111777\nIf-Match: \"nope\"",
    b"GET 784111777\nIf-Match: *",
    b"GET 784111777\nIf-Match: \"unterminated",
    b"GET 784111777\nIf-Match: ,,, {etag} ,",
    b"GET 784111777\nIf-Modified-Since: {date}",
    b"GET 784111777\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT",
    b"GET 784111777\nIf-Modified-Since: Sunday, 06-Nov-94 08:49:37 GMT",
    b"GET 784111777\nIf-Modified-Since: Sun Nov  6 08:49:37 1994",
    b"GET 784111777\nIf-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT",
    b"GET 784111777\nIf-Modified-Since: yesterday",
    b"GET 784111777\nIf-Unmodified-Since: Sun, 06 Nov 1994 08:49:36 GMT",
    b"GET 784111777\nIf-Unmodified-Since: {date}",
    b"GET 784111777\nIf-Match: {etag}\nIf-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
    b"GET 784111777\nIf-None-Match: \"x\"\nIf-Modified-Since: {date}",
    b"GET 784111777\nIf-Range: {etag}",
    b"GET 784111777\nIf-Range: W/{etag}",
    b"GET 784111777\nIf-Range: {date}",
    b"GET 784111777\nIf-Range: Sun, 06 Nov 1994 08:49:38 GMT",
    b"GET 784111777\nIf-Range: garbage",
    b"GET 0\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
    b"GET 253402300799\nIf-Range: {date}",
    b"GET 99999999999999999999\nIf-Modified-Since: {date}",
    b"OPTIONS 1\nif-none-match: {etag}",
    b"DELETE x\nIF-MATCH: {etag}\nif-none-match: {etag}",
    b"\n\n\n",
    b"",
    bytes(range(256)),
]

percent_decode = [
    b"/", b"/index.html", b"/a/b/c.txt", b"/%41", b"/%2e%2e/%2e%2e/etc/passwd",
    b"/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", b"/..%2f..%2fsecret", b"/../outside/secret",
    b"../outside/secret", b"/out", b"/outdir/secret", b"/abs", b"/in", b"/sub/up",
    b"/sub/../a.txt", b"/./a.txt", b"//a.txt", b"/.hidden", b"/%2ehidden", b"/%00",
    b"/a%00.txt", b"/%5c..%5csecret", b"/a\\b", b"/%", b"/%4", b"/%zz", b"/%%41",
    b"/%252e%252e/", b"/%c0%ae%c0%ae/", b"/%e0%80%ae%e0%80%ae/", b"/\xff\xfe",
    b"/caf%C3%A9", b"/ space", b"/%20", b"/" + b"a/" * 2100, b"/" + b"%41" * 1500,
    b"/sub/../../outside/secret", b"/sub/..", b"...", b"/.../a", b"/a..b", b"/..",
    b"/sub/", b"",
]

line_framer = [
    b"README.md\n", b"a\nb\nc\n", b"a\r\nb\r\n", b"a\r\r\n", b"\n\n\n", b"no newline at end",
    b"\r\n", b"\r", b"x" * 4096 + b"\n", b"x" * 4095 + b"\r\n", b"x" * 4096 + b"\r\n",
    b"x" * 4097 + b"\nnext\n", b"x" * 9000, b"x" * 9000 + b"\nafter\n" + b"y" * 5000,
    b"x" * 4097, b"x" * 4096, b"../../etc/passwd\n", b"/etc/passwd\n", b"a\x00b\n",
    b"GET / HTTP/1.1\r\n", b"\xff\xfe\xfd\n", bytes(range(256)), b"\x01" + b"a\n" * 300,
    b"\xff" + b"z" * 4500 + b"\n" + b"q" * 10, b"\x00\n\x00\n", b"a\nb", b"\n",
    b"x" * 4100 + b"\r\n" + b"y" * 4100 + b"\n" + b"ok\n", b"\x07" + b"ab\r\n" * 50,
]

protocol_detect = [
    b"GET / HTTP/1.1\r\n", b"GET /", b"HEAD /x", b"OPTIONS *", b"GET http://h/",
    b"GET HTTP://h/", b"CONNECT h:443 HTTP/1.1\r\n", b"CONNECTX x", b"M-SEARCH * HTTP/1.1",
    b"G", b"GET", b"GET ", b"GET h", b"GET http:/", b"ABCDEFGHIJKLMNOPQRST",
    b"ABCDEFGHIJKLMNOPQRST http:/", b"ABCDEFGHIJKLMNOPQRSTU /", b"README.md\n", b"GET\n",
    b"GET x", b"GET https://h/", b"GET  /", b"GET\t/", b" GET /", b"\r\nGET / HTTP/1.1\r\n",
    b"/etc/passwd\n", b"G\xc3\xa9T /", b"\x16\x03\x01\x00", bytes(range(256)), b"a" * 5000,
    b"get /lower", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
]

http_date = [
    b"Sun, 06 Nov 1994 08:49:37 GMT", b"Sunday, 06-Nov-94 08:49:37 GMT",
    b"Sun Nov  6 08:49:37 1994", b"Thu, 01 Jan 1970 00:00:00 GMT",
    b"Fri, 31 Dec 9999 23:59:59 GMT", b"Wed, 31 Dec 1969 23:59:59 GMT",
    b"Mon, 29 Feb 2016 12:00:00 GMT", b"Tue, 29 Feb 2017 12:00:00 GMT",
    b"Sun, 06 Nov 1994 24:00:00 GMT", b"Sun, 06 Nov 1994 23:59:60 GMT",
    b"Sun, 6 Nov 1994 08:49:37 GMT", b"sun, 06 nov 1994 08:49:37 gmt",
    b"Sun, 06 Nov 1994 08:49:37 UTC", b"Sun, 06 Nov 1994 08:49:37 GMT ",
    b" Sun, 06 Nov 1994 08:49:37 GMT", b"Mon, 06 Nov 1994 08:49:37 GMT",
    b"Thursday, 01-Jan-70 00:00:00 GMT", b"Friday, 31-Dec-69 23:59:59 GMT",
    b"Sat Jan  1 00:00:00 2000", b"Sat Jan 01 00:00:00 2000", b"Fri Dec 31 23:59:59 9999",
    b"784111777", b"1994-11-06T08:49:37Z", b"", b"\x00" * 8, b"\xff" * 8,
    b"\x01\x02\x03\x04\x05\x06\x07\x08", b"Sun, 06 Nov 1994 08:49:37 GMT\x00",
    b"Sun, 99 Nov 1994 08:49:37 GMT", b"Sun, 06 Foo 1994 08:49:37 GMT", bytes(range(256)),
    b"Sun, 06 Nov 19\xff4 08:49:37 GMT",
]

def resp(*lines, body=b""):
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

get_response = [
    resp("HTTP/1.1 200 OK", "Content-Length: 5", body=b"hello"),
    resp("HTTP/1.1 200 OK", "Content-Length: 5", body=b"hello, and more after the body"),
    resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked",
         body=b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"),
    resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", body=b"5\r\nhel"),
    resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", body=b"zz\r\nhello\r\n0\r\n\r\n"),
    resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", body=b"ffffffffffffffffff\r\nx"),
    resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", body=b"5\r\nhelloXX0\r\n\r\n"),
    resp("HTTP/1.1 200 OK", "Transfer-Encoding: gzip, chunked", body=b"1\nx\n0\n\n"),
    resp("HTTP/1.1 200 OK", "Content-Length: 3", "Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n"),
    resp("HTTP/1.1 200 OK", body=b"to the end of the connection"),
    resp("HTTP/1.1 204 No Content", "Content-Length: 10", body=b"ignored"),
    resp("HTTP/1.1 304 Not Modified", "ETag: \"x\""),
    resp("HTTP/1.1 206 Partial Content", "Content-Range: bytes 100-199/1000", "Content-Length: 100",
         "ETag: \"v1\"", body=b"r" * 100),
    resp("HTTP/1.1 206 Partial Content", "Content-Range: bytes 100-50/51", "Content-Length: 100"),
    resp("HTTP/1.1 206 Partial Content", "Content-Range: bytes 0-0/*"),
    resp("HTTP/1.1 206 Partial Content", "Content-Range: bytes 0-99/50"),
    resp("HTTP/1.1 206 Partial Content", "Content-Range: bytes 18446744073709551615-18446744073709551615/18446744073709551615"),
    resp("HTTP/1.1 206 Partial Content", "Content-Range: bytes 0-18446744073709551615/18446744073709551616"),
    resp("HTTP/1.1 416 Range Not Satisfiable", "Content-Range: bytes */1000", "ETag: W/\"weak\"",
         "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT"),
    resp("HTTP/1.1 416 Range Not Satisfiable", "Content-Range: bytes */abc"),
    resp("HTTP/1.1 301 Moved Permanently", "Location: /elsewhere", "Content-Length: 0"),
    resp("HTTP/1.1 200 OK", "Content-Length: 18446744073709551615", body=b"x"),
    resp("HTTP/1.1 200 OK", "Content-Length: -1", body=b"x"),
    resp("HTTP/1.1 200 OK", "Content-Length: 1", "Content-Length: 2", body=b"xy"),
    resp("HTTP/1.0 200", "X: a\tb", body=b"z"),
    resp("HTTP/1.1 999 Weird \xff reason"),
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
    b"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(70)) + b"\r\n",
    b"ICY 200 OK\r\n\r\n",
    b"HTTP/2 200\r\n\r\n",
    bytes(range(256)),
    b"",
]

config_file = [
    b'threads = 4\nbind = ["127.0.0.1:8080", "[::1]:8080"]\nhidden = true\nroot = "/srv/files"\n',
    b'header-timeout = "10s"\nidle-timeout = "2m"\nquiet = true\n',
    b'access-log = "json"\nmax-conns = 100\n',
    b'threads = 0\n',
    b'threads = -1\n',
    b'threads = 99999999999999999999\n',
    b'threads = "four"\n',
    b'thread = 4\n',
    b'bind = "not an address"\n',
    b'bind = []\n',
    b'bind = [1, 2]\n',
    b'hidden = false\n',
    b'hidden = "yes"\n',
    b'quiet = true\nverbose = true\n',
    b'root = "-weird"\n',
    b'root = "a\\u0000b"\n',
    b'config = "other.toml"\n',
    b'print-config = true\n',
    b'help = true\n',
    b'[serve]\nthreads = 4\n',
    b'threads = 4\nthreads = 5\n',
    b'header-timeout = 1e400\n',
    b'header-timeout = "1e300h"\n',
    b'bind = [["nested"]]\n',
    b'x = { inline = 1 }\n',
    b'# only a comment\n',
    b'',
    b'\n\n\nthreads = \n',
    b'"quoted key" = 1\n',
    b'threads = 4 # trailing\r\nquiet = true\r\n',
    b'\xef\xbb\xbfthreads = 4\n',
]

# The TLS targets' seeds: real ClientHello and server flights, made here with
# Python's ssl module (memory BIOs, no network) and the fixed fuzz certificate.
def tls_flights():
    import ssl, tempfile
    src = open(os.path.join(HERE, "..", "crates", "iocomp-server", "src", "conn", "tls", "fuzz.rs")).read()
    cert = src[src.index("-----BEGIN CERTIFICATE-----"):src.index("-----END CERTIFICATE-----") + 25] + "\n"
    key = src[src.index("-----BEGIN PRIVATE KEY-----"):src.index("-----END PRIVATE KEY-----") + 25] + "\n"
    with tempfile.TemporaryDirectory() as d:
        cf, kf = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        open(cf, "w").write(cert)
        open(kf, "w").write(key)
        out = []
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            cctx.check_hostname = False
            cctx.verify_mode = ssl.CERT_NONE
            cctx.minimum_version = cctx.maximum_version = version
            cctx.set_alpn_protocols(["http/1.1"])
            sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            sctx.load_cert_chain(cf, kf)
            sctx.minimum_version = sctx.maximum_version = version
            ci, co, si, so = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
            c = cctx.wrap_bio(ci, co, server_hostname="localhost")
            s = sctx.wrap_bio(si, so, server_side=True)
            try:
                c.do_handshake()
            except ssl.SSLWantReadError:
                pass
            hello = co.read()
            si.write(hello)
            try:
                s.do_handshake()
            except ssl.SSLWantReadError:
                pass
            out.append((hello, so.read()))
        return out

def tls_seeds():
    flights = tls_flights()
    hellos = [h for h, _ in flights]
    servers = [s for _, s in flights]
    get = crlf("GET / HTTP/1.1", "Host: localhost")
    front = hellos + [h[:len(h) // 2] for h in hellos] + [
        get,
        b"GET",
        b"some/file.txt\n",
        b"\x16\x03\x01\x00\x05hello",
        b"\x16\x03\x01\xff\xff" + b"\x00" * 64,
        b"\x15\x03\x03\x00\x02\x02\x28",
        hellos[0] + b"\x17\x03\x03\x00\x10" + b"\xaa" * 16,
        b"\x00" + get,                       # a session: TLS 1.3, data
        b"\x08" + get + get,                 # TLS 1.3, then close_notify
        b"\x0c" + get,                       # TLS 1.2, close_notify
        b"\x04" + b"x" * 20000,              # TLS 1.2, several records
        b"\x18" + get,                       # TLS 1.3, a byte flipped
        b"\x14" + get,                       # TLS 1.2, a byte flipped
        b"\x08",                             # an empty session, closed
    ]
    client = servers + [s[:len(s) // 3] for s in servers] + [
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        b"\x15\x03\x03\x00\x02\x02\x28",
        b"\x16\x03\x03\x00\x05\x01\x02\x03\x04\x05",
        b"\x17\x03\x03\x00\x04abcd",
        b"\xff" * 64,
        b"",
    ]
    connect = [
        b"HTTP/1.1 200 Connection established\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nProxy-Agent: squid\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n\x16\x03\x03\x00\x01\x00",
        b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 502 Bad Gateway\r\n\r\n",
        b"HTTP/1.1 200 Connection established\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        b"",
    ]
    return front, client, connect

def main():
    tls_front, tls_client, connect_answer = tls_seeds()
    for name, seeds in [
        ("http_request", http_request), ("range_header", range_header),
        ("conditional", conditional), ("percent_decode", percent_decode),
        ("line_framer", line_framer), ("protocol_detect", protocol_detect),
        ("http_date", http_date), ("get_response", get_response),
        ("config_file", config_file),
        ("tls_front", tls_front), ("tls_client", tls_client),
        ("connect_answer", connect_answer),
    ]:
        d = os.path.join(HERE, "corpus", name)
        os.makedirs(d, exist_ok=True)
        for i, data in enumerate(seeds):
            with open(os.path.join(d, "seed-%02d" % i), "wb") as f:
                f.write(data)
        print(name, len(seeds))

main()
