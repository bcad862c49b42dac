//! Listening sockets: `SO_REUSEADDR`, a `SOMAXCONN` backlog, and IPv6 sockets
//! that do not also claim the IPv4 port (so `0.0.0.0:P` and `[::]:P` can both be
//! bound, as nginx does).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size; the kernel
    // only reads it.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Turns Nagle's algorithm off on an accepted connection (nginx's
/// `tcp_nodelay`): the last, partial segment of a response never waits for the
/// client's delayed ACK on a keep-alive connection. Heads and small bodies
/// already go out in one send, so nothing is fragmented by it.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Binds and listens on `addr`.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) with constant arguments returns a new descriptor or -1.
    let fd = check(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: `storage` holds a valid address of `len` bytes for this family.
    check(unsafe {
        libc::bind(
            fd,
            (&storage as *const libc::sockaddr_storage).cast(),
            len as libc::socklen_t,
        )
    })?;
    // SAFETY: listen(2) on a descriptor we own.
    check(unsafe { libc::listen(fd, libc::SOMAXCONN) })?;
    let l = TcpListener::from(owned);
    debug_assert_eq!(l.as_raw_fd(), fd);
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a live c_int and its size; the kernel writes at most that.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        v
    }

    #[test]
    fn listeners_reuse_addresses_and_accepted_sockets_get_nodelay() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(
            get_int(l.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR),
            1
        );
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(
            get_int(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY),
            0
        );
        set_nodelay(s.as_raw_fd()).unwrap();
        assert_ne!(
            get_int(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY),
            0
        );
    }

    #[test]
    fn ipv6_listeners_leave_the_ipv4_port_free() {
        let Ok(v6) = bind("[::1]:0".parse().unwrap()) else {
            println!("SKIPPED: no IPv6 loopback on this machine");
            return;
        };
        assert_eq!(
            get_int(v6.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
            1
        );
        let port = v6.local_addr().unwrap().port();
        // The same port on IPv4 is still free to bind.
        let v4 = bind(SocketAddr::from(([127, 0, 0, 1], port)));
        assert!(v4.is_ok(), "{v4:?}");
    }
}
