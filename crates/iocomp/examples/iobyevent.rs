//! The book's IOBYEVNT: several overlapped reads of one file, each signalled by
//! its own manual-reset event, collected with `WaitForMultipleObjects`
//! ([`wait_any`]) and `GetOverlappedResult` ([`Overlapped::result`]).
//!
//! ```text
//! cargo run -p iocomp --example iobyevent
//! ```
//!
//! Each chunk is an overlapped [`ReadAt`] (`ReadFile` with
//! `OVERLAPPED.Offset`) of its byte range of a real file, and the example
//! checks the bytes against what it wrote there. Exits 0, or 1 if a chunk is
//! wrong.

use std::io::Write;
use std::time::Duration;

use iocomp::{Op, Overlapped, Pool, Port, ReadAt};
use iocomp_sync::{wait_any, Event, WaitResult, Waitable};

const CHUNKS: usize = 4;
const CHUNK: usize = 16 * 1024;

fn main() {
    let path = std::env::temp_dir().join(format!("iocomp-iobyevent-{}", std::process::id()));
    let content: Vec<u8> = (0..CHUNKS * CHUNK).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&content))
        .expect("write the sample file");
    let file = std::fs::File::open(&path).expect("open the sample file");
    let _ = std::fs::remove_file(&path);

    let port = Port::new().expect("a port");
    // The port's worker drives the I/O; no packet ever reaches its handler.
    let mut pool = Pool::new(&port, 1, |_, p| panic!("unexpected packet {p:?}")).expect("pool");

    // Issue every read at once, each with its own event (OVERLAPPED.hEvent).
    let mut events = Vec::new();
    let mut pending: Vec<Option<Overlapped>> = Vec::new();
    let handle = port.associate(file, 0);
    for i in 0..CHUNKS {
        let op = ReadAt::new(&handle, Vec::with_capacity(CHUNK), (i * CHUNK) as u64);
        let ev = Event::new(true, false);
        let ov = port
            .submit_with_event(op, &ev)
            .map_err(|(e, _)| e)
            .expect("submit");
        println!(
            "read {i}: queued (bytes {}..{})",
            i * CHUNK,
            (i + 1) * CHUNK
        );
        events.push(ev);
        pending.push(Some(ov));
    }

    let mut ok = true;
    for _ in 0..CHUNKS {
        let set: Vec<&dyn Waitable> = events.iter().map(|e| e as &dyn Waitable).collect();
        let i = match wait_any(&set, Some(Duration::from_secs(20))) {
            Ok(WaitResult::Signaled(i)) => i,
            other => {
                eprintln!("wait: {other:?}");
                ok = false;
                break;
            }
        };
        events[i].reset(); // handled: out of the next wait
        let Some(ov) = pending[i].take() else {
            ok = false;
            break;
        };
        let p = ov.result(false).expect("signalled, so complete");
        let Op::ReadAt(r) = p.op else {
            ok = false;
            continue;
        };
        let good = p.status.is_ok()
            && p.bytes == CHUNK as u64
            && r.buf == content[i * CHUNK..(i + 1) * CHUNK];
        println!(
            "read {i}: event signalled, {} bytes, {}",
            p.bytes,
            if good { "match" } else { "WRONG" }
        );
        ok &= good;
    }
    pool.shutdown();
    println!(
        "iobyevent: {}",
        if ok { "all chunks read" } else { "FAILED" }
    );
    std::process::exit(if ok { 0 } else { 1 });
}
