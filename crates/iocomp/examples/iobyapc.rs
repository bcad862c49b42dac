//! The book's IOBYAPC: the overlapped reads of `iobyevent`, completed by
//! **completion routines** (`ReadFileEx`, [`Port::submit_ex`]) that run on the
//! issuing thread while it sleeps alertably (`SleepEx(INFINITE, TRUE)`,
//! [`sleep_alertable`]) — no events, no handle array to search.
//!
//! ```text
//! cargo run -p iocomp --example iobyapc
//! ```
//!
//! As in `iobyevent`, each chunk is an overlapped [`ReadAt`] of its byte range
//! of a real file. Each routine checks its chunk and records it;
//! the main thread sleeps alertably until every routine has run. Exits 0, or 1
//! if a chunk is wrong or a routine ran on another thread.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iocomp::{Op, Pool, Port, ReadAt};
use iocomp_sync::{sleep_alertable, SleepResult};

const CHUNKS: usize = 4;
const CHUNK: usize = 16 * 1024;

/// (chunk, bytes, the bytes were right, ran on the issuing thread).
type Outcome = (usize, u64, bool, bool);

fn main() {
    let path = std::env::temp_dir().join(format!("iocomp-iobyapc-{}", std::process::id()));
    let content: Vec<u8> = (0..CHUNKS * CHUNK).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&content))
        .expect("write the sample file");
    let file = std::fs::File::open(&path).expect("open the sample file");
    let _ = std::fs::remove_file(&path);
    let content = Arc::new(content);

    let port = Port::new().expect("a port");
    let mut pool = Pool::new(&port, 1, |_, p| panic!("unexpected packet {p:?}")).expect("pool");

    let me = std::thread::current().id();
    // What each routine saw, written by the routines.
    let results: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let handle = port.associate(file, 0);
    for i in 0..CHUNKS {
        let op = ReadAt::new(&handle, Vec::with_capacity(CHUNK), (i * CHUNK) as u64);
        let (results, content) = (results.clone(), content.clone());
        port.submit_ex(op, move |p| {
            // The completion routine (FileIOCompletionRoutine).
            let good = p.status.is_ok()
                && matches!(&p.op, Op::ReadAt(r) if r.buf == content[i * CHUNK..(i + 1) * CHUNK]);
            let here = std::thread::current().id() == me;
            println!(
                "routine {i}: {} bytes, {}",
                p.bytes,
                if good { "match" } else { "WRONG" }
            );
            results.lock().unwrap().push((i, p.bytes, good, here));
        })
        .map_err(|(e, _)| e)
        .expect("submit");
        println!("read {i}: queued with a completion routine");
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut alerts = 0;
    while results.lock().unwrap().len() < CHUNKS && Instant::now() < deadline {
        if sleep_alertable(Duration::from_secs(1)) == SleepResult::Alerted {
            alerts += 1;
        }
    }
    pool.shutdown();
    let results = results.lock().unwrap();
    let ok = results.len() == CHUNKS
        && results
            .iter()
            .all(|&(_, bytes, good, here)| bytes == CHUNK as u64 && good && here);
    println!(
        "iobyapc: {} routines ran in {alerts} alertable sleeps: {}",
        results.len(),
        if ok { "all chunks read" } else { "FAILED" }
    );
    std::process::exit(if ok { 0 } else { 1 });
}
