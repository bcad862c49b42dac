//! Traffic limits: a per-connection bandwidth cap with a free burst (nginx's
//! `limit_rate` and `limit_rate_after`) and a cap on connections per client
//! address.
//!
//! **Rate.** The cap is per response, as nginx's: each reply (one file of the
//! line protocol, one HTTP response) may send its first `after` bytes at full
//! speed, and then no more than `after + rate × t` bytes by `t` seconds after
//! it started. A paced reply goes out in slices of about a tenth of a second's
//! worth (at least one TCP segment); before each slice the connection waits,
//! if it must, on the engine's [`Timeout`](iocomp::Timeout) operation, which
//! carries the connection as its context as every other operation does. No
//! thread ever sleeps, and the allowance is computed from the reply's start,
//! so timer lateness does not add up. Bytes of the response head count too.
//! Connections without a cap take the unchanged path: one operation per piece.
//!
//! **Per address.** A sharded table counts open connections per client IP (one
//! lock of one shard at accept and at close). A connection over the limit is
//! accepted and answered on its first request, in its own protocol, with
//! `503 Service Unavailable` and `Retry-After` (HTTP) or the error line
//! `File transmit error: busy` (line protocol), then closed.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Rate;
use crate::proto::Piece;

/// The smallest slice a paced reply sends at once: about one TCP segment.
const MIN_SLICE: u64 = 1448;

/// Where a paced reply stands.
pub(crate) struct Pace {
    rate: Rate,
    start: Instant,
    sent: u64,
}

impl Pace {
    /// A reply paced by `rate` starts now.
    pub(crate) fn new(rate: Rate) -> Pace {
        Pace {
            rate,
            start: Instant::now(),
            sent: 0,
        }
    }

    /// The slice a paced file piece is cut into: a tenth of a second's worth.
    fn slice(&self) -> u64 {
        (self.rate.rate / 10).max(MIN_SLICE)
    }

    /// Shapes the next piece of a paced reply: cuts the file piece at the front
    /// of `pending` to what may go out now, or says how long to wait first.
    /// `max` is the most file bytes the sender takes from one piece at once
    /// (TLS encrypts a bounded chunk per send): the piece is never cut longer,
    /// so what is counted here is exactly what goes out.
    pub(crate) fn shape(&mut self, pending: &mut VecDeque<Piece>, max: u64) -> Option<Duration> {
        let pace = self;
        let front = pending.front_mut()?;
        let (head, offset, len, tail) = match front {
            Piece::Bytes(b) => {
                // Small (error lines, heads, listings): sent whole, counted.
                pace.sent += b.len() as u64;
                return None;
            }
            Piece::File {
                head,
                offset,
                len,
                tail,
            } => (head, offset, len, tail),
        };
        let extra = head.len() as u64;
        let n = if pace.sent + extra < pace.rate.after {
            // Inside the free burst: all of it at once.
            (*len).min(pace.rate.after - pace.sent - extra).max(1)
        } else {
            (*len).min(pace.slice())
        };
        let n = n.min(*len).min(max.max(1));
        // The slice may start once the allowance covers it.
        let total = pace.sent + extra + n;
        if total > pace.rate.after && pace.rate.rate > 0 {
            let due =
                Duration::from_secs_f64((total - pace.rate.after) as f64 / pace.rate.rate as f64);
            let elapsed = pace.start.elapsed();
            if due > elapsed {
                return Some(due - elapsed);
            }
        }
        if n < *len {
            let rest = Piece::File {
                head: Vec::new(),
                offset: *offset + n,
                len: *len - n,
                tail: std::mem::take(tail),
            };
            *len = n;
            pace.sent += extra + n;
            pending.insert(1, rest);
        } else {
            pace.sent += extra + n + tail.len() as u64;
        }
        None
    }
}

/// Open connections per client address, in shards.
pub(crate) struct PerIp {
    max: u32,
    shards: Vec<Mutex<HashMap<IpAddr, u32>>>,
}

const IP_SHARDS: usize = 16;

impl PerIp {
    pub(crate) fn new(max: usize) -> PerIp {
        PerIp {
            max: u32::try_from(max).unwrap_or(u32::MAX),
            shards: (0..IP_SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        let h = match ip {
            IpAddr::V4(a) => u32::from(*a) as usize,
            IpAddr::V6(a) => (u128::from(*a) ^ (u128::from(*a) >> 64)) as usize,
        };
        self.shards[(h ^ (h >> 7)) % IP_SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `ip` in; `false` (not counted) if that
    /// address already has the maximum.
    pub(crate) fn acquire(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let mut s = self.shard(&ip);
        let n = s.entry(ip).or_insert(0);
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    /// Counts a connection acquired from `ip` out.
    pub(crate) fn release(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        let mut s = self.shard(&ip);
        if let Some(n) = s.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                s.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(len: u64) -> VecDeque<Piece> {
        VecDeque::from([Piece::File {
            head: b"HEAD".to_vec(),
            offset: 0,
            len,
            tail: b"T".to_vec(),
        }])
    }

    #[test]
    fn burst_goes_at_once_then_slices_wait() {
        let r = Rate {
            rate: 100_000,
            after: 50_000,
        };
        let mut p = Pace::new(r);
        let mut q = file(1_000_000);
        assert_eq!(p.shape(&mut q, u64::MAX), None);
        match &q[0] {
            Piece::File { len, tail, .. } => {
                assert_eq!(*len, 50_000 - 4);
                assert!(tail.is_empty());
            }
            Piece::Bytes(_) => panic!("a file piece"),
        }
        q.pop_front();
        // The next slice (10 000 bytes) is due 0.1 s after the start.
        let wait = p.shape(&mut q, u64::MAX).expect("must wait");
        assert!(wait > Duration::from_millis(50) && wait <= Duration::from_millis(100));
        match &q[0] {
            Piece::File {
                offset, len, tail, ..
            } => {
                assert_eq!(*offset, 50_000 - 4);
                assert_eq!(*len, 1_000_000 - 50_000 + 4);
                assert_eq!(tail, b"T");
            }
            Piece::Bytes(_) => panic!("a file piece"),
        }
    }

    #[test]
    fn per_ip_counts_and_releases() {
        let t = PerIp::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let c: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(t.acquire(a));
        assert!(t.acquire(b));
        assert!(!t.acquire(a), "the mapped form is the same address");
        assert!(t.acquire(c));
        t.release(a);
        assert!(t.acquire(a));
    }
}
