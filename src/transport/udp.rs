//! Binding the SIP UDP sockets.

/// Receive buffer asked for on each UDP socket (the kernel caps it at `net.core.rmem_max`):
/// room for a few hundred milliseconds of traffic while the worker is busy.
pub const RECV_BUFFER: usize = 8 << 20;

/// Bind a non-blocking UDP listener with a large receive buffer and kernel receive timestamps.
/// With `shared`, `SO_REUSEPORT` lets each SIP worker bind its own socket on the same address
/// (the kernel spreads datagrams over them by source; docs/decisions/0010-sip-workers.md).
pub fn bind(addr: std::net::SocketAddr, shared: bool) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::AsRawFd;
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = s.set_recv_buffer_size(RECV_BUFFER) {
        tracing::debug!(error = %e, "SO_RCVBUF not raised");
    }
    if shared {
        s.set_reuse_port(true)?;
    }
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    super::mmsg::enable_timestamps(s.as_raw_fd());
    Ok(s.into())
}
