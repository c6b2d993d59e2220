//! Networking through netlink, inside whichever namespace the calling thread is in.

pub(crate) mod link;
pub(crate) mod netlink;
