//! Running one program, draining what is left, and checking the byte streams.

use super::*;

/// Runs `prog` on `backend`, checking every step against the model.
pub(super) fn run(prog: &Program, backend: Backend) -> R<Outcome> {
    let (sh, readers) = setup(prog, backend)?;
    let steps = run_steps(&sh, prog)?;
    let closed = sh.lock().closed;
    if !closed {
        drain(&sh)?;
    }
    finish(sh, readers, closed, steps)
}

/// The port, its sockets (each with a reader on the far side), a listener,
/// and the model, empty.
fn setup(prog: &Program, backend: Backend) -> R<(Arc<Shared>, Vec<Reader>)> {
    let port = Port::builder()
        .backend(backend)
        .concurrency(prog.concurrency)
        .strict(prog.strict)
        .build()
        .map_err(|e| format!("building a {backend} port: {e}"))?;
    check!(
        port.backend() == backend,
        "asked for {backend}, got {}",
        port.backend()
    );
    port.attach().map_err(|e| format!("attach: {e}"))?;
    let mut socks = Vec::new();
    let mut peers = Vec::new();
    let mut readers = Vec::new();
    for s in 0..prog.socks {
        let (ours, theirs) = harness::pair();
        socks.push(port.associate(ours, 100 + s as u64));
        peers.push(theirs.try_clone().unwrap());
        readers.push(Reader::start(theirs, prog.slow_reader));
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let live = l.local_addr().unwrap();
    // Refused for certain: while `live` holds 127.0.0.1:P, nobody can bind
    // 0.0.0.0:P, and nobody binds 127.0.0.2 on purpose.
    let dead = SocketAddr::from(([127, 0, 0, 2], live.port()));
    let listener = port.associate(l, 200);
    let sh = Arc::new(Shared {
        port,
        socks,
        peers: Mutex::new(peers),
        listener,
        live,
        dead,
        file: Arc::new(File::open(the_file()).unwrap()),
        m: Mutex::new(Model {
            peer_written: vec![0; prog.socks],
            main_attached: true,
            next_thread: 1,
            ..Model::default()
        }),
    });
    Ok((sh, readers))
}

/// Runs the program's steps on this (the main) thread; the number of steps
/// run, those of its threads included.
fn run_steps(sh: &Arc<Shared>, prog: &Program) -> R<u64> {
    let main = |sh: &Shared| Who {
        thread: 0,
        attached: sh.lock().main_attached,
    };
    let mut steps = 0u64;
    for (n, step) in prog.steps.iter().enumerate() {
        let at = n.to_string();
        steps += 1;
        match step {
            Step::Get(w) => sh.get(None, w, &at)?,
            Step::GetMany { max, wait } => sh.get(Some(*max), wait, &at)?,
            Step::Attach => {
                sh.port
                    .attach()
                    .map_err(|e| format!("step {at}: attach: {e}"))?;
                sh.lock().main_attached = true;
            }
            Step::Detach => {
                let mut m = sh.lock();
                sh.port.detach();
                m.main_attached = false;
                for i in m.outstanding().collect::<Vec<_>>() {
                    if m.ops[i].owner == 0 {
                        m.ops[i].disturbed = true;
                    }
                }
            }
            Step::Thread {
                attach,
                detach,
                steps: sub,
            } => steps += thread_step(sh, &at, *attach, *detach, sub)?,
            Step::LifoProbe => sh.lifo_probe(prog, &at)?,
            Step::Close => {
                close_step(sh, &at)?;
                break;
            }
            leaf => {
                let who = main(sh);
                sh.leaf(leaf, who, &at)?;
            }
        }
    }
    Ok(steps)
}

/// A short-lived thread that attaches (or not), runs `sub` and detaches (or
/// not) and exits; the number of its steps.
fn thread_step(sh: &Arc<Shared>, at: &str, attach: bool, detach: bool, sub: &[Step]) -> R<u64> {
    let tid = {
        let mut m = sh.lock();
        m.next_thread += 1;
        m.next_thread
    };
    let sh2 = sh.clone();
    let nsub = sub.len() as u64;
    let sub = sub.to_vec();
    let at2 = at.to_string();
    let t = thread::spawn(move || -> R {
        if attach {
            sh2.port
                .attach()
                .map_err(|e| format!("step {at2}: attach: {e}"))?;
        }
        for (j, s) in sub.iter().enumerate() {
            let who = Who {
                thread: tid,
                attached: attach,
            };
            sh2.leaf(s, who, &format!("{at2}.{j}"))?;
        }
        if detach {
            let m = sh2.lock();
            sh2.port.detach();
            drop(m);
        }
        Ok(())
    });
    let r = t
        .join()
        .map_err(|e| format!("step {at}: thread panicked: {e:?}"))?;
    // Its operations were cancelled when it detached or exited.
    let mut m = sh.lock();
    for i in m.outstanding().collect::<Vec<_>>() {
        if m.ops[i].owner == tid {
            m.ops[i].disturbed = true;
        }
    }
    r?;
    Ok(nsub)
}

/// Closes the port: `get` says `Abandoned`, `post` fails, and every
/// operation in flight may end aborted.
fn close_step(sh: &Shared, at: &str) -> R {
    let mut m = sh.lock();
    sh.port.close();
    m.closed = true;
    check!(
        sh.port.get(Some(Duration::ZERO)).err() == Some(GetError::Abandoned),
        "step {at}: get after close did not say Abandoned"
    );
    check!(
        sh.port.post(1, 1, 1).is_err(),
        "step {at}: post after close succeeded"
    );
    sh.port.detach();
    for o in m.ops.iter_mut() {
        o.disturbed = true;
    }
    Ok(())
}

/// Every descriptor on our side must close once the port and the handles
/// are gone; then the peers hold the whole streams, which must be what the
/// model says, and every accepted connection one of ours.
fn finish(sh: Arc<Shared>, readers: Vec<Reader>, closed: bool, steps: u64) -> R<Outcome> {
    let sh = Arc::try_unwrap(sh).map_err(|_| "internal: Shared still shared".to_string())?;
    let m = sh.m.into_inner().unwrap_or_else(|e| e.into_inner());
    let conns_local: HashSet<SocketAddr> = m
        .conns
        .iter()
        .filter_map(|h| {
            let fd = h.as_fd().try_clone_to_owned().ok()?;
            TcpStream::from(fd).local_addr().ok()
        })
        .collect();
    let leftovers = take_leftovers(&sh.socks, &m, closed)?;
    drop(sh.port);
    drop(sh.socks);
    drop(sh.listener);
    let Model {
        ops,
        conns,
        peer_written,
        packets,
        cancels,
        ..
    } = m;
    drop(conns);
    let mut streams = Vec::new();
    for (s, r) in readers.into_iter().enumerate() {
        // After a close, a reset (bytes that no receive took, dropped with
        // the socket) closes as well as an EOF.
        let r = r.finish_or_reset(DRAIN, closed);
        streams.push(r.map_err(|e| format!("socket {s}: {e}"))?);
    }
    drop(sh.peers);

    if !closed {
        check_streams(&ops, &streams, &peer_written, &leftovers)?;
    }
    // Accepted connections: distinct, and each one of ours.
    let mut seen = HashSet::new();
    for (i, o) in ops.iter().enumerate() {
        if let Some(Got { peer: Some(p), .. }) = o.got {
            check!(seen.insert(p), "op #{i}: peer {p} accepted twice");
            check!(
                conns_local.contains(&p),
                "op #{i}: accepted {p}, which none of our connects is"
            );
        }
    }
    Ok(Outcome {
        sig: ops.iter().map(classify).collect(),
        steps,
        ops: ops.len() as u64,
        packets,
        cancels,
    })
}

/// Takes what the receives left in our sockets (closing a socket with
/// unread bytes would reset the connection): with the bytes the receives
/// got, in submission order, they must be exactly what the peer wrote.
fn take_leftovers(socks: &[Handle], m: &Model, closed: bool) -> R<Vec<Vec<u8>>> {
    let mut leftovers = Vec::new();
    for (s, h) in socks.iter().enumerate() {
        let taken: u64 = m
            .ops
            .iter()
            .filter_map(|o| match (o.kind, &o.got) {
                (Kind::Recv { sock, .. }, Some(g)) if sock == s => Some(g.data.len() as u64),
                _ => None,
            })
            .sum();
        let want = if closed {
            None
        } else {
            Some(m.peer_written[s].saturating_sub(taken) as usize)
        };
        leftovers.push(read_leftover(h, want).map_err(|e| format!("socket {s}: {e}"))?);
    }
    Ok(leftovers)
}

/// Waits for every packet still owed, cancelling what would wait for ever.
pub(super) fn drain(sh: &Shared) -> R {
    let at = "drain";
    for phase in 0..2 {
        if phase == 1 {
            let mut m = sh.lock();
            for i in m.outstanding().collect::<Vec<_>>() {
                let id = m.ops[i].id.unwrap();
                if let Err(e) = sh.port.cancel(id) {
                    check!(
                        e.kind() == std::io::ErrorKind::NotFound,
                        "drain: cancel of {} failed: {e}",
                        m.describe(i)
                    );
                }
                m.ops[i].disturbed = true;
            }
        }
        let start = Instant::now();
        loop {
            let m = sh.lock();
            let owed: Vec<usize> = m
                .outstanding()
                .filter(|&i| phase == 1 || (m.ops[i].kind.finite() && !m.ops[i].disturbed))
                .collect();
            if owed.is_empty() && m.posted.is_empty() {
                break;
            }
            if start.elapsed() > DRAIN {
                let list: Vec<String> = owed.iter().map(|&i| m.describe(i)).collect();
                return Err(format!(
                    "drain (phase {phase}): no packet within {DRAIN:?} for {} operation(s): {}; \
                     {} posted packet(s) missing",
                    owed.len(),
                    list.join("; "),
                    m.posted.len()
                ));
            }
            drop(m);
            match sh.port.get(Some(Duration::from_millis(50))) {
                Ok(p) => {
                    let mut m = sh.lock();
                    sh.on_packet(&mut m, p, at)?;
                }
                Err(GetError::TimedOut) => {}
                Err(e) => return Err(format!("drain: get: {e:?}")),
            }
        }
    }
    // Nothing more may come.
    match sh.port.get(Some(Duration::from_millis(20))) {
        Err(GetError::TimedOut) => Ok(()),
        Ok(p) => Err(format!(
            "drain: a packet nobody owes: {:?} id {:?} {:?}",
            p.op, p.id, p.status
        )),
        Err(e) => Err(format!("drain: get: {e:?}")),
    }
}

/// Reads from our side of a socket, through a duplicate of its descriptor,
/// `want` bytes (`None`: whatever is there).
pub(super) fn read_leftover(h: &Handle, want: Option<usize>) -> R<Vec<u8>> {
    use std::io::Read;
    let fd = h
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("dup: {e}"))?;
    let mut s = TcpStream::from(fd);
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let start = Instant::now();
    loop {
        if want.is_some_and(|w| out.len() >= w) {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if want.is_none() {
                    break;
                }
                if start.elapsed() > Duration::from_secs(5) {
                    return Err(format!(
                        "{} of the peer's bytes are neither in a receive's packet nor in the socket                          (lost by a cancelled receive?)",
                        want.unwrap() - out.len()
                    ));
                }
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("reading what the receives left: {e}")),
        }
    }
    Ok(out)
}

