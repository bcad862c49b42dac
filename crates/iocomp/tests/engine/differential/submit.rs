//! Turning a program's steps into submissions, recorded in the model.

use super::*;

impl Shared {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Model> {
        harness::lock(&self.m)
    }

    pub(super) fn submit(&self, m: &mut Model, who: Who, at: &str, kind: Kind, op: Op) -> R {
        let idx = m.ops.len();
        let want = format!("{op:?}");
        let want = want.split(' ').next().unwrap_or("").to_string();
        let (id, refused) = match self.port.submit(op) {
            Ok(id) => {
                check!(
                    id != OpId::POSTED,
                    "step {at}: submit gave the posted packets' id"
                );
                if let Some(&j) = m.by_id.get(&id.as_u64()) {
                    return Err(format!(
                        "step {at}: OpId {id:?} reused: it was given to {} already",
                        m.describe(j)
                    ));
                }
                m.by_id.insert(id.as_u64(), idx);
                (Some(id), None)
            }
            Err((e, back)) => {
                let got = format!("{back:?}");
                check!(
                    got.split(' ').next() == Some(want.as_str()),
                    "step {at}: a refused {want} handed back {got}"
                );
                (None, Some(e.kind()))
            }
        };
        // Owner: the thread whose ring runs it. A thread that is not attached
        // hands its operations to the main thread, the only other one attached.
        let owner = if who.attached { who.thread } else { 0 };
        let orphan = !who.attached && !m.main_attached;
        m.ops.push(OpRec {
            at: at.to_string(),
            kind,
            owner,
            id,
            refused,
            disturbed: orphan,
            got: None,
        });
        Ok(())
    }

