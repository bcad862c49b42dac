//! `ChangeNotification`: inotify-backed directory watches, per filter, re-arm, subtrees, overflow.
//!
//! A wait first drains the inotify queue, and the kernel queues an event before the system call that caused it
//! returns, so a poll right after an operation is exact: these tests need no sleeps.

use std::fs;
use std::path::{Path, PathBuf};

use iocomp_sync::{wait_any, ChangeFilter, ChangeNotification, Event, WaitResult, Waitable};

use crate::util::{wait_for_waiters, LONG, POLL};

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("iocomp-sync-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn signaled(n: &ChangeNotification) -> bool {
    match n.wait(POLL) {
        Ok(WaitResult::Signaled(0)) => true,
        Ok(WaitResult::TimedOut) => false,
        other => panic!("unexpected wait result {other:?}"),
    }
}

type Op = fn(&Path);

/// Each operation, from a directory holding `file` (8 bytes) and `sub/`.
const OPS: [(&str, Op); 8] = [
    ("create file", |d| {
        drop(fs::File::create(d.join("new")).unwrap())
    }),
    ("delete file", |d| fs::remove_file(d.join("file")).unwrap()),
    ("rename file", |d| {
        fs::rename(d.join("file"), d.join("renamed")).unwrap()
    }),
    ("write", |d| {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(d.join("file"))
            .unwrap();
        f.write_all(b"more").unwrap();
    }),
    ("resize", |d| {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(d.join("file"))
            .unwrap();
        f.set_len(100).unwrap();
    }),
    ("chmod", |d| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(d.join("file"), fs::Permissions::from_mode(0o600)).unwrap();
    }),
    ("create dir", |d| fs::create_dir(d.join("newdir")).unwrap()),
    ("remove dir", |d| fs::remove_dir(d.join("sub")).unwrap()),
];

/// Which operations each filter must report; every other operation must not signal it.
fn expected(filter: ChangeFilter, op: &str) -> bool {
    let kind = match op {
        "create file" | "delete file" | "rename file" => ChangeFilter::FILE_NAME,
        "write" | "resize" => ChangeFilter::SIZE | ChangeFilter::LAST_WRITE,
        "chmod" => ChangeFilter::ATTRIBUTES,
        "create dir" | "remove dir" => ChangeFilter::DIR_NAME,
        _ => unreachable!(),
    };
    filter.intersects(kind)
}

#[test]
fn each_filter_fires_on_its_changes_only() {
    let filters = [
        ChangeFilter::FILE_NAME,
        ChangeFilter::DIR_NAME,
        ChangeFilter::ATTRIBUTES,
        ChangeFilter::SIZE,
        ChangeFilter::LAST_WRITE,
        ChangeFilter::FILE_NAME | ChangeFilter::ATTRIBUTES,
        ChangeFilter::all(),
    ];
    let mut checks = 0;
    for filter in filters {
        for (op_name, op) in OPS {
            let dir = TempDir::new("filter");
            fs::write(dir.path().join("file"), b"12345678").unwrap();
            fs::create_dir(dir.path().join("sub")).unwrap();
            let n = ChangeNotification::new(dir.path(), false, filter).unwrap();
            assert!(!signaled(&n), "{filter:?}: signalled before {op_name}");
            op(dir.path());
            let want = expected(filter, op_name);
            assert_eq!(signaled(&n), want, "{filter:?} after {op_name}");
            if want {
                // Stays signalled: waits do not reset it.
                assert!(signaled(&n), "{filter:?}: still signalled after {op_name}");
                let status = n.reset();
                assert!(!status.signaled && !status.overflowed, "{status:?}");
                assert!(!signaled(&n), "{filter:?}: reset after {op_name}");
            }
            checks += 1;
        }
    }
    assert_eq!(checks, filters.len() * OPS.len());
}

