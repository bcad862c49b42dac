//! Checking every packet taken (and every LIFO probe) against the model.

use super::*;

impl Shared {
    /// Checks one packet taken by the main thread against the model.
    pub(super) fn on_packet(&self, m: &mut Model, p: Packet, at: &str) -> R {
        m.packets += 1;
        if let Op::Posted { token } = p.op {
            return on_posted(m, token, &p, at);
        }
        check!(
            p.id != OpId::POSTED,
            "step {at}: an I/O packet ({:?}) carries the posted id",
            p.op
        );
        let Some(&i) = m.by_id.get(&p.id.as_u64()) else {
            return Err(format!(
                "step {at}: packet for id {:?} ({:?}, {:?}) that no accepted submission has",
                p.id, p.op, p.status
            ));
        };
        check!(
            m.ops[i].got.is_none(),
            "step {at}: a second packet ({:?}, {:?}, {} bytes) for {}",
            p.op,
            p.status,
            p.bytes,
            m.describe(i)
        );
        let what = m.describe(i);
        let o = &m.ops[i];
        let aborted = p.is_aborted();
        let status = p.status.as_ref().map(|_| ()).map_err(errno);
        check!(
            !aborted || o.disturbed,
            "step {at}: {what} came back ECANCELED, but nobody cancelled it"
        );
        let mut got = Got {
            status: status.clone(),
            bytes: p.bytes,
            aborted,
            data: Vec::new(),
            peer: None,
        };
        let seen = Seen {
            p: &p,
            what: &what,
            at,
            aborted,
        };
        self.check_io(o.kind, i, &seen, &mut got)?;
        m.ops[i].got = Some(got);
        Ok(())
    }

    /// Checks an I/O packet against what its operation (`kind`, op #`i`)
    /// may give; fills in `got` what later checks need.
    fn check_io(&self, kind: Kind, i: usize, c: &Seen, got: &mut Got) -> R {
        let (p, at, what, aborted) = (c.p, c.at, c.what, c.aborted);
        let sk = |s: usize| self.socks[s].key();
        match (kind, &p.op) {
            (Kind::Timeout { long, key }, Op::Timeout(_)) => check_timer(c, long, key),
            (Kind::Send { sock, len }, Op::Send(s)) => check_send(c, sk(sock), len, s.buf.len()),
            (
                Kind::Recv {
                    sock,
                    spare,
                    prefix,
                    pooled,
                },
                Op::Recv(r),
            ) => {
                check_recv(c, sk(sock), i, spare, prefix, pooled, &r.buf)?;
                got.data = r.buf[prefix..].to_vec();
                Ok(())
            }
            (
                Kind::Transmit {
                    sock,
                    head,
                    file,
                    tail,
                    sure,
                    ..
                },
                Op::TransmitFile(_),
            ) => check_transmit(
                c,
                sk(sock),
                file.map(|f| head as u64 + f + tail as u64),
                sure,
            ),
            (Kind::Connect { live, key }, Op::Connect(_)) => check_connect(c, live, key),
            (Kind::Accept, Op::Accept(a)) => {
                check!(
                    p.key == self.listener.key(),
                    "step {at}: {what}: key {}",
                    p.key
                );
                match &p.status {
                    Ok(()) => {
                        check!(
                            a.socket.is_some() && a.peer.is_some(),
                            "step {at}: {what} succeeded without a socket or peer"
                        );
                        got.peer = a.peer;
                    }
                    Err(e) => check!(aborted, "step {at}: {what} failed: {e}"),
                }
                Ok(())
            }
            (_, op) => Err(format!("step {at}: {what} came back as {op:?}")),
        }
    }

