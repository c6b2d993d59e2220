//! Link (interface) requests.

use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

/// The loopback interface's index in every network namespace.
pub(crate) const LOOPBACK_INDEX: u32 = 1;

/// A request that brings the interface with `index` up.
pub(crate) fn set_up(index: u32) -> RouteNetlinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message.header.flags = LinkFlags::Up;
    message.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(message)
}
