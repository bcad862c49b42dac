//! Listening sockets: `SO_REUSEADDR`, a `SOMAXCONN` backlog, and IPv6 sockets
//! that do not also claim the IPv4 port (so `0.0.0.0:P` and `[::]:P` can both be
//! bound, as nginx does).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;

use crate::config::NotsentLowat;
use crate::sys;

/// Turns Nagle's algorithm off on an accepted connection (nginx's
/// `tcp_nodelay`): the last, partial segment of a response never waits for the
/// client's delayed ACK on a keep-alive connection. Heads and small bodies
/// already go out in one send, so nothing is fragmented by it.
pub fn set_nodelay(socket: impl AsFd) -> io::Result<()> {
    sys::set_int_opt(socket.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Caps the bytes the kernel holds unsent on an accepted connection
/// (`TCP_NOTSENT_LOWAT`): a send waits while more than `bytes` are queued and
/// not yet sent, and the socket polls writable once fewer than half are.
pub fn set_notsent_lowat(socket: impl AsFd, bytes: u32) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    sys::set_int_opt(
        socket.as_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_NOTSENT_LOWAT,
        v,
    )
}

/// The path MTU of a connection (`TCP_INFO`'s `tcpi_pmtu`): 65,535 on IPv4
/// loopback, 65,536 on IPv6 loopback, 1,500 on Ethernet. (Not `TCP_MAXSEG`:
/// that is bounded by half the peer's first window, 2,048 on loopback for a
/// client with a 4 KiB receive buffer.)
pub fn path_mtu(socket: impl AsFd) -> io::Result<u32> {
    sys::path_mtu(socket.as_fd())
}

/// Sets `TCP_NOTSENT_LOWAT` on an accepted connection as `mode` says for its
/// path MTU. Best effort: a socket that refuses it (not TCP: TCP takes any
/// value) still works; an explicit setting refused is logged once per
/// process.
pub fn apply_notsent_lowat(socket: impl AsFd, mode: NotsentLowat) {
    let fd = socket.as_fd();
    let mtu = match mode {
        NotsentLowat::Auto => path_mtu(fd).unwrap_or(0),
        _ => 0,
    };
    if let Some(bytes) = mode.for_path_mtu(mtu) {
        if let Err(e) = set_notsent_lowat(fd, bytes) {
            static WARNED: std::sync::Once = std::sync::Once::new();
            if matches!(mode, NotsentLowat::Bytes(_)) {
                WARNED.call_once(|| tracing::warn!("cannot set TCP_NOTSENT_LOWAT to {bytes}: {e}"));
            }
        }
    }
}

/// Binds and listens on `addr`.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let fd = sys::stream_socket(family)?;
    sys::set_int_opt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if addr.is_ipv6() {
        sys::set_int_opt(fd.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    sys::bind(fd.as_fd(), &addr)?;
    sys::listen(fd.as_fd(), libc::SOMAXCONN)?;
    Ok(TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_int(fd: impl AsFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        sys::int_opt(fd.as_fd(), level, name).unwrap()
    }

    #[test]
    fn listeners_reuse_addresses_and_accepted_sockets_get_nodelay() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(get_int(l.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR), 1);
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(get_int(s.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY), 0);
        set_nodelay(&s).unwrap();
        assert_ne!(get_int(s.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY), 0);
    }

    #[test]
    fn notsent_lowat_is_set_and_large_values_are_capped_not_wrapped() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let lowat =
            |s: &std::net::TcpStream| get_int(s, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT);
        set_notsent_lowat(&s, 32 * 1024).unwrap();
        assert_eq!(lowat(&s), 32 * 1024);
        // u32::MAX is passed as the largest C int (no cap), not as -1.
        set_notsent_lowat(&s, u32::MAX).unwrap();
        assert_eq!(lowat(&s), libc::c_int::MAX);
    }

    #[test]
    fn auto_caps_loopback_connections_and_explicit_modes_apply_everywhere() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = || {
            let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            (c, l.accept().unwrap().0)
        };
        let lowat =
            |s: &std::net::TcpStream| get_int(s, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT);
        let (_c, s) = conn();
        let system = lowat(&s);
        assert!(
            path_mtu(&s).unwrap() >= crate::AUTO_MIN_MTU,
            "loopback path MTU {:?}",
            path_mtu(&s)
        );
        apply_notsent_lowat(&s, NotsentLowat::Auto);
        assert_eq!(lowat(&s), crate::AUTO_NOTSENT_LOWAT as i32);
        let (_c, s) = conn();
        apply_notsent_lowat(&s, NotsentLowat::System);
        assert_eq!(lowat(&s), system);
        apply_notsent_lowat(&s, NotsentLowat::Bytes(4096));
        assert_eq!(lowat(&s), 4096);
        // Ethernet and jumbo frames keep the system's setting under Auto.
        assert_eq!(NotsentLowat::Auto.for_path_mtu(1500), None);
        assert_eq!(NotsentLowat::Auto.for_path_mtu(9000), None);
        assert_eq!(NotsentLowat::Auto.for_path_mtu(65535), Some(32 * 1024));
        assert_eq!(NotsentLowat::Bytes(1).for_path_mtu(1500), Some(1));
        assert_eq!(NotsentLowat::System.for_path_mtu(65535), None);
    }

    #[test]
    fn ipv6_listeners_leave_the_ipv4_port_free() {
        let Ok(v6) = bind("[::1]:0".parse().unwrap()) else {
            println!("SKIPPED: no IPv6 loopback on this machine");
            return;
        };
        assert_eq!(
            get_int(v6.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
            1
        );
        let port = v6.local_addr().unwrap().port();
        // The same port on IPv4 is still free to bind.
        let v4 = bind(SocketAddr::from(([127, 0, 0, 1], port)));
        assert!(v4.is_ok(), "{v4:?}");
    }
}
