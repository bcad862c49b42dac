//! The book's ECHO server: a socket echo server on a completion port, with
//! worker threads looping on `GetQueuedCompletionStatus` ([`Pool`]).
//!
//! ```text
//! cargo run -p iocomp --example echo                 # serve on 127.0.0.1:8182
//! cargo run -p iocomp --example echo -- 127.0.0.1:0  # any free port
//! cargo run -p iocomp --example echo -- --self-test  # serve, check 4 clients, exit
//! ```
//!
//! Every connection has one operation in flight at a time: a receive, then a
//! send of what it received, then the next receive. A client that sends a line
//! `quit` stops the server; so does Ctrl+C. `--self-test` (or `ECHO_SELF_TEST=1`)
//! starts the server on a free loopback port, connects a few clients, checks
//! every echo, sends `quit`, and exits 0 — or 1 if anything is wrong.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iocomp::{Accept, Handle, Op, Packet, Pool, Port, Recv, Send};
use iocomp_sync::{Event, WaitResult, Waitable};

/// The completion key of the listening socket; connections get 1, 2, 3…
const LISTENER: u64 = 0;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// A running server: the port, its workers, and the event that says "stop".
struct Server {
    addr: SocketAddr,
    stop: Event,
    pool: Pool,
}

fn start(addr: &str) -> io::Result<Server> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let port = Port::new()?;
    let stop = Event::new(true, false); // manual-reset: "the server must stop"
    let next_key = Arc::new(AtomicU64::new(1));
    let handler_stop = stop.clone();
    let pool = Pool::new(&port, 2, move |port, p| {
        on_packet(port, p, &next_key, &handler_stop)
    })?;
    let listener = port.associate(listener, LISTENER);
    for _ in 0..2 {
        // Two accepts in flight, as the book posts several AcceptEx.
        port.submit(Accept::new(&listener)).map_err(|(e, _)| e)?;
    }
    Ok(Server { addr, stop, pool })
}

/// The worker's `switch` on the completed operation.
fn on_packet(port: &Port, p: Packet, next_key: &AtomicU64, stop: &Event) {
    match p.op {
        Op::Accept(mut a) => {
            let listener = a.listener.clone();
            if let (Ok(()), Some(sock)) = (&p.status, a.socket.take()) {
                let key = next_key.fetch_add(1, Ordering::Relaxed);
                let conn = port.associate(sock, key);
                recv(port, &conn, Vec::with_capacity(4096));
            }
            if !port.is_closed() {
                let _ = port.submit(Accept::new(&listener));
            }
        }
        Op::Recv(r) => {
            if p.status.is_err() || p.bytes == 0 {
                return; // error or EOF: dropping the handle closes the socket
            }
            let quit = r
                .buf
                .split(|&b| b == b'\n')
                .any(|l| l.trim_ascii() == b"quit");
            if quit {
                println!("echo: connection {} asked to quit", p.key);
                stop.set();
                return;
            }
            let _ = port.submit(Send::new(&r.handle, r.buf));
        }
        Op::Send(mut s) if p.status.is_ok() => {
            s.buf.clear();
            recv(port, &s.handle, s.buf);
        }
        _ => {}
    }
}

fn recv(port: &Port, conn: &Handle, buf: Vec<u8>) {
    let _ = port.submit(Recv::new(conn, buf));
}

/// Waits for "quit" or Ctrl+C, then closes the port and joins the workers.
fn serve_until_stopped(mut server: Server, limit: Option<Duration>) -> bool {
    let start = Instant::now();
    let stopped = loop {
        if server.stop.wait(Some(Duration::from_millis(100))) == Ok(WaitResult::Signaled(0)) {
            break true;
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            println!("echo: interrupted");
            break true;
        }
        if limit.is_some_and(|l| start.elapsed() > l) {
            break false;
        }
    };
    server.pool.shutdown();
    stopped
}

fn client(addr: SocketAddr, id: usize, lines: usize) -> io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    for i in 0..lines {
        let msg = format!("client {id} line {i}: {}\n", "x".repeat(i * 37 % 500));
        s.write_all(msg.as_bytes())?;
        let mut back = vec![0; msg.len()];
        s.read_exact(&mut back)?;
        if back != msg.as_bytes() {
            return Err(io::Error::other(format!("client {id}: wrong echo")));
        }
    }
    Ok(())
}

fn self_test() -> bool {
    let server = match start("127.0.0.1:0") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo: cannot start: {e}");
            return false;
        }
    };
    let addr = server.addr;
    println!("echo: self-test on {addr}");
    let clients: Vec<_> = (0..4)
        .map(|id| std::thread::spawn(move || client(addr, id, 50)))
        .collect();
    let mut ok = true;
    for (id, c) in clients.into_iter().enumerate() {
        match c.join() {
            Ok(Ok(())) => println!("echo: client {id}: 50 echoes checked"),
            Ok(Err(e)) => {
                eprintln!("echo: client {id}: {e}");
                ok = false;
            }
            Err(_) => ok = false,
        }
    }
    let quit = TcpStream::connect(addr).and_then(|mut s| s.write_all(b"quit\n"));
    ok &= quit.is_ok();
    ok &= serve_until_stopped(server, Some(Duration::from_secs(10)));
    ok
}

fn main() {
    // SAFETY: `on_sigint` only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let self_testing = args.iter().any(|a| a == "--self-test")
        || std::env::var("ECHO_SELF_TEST").is_ok_and(|v| v == "1");
    if self_testing {
        let ok = self_test();
        println!("echo: self-test {}", if ok { "passed" } else { "FAILED" });
        std::process::exit(if ok { 0 } else { 1 });
    }
    let addr = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or("127.0.0.1:8182", String::as_str);
    match start(addr) {
        Ok(server) => {
            println!(
                "echo: serving on {} (send \"quit\" or press Ctrl+C to stop)",
                server.addr
            );
            serve_until_stopped(server, None);
            println!("echo: stopped");
        }
        Err(e) => {
            eprintln!("echo: {addr}: {e}");
            std::process::exit(1);
        }
    }
}
