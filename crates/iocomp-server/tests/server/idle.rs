//! Idle-connection memory: 10,000 idle keep-alive connections at once, from
//! four loopback source addresses (2,500 each), each after one HTTP request
//! (so it has been through a whole exchange). The growth of RSS divided by
//! the connection count is printed and loosely bounded (8 KiB: an idle
//! connection should hold no buffers; `bench/run --scenarios idle-10000`
//! compares it with nginx and lighttpd); a fresh client is still served
//! meanwhile, and the descriptors return to their baseline once all close.
//! Socket buffers are kernel memory and not in RSS. Heavy, and alone in a
//! child process whose memory and descriptors are the server's; the clients
//! run in a process of their own (this binary again, in the client role),
//! driven over its standard input and output.

use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::client::{req, try_connect};
use crate::harness::run::ClientProcess;
use crate::harness::{
    compare, fd_count, fd_listing, heavy, isolated, poll_until, raise_nofile, rss_bytes, Client,
    Tree, IO_TIMEOUT, MIB, SETTLE_TIMEOUT,
};

const CONNS: usize = 10_000;
const SOURCES: [Ipv4Addr; 4] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
    Ipv4Addr::new(127, 0, 0, 5),
];
const OK_CONTENT: &[u8] = b"ok.txt: the small file of the idle test\n";

/// `GET /ok.txt` on `c`, checked.
fn exchange(c: &mut Client) -> Result<(), String> {
    c.send(&req("GET", "/ok.txt", &[]));
    let r = c.try_response(false)?;
    if r.status != 200 {
        return Err(format!("status {}", r.status));
    }
    compare(&r.body, OK_CONTENT, "ok.txt")
}

/// `CONNS / 4` connections from `src`, each after one request, in batches
/// of 100 (connect and send a batch, then read its answers).
fn open_from(src: Ipv4Addr, addr: SocketAddr) -> Result<Vec<Client>, String> {
    let per = CONNS / SOURCES.len();
    let mut conns = Vec::with_capacity(per);
    while conns.len() < per {
        let mut batch = Vec::new();
        for _ in 0..100.min(per - conns.len()) {
            let s = try_connect(addr, Some(src), None, IO_TIMEOUT)
                .map_err(|e| format!("connect from {src}: {e}"))?;
            let mut c = Client::new(s);
            c.stream
                .set_write_timeout(Some(IO_TIMEOUT))
                .map_err(|e| e.to_string())?;
            std::io::Write::write_all(&mut c.stream, &req("GET", "/ok.txt", &[]))
                .map_err(|e| format!("write: {e}"))?;
            batch.push(c);
        }
        for mut c in batch {
            let r = c.try_response(false)?;
            if r.status != 200 {
                return Err(format!("status {}", r.status));
            }
            compare(&r.body, OK_CONTENT, "ok.txt")?;
            conns.push(c);
        }
    }
    Ok(conns)
}

/// The variable that puts this binary in the client role, with the
/// server's address.
const CLIENTS_OF: &str = "IOCOMP_TEST_IDLE_CLIENTS_OF";

