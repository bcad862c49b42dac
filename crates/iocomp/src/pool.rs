//! A pool of worker threads that wait on one port (`QueueUserWorkItem` plus the
//! seed's `ThreadProc` loop).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crate::op::{Op, Work};
use crate::packet::{GetError, Packet};
use crate::port::Port;

/// Worker threads looping on [`Port::get`] and handing each packet to a handler.
///
/// The number of workers defaults to the number of CPUs: the seed starts 2×CPUs
/// because its Win32 workers block in `TransmitFile`'s system thread; ours never
/// block on I/O, so more threads would only take turns.
pub struct Pool {
    port: Port,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `threads` workers (0 = the port's concurrency) on `port`. Each
    /// packet goes to `handler`, which runs on a worker and may submit more
    /// operations (they go to that worker's own ring). Returns once every worker
    /// is attached, so operations submitted from any thread can be handed over.
    pub fn new<F>(port: &Port, threads: usize, handler: F) -> io::Result<Pool>
    where
        F: Fn(&Port, Packet) + Send + Sync + 'static,
    {
        let n = if threads == 0 {
            port.concurrency()
        } else {
            threads
        };
        let handler = Arc::new(handler);
        let (tx, rx) = mpsc::channel::<io::Result<()>>();
        let mut pool = Pool {
            port: port.clone(),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let port = port.clone();
            let handler = handler.clone();
            let tx = tx.clone();
            let t = std::thread::Builder::new()
                .name(format!("iocomp-worker-{i}"))
                .spawn(move || {
                    let attached = port.attach();
                    let ok = attached.is_ok();
                    let _ = tx.send(attached);
                    drop(tx);
                    if ok {
                        worker(&port, &*handler);
                    }
                    port.detach();
                })?;
            pool.threads.push(t);
        }
        drop(tx);
        for _ in 0..n {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    pool.shutdown();
                    return Err(e);
                }
                Err(_) => break,
            }
        }
        Ok(pool)
    }

    /// The port the workers wait on.
    pub fn port(&self) -> &Port {
        &self.port
    }

    /// Runs `f` on one of the workers (`QueueUserWorkItem`). Fails only if the
    /// port is closed. Queued work cannot be cancelled (C31).
    pub fn queue(&self, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.port.post_op(0, Op::Work(Work(Box::new(f))))
    }

    /// Closes the port and joins every worker. Each worker cancels what it has
    /// in flight and waits for the kernel to let go before it exits.
    pub fn shutdown(&mut self) {
        self.port.close();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(port: &Port, handler: &(dyn Fn(&Port, Packet) + Send + Sync)) {
    loop {
        match port.get(None) {
            Ok(mut p) => {
                let op = std::mem::replace(&mut p.op, Op::Posted { token: 0 });
                let run = match op {
                    Op::Work(w) => catch_unwind(AssertUnwindSafe(|| w.run())),
                    op => {
                        p.op = op;
                        catch_unwind(AssertUnwindSafe(|| handler(port, p)))
                    }
                };
                if run.is_err() {
                    // The packet's resources were dropped during unwinding; the
                    // worker stays alive for everyone else.
                    eprintln!("iocomp: a completion handler panicked; continuing");
                }
            }
            Err(GetError::Abandoned) => return,
            Err(GetError::TimedOut) => {}
        }
    }
}
