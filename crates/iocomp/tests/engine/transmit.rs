//! `TransmitFile` (C28): head, file and tail in one packet, ranges and
//! offsets checked at submission, cold pages byte-exact, nothing to send
//! still one packet.

use std::io::Read;
use std::time::Duration;

use iocomp::{GetError, TransmitFile};

use crate::harness::{pair, port, TempFile, T};

#[test]
fn c28_transmit_file_sends_head_file_and_tail_in_one_packet() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 11);
    let tmp = TempFile::new("tf");
    let path = &tmp.0;
    let body: Vec<u8> = (0..300_001u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(path, &body).unwrap();
    let file = std::fs::File::open(path).unwrap();
    drop(tmp);
    let mut tf = TransmitFile::new(&h, file);
    tf.head = b"HEAD".to_vec();
    tf.tail = b"TAIL".to_vec();
    port.submit(tf).map_err(|(e, _)| e).unwrap();
    let total = 4 + body.len() + 4;
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; total];
        peer.read_exact(&mut got).unwrap();
        got
    });
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok(), "{:?}", p.status);
    assert_eq!(p.bytes, total as u64);
    let got = reader.join().unwrap();
    assert_eq!(&got[..4], b"HEAD");
    assert_eq!(&got[4..4 + body.len()], &body[..]);
    assert_eq!(&got[4 + body.len()..], b"TAIL");
}

#[test]
fn c28_transmit_file_range_and_bad_offset_einval() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 12);
    let tmp = TempFile::new("tfr");
    let path = &tmp.0;
    std::fs::write(path, b"0123456789").unwrap();
    let mut tf = TransmitFile::new(&h, std::fs::File::open(path).unwrap());
    tf.offset = 11;
    let (e, _) = port.submit(tf).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    let mut tf = TransmitFile::new(&h, std::fs::File::open(path).unwrap());
    drop(tmp);
    tf.offset = 3;
    tf.len = 4;
    port.submit(tf).map_err(|(e, _)| e).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(p.bytes, 4);
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"3456");
}

#[test]
fn c28_transmit_of_cold_pages_is_byte_exact_and_disconnect_ends_the_stream() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 13);
    let tmp = TempFile::new("cold");
    let path = &tmp.0;
    let body: Vec<u8> = (0..3_000_017u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(path, &body).unwrap();
    let file = std::fs::File::open(path).unwrap();
    drop(tmp);
    // Write the pages back and drop them from the page cache, so the transmit
    // finds them cold and must read them through io_uring.
    file.sync_all().unwrap();
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fadvise on a descriptor we own; it only drops clean cache pages.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
    }
    let mut tf = TransmitFile::new(&h, file);
    tf.disconnect = true;
    port.submit(tf).map_err(|(e, _)| e).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap(); // ends only because of TF_DISCONNECT
        got
    });
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok(), "{:?}", p.status);
    assert_eq!(p.bytes, body.len() as u64);
    assert!(reader.join().unwrap() == body, "bytes differ");
}

#[test]
fn c28_transmit_with_nothing_to_send_still_yields_one_packet() {
    let port = port();
    let (ours, _peer) = pair();
    let h = port.associate(ours, 14);
    let tf = TransmitFile::buffers(&h, Vec::new(), Vec::new());
    port.submit(tf).map_err(|(e, _)| e).unwrap();
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok());
    assert_eq!((p.key, p.bytes), (14, 0));
    assert_eq!(
        port.get(Some(Duration::ZERO)).unwrap_err(),
        GetError::TimedOut
    );
}

#[test]
fn c28_small_cached_file_goes_out_with_head_and_tail_in_one_packet() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 15);
    let tmp = TempFile::new("small");
    let path = &tmp.0;
    std::fs::write(path, b"small body").unwrap();
    let mut tf = TransmitFile::new(&h, std::fs::File::open(path).unwrap());
    drop(tmp);
    tf.head = b"H:".to_vec();
    tf.tail = b":T".to_vec();
    tf.disconnect = true;
    port.submit(tf).map_err(|(e, _)| e).unwrap();
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok());
    assert_eq!(p.bytes, 14);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"H:small body:T");
}

/// Item 10: a transmit whose file range ends past what a file offset holds is
/// refused at submit with `InvalidInput`, and nothing else is lost.
#[test]
fn a_transmit_range_past_the_largest_offset_is_refused_at_submit() {
    let port = port();
    let (ours, _peer) = pair();
    let h = port.associate(ours, 4);
    let tmp = TempFile::new("tf-range");
    let path = &tmp.0;
    std::fs::write(path, b"0123456789").unwrap();
    let file = std::sync::Arc::new(std::fs::File::open(path).unwrap());
    drop(tmp);
    port.post(1, 0, 0).unwrap();
    for (offset, len) in [(u64::MAX - 4, 100), (u64::MAX, 1), (i64::MAX as u64, 2)] {
        let mut tf = iocomp::TransmitFile::new(&h, file.clone());
        tf.offset = offset;
        tf.len = len;
        let (e, _) = port.submit(tf).expect_err("an impossible range");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::InvalidInput,
            "{offset} {len}: {e}"
        );
    }
    let p = port.get(T).unwrap();
    assert_eq!(p.key, 1, "the posted packet is still there");
}
