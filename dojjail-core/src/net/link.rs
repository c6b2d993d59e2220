//! Link (interface) and address requests, built with `rtnetlink`'s message builders and
//! sent through [`RouteSocket`](super::netlink::RouteSocket) batches.
//!
//! Interfaces are created with explicit indices (ifindex is per namespace), so a batch
//! never has to look an index up before using it.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridge, LinkAttribute, LinkFlags, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

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

/// A request that deletes the interface with `index` (a veth: both ends).
pub(crate) fn delete(index: u32) -> RouteNetlinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = index;
    RouteNetlinkMessage::DelLink(message)
}

/// A bridge named `name` with ifindex `index`, up, without multicast snooping: with it,
/// every port that comes up re-arms multicast timers on every other port, work that grows
/// with the square of the number of hosts (and edge filtering needs none of it).
pub(crate) fn new_bridge(name: &str, index: u32) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewLink(
        LinkBridge::new(name)
            .index(index)
            .append_info_data(InfoBridge::MulticastSnooping(false))
            .up()
            .build(),
    )
}

/// One end of a veth pair.
pub(crate) struct VethEnd<'a> {
    pub name: &'a str,
    pub index: u32,
}

/// A veth pair: `port` stays here, enslaved to `bridge`; `peer` is created directly in the
/// network namespace `peer_netns`. Both start down: [`quiet_ipv6`] must come first, and the
/// peer cannot be brought up in the same request anyway (ENOTCONN until both ends exist).
pub(crate) fn new_veth_port(
    port: VethEnd<'_>,
    bridge: u32,
    peer: VethEnd<'_>,
    peer_netns: RawFd,
) -> RouteNetlinkMessage {
    // One queue each way: the kernel's default for veth is one per CPU, and cutting that
    // down to the one queue veth uses costs an expedited RCU grace period per pair.
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.name)
        .index(peer.index)
        .setns_by_fd(peer_netns)
        .append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1))
        .build();
    let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(
        netlink_packet_route::link::InfoKind::Veth,
    )
    .append_extra_attribute(LinkAttribute::NumTxQueues(1))
    .append_extra_attribute(LinkAttribute::NumRxQueues(1))
    .name(port.name)
    .index(port.index)
    .controller(bridge)
    .set_info_data(netlink_packet_route::link::InfoData::Veth(
        netlink_packet_route::link::InfoVeth::Peer(peer),
    ))
    .build();
    RouteNetlinkMessage::NewLink(message)
}

/// A request that gives the (down) interface `index` no automatic IPv6 link-local
/// address. Networks are IPv4; without this every interface coming up sends IPv6
/// neighbour and multicast-listener traffic that the bridge floods to every port, work
/// that grows with the square of the number of hosts. (The kernel takes this only once
/// the interface exists, so it cannot ride along in the request that creates it.)
pub(crate) fn quiet_ipv6(index: u32) -> RouteNetlinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message
        .attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    RouteNetlinkMessage::SetLink(message)
}

/// Adds `address/prefix` to the interface with `index`.
pub(crate) fn add_address(index: u32, address: Ipv4Addr, prefix: u8) -> RouteNetlinkMessage {
    let mut message = AddressMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.prefix_len = prefix;
    message.header.index = index;
    message
        .attributes
        .push(AddressAttribute::Local(IpAddr::V4(address)));
    message
        .attributes
        .push(AddressAttribute::Address(IpAddr::V4(address)));
    RouteNetlinkMessage::NewAddress(message)
}
