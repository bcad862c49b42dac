//! The engine leaves the process's SIGPIPE action alone: a program that
//! asked for the default action (as command-line tools do, so that
//! `prog | head` ends quietly) keeps it after building a port, and sends on
//! a socket whose peer is gone still never raise it (`MSG_NOSIGNAL`). A test
//! binary of its own: it sets a process-wide signal action.

use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;

use iocomp::Send;

mod support;
use support::{backends, port_on, T};

fn sigpipe_is_default() -> bool {
    // SAFETY: sigaction with a null new action only reads the current one
    // into a zeroed local of the right type.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0);
    old.sa_sigaction == libc::SIG_DFL
}

#[test]
fn building_a_port_keeps_a_default_sigpipe_action() {
    // What a command-line tool does at the top of main.
    // SAFETY: installs the default action; no code of ours runs on the signal.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert!(sigpipe_is_default());
    let _port = iocomp::Port::builder().build().unwrap();
    assert!(
        sigpipe_is_default(),
        "building a port changed the SIGPIPE action from SIG_DFL"
    );
    // With the default action (which kills the process), sends to a peer
    // that is gone fail in their packets.
    for b in backends() {
        let port = port_on(b);
        assert!(sigpipe_is_default(), "{b}");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        drop(l.accept().unwrap());
        let h = port.associate(OwnedFd::from(ours), 1);
        let mut failed = false;
        // The first sends may still be taken (the reset comes back with
        // them); a later one fails.
        for _ in 0..10 {
            port.submit(Send::new(&h, vec![1u8; 1 << 16]))
                .map_err(|(e, _)| e)
                .unwrap();
            if port.get(T).unwrap().status.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "{b}: sends to a closed peer kept succeeding");
    }
}
