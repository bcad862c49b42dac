//! systemd integration: socket activation (`LISTEN_PID`/`LISTEN_FDS`, the
//! listening socket as descriptor 3) and `sd_notify` (`READY=1` once
//! serving, `STOPPING=1` on the way out), on a path or an abstract socket.

use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::{
    activated, assert_bytes_eq, exit_of, fetch, pseudo_random, Server, StartOptions, TempTree, WAIT,
};

#[test]
fn socket_activation_serves_through_the_passed_socket() {
    let tree = TempTree::new();
    let content = pseudo_random(9, 300_000);
    tree.file("big.bin", &content);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::start_with(
        tree.root(),
        &[],
        &StartOptions {
            listen_fd: Some(listener.as_raw_fd()),
            ..StartOptions::default()
        },
    );
    assert_eq!(
        server.addr(),
        addr,
        "it must serve the passed socket, not bind"
    );
    drop(listener); // the server holds its own copy
    assert_bytes_eq(
        &fetch(addr, &[b"big.bin"]),
        &content,
        "through the passed socket",
    );
    let err = server.stderr_text();
    assert!(err.contains("socket activation: descriptor 3"), "{err}");
}

#[test]
fn listen_variables_for_another_process_are_ignored() {
    let tree = TempTree::new();
    tree.file("a.txt", b"a\n");
    let server = Server::start_with(
        tree.root(),
        &[],
        &StartOptions {
            env: vec![
                ("LISTEN_PID".into(), "1".into()),
                ("LISTEN_FDS".into(), "1".into()),
            ],
            ..StartOptions::default()
        },
    );
    assert_bytes_eq(&fetch(server.addr(), &[b"a.txt"]), b"a\n", "bound as usual");
    assert!(!server.stderr_text().contains("socket activation"));
}

/// Runs `iocomp serve` with `fd` as descriptor 3 and `LISTEN_PID`/`LISTEN_FDS`
/// set, expecting it to exit by itself; returns (status code, stderr).
fn activated_run(fd: RawFd, root: &Path) -> (Option<i32>, String) {
    let mut command = activated(fd, env!("CARGO_BIN_EXE_iocomp"));
    command.arg("serve").arg(root);
    exit_of(command)
}

#[test]
fn a_passed_socket_that_is_not_listening_tcp_is_a_start_up_error() {
    let tree = TempTree::new();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (code, err) = activated_run(udp.as_raw_fd(), tree.root());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("socket activation: descriptor 3") && err.contains("not a stream socket"),
        "{err}"
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let connected = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (code, err) = activated_run(connected.as_raw_fd(), tree.root());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not listening"), "{err}");
    let file = std::fs::File::open(tree.base()).unwrap();
    let (code, err) = activated_run(file.as_raw_fd(), tree.root());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not a socket"), "{err}");
}

fn notify_socket_test(abstract_name: bool) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let tree = TempTree::new();
    tree.file("a.txt", b"a\n");
    let (sock, env) = if abstract_name {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "iocomp-test-notify-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        (UnixDatagram::bind_addr(&addr).unwrap(), format!("@{name}"))
    } else {
        let path = tree.base().join("notify.sock");
        (
            UnixDatagram::bind(&path).unwrap(),
            path.to_str().unwrap().to_owned(),
        )
    };
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut server = Server::start_with(
        tree.root(),
        &[],
        &StartOptions {
            env: vec![("NOTIFY_SOCKET".into(), env)],
            ..StartOptions::default()
        },
    );
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 within the timeout");
    assert_eq!(&buf[..n], b"READY=1");
    assert_bytes_eq(
        &fetch(server.addr(), &[b"a.txt"]),
        b"a\n",
        "serving when ready",
    );
    server.signal(libc::SIGTERM);
    let n = sock.recv(&mut buf).expect("STOPPING=1 within the timeout");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = server.wait_exit(WAIT).expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn sd_notify_ready_then_stopping_on_a_path_socket() {
    notify_socket_test(false);
}

#[test]
fn sd_notify_ready_then_stopping_on_an_abstract_socket() {
    notify_socket_test(true);
}
