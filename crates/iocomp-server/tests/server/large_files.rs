//! Large files arrive byte-exact: 100 MiB checked block by block, and a
//! 5 GiB sparse file past the 4 GiB mark with markers at the 2 GiB and
//! 4 GiB boundaries and zero runs between them. Heavy: one at a time.

use std::net::Shutdown;
use std::time::Duration;

use crate::harness::client::connect_with_rcvbuf;
use crate::harness::client::{read_until_closed, send, End};
use crate::harness::{evict, heavy, pseudo_random, show, Pattern, Tree, MIB};
use iocomp_server::NotsentLowat;

/// A static zero buffer: comparing a chunk against a slice of it is a memcmp.
static ZEROS: [u8; MIB] = [0; MIB];

#[test]
fn transfers_100_mib_byte_exact() {
    let _heavy = heavy();
    let tree = Tree::new("big100");
    let pat = Pattern::new(100, 100 * MIB as u64);
    pat.write(&tree.path("big.bin"));
    let srv = tree.serve(|_| {});
    let mut s = srv.connect();
    send(&mut s, b"big.bin\n");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut v = pat.verifier("100 MiB file");
    let (n, end) = read_until_closed(&mut s, MIB, Duration::from_secs(120), |c| v.feed(c));
    assert!(
        matches!(end, End::Eof),
        "100 MiB transfer ended by {end:?} after {n} bytes"
    );
    assert_eq!(n, pat.len, "100 MiB file: byte count");
}

/// The sparse file's markers: 16 ASCII hex digits of their offset.
fn markers(len: u64) -> Vec<(u64, [u8; 16])> {
    let offsets = [
        0,
        (1u64 << 31) - 3,  // straddles 2 GiB (a signed 32-bit size)
        (1u64 << 32) - 16, // ends exactly at 4 GiB
        1u64 << 32,        // starts exactly at 4 GiB
        (1u64 << 32) + MIB as u64 - 5,
        (1u64 << 32) + (1u64 << 29) + 9,
        len - 16, // the last 16 bytes
    ];
    // Sorted, inside the file, not overlapping: the checker relies on it.
    assert!(offsets.windows(2).all(|w| w[0] + 16 <= w[1]) && len >= offsets[6] + 16);
    offsets
        .iter()
        .map(|&o| {
            let mut m = [0u8; 16];
            m.copy_from_slice(format!("{o:016x}").as_bytes());
            (o, m)
        })
        .collect()
}

#[test]
fn transfers_a_5_gib_sparse_file_checking_markers_and_zero_runs() {
    use std::os::unix::fs::FileExt;
    const LEN: u64 = 5 * (1 << 30) + 7;
    let _heavy = heavy();
    let tree = Tree::new("big5g");
    let marks = markers(LEN);
    let f = std::fs::File::create(tree.path("huge.bin")).unwrap();
    f.set_len(LEN).unwrap();
    for (off, m) in &marks {
        f.write_all_at(m, *off).unwrap();
    }
    let srv = tree.serve(|_| {});
    let mut s = srv.connect();
    send(&mut s, b"huge.bin\n");
    s.shutdown(Shutdown::Write).expect("half-close");
    let (mut pos, mut next_mark, mut marker_bytes) = (0u64, 0usize, 0usize);
    let (n, end) = read_until_closed(&mut s, MIB, Duration::from_secs(300), |chunk| {
        let mut c = chunk;
        while !c.is_empty() {
            assert!(
                pos < LEN,
                "bytes beyond the file's {LEN} bytes: {}",
                show(c)
            );
            while next_mark < marks.len() && marks[next_mark].0 + 16 <= pos {
                next_mark += 1;
            }
            let (seg, want): (usize, &[u8]) = match marks.get(next_mark) {
                Some((off, m)) if *off <= pos => {
                    let from = (pos - off) as usize;
                    let seg = c.len().min(16 - from);
                    marker_bytes += seg;
                    (seg, &m[from..from + seg])
                }
                Some((off, _)) => {
                    let seg = c.len().min((off - pos) as usize);
                    (seg, &ZEROS[..seg])
                }
                None => (c.len(), &ZEROS[..c.len()]),
            };
            if &c[..seg] != want {
                let d = c.iter().zip(want).position(|(a, b)| a != b).unwrap();
                panic!(
                    "5 GiB file: wrong byte at offset {0} (0x{0:x})\n  got:  {1}\n  want: {2}",
                    pos + d as u64,
                    show(&c[d..seg]),
                    show(&want[d..])
                );
            }
            pos += seg as u64;
            c = &c[seg..];
        }
    });
    assert!(
        matches!(end, End::Eof),
        "5 GiB transfer ended by {end:?} after {n} bytes"
    );
    assert_eq!(n, LEN, "5 GiB + 7 file: byte count");
    assert_eq!(marker_bytes, 16 * marks.len(), "marker bytes checked");
}