pub(super) fn check_streams(
    ops: &[OpRec],
    streams: &[Vec<u8>],
    peer_written: &[u64],
    leftovers: &[Vec<u8>],
) -> R {
    for (s, stream) in streams.iter().enumerate() {
        check_sent(ops, s, stream)?;
        check_received(ops, s, peer_written, leftovers)?;
    }
    Ok(())
}

/// What the peer of socket `s` received: the sends and transmits, in
/// submission order, each cut at its bytes.
fn check_sent(ops: &[OpRec], s: usize, stream: &[u8]) -> R {
    let mut pos = 0usize;
    for (i, o) in ops.iter().enumerate() {
        let Some(g) = &o.got else { continue };
        let expect = match o.kind {
            Kind::Send { sock, len } if sock == s => pattern(SEND_SEED + i as u64, 0, len),
            Kind::Transmit {
                sock,
                head,
                off,
                file,
                tail,
                ..
            } if sock == s => {
                let mut v = pattern(HEAD_SEED + i as u64, 0, head);
                // A range past the end fails, after what the file has.
                let body = file.unwrap_or(FILE_LEN.saturating_sub(off)) as usize;
                v.extend(pattern(FILE_SEED, off, body));
                v.extend(pattern(TAIL_SEED + i as u64, 0, tail));
                v
            }
            _ => continue,
        };
        let n = g.bytes as usize;
        check!(
            n <= expect.len(),
            "socket {s}: op #{i} ({:?}) reports {n} bytes of {}",
            o.kind,
            expect.len()
        );
        let have = stream
            .get(pos..pos + n)
            .unwrap_or(&stream[pos.min(stream.len())..]);
        if have != &expect[..n] {
            return Err(out_of_order(ops, s, stream, pos, i, have, &expect[..n]));
        }
        pos += n;
    }
    check!(
        pos == stream.len(),
        "socket {s}: the peer received {} bytes, the packets account for {pos}",
        stream.len()
    );
    Ok(())
}

