//! The warehouse side: which nodes exist, which are healthy, and how sluice
//! opens a connection to one.
//!
//! * [`node`]: a node, its health, and the round-robin choice among nodes.
//! * [`connect`]: a TCP (and optionally TLS) connection to a node.
//! * [`health`]: the periodic health check that moves nodes in and out of rotation.
//! * [`idle`]: node connections kept between clients that log in the same way.
//! * [`pool`]: the cap on each node's connections, and the wait for a free one.

pub mod connect;
pub mod idle;
pub mod node;
pub mod pool;

mod error;

pub use error::BackendError;
pub use node::{Node, NodeSet};