    /// `get` or `get_many` on the main thread.
    pub(super) fn get(&self, max: Option<usize>, w: &Wait, at: &str) -> R {
        let mut m = self.lock();
        let posted = m.posted.len();
        let t = match w {
            Wait::Zero => Some(Duration::ZERO),
            Wait::Ms(v) => Some(Duration::from_millis(1 + u64::from(*v) % 30)),
            // An unbounded wait only where a packet is certainly queued.
            Wait::Max if posted > 0 => Some(Duration::MAX),
            Wait::Max => Some(Duration::ZERO),
        };
        m.gets += 1;
        drop(m);
        let mut out = Vec::new();
        let r = match max {
            None => self.port.get(t).map(|p| {
                out.push(p);
                1
            }),
            Some(max) => self.port.get_many(&mut out, max, t),
        };
        let mut m = self.lock();
        m.main_attached = true;
        match r {
            Ok(n) => {
                check!(
                    n == out.len() && n >= 1 && n <= max.unwrap_or(1),
                    "step {at}: get_many(max {max:?}) said {n} and gave {}",
                    out.len()
                );
                for p in out {
                    self.on_packet(&mut m, p, at)?;
                }
            }
            Err(GetError::TimedOut) => check!(
                posted == 0,
                "step {at}: get({t:?}) timed out with {posted} posted packet(s) queued"
            ),
            Err(e) => return Err(format!("step {at}: get on an open port: {e:?}")),
        }
        Ok(())
    }

    /// Two threads park in turn; posted packets must go to the newest first.
    pub(super) fn lifo_probe(&self, prog: &Program, at: &str) -> R {
        {
            let m = self.lock();
            if prog.concurrency < 2 || !m.posted.is_empty() || m.outstanding().next().is_some() {
                return Ok(()); // not observable here
            }
        }
        let base = self.port.waiters();
        let park = |tx: mpsc::Sender<Result<Packet, GetError>>| {
            let port = self.port.clone();
            thread::spawn(move || {
                let _ = tx.send(port.get(Some(DRAIN)));
            })
        };
        let token = |r: Result<Packet, GetError>| match r {
            Ok(Packet {
                op: Op::Posted { token },
                ..
            }) => Ok(token),
            other => Err(format!("{other:?}")),
        };
        PROBES.fetch_add(1, Ordering::Relaxed);
        let (txa, rxa) = mpsc::channel();
        let a = park(txa);
        check!(
            harness::until(DRAIN, || self.port.waiters() == base + 1),
            "step {at}: LIFO probe: first waiter never parked"
        );
        let (txb, rxb) = mpsc::channel();
        let b = park(txb);
        check!(
            harness::until(DRAIN, || self.port.waiters() == base + 2),
            "step {at}: LIFO probe: second waiter never parked"
        );
        self.port.post(1, 2, PROBE).map_err(|e| e.to_string())?;
        let gb = rxb
            .recv_timeout(DRAIN)
            .map_err(|_| format!("step {at}: LIFO probe: the newest waiter got nothing"))?;
        check!(
            token(gb) == Ok(PROBE),
            "step {at}: LIFO probe: the newest waiter did not get the packet"
        );
        check!(
            rxa.try_recv().is_err(),
            "step {at}: LIFO probe: the older waiter woke too"
        );
        b.join().map_err(|_| "probe thread panicked".to_string())?;
        self.port.post(1, 2, PROBE + 1).map_err(|e| e.to_string())?;
        let ga = rxa
            .recv_timeout(DRAIN)
            .map_err(|_| format!("step {at}: LIFO probe: the older waiter got nothing"))?;
        check!(
            token(ga) == Ok(PROBE + 1),
            "step {at}: LIFO probe: the older waiter got the wrong packet"
        );
        a.join().map_err(|_| "probe thread panicked".to_string())?;
        Ok(())
    }
}

/// One I/O packet being checked, and what the checks say of it.
struct Seen<'a> {
    p: &'a Packet,
    what: &'a str,
    at: &'a str,
    aborted: bool,
}

/// A posted packet: FIFO, its values untouched, never a probe's.
fn on_posted(m: &mut Model, token: u64, p: &Packet, at: &str) -> R {
    check!(
        token < PROBE,
        "step {at}: the main thread got LIFO probe packet {token:#x}"
    );
    let Some((want, key, bytes)) = m.posted.pop_front() else {
        return Err(format!(
            "step {at}: posted packet {token} that is not queued (none pending)"
        ));
    };
    check!(
        token == want,
        "step {at}: posted packets out of FIFO order: got token {token}, oldest queued is {want}"
    );
    check!(
        (p.key, p.bytes, p.id) == (key, bytes, OpId::POSTED) && p.status.is_ok(),
        "step {at}: posted packet {token} altered: key {} bytes {} id {:?} status {:?}",
        p.key,
        p.bytes,
        p.id,
        p.status
    );
    Ok(())
}

