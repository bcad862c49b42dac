//! The connect operation (`ConnectEx`): a client socket's connection, as one
//! overlapped operation with one packet.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use crate::handle::Handle;
use crate::op::Context;

/// Connect a stream socket to `addr` (`ConnectEx`). The packet's key is the
/// socket's; `bytes` is 0; a refused or unreachable peer is the packet's
/// error (`ECONNREFUSED`, `ENETUNREACH`, …), a cancel `ECANCELED`.
///
/// The socket is created by the caller — non-blocking, of `addr`'s family —
/// and associated with the port first; [`Connect::stream_socket`] makes one.
/// On io_uring the kernel does the whole connect (`IORING_OP_CONNECT`); on
/// epoll a non-blocking `connect(2)` is started at once and, after
/// `EINPROGRESS`, finished when the socket becomes writable (`SO_ERROR`).
/// A cancelled connect leaves the socket in an unspecified state: close it.
#[non_exhaustive]
pub struct Connect {
    /// The socket to connect.
    pub socket: Handle,
    /// Where to.
    pub addr: SocketAddr,
    /// How its completion is reported (set by the `submit*` call used).
    pub(crate) completion: crate::Completion,
    /// User data.
    pub ctx: Option<Context>,
}

impl Connect {
    /// A connect of `socket` to `addr`.
    pub fn new(socket: &Handle, addr: SocketAddr) -> Connect {
        Connect {
            socket: socket.clone(),
            addr,
            completion: crate::Completion::default(),
            ctx: None,
        }
    }

    /// A new TCP socket for `addr`'s family: non-blocking and close-on-exec,
    /// ready to be associated and connected.
    pub fn stream_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
        let family = match addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        crate::sys::stream_socket(family)
    }
}
