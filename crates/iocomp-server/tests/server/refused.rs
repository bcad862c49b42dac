//! Connections refused over `--max-conns-per-ip`, many at once and beside
//! served clients: every one is accounted for. One that asks at once gets its
//! answer (`503` with `Retry-After`, or the `busy` line) and then the end of
//! the connection; one that stays silent is closed, without a byte, after the
//! short deadline refused connections get; one that resets leaves nothing
//! behind (the refused budget and the descriptors come back). A completion
//! lost or not acted on, or a connection the timeout sweep forgets, shows up
//! here as a connection left open.

use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::client::{
    closed_within, connect_from, line, req, send, set_linger_zero, status_of, Client,
};
use crate::harness::{assert_fds_back_to, error_line, fd_count, isolated, show, Tree};

/// Rounds, one after the other, each with new addresses: 84 refused
/// connections in all, more than the server keeps open at once to answer
/// (64), so the later rounds are answered only if the earlier ones' refused
/// connections were counted out. (A connection kept open is caught by the
/// descriptor count at the end.)
const ROUNDS: u8 = 3;
/// Addresses over their limit in each round, and served addresses.
const ADDRS: u8 = 4;
/// How long one refused connection may take to be answered and closed: far
/// above the one second the server gives it, for a loaded machine.
const BOUND: Duration = Duration::from_secs(20);

const BODY: &[u8] = b"served to the one connection allowed\n";

/// What a refused connection does.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Sends an HTTP request at once: `503`, then the end.
    AskHttp,
    /// Sends a line-protocol name at once: `busy`, then the end.
    AskLine,
    /// Sends nothing: closed without a byte.
    Silent,
    /// Resets at once (`SO_LINGER` 0), before the server may have accepted it.
    ResetAtOnce,
    /// Sends an HTTP request and resets right after, while it is answered.
    ResetAfterAsking,
}

const KINDS: [Kind; 7] = [
    Kind::AskHttp,
    Kind::AskHttp,
    Kind::AskLine,
    Kind::Silent,
    Kind::Silent,
    Kind::ResetAtOnce,
    Kind::ResetAfterAsking,
];

/// One refused connection of `kind` from `from`, checked; `Err` says what
/// went wrong.
fn refused(addr: SocketAddr, from: Ipv4Addr, kind: Kind) -> Result<(), String> {
    let mut s = connect_from(addr, from);
    let ask: Option<Vec<u8>> = match kind {
        Kind::AskHttp | Kind::ResetAfterAsking => Some(req("GET", "/f.txt", &[])),
        Kind::AskLine => Some(line(b"f.txt")),
        Kind::Silent | Kind::ResetAtOnce => None,
    };
    if let Some(a) = &ask {
        send(&mut s, a);
    }
    if matches!(kind, Kind::ResetAtOnce | Kind::ResetAfterAsking) {
        set_linger_zero(&s);
        return Ok(());
    }
    let start = Instant::now();
    let (closed, got) = closed_within(&mut s, BOUND);
    let what = format!("{kind:?} from {from}");
    if !closed {
        return Err(format!(
            "{what}: still open after {:?}, having got {}",
            start.elapsed(),
            show(&got)
        ));
    }
    match kind {
        Kind::AskHttp => {
            let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
            if status_of(&got) != 503 || !text.contains("\r\nretry-after: ") {
                return Err(format!(
                    "{what}: not a 503 with Retry-After: {}",
                    show(&got)
                ));
            }
        }
        Kind::AskLine if got != error_line("busy") => {
            return Err(format!("{what}: not the busy line: {}", show(&got)));
        }
        Kind::Silent if !got.is_empty() => {
            return Err(format!("{what}: got bytes: {}", show(&got)));
        }
        _ => {}
    }
    Ok(())
}

/// A connection within its address's limit, proven counted by the server:
/// it has been served once and stays open (keep-alive).
fn served(addr: SocketAddr, from: Ipv4Addr) -> Client {
    let mut c = Client::new(connect_from(addr, from));
    c.send(&req("GET", "/f.txt", &[]));
    let r = c.response(false);
    r.assert_status(200, &format!("the connection allowed from {from}"));
    assert_eq!(r.body, BODY, "from {from}");
    c
}

/// A served client: several requests on one connection while the refused
/// ones come and go, the last one closing it.
fn busy_client(addr: SocketAddr, from: Ipv4Addr) -> Result<(), String> {
    let mut c = Client::new(connect_from(addr, from));
    for i in 0..4 {
        let last = i == 3;
        let close: &[(&str, &str)] = if last {
            &[("Connection", "close")]
        } else {
            &[]
        };
        c.send(&req("GET", "/f.txt", close));
        let r = c.try_response(false)?;
        if r.status != 200 || r.body != BODY {
            return Err(format!("request {i} from {from}: {r:?}"));
        }
    }
    c.try_expect_eof()
}

/// A round: `ADDRS` addresses each hold their one connection and send
/// `KINDS` refused ones at once, beside `ADDRS` served clients; every
/// failure, of every connection, is returned.
fn round(addr: SocketAddr, r: u8) -> Vec<String> {
    let over: Vec<Ipv4Addr> = (1..=ADDRS)
        .map(|a| Ipv4Addr::new(127, 10 + r, 0, a))
        .collect();
    // Counted before the refused ones connect (the server counts
    // connections of one address in the order it handles their accepts).
    let holders: Vec<Client> = over.iter().map(|&ip| served(addr, ip)).collect();
    let mut errors = Vec::new();
    thread::scope(|s| {
        let mut all = Vec::new();
        for &ip in &over {
            for kind in KINDS {
                all.push(s.spawn(move || refused(addr, ip, kind)));
            }
        }
        for a in 1..=ADDRS {
            let ip = Ipv4Addr::new(127, 20 + r, 0, a);
            all.push(s.spawn(move || busy_client(addr, ip)));
        }
        for h in all {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push("a client thread panicked".to_owned()),
            }
        }
    });
    // The held connections are still served after all that.
    for (mut h, ip) in holders.into_iter().zip(over) {
        h.send(&req("GET", "/f.txt", &[("Connection", "close")]));
        match h.try_response(false) {
            Ok(resp) if resp.status == 200 && resp.body == BODY => {}
            other => errors.push(format!("the held connection of {ip}: {other:?}")),
        }
    }
    errors
}

#[test]
fn every_refused_connection_is_answered_or_closed_under_load() {
    isolated(
        concat!(
            module_path!(),
            "::every_refused_connection_is_answered_or_closed_under_load"
        ),
        Duration::from_secs(120),
        || {
            let tree = Tree::new("refused");
            tree.file("f.txt", BODY);
            // A header timeout of 2 s: the sweep runs twice a second, and
            // refused connections wait at most a second.
            let running = tree.serve(|c| {
                c.max_conns_per_ip = 1;
                c.header_timeout = Duration::from_secs(2);
            });
            let baseline = fd_count();
            let start = Instant::now();
            for r in 0..ROUNDS {
                let errors = round(running.addr, r);
                assert!(
                    errors.is_empty(),
                    "round {r}: {} connection(s) went wrong:\n{}",
                    errors.len(),
                    errors.join("\n")
                );
            }
            running.assert_all_closed("after the rounds");
            // Refused connections that reset are gone on the server too.
            assert_fds_back_to(baseline);
            eprintln!(
                "{ROUNDS} rounds of {} refused connections: {:?}",
                usize::from(ADDRS) * KINDS.len(),
                start.elapsed()
            );
        },
    );
}