/// A timer succeeds with 0 bytes (unless it is an hour or more) or is cancelled.
fn check_timer(c: &Seen, long: bool, key: u64) -> R {
    let (p, at, what, aborted) = (c.p, c.at, c.what, c.aborted);
    check!(p.key == key, "step {at}: {what}: key {}", p.key);
    match &p.status {
        Ok(()) => check!(
            !long && p.bytes == 0,
            "step {at}: {what} completed with success and {} bytes \
             (a timer of an hour or more cannot have fired)",
            p.bytes
        ),
        Err(e) => check!(
            aborted,
            "step {at}: {what} failed with {e} (a timer succeeds or is cancelled)"
        ),
    }
    Ok(())
}

/// A send hands its buffer back whole and sends all of it, unless cancelled.
fn check_send(c: &Seen, key: u64, len: usize, buf_len: usize) -> R {
    let (p, at, what, aborted) = (c.p, c.at, c.what, c.aborted);
    check!(p.key == key, "step {at}: {what}: key {}", p.key);
    check!(
        buf_len == len,
        "step {at}: {what}: buffer handed back with {} bytes",
        buf_len
    );
    match &p.status {
        Ok(()) => check!(
            p.bytes == len as u64,
            "step {at}: {what} succeeded with {} of {len} bytes",
            p.bytes
        ),
        Err(e) => check!(
            aborted && p.bytes <= len as u64,
            "step {at}: {what} failed: {e}, {} bytes",
            p.bytes
        ),
    }
    Ok(())
}

/// A receive (op #`i`) keeps the buffer's first bytes, appends what it
/// reports, and never 0 bytes while the peer is open.
fn check_recv(
    c: &Seen,
    key: u64,
    i: usize,
    spare: usize,
    prefix: usize,
    pooled: bool,
    buf: &[u8],
) -> R {
    let (p, at, what, aborted) = (c.p, c.at, c.what, c.aborted);
    check!(p.key == key, "step {at}: {what}: key {}", p.key);
    check!(
        buf.len() >= prefix && buf[..prefix] == [0xab, i as u8, 0xcd],
        "step {at}: {what}: the bytes already in the buffer were not kept"
    );
    let n = buf.len() - prefix;
    check!(
        n as u64 == p.bytes,
        "step {at}: {what}: {} bytes reported, {n} appended",
        p.bytes
    );
    match &p.status {
        Ok(()) => check!(
            n >= 1 && (pooled || n <= spare),
            "step {at}: {what}: {n} bytes into {spare} spare \
             (the peer is open: 0 would be EOF)"
        ),
        Err(e) => check!(aborted && n == 0, "step {at}: {what} failed: {e}"),
    }
    Ok(())
}

/// A transmit of a range inside the file sends `total` bytes; one outside
/// it fails.
fn check_transmit(c: &Seen, key: u64, total: Option<u64>, sure: bool) -> R {
    let (p, at, what, aborted) = (c.p, c.at, c.what, c.aborted);
    check!(p.key == key, "step {at}: {what}: key {}", p.key);
    match (&p.status, total) {
        (Ok(()), Some(t)) => check!(
            p.bytes == t,
            "step {at}: {what} succeeded with {} of {t} bytes",
            p.bytes
        ),
        (Ok(()), None) => {
            return Err(format!(
                "step {at}: {what} succeeded ({} bytes) although the range \
                 is outside the file",
                p.bytes
            ))
        }
        (Err(e), Some(_)) => check!(
            aborted || !sure,
            "step {at}: {what} failed: {e} ({} bytes)",
            p.bytes
        ),
        (Err(_), None) => {}
    }
    Ok(())
}

/// A connect to the listener succeeds, one to a closed port is refused.
fn check_connect(c: &Seen, live: bool, key: u64) -> R {
    let (p, at, what, aborted) = (c.p, c.at, c.what, c.aborted);
    check!(p.key == key, "step {at}: {what}: key {}", p.key);
    check!(p.bytes == 0, "step {at}: {what}: {} bytes", p.bytes);
    if !aborted {
        if live {
            check!(
                p.status.is_ok(),
                "step {at}: {what} to a listener failed: {:?}",
                p.status
            );
        } else {
            check!(
                matches!(&p.status, Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED)),
                "step {at}: {what} to a closed port: {:?}",
                p.status
            );
        }
    }
    Ok(())
}
