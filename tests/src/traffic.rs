//! In-process traffic for the network tests: tiny HTTP/1.1 and UDP echo
//! servers that run in backend namespaces and answer with the backend's
//! name, and clients that run in the client namespace and record which
//! backend answered. Every socket operation has a timeout and every loop is
//! bounded in count and time.

mod client;
mod health;
mod http;
mod keepalive;
mod servers;
mod summary;
#[cfg(test)]
mod tests;

pub use client::{ConnResult, TcpLoad, UdpLoad, connect_from, tcp_client, udp_client};
pub use health::{HealthMode, HealthServer};
pub use keepalive::{HttpConn, KeepAliveLoad, open_keepalive};
pub use servers::Servers;
pub use summary::Summary;
