//! Networking through netlink, inside whichever namespace the calling thread is in.

pub(crate) mod filter;
pub(crate) mod link;
pub(crate) mod namespace;
pub(crate) mod netlink;
mod subnet;

pub use subnet::Subnet;
pub(crate) use subnet::SubnetError;