/// The client role: opens the connections, says `opened`, makes a second
/// request on a sample of them when told `again` (says `again ok`), and
/// closes them all at the end of its input.
fn client_role(addr: SocketAddr) {
    let have = raise_nofile(CONNS as u64 + 1024);
    assert!(
        have >= CONNS as u64 + 256,
        "RLIMIT_NOFILE is {have} and cannot be raised: {CONNS} connections need more"
    );
    let t0 = Instant::now();
    let handles: Vec<_> = SOURCES
        .iter()
        .map(|&src| thread::spawn(move || open_from(src, addr)))
        .collect();
    let mut all = Vec::with_capacity(CONNS);
    for h in handles {
        let conns = h.join().expect("a connecting thread");
        all.extend(conns.unwrap_or_else(|e| panic!("opening idle connections: {e}")));
    }
    let mut out = std::io::stdout();
    writeln!(out, "opened {CONNS} in {:.1} s", t0.elapsed().as_secs_f64()).unwrap();
    out.flush().unwrap();
    for l in std::io::stdin().lock().lines() {
        if l.expect("the driver's line") == "again" {
            for c in all.iter_mut().step_by(CONNS / 20) {
                exchange(c).unwrap_or_else(|e| panic!("second request on an idle connection: {e}"));
            }
            writeln!(out, "again ok").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn ten_thousand_idle_keepalive_connections_memory_per_connection() {
    if let Ok(addr) = std::env::var(CLIENTS_OF) {
        return client_role(addr.parse().unwrap());
    }
    let _heavy = heavy();
    isolated(
        concat!(
            module_path!(),
            "::ten_thousand_idle_keepalive_connections_memory_per_connection"
        ),
        Duration::from_secs(300),
        || {
            const LIMIT_PER_CONN: u64 = 8 * 1024;
            let have = raise_nofile(CONNS as u64 + 2048);
            assert!(
                have >= CONNS as u64 + 256,
                "RLIMIT_NOFILE is {have}: {CONNS} connections need more"
            );
            let tree = Tree::new("idle");
            tree.file("ok.txt", OK_CONTENT);
            let srv = tree.serve(|c| {
                c.max_conns = CONNS + 1000;
                c.idle_timeout = Duration::from_secs(300);
            });
            let fds0 = fd_count();
            // Warm-up: the file cache, the allocator and the engine see some
            // traffic (and a burst of connections) before the first measurement.
            let warm: Vec<Client> = (0..200)
                .map(|_| {
                    let mut c = srv.client();
                    exchange(&mut c).unwrap_or_else(|e| panic!("warm-up: {e}"));
                    c
                })
                .collect();
            drop(warm);
            thread::sleep(Duration::from_millis(300));
            let rss0 = rss_bytes();
            let mut clients = ClientProcess::start(
                concat!(
                    module_path!(),
                    "::ten_thousand_idle_keepalive_connections_memory_per_connection"
                ),
                CLIENTS_OF,
                &srv.addr.to_string(),
            );
            let opened = clients.expect("opened", Duration::from_secs(180));
            // Every connection is accepted and idle now; let the server settle.
            let want_fds = fds0 + CONNS;
            let mut fds1 = 0;
            poll_until(Duration::from_secs(10), || {
                fds1 = fd_count();
                fds1 >= want_fds
            });
            assert!(
                fds1 >= want_fds,
                "the server holds {fds1} descriptors, want at least {want_fds}"
            );
            thread::sleep(Duration::from_millis(500));
            let rss1 = rss_bytes();
            // A fresh client is still served while 10,000 are idle; the idle
            // ones are still open (none was cut) and usable.
            exchange(&mut srv.client())
                .unwrap_or_else(|e| panic!("fresh client with {CONNS} idle: {e}"));
            clients.tell("again");
            clients.expect("again ok", Duration::from_secs(60));
            let per_conn = rss1.saturating_sub(rss0) / CONNS as u64;
            println!(
            "idle keep-alive memory: {opened}; server RSS {:.2} MiB -> {:.2} MiB: {per_conn} bytes ({:.2} KiB) per idle connection",
            rss0 as f64 / MIB as f64,
            rss1 as f64 / MIB as f64,
            per_conn as f64 / 1024.0
        );
            clients.finish();
            let mut fds2 = 0;
            poll_until(SETTLE_TIMEOUT + Duration::from_secs(5), || {
                fds2 = fd_count();
                fds2 == fds0
            });
            assert!(
            per_conn < LIMIT_PER_CONN,
            "{per_conn} bytes of server RSS per idle keep-alive connection (limit {LIMIT_PER_CONN})"
        );
            assert_eq!(
                fds2,
                fds0,
                "descriptors did not return after closing {CONNS} connections:\n{}",
                fd_listing()
            );
        },
    );
}