/// `TCP_NOTSENT_LOWAT` (`Config::notsent_lowat`) makes every `sendfile` turn
/// stop after a few segments and wait for POLLOUT again: two files named on
/// one connection, read by a client with a small receive buffer that pauses
/// between reads, come back byte-exact and in order, with the cap at 1 byte
/// (every turn cut short), at 16 KiB, under `Auto` (32 KiB on loopback) and
/// with the system's setting.
#[test]
fn short_unsent_queue_keeps_files_byte_exact_and_in_order() {
    let _heavy = heavy();
    let tree = Tree::new("lowat");
    let a = Pattern::new(7, 6 * MIB as u64 + 13);
    let b = Pattern::new(8, 3 * MIB as u64 + 1);
    a.write(&tree.path("a.bin"));
    b.write(&tree.path("b.bin"));
    for lowat in [
        NotsentLowat::Bytes(1),
        NotsentLowat::Bytes(16 * 1024),
        NotsentLowat::Auto,
        NotsentLowat::System,
    ] {
        let srv = tree.serve(|c| c.notsent_lowat = lowat);
        let mut s = crate::harness::client::connect_with_rcvbuf(srv.addr, 32 * 1024);
        send(&mut s, b"a.bin\nb.bin\n");
        s.shutdown(Shutdown::Write).expect("half-close");
        let what_a = format!("a.bin with notsent_lowat {lowat:?}");
        let what_b = format!("b.bin with notsent_lowat {lowat:?}");
        let (mut va, mut vb) = (a.verifier(&what_a), b.verifier(&what_b));
        let mut seen = 0u64;
        let (n, end) = read_until_closed(&mut s, 64 * 1024, Duration::from_secs(60), |c| {
            let split = (a.len.saturating_sub(seen) as usize).min(c.len());
            va.feed(&c[..split]);
            vb.feed(&c[split..]);
            seen += c.len() as u64;
            if seen % (MIB as u64) < c.len() as u64 {
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        assert!(
            matches!(end, End::Eof),
            "notsent_lowat {lowat:?}: ended by {end:?} after {n} bytes"
        );
        assert_eq!(n, a.len + b.len, "notsent_lowat {lowat:?}: byte count");
    }
}

/// Pipelined names, big files with a tiny one between them, with the cap at
/// 1 byte (every turn cut short) and at the loopback default, pages cold
/// (the copying path) and cached (`sendfile`), read by a small-window client
/// that pauses: the stream is the files in order, byte-exact (the review of
/// the cap's change, probe kept).
#[test]
fn capped_unsent_queue_keeps_pipelined_cold_and_cached_files_in_order() {
    let _heavy = heavy();
    let tree = Tree::new("lowatpipe");
    let a = pseudo_random(1, 3 * MIB + 13);
    let t = pseudo_random(2, 5);
    let b = pseudo_random(3, MIB + 1);
    tree.file("a.bin", &a).file("t.bin", &t).file("b.bin", &b);
    let want: Vec<u8> = [&a[..], &t, &b, &t, &a, &t, &b].concat();
    for (lowat, cold) in [
        (NotsentLowat::Bytes(1), false),
        (NotsentLowat::Bytes(1), true),
        (NotsentLowat::Auto, true),
    ] {
        let srv = tree.serve(|c| {
            c.notsent_lowat = lowat;
            c.send_timeout = Duration::from_secs(5);
        });
        if cold {
            evict(&tree.path("a.bin"));
            evict(&tree.path("b.bin"));
        }
        let mut s = connect_with_rcvbuf(srv.addr, 8 * 1024);
        send(&mut s, b"a.bin\nt.bin\nb.bin\nt.bin\na.bin\nt.bin\nb.bin\n");
        s.shutdown(Shutdown::Write).expect("half-close");
        let mut got = Vec::with_capacity(want.len());
        let mut reads = 0u32;
        let (n, end) = read_until_closed(&mut s, 7000, Duration::from_secs(90), |c| {
            got.extend_from_slice(c);
            reads += 1;
            if reads % 64 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        let what = format!("{lowat:?}, cold {cold}");
        assert!(
            matches!(end, End::Eof),
            "{what}: ended by {end:?} after {n} bytes"
        );
        assert_eq!(got.len(), want.len(), "{what}: length");
        let diff = got.iter().zip(&want).position(|(x, y)| x != y);
        assert_eq!(diff, None, "{what}: first wrong byte");
    }
}

/// The cap is really set on accepted connections: a client with a small
/// receive window asks for a big file and stops reading; once the send
/// timeout has closed the connection, what it can still drain is what the
/// kernel held for it — its window, the cap and a segment or so under the
/// loopback default (`Auto`), megabytes with no cap (the review found the
/// other tests pass with the option never set).
#[test]
fn a_client_that_stops_reading_is_held_at_most_the_cap_on_loopback() {
    let _heavy = heavy();
    let tree = Tree::new("lowatheld");
    Pattern::new(9, 16 * MIB as u64).write(&tree.path("big.bin"));
    let held = |lowat: NotsentLowat| -> u64 {
        let srv = tree.serve(|c| {
            c.notsent_lowat = lowat;
            c.send_timeout = Duration::from_secs(1);
        });
        let mut s = connect_with_rcvbuf(srv.addr, 4096);
        send(&mut s, b"big.bin\n");
        // Longer than the send timeout and a sweep tick: the server gives up.
        std::thread::sleep(Duration::from_millis(3500));
        let (n, end) = read_until_closed(&mut s, 64 * 1024, Duration::from_secs(30), |_| {});
        assert!(
            !matches!(end, End::Eof) || n < 16 * MIB as u64,
            "{lowat:?}: the whole file arrived, so the send timeout never cut it"
        );
        n
    };
    let capped = held(NotsentLowat::Auto);
    assert!(
        capped <= 256 * 1024,
        "Auto on loopback: the client could still drain {capped} bytes (want at most its window + 32 KiB + a segment)"
    );
    let system: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_notsent_lowat")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX);
    let wmem_max: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|v| v.split_whitespace().last()?.parse().ok())
        .unwrap_or(0);
    let uncapped = held(NotsentLowat::System);
    if system >= 4 * MIB as u64 && wmem_max >= MIB as u64 {
        assert!(
            uncapped > 4 * capped,
            "no cap (system {system}): drained {uncapped} bytes, with the cap {capped}: the cap made no difference"
        );
    } else {
        println!("this machine caps every socket (net.ipv4.tcp_notsent_lowat = {system}, tcp_wmem max {wmem_max}): only the Auto bound is checked");
        assert!(
            uncapped <= system.min(wmem_max) + 512 * 1024,
            "system cap {system}, tcp_wmem max {wmem_max}: drained {uncapped}"
        );
    }
}