/// Says where op #`i`'s bytes (`expect`) differ from what the peer has
/// (`have`, from stream offset `pos`), and which send the bytes there
/// belong to.
fn out_of_order(
    ops: &[OpRec],
    s: usize,
    stream: &[u8],
    pos: usize,
    i: usize,
    have: &[u8],
    expect: &[u8],
) -> String {
    let n = expect.len();
    let k = have
        .iter()
        .zip(expect)
        .position(|(a, b)| a != b)
        .unwrap_or(have.len());
    let owner = ops.iter().enumerate().find_map(|(j, oj)| {
        if let Kind::Send { sock, len } = oj.kind {
            if sock == s {
                let pj = pattern(SEND_SEED + j as u64, 0, len);
                let win = &stream[pos + k..(pos + k + 16).min(stream.len())];
                if pj.windows(win.len().max(1)).any(|w| w == win) {
                    return Some(j);
                }
            }
        }
        None
    });
    format!(
        "socket {s}: the peer's stream is not the sends in submission order: \
         at stream offset {} (byte {k} of op #{i}, {:?}, {n} bytes reported) \
         the bytes belong to op {owner:?}",
        pos + k,
        ops[i].kind
    )
}

/// What the receives on socket `s` took: in submission order, the peer's
/// bytes in order, and with what was left in the socket, all it wrote.
fn check_received(ops: &[OpRec], s: usize, peer_written: &[u64], leftovers: &[Vec<u8>]) -> R {
    let mut got = Vec::new();
    for o in ops {
        if let (Kind::Recv { sock, .. }, Some(g)) = (o.kind, &o.got) {
            if sock == s {
                got.extend_from_slice(&g.data);
            }
        }
    }
    check!(
        got.len() as u64 <= peer_written[s],
        "socket {s}: received {} bytes, {} were written",
        got.len(),
        peer_written[s]
    );
    check!(
        got == pattern(PEER_SEED + s as u64, 0, got.len()),
        "socket {s}: the receives, in submission order, do not hold the peer's bytes in order"
    );
    let all = got.len() + leftovers[s].len();
    check!(
        all as u64 == peer_written[s]
            && leftovers[s] == pattern(PEER_SEED + s as u64, got.len() as u64, leftovers[s].len()),
        "socket {s}: the receives took {} bytes and {} were left in the socket, of {} written, \
         or the rest is not the continuation",
        got.len(),
        leftovers[s].len(),
        peer_written[s]
    );
    Ok(())
}