    /// A step that any thread may run.
    pub(super) fn leaf(&self, step: &Step, who: Who, at: &str) -> R {
        let mut m = self.lock();
        check!(!m.closed, "internal: step after close");
        let idx = m.ops.len();
        let nsocks = self.socks.len();
        match *step {
            Step::Post { key, bytes } => {
                let token = m.posted_next;
                m.posted_next += 1;
                self.port
                    .post(key, bytes, token)
                    .map_err(|e| format!("step {at}: post on an open port failed: {e}"))?;
                m.posted.push_back((token, key, bytes));
            }
            Step::Send { sock, len } => {
                let sock = sock % nsocks;
                let data = pattern(SEND_SEED + idx as u64, 0, len);
                let op = Send::new(&self.socks[sock], data);
                self.submit(&mut m, who, at, Kind::Send { sock, len }, op.into())?;
            }
            Step::Recv { sock, cap, pooled } => {
                self.recv(&mut m, who, at, sock % nsocks, cap, pooled)?
            }
            Step::PeerWrite { sock, len } => {
                let sock = sock % nsocks;
                let done = m.peer_written[sock];
                let len = (len as u64).min(PEER_BUDGET - done);
                if len > 0 {
                    let data = pattern(PEER_SEED + sock as u64, done, len as usize);
                    harness::write_peer(&mut self.peers.lock().unwrap()[sock], &data);
                    m.peer_written[sock] += len;
                }
            }
            Step::Timeout(ref d) => {
                let (dur, long) = match d {
                    Dur::Zero => (Duration::ZERO, false),
                    Dur::Ms(v) => (Duration::from_millis(1 + u64::from(*v) % 20), false),
                    Dur::Hour => (Duration::from_secs(3600), true),
                    Dur::Max => (Duration::MAX, true),
                };
                let key = 0x7000 + idx as u64;
                let op = Timeout::new(dur, key);
                self.submit(&mut m, who, at, Kind::Timeout { long, key }, op.into())?;
            }
            Step::Transmit {
                sock,
                off,
                len,
                head,
                tail,
            } => self.transmit(&mut m, who, at, sock % nsocks, (off, len), (head, tail))?,
            Step::Connect { live } => {
                let addr = if live { self.live } else { self.dead };
                let fd = Connect::stream_socket(&addr)
                    .map_err(|e| format!("step {at}: stream_socket: {e}"))?;
                let key = 0x3000 + idx as u64;
                let h = self.port.associate(fd, key);
                m.conns.push(h.clone());
                let op = Connect::new(&h, addr);
                self.submit(&mut m, who, at, Kind::Connect { live, key }, op.into())?;
            }
            Step::Accept => {
                let op = Accept::new(&self.listener);
                self.submit(&mut m, who, at, Kind::Accept, op.into())?;
            }
            Step::Cancel {
                target,
                other_thread,
            } => self.cancel(&mut m, at, target, other_thread)?,
            Step::CancelPosted => {
                let r = self.port.cancel(OpId::POSTED);
                check!(
                    matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::NotFound),
                    "step {at}: cancel(OpId::POSTED) answered {r:?}, not NotFound"
                );
            }
            _ => return Err(format!("internal: {step:?} is not a leaf")),
        }
        Ok(())
    }

    /// A receive on `sock` of `cap` spare bytes after a prefix of its own.
    fn recv(&self, m: &mut Model, who: Who, at: &str, sock: usize, cap: usize, pooled: bool) -> R {
        let idx = m.ops.len();
        let prefix = vec![0xab, idx as u8, 0xcd];
        let mut buf = Vec::with_capacity(prefix.len() + cap);
        buf.extend_from_slice(&prefix);
        let spare = buf.capacity() - buf.len();
        let h = &self.socks[sock];
        let op = if pooled {
            Recv::pooled(h, buf)
        } else {
            Recv::new(h, buf)
        };
        let kind = Kind::Recv {
            sock,
            spare,
            prefix: prefix.len(),
            pooled,
        };
        self.submit(m, who, at, kind, op.into())?;
        Ok(())
    }

    /// A transmit on `sock` of the file's range `(off, len)` between a head
    /// and a tail of the given lengths.
    fn transmit(
        &self,
        m: &mut Model,
        who: Who,
        at: &str,
        sock: usize,
        (off, len): (u64, u64),
        (head, tail): (usize, usize),
    ) -> R {
        let idx = m.ops.len();
        let mut op = TransmitFile::new(&self.socks[sock], self.file.clone());
        op.offset = off;
        op.len = len;
        op.head = pattern(HEAD_SEED + idx as u64, 0, head);
        op.tail = pattern(TAIL_SEED + idx as u64, 0, tail);
        // What a correct transfer sends of the file, and whether the
        // specification says so for certain.
        let (file, sure) = if off > FILE_LEN {
            (None, true) // outside the file: must fail
        } else if len == 0 {
            (Some(FILE_LEN - off), off < FILE_LEN) // off == end: unspecified
        } else if off + len <= FILE_LEN {
            (Some(len), true)
        } else {
            (None, true) // shorter than promised: must fail
        };
        let kind = Kind::Transmit {
            sock,
            head,
            off,
            file,
            tail,
            sure,
        };
        self.submit(m, who, at, kind, op.into())?;
        Ok(())
    }

    /// Cancels op #`target` (modulo the ops so far), from this thread or
    /// another: `Ok` or `NotFound`, `NotFound` once its packet was taken,
    /// `Ok` for a pending hour-long timer nobody touched.
    fn cancel(&self, m: &mut Model, at: &str, target: usize, other_thread: bool) -> R {
        if m.ops.is_empty() {
            return Ok(());
        }
        let t = target % m.ops.len();
        let Some(id) = m.ops[t].id else {
            return Ok(());
        };
        let r = if other_thread {
            let port = self.port.clone();
            thread::spawn(move || port.cancel(id))
                .join()
                .map_err(|_| format!("step {at}: cancel panicked"))?
        } else {
            self.port.cancel(id)
        };
        m.cancels += 1;
        let o = &m.ops[t];
        if let Err(e) = &r {
            check!(
                e.kind() == std::io::ErrorKind::NotFound,
                "step {at}: cancel of {} failed with {e} (only Ok or NotFound)",
                m.describe(t)
            );
        }
        if o.got.is_some() {
            check!(
                r.is_err(),
                "step {at}: cancel of {} answered Ok, but its packet was already taken",
                m.describe(t)
            );
        } else if matches!(o.kind, Kind::Timeout { long: true, .. }) && !o.disturbed {
            check!(
                r.is_ok(),
                "step {at}: cancel of {}, a pending hour-long timer nobody touched, \
                 answered {r:?}",
                m.describe(t)
            );
        }
        if o.got.is_none() {
            m.ops[t].disturbed = true;
        }
        Ok(())
    }
}
