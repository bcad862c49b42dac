//! Stopping worker threads cleanly, the book's way: not with `TerminateThread`
//! (which leaves locks held and memory leaked) but with a **manual-reset event**
//! that every worker waits on alongside its work.
//!
//! ```text
//! cargo run -p iocomp --example cancel
//! ```
//!
//! Four workers take jobs from a semaphore (`WaitForMultipleObjects` on
//! `[stop, jobs]`: the lowest signalled index wins, so a set `stop` beats any
//! job left). One more worker waits on an overlapped receive that will never
//! complete, signalled by its own event; when `stop` is set it cancels the
//! receive (`CancelIoEx`) and collects the aborted packet before exiting, so no
//! operation outlives its thread. The main thread queues jobs, sets `stop`,
//! waits for every worker with a bounded `wait_all` on the thread handles, and
//! checks their exit codes. Exits 0, or 1 if a check failed.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iocomp::{Pool, Port, Recv};
use iocomp_sync::{wait_all, wait_any, Event, Semaphore, Thread, WaitResult};

/// Exit code of a worker that saw the stop event.
const STOPPED: u32 = 0;
/// Exit code of a worker that hit something unexpected.
const BROKEN: u32 = 2;

fn main() {
    let stop = Event::new(true, false); // manual-reset: once set, every waiter sees it
    let jobs = Semaphore::new(0, 1_000_000).expect("a valid semaphore");
    let done = Arc::new(AtomicU64::new(0));

    let mut workers: Vec<Thread> = (0..4)
        .map(|w| {
            let (stop, jobs, done) = (stop.clone(), jobs.clone(), done.clone());
            Thread::spawn(move || loop {
                match wait_any(&[&stop, &jobs], Some(Duration::from_secs(30))) {
                    Ok(WaitResult::Signaled(0)) => {
                        println!("worker {w}: stop event seen, cleaning up and exiting");
                        return STOPPED;
                    }
                    Ok(WaitResult::Signaled(1)) => {
                        // A job: a little work.
                        std::hint::black_box((0..1000u64).sum::<u64>());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => return BROKEN,
                }
            })
        })
        .collect();

    // An I/O worker: an overlapped receive signalled by its own event.
    let port = Port::new().expect("a port");
    let mut pool = Pool::new(&port, 1, |_, _| {}).expect("a worker on the port");
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let _client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (server_side, _) = listener.accept().expect("accept");
    let io_worker = {
        let (stop, port) = (stop.clone(), port.clone());
        Thread::spawn(move || {
            let sock = port.associate(server_side, 1);
            let io_done = Event::new(true, false);
            let ov =
                match port.submit_with_event(Recv::new(&sock, Vec::with_capacity(64)), &io_done) {
                    Ok(ov) => ov,
                    Err(_) => return BROKEN,
                };
            match wait_any(&[&stop, &io_done], Some(Duration::from_secs(30))) {
                Ok(WaitResult::Signaled(0)) => {
                    // Stop: cancel what is in flight and wait for its packet.
                    if ov.cancel().is_err() {
                        return BROKEN;
                    }
                    match ov.wait(Some(Duration::from_secs(10))) {
                        Some(p) if p.is_aborted() => {
                            println!("io worker: receive cancelled, packet collected, exiting");
                            STOPPED
                        }
                        _ => BROKEN,
                    }
                }
                _ => BROKEN, // the peer never sends
            }
        })
    };
    workers.push(io_worker);

    let queued = 10_000;
    jobs.release(queued).expect("below the maximum");
    // Let the workers run a little, then ask them all to stop.
    std::thread::sleep(Duration::from_millis(50));
    let was_set = stop.set();
    println!("main: stop event set (was set before: {was_set})");

    let all: Vec<&dyn iocomp_sync::Waitable> = workers
        .iter()
        .map(|t| t as &dyn iocomp_sync::Waitable)
        .collect();
    let joined = wait_all(&all, Some(Duration::from_secs(30)));
    let codes: Vec<Option<u32>> = workers.iter().map(Thread::exit_code).collect();
    pool.shutdown();

    let finished = done.load(Ordering::Relaxed);
    let left = jobs.count();
    println!("main: {finished} jobs done, {left} left in the queue, exit codes {codes:?}");
    let ok = joined == Ok(WaitResult::Signaled(0))
        && codes.iter().all(|c| *c == Some(STOPPED))
        && finished + u64::from(left) == u64::from(queued);
    println!(
        "cancel: {}",
        if ok {
            "every worker stopped cleanly"
        } else {
            "FAILED"
        }
    );
    std::process::exit(if ok { 0 } else { 1 });
}
