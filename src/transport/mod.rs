//! Listening sockets. Every shard gets its own socket bound to the same address with
//! SO_REUSEPORT, so the kernel spreads new connections over the shards and no shard hands
//! connections to another.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Why the listeners could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("address {addr} is already in use by another process (change `listen` or stop the other server)")]
    InUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

fn socket_for(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    Ok(socket)
}

/// Checks that nobody holds `addr`. A server killed a moment ago can hold its port for a few
/// milliseconds more while the kernel tears its sockets down, so this retries for up to a second
/// before it calls the address taken.
fn probe(addr: SocketAddr) -> io::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let socket = socket_for(addr, false)?;
        match socket.bind(&SockAddr::from(addr)) {
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Binds `count` listening sockets to `addr` (port 0 picks one port for all of them).
///
/// SO_REUSEPORT would also let a second server owned by the same user share the port and
/// silently take half the connections, so the address is first probed with a plain socket:
/// if anyone holds it, start-up fails.
pub fn bind_shared(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> Result<(SocketAddr, Vec<Socket>), ListenError> {
    let bind_err = |source: io::Error| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ListenError::InUse { addr }
        } else {
            ListenError::Bind { addr, source }
        }
    };
    if addr.port() != 0 {
        probe(addr).map_err(bind_err)?;
    }
    let mut sockets = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let socket = socket_for(bound, true).map_err(bind_err)?;
        socket.bind(&SockAddr::from(bound)).map_err(bind_err)?;
        socket.listen(backlog).map_err(bind_err)?;
        if bound.port() == 0 {
            bound = socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| ListenError::Bind {
                    addr,
                    source: io::Error::other("bound socket has no address"),
                })?;
        }
        sockets.push(socket);
    }
    Ok((bound, sockets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gives_every_shard_the_same_port() {
        let (addr, sockets) = bind_shared("127.0.0.1:0".parse().unwrap(), 3, 16).unwrap();
        assert_ne!(addr.port(), 0);
        for s in &sockets {
            assert_eq!(s.local_addr().unwrap().as_socket().unwrap(), addr);
        }
    }

    #[test]
    fn a_port_held_by_someone_else_is_refused() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = holder.local_addr().unwrap();
        match bind_shared(addr, 2, 16) {
            Err(ListenError::InUse { .. }) => {}
            other => panic!("expected InUse, got {other:?}"),
        }
    }
}
