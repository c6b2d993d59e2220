//! A blocking rtnetlink client that sends many requests in one batch and then collects
//! every acknowledgement.
//!
//! Why not the async `rtnetlink` handle: it needs a tokio runtime per namespace and awaits
//! one request at a time, while bringing up a network is hundreds of independent requests
//! into namespaces that dojjail enters from plain threads (and from a host's
//! single-threaded init). The message types come from `netlink-packet-route`, the socket
//! from `netlink-sys` (the crates `rtnetlink` itself is built on); only the batching loop
//! is ours.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// How a request treats existing objects.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// Change an existing object.
    Change,
    /// Create; fail with EEXIST if it exists.
    Create,
}

/// Requests sent before their acknowledgements are read; bounded so the kernel's replies
/// always fit the receive buffer.
const WINDOW: usize = 256;

/// A NETLINK_ROUTE socket bound to the network namespace of the thread that opened it.
pub(crate) struct RouteSocket {
    socket: Socket,
    queued: Vec<Vec<u8>>,
    next_seq: u32,
    recv_buf: Vec<u8>,
}

impl RouteSocket {
    /// Opens a socket in the calling thread's network namespace; it stays there.
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            queued: Vec::new(),
            next_seq: 1,
            recv_buf: vec![0; 64 << 10],
        })
    }

    /// Queues one request; nothing is sent until [`RouteSocket::commit`].
    pub(crate) fn push(&mut self, message: RouteNetlinkMessage, mode: Mode) {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        if let Mode::Create = mode {
            header.flags |= NLM_F_CREATE | NLM_F_EXCL;
        }
        header.sequence_number = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.queued.push(bytes);
    }

    /// Sends every queued request and waits for all their acknowledgements. Returns the
    /// first error the kernel reported, with the index of the request it answers.
    pub(crate) fn commit(&mut self) -> Result<(), (usize, io::Error)> {
        let queued = std::mem::take(&mut self.queued);
        let mut first_error = None;
        for (window_index, window) in queued.chunks(WINDOW).enumerate() {
            let bytes = window.concat();
            self.socket
                .send(&bytes, 0)
                .map_err(|e| (window_index * WINDOW, e))?;
            let mut answered = 0;
            while answered < window.len() {
                let len = self
                    .socket
                    .recv(&mut &mut self.recv_buf[..], 0)
                    .map_err(|e| (window_index * WINDOW + answered, e))?;
                let mut offset = 0;
                while offset + 16 <= len {
                    let size = u32::from_ne_bytes(
                        self.recv_buf[offset..offset + 4]
                            .try_into()
                            .expect("4 bytes"),
                    ) as usize;
                    if size < 16 || offset + size > len {
                        break;
                    }
                    let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(
                        &self.recv_buf[offset..offset + size],
                    );
                    if let Ok(NetlinkMessage {
                        payload: NetlinkPayload::Error(error),
                        ..
                    }) = message
                    {
                        if error.code.is_some() && first_error.is_none() {
                            first_error = Some((window_index * WINDOW + answered, error.to_io()));
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

    /// Sends one request and waits for its acknowledgement.
    pub(crate) fn execute(&mut self, message: RouteNetlinkMessage, mode: Mode) -> io::Result<()> {
        self.push(message, mode);
        self.commit().map_err(|(_, e)| e)
    }
}
