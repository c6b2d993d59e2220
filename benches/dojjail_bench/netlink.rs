//! Just enough rtnetlink, written by hand on raw sockets, for the network floor: veth pairs
//! on a bridge, links up and addresses, sent in batches (one `sendto` for up to `WINDOW`
//! requests) with every acknowledgement read back.
//!
//! The floor does the least kernel work for an IPv4 network of veths on a bridge, with the
//! same savings dojjail makes: no multicast snooping on the bridge, one queue per veth end
//! (the per-CPU default costs an expedited RCU grace period per pair), and no IPv6 address
//! generation on the interfaces.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::libc;

const RTM_NEWLINK: u16 = 16;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const NLMSG_ERROR: u16 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
const IFLA_BR_MCAST_SNOOPING: u16 = 23;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

/// Requests per `sendto`; their acknowledgements must fit the receive buffer.
const WINDOW: usize = 128;

/// One netlink request under construction.
struct Message {
    bytes: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16) -> Self {
        let mut bytes = vec![0u8; 16];
        bytes[4..6].copy_from_slice(&kind.to_ne_bytes());
        bytes[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        Message { bytes }
    }

    fn pad(&mut self) {
        while self.bytes.len() % 4 != 0 {
            self.bytes.push(0);
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(bytes);
        self.pad();
        self
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        self.bytes
            .extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.raw(payload)
    }

    fn begin(&mut self, kind: u16) -> usize {
        let start = self.bytes.len();
        self.attr(kind, &[]);
        start
    }

    fn end(&mut self, start: usize) -> &mut Self {
        let len = (self.bytes.len() - start) as u16;
        self.bytes[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.bytes.len() as u32;
        self.bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        self.bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.bytes
    }
}

/// `struct ifinfomsg` for interface `index`, up or not.
fn ifinfomsg(index: u32, up: bool) -> [u8; 16] {
    let mut header = [0u8; 16];
    header[4..8].copy_from_slice(&index.to_ne_bytes());
    if up {
        let flag = libc::IFF_UP as u32;
        header[8..12].copy_from_slice(&flag.to_ne_bytes());
        header[12..16].copy_from_slice(&flag.to_ne_bytes());
    }
    header
}

fn name(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// A NETLINK_ROUTE socket of the calling thread's network namespace, with queued requests.
pub struct RouteSocket {
    fd: OwnedFd,
    queued: Vec<Vec<u8>>,
    seq: u32,
    buf: Vec<u8>,
}

impl RouteSocket {
    pub fn open() -> io::Result<Self> {
        // SAFETY: socket returns a new descriptor or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is fresh and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(RouteSocket {
            fd,
            queued: Vec::new(),
            seq: 1,
            buf: vec![0; 64 << 10],
        })
    }

    fn push(&mut self, message: Message) {
        let seq = self.seq;
        self.seq += 1;
        self.queued.push(message.finish(seq));
    }

    /// A bridge `name` with ifindex `index`, up, without multicast snooping.
    pub fn new_bridge(&mut self, name_: &str, index: u32) {
        let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.raw(&ifinfomsg(index, true))
            .attr(IFLA_IFNAME, &name(name_));
        let info = m.begin(IFLA_LINKINFO);
        m.attr(IFLA_INFO_KIND, &name("bridge"));
        let data = m.begin(IFLA_INFO_DATA);
        m.attr(IFLA_BR_MCAST_SNOOPING, &[0]);
        m.end(data);
        m.end(info);
        self.push(m);
    }

    /// A veth pair with one queue per end: `port` (ifindex `port_index`), down and enslaved
    /// to `bridge`, and its peer `peer` (ifindex `peer_index`), down, created in the network
    /// namespace `peer_netns` (or in this one when it is negative).
    pub fn new_veth_port(
        &mut self,
        port: &str,
        port_index: u32,
        bridge: u32,
        peer: &str,
        peer_index: u32,
        peer_netns: RawFd,
    ) {
        let one = 1u32.to_ne_bytes();
        let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.raw(&ifinfomsg(port_index, false))
            .attr(IFLA_IFNAME, &name(port))
            .attr(IFLA_MASTER, &bridge.to_ne_bytes())
            .attr(IFLA_NUM_TX_QUEUES, &one)
            .attr(IFLA_NUM_RX_QUEUES, &one);
        let info = m.begin(IFLA_LINKINFO);
        m.attr(IFLA_INFO_KIND, &name("veth"));
        let data = m.begin(IFLA_INFO_DATA);
        let peer_attr = m.begin(VETH_INFO_PEER);
        m.raw(&ifinfomsg(peer_index, false))
            .attr(IFLA_IFNAME, &name(peer))
            .attr(IFLA_NUM_TX_QUEUES, &one)
            .attr(IFLA_NUM_RX_QUEUES, &one);
        if peer_netns >= 0 {
            m.attr(IFLA_NET_NS_FD, &(peer_netns as u32).to_ne_bytes());
        }
        m.end(peer_attr);
        m.end(data);
        m.end(info);
        self.push(m);
    }

    /// Turns IPv6 address generation off on the (down) interface `index`.
    pub fn quiet_ipv6(&mut self, index: u32) {
        let mut m = Message::new(RTM_SETLINK, 0);
        m.raw(&ifinfomsg(index, false));
        let spec = m.begin(IFLA_AF_SPEC);
        let inet6 = m.begin(libc::AF_INET6 as u16);
        m.attr(IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE]);
        m.end(inet6);
        m.end(spec);
        self.push(m);
    }

    /// Brings interface `index` up.
    pub fn set_up(&mut self, index: u32) {
        let mut m = Message::new(RTM_SETLINK, 0);
        m.raw(&ifinfomsg(index, true));
        self.push(m);
    }

    /// Adds `address/prefix` to interface `index`.
    pub fn add_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) {
        let mut m = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        let mut header = [0u8; 8];
        header[0] = libc::AF_INET as u8;
        header[1] = prefix;
        header[4..8].copy_from_slice(&index.to_ne_bytes());
        m.raw(&header)
            .attr(IFA_LOCAL, &address.octets())
            .attr(IFA_ADDRESS, &address.octets());
        self.push(m);
    }

    /// Sends the queued requests, `WINDOW` per `sendto`, and reads every acknowledgement.
    /// Fails with the first error the kernel reported.
    pub fn commit(&mut self) -> io::Result<()> {
        let queued = std::mem::take(&mut self.queued);
        let mut first_error = None;
        // SAFETY: sockaddr_nl is plain data; all zeroes (pid 0) names the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        for window in queued.chunks(WINDOW) {
            let bytes = window.concat();
            // SAFETY: `bytes` and `kernel` outlive the call.
            let sent = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    0,
                    (&kernel as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut answered = 0;
            while answered < window.len() {
                // SAFETY: `buf` is ours and as long as we say.
                let len = unsafe {
                    libc::recv(
                        self.fd.as_raw_fd(),
                        self.buf.as_mut_ptr().cast(),
                        self.buf.len(),
                        0,
                    )
                };
                if len < 0 {
                    return Err(io::Error::last_os_error());
                }
                let len = len as usize;
                let mut offset = 0;
                while offset + 16 <= len {
                    let size = u32::from_ne_bytes(
                        self.buf[offset..offset + 4].try_into().expect("4 bytes"),
                    ) as usize;
                    let kind = u16::from_ne_bytes(
                        self.buf[offset + 4..offset + 6]
                            .try_into()
                            .expect("2 bytes"),
                    );
                    if size < 16 || offset + size > len {
                        break;
                    }
                    if kind == NLMSG_ERROR && size >= 20 {
                        let code = i32::from_ne_bytes(
                            self.buf[offset + 16..offset + 20]
                                .try_into()
                                .expect("4 bytes"),
                        );
                        if code != 0 && first_error.is_none() {
                            first_error = Some(io::Error::from_raw_os_error(-code));
                        }
                        answered += 1;
                    }
                    offset += (size + 3) & !3;
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
