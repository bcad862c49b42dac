//! `Stdin`: standard input as a waitable, tested in a child process (this test binary re-executed) whose standard
//! input is a pipe we hold; the harness's own standard input is never touched.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

use iocomp_sync::{wait_any, Event, Stdin, WaitResult, Waitable};

use crate::util::{is_child, reexec, wait_for_waiters, LONG, POLL};

#[test]
fn stdin_signals_when_data_arrives_without_consuming_it() {
    let mut child = reexec("stdin::stdin_child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    // libtest prints "test NAME ... " without a newline before the child's first line: match line ends.
    let mut expect = |marker: &str| {
        let mut line = String::new();
        loop {
            line.clear();
            assert_ne!(
                output.read_line(&mut line).unwrap(),
                0,
                "child ended before {marker}"
            );
            if line.trim_end().ends_with(marker) {
                return;
            }
        }
    };
    expect("WAITING");
    input.write_all(b"hello\n").unwrap();
    expect("READ");
    drop(input); // end of input
    let mut rest = String::new();
    output.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}\n{rest}");
    assert!(rest.contains("EOF SIGNALLED"), "{rest}");
}

/// The child half: standard input is the parent's pipe.
#[test]
#[ignore = "child half of stdin_signals_when_data_arrives_without_consuming_it"]
fn stdin_child() {
    if !is_child() {
        return;
    }
    let stdin = Stdin::new().unwrap();
    let ev = Event::new(false, false);
    assert_eq!(wait_any(&[&ev, &stdin], POLL), Ok(WaitResult::TimedOut));
    assert!(!stdin.has_input());
    let waiter = {
        let (ev, stdin) = (ev.clone(), stdin.clone());
        std::thread::spawn(move || wait_any(&[&ev, &stdin], Some(LONG)))
    };
    wait_for_waiters(&stdin, 1);
    println!("WAITING");
    std::io::stdout().flush().unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(WaitResult::Signaled(1)));
    // Still signalled: the wait consumed nothing.
    assert_eq!(stdin.wait(POLL), Ok(WaitResult::Signaled(0)));
    // Read exactly the line, byte by byte (std's stdin would read ahead into its buffer).
    let mut line = Vec::new();
    let mut byte = [0u8];
    let mut raw = std::io::stdin().lock();
    while line.last() != Some(&b'\n') {
        assert_eq!(raw.read(&mut byte).unwrap(), 1);
        line.push(byte[0]);
    }
    drop(raw);
    assert_eq!(line, b"hello\n", "the wait did not consume the data");
    assert_eq!(
        stdin.wait(POLL),
        Ok(WaitResult::TimedOut),
        "drained: not signalled"
    );
    println!("READ");
    std::io::stdout().flush().unwrap();
    // The parent closes the pipe: end of input signals too (a read would not block).
    assert_eq!(stdin.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    println!("EOF SIGNALLED");
}