#[test]
fn next_rearms_and_keeps_changes_recorded_meanwhile() {
    let dir = TempDir::new("next");
    let n = ChangeNotification::new(dir.path(), false, ChangeFilter::FILE_NAME).unwrap();
    assert_eq!(n.filter(), ChangeFilter::FILE_NAME);
    // A waiter blocked first is woken by the reactor.
    let waiter = {
        let n = n.clone();
        let ev = Event::new(false, false);
        std::thread::spawn(move || wait_any(&[&ev, &n], Some(LONG)))
    };
    wait_for_waiters(&n, 1);
    fs::File::create(dir.path().join("a")).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(WaitResult::Signaled(1)));
    // One change, one signal: next re-arms it.
    let status = n.next();
    assert!(!status.signaled && !status.overflowed, "{status:?}");
    assert!(!signaled(&n));
    // Two changes: the second happens while signalled; next keeps it signalled (FindNextChangeNotification).
    fs::File::create(dir.path().join("b")).unwrap();
    assert!(signaled(&n));
    fs::remove_file(dir.path().join("a")).unwrap();
    assert!(n.next().signaled, "a change recorded after the signal");
    assert!(signaled(&n));
    assert!(!n.next().signaled);
    assert!(!signaled(&n));
    // reset discards recorded changes.
    fs::File::create(dir.path().join("c")).unwrap();
    assert!(signaled(&n));
    fs::remove_file(dir.path().join("c")).unwrap();
    assert!(!n.reset().signaled);
    assert!(!signaled(&n));
}

#[test]
fn subtree_changes_are_seen_when_asked_for() {
    let dir = TempDir::new("subtree");
    fs::create_dir_all(dir.path().join("old/deep")).unwrap();
    let flat = ChangeNotification::new(dir.path(), false, ChangeFilter::FILE_NAME).unwrap();
    let tree = ChangeNotification::new(dir.path(), true, ChangeFilter::FILE_NAME).unwrap();
    // In a subdirectory that existed at creation.
    fs::File::create(dir.path().join("old/deep/f")).unwrap();
    assert!(signaled(&tree));
    assert!(!signaled(&flat), "a flat watch does not see subdirectories");
    tree.reset();
    // In a subdirectory created afterwards: its watch is added when its creation is read (best effort).
    fs::create_dir(dir.path().join("new")).unwrap();
    assert!(!signaled(&tree), "DIR_NAME is not in the filter");
    fs::File::create(dir.path().join("new/f")).unwrap();
    assert!(signaled(&tree));
    assert!(!signaled(&flat));
}

#[test]
fn queue_overflow_is_reported() {
    let max: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(usize::MAX);
    if max > 1 << 20 {
        println!("SKIPPED queue_overflow_is_reported: max_queued_events = {max}, too many events to generate quickly");
        return;
    }
    let dir = TempDir::new("overflow");
    let n = ChangeNotification::new(dir.path(), false, ChangeFilter::FILE_NAME).unwrap();
    fs::File::create(dir.path().join("first")).unwrap();
    assert!(signaled(&n));
    // Signalled, so nobody reads the queue until `next`: create/delete pairs (2 events each, never merged) fill it.
    let f = dir.path().join("f");
    // The reactor may still drain once, concurrently, right after the first signal: generate half as many again.
    for _ in 0..max * 3 / 4 + 100 {
        fs::File::create(&f).unwrap();
        fs::remove_file(&f).unwrap();
    }
    let status = n.next();
    assert!(status.overflowed, "{status:?}");
    assert!(status.signaled, "an overflow signals");
    assert!(!n.next().overflowed, "reported once");
}

#[test]
fn bad_directories_are_typed_errors() {
    use iocomp_sync::FdObjectError;
    let dir = TempDir::new("bad");
    assert_eq!(
        ChangeNotification::new(dir.path().join("missing"), false, ChangeFilter::all())
            .unwrap_err(),
        FdObjectError::NotFound
    );
    fs::write(dir.path().join("file"), b"").unwrap();
    assert_eq!(
        ChangeNotification::new(dir.path().join("file"), false, ChangeFilter::all()).unwrap_err(),
        FdObjectError::NotADirectory
    );
}

#[test]
fn filter_flags_have_win32_values() {
    assert_eq!(ChangeFilter::FILE_NAME.bits(), 0x1);
    assert_eq!(ChangeFilter::DIR_NAME.bits(), 0x2);
    assert_eq!(ChangeFilter::ATTRIBUTES.bits(), 0x4);
    assert_eq!(ChangeFilter::SIZE.bits(), 0x8);
    assert_eq!(ChangeFilter::LAST_WRITE.bits(), 0x10);
    assert_eq!(ChangeFilter::from_bits_truncate(0xff), ChangeFilter::all());
    assert_eq!(
        format!("{:?}", ChangeFilter::FILE_NAME | ChangeFilter::SIZE),
        "{FILE_NAME, SIZE}"
    );
    assert!(ChangeFilter::empty().is_empty());
}
