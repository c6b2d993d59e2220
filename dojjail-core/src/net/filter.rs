//! Edge enforcement: an nftables table of the `bridge` family in the network's namespace.
//! Its forward chain drops every frame (ARP included) except between the two bridge ports
//! of an edge, looked up in a set of `iifname . oifname` pairs:
//!
//! ```text
//! table bridge dojjail {
//!     set edges { type ifname . ifname }
//!     chain forward { type filter hook forward priority filter; policy drop;
//!                     iifname . oifname @edges accept }
//! }
//! ```
//!
//! Messages come from `netlink-packet-netfilter` (the rust-netlink family of `rtnetlink`);
//! only the batch framing is ours. This kernel needs no br_netfilter module for it.

use std::io;

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, DataAttribute, Expressions, Hook, Immediate, InetHookNumber,
    ListAttribute, Lookup, Meta, MetaKey, NfTablesMessage, Register, RuleAttribute, RuleMessage,
    SetAttribute, SetElementAttribute, SetElementList, SetElementMessage, SetMessage,
    TableAttribute, TableMessage, Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::{
    none::ControlMessage, NetfilterHeader, NetfilterMessage, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

const TABLE: &str = "dojjail";
const CHAIN: &str = "forward";
const SET: &str = "edges";
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const IFNAMSIZ: usize = 16;
/// nft's datatype ids: ifname is 41; a concatenation is `(a << 6) | b`.
const KEY_IFNAME_PAIR: u32 = (41 << 6) | 41;
/// The bridge family's "filter" priority.
const PRIORITY_FILTER: i32 = -200;
/// Elements per batch message, to stay well inside netlink's message size.
const ELEMENTS_PER_MESSAGE: usize = 256;

/// A NETLINK_NETFILTER socket in a network's namespace.
pub(crate) struct Filter {
    socket: Socket,
    next_seq: u32,
}

impl Filter {
    /// Opens the socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Filter {
            socket,
            next_seq: 1,
        })
    }

    /// Creates the table, chain, set and rule: from now on only edges forward.
    pub(crate) fn install(&mut self) -> io::Result<()> {
        let table = NfTablesMessage::NewTable(TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.into())],
        });
        let chain = NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(TABLE.into()),
                ChainAttribute::Name(CHAIN.into()),
                ChainAttribute::Hook(vec![
                    Hook::Number(InetHookNumber::Forward.into()),
                    Hook::Priority(PRIORITY_FILTER as u32),
                ]),
                ChainAttribute::Policy(NF_DROP),
                ChainAttribute::Type("filter".into()),
            ],
        });
        let set = NfTablesMessage::NewSet(SetMessage {
            attributes: vec![
                SetAttribute::Table(TABLE.into()),
                SetAttribute::Name(SET.into()),
                SetAttribute::KeyType(KEY_IFNAME_PAIR),
                SetAttribute::KeyLen((2 * IFNAMSIZ) as u32),
                SetAttribute::Id(1),
            ],
        });
        // iifname goes to reg1, oifname to reg2 (the 16 bytes right after), and the lookup
        // reads the 32-byte concatenation starting at reg1.
        let rule = NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(TABLE.into()),
                RuleAttribute::Chain(CHAIN.into()),
                RuleAttribute::Expressions(vec![
                    Expressions::Meta(vec![
                        Meta::Key(MetaKey::Iifname),
                        Meta::DestinationRegister(Register::Reg1),
                    ])
                    .into(),
                    Expressions::Meta(vec![
                        Meta::Key(MetaKey::Oifname),
                        Meta::DestinationRegister(Register::Reg2),
                    ])
                    .into(),
                    Expressions::Lookup(vec![
                        Lookup::Set(SET.into()),
                        Lookup::SetId(1),
                        Lookup::SourceRegister(Register::Reg1),
                    ])
                    .into(),
                    Expressions::Immediate(vec![
                        Immediate::DestinationRegister(Register::Verdict),
                        Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
                            Verdict::Other(NF_ACCEPT),
                        )])),
                    ])
                    .into(),
                ]),
            ],
        });
        self.batch(vec![
            (table, NLM_F_CREATE),
            (chain, NLM_F_CREATE),
            (set, NLM_F_CREATE),
            (rule, NLM_F_CREATE | NLM_F_APPEND),
        ])
    }

    /// Allows (`allow = true`) or forbids traffic in both directions between each pair of
    /// bridge ports. Allowing an allowed edge or forbidding a missing one is an error
    /// (ENOENT); the caller tracks edges.
    pub(crate) fn set_edges(&mut self, edges: &[(&str, &str)], allow: bool) -> io::Result<()> {
        if edges.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = edges
            .iter()
            .flat_map(|(a, b)| [pair_key(a, b), pair_key(b, a)])
            .collect();
        let messages = keys
            .chunks(ELEMENTS_PER_MESSAGE)
            .map(|chunk| {
                let body = SetElementMessage {
                    attributes: vec![
                        SetElementList::Table(TABLE.into()),
                        SetElementList::Set(SET.into()),
                        SetElementList::Elements(
                            chunk
                                .iter()
                                .map(|key| {
                                    ListAttribute::Element(vec![SetElementAttribute::Key(
                                        DataAttribute::Value(key.clone()),
                                    )])
                                })
                                .collect(),
                        ),
                    ],
                };
                if allow {
                    (NfTablesMessage::NewSetElement(body), NLM_F_CREATE)
                } else {
                    (NfTablesMessage::DeleteSetElement(body), 0)
                }
            })
            .collect();
        self.batch(messages)
    }

    /// Sends `messages` as one atomic nfnetlink batch and waits for every acknowledgement.
    fn batch(&mut self, messages: Vec<(NfTablesMessage, u16)>) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(4096);
        let mut push = |mut message: NetlinkMessage<NetfilterMessage>, flags: u16, seq: u32| {
            message.header.flags = flags;
            message.header.sequence_number = seq;
            message.finalize();
            let start = bytes.len();
            bytes.resize(start + message.buffer_len(), 0);
            message.serialize(&mut bytes[start..]);
        };
        let control = |message: ControlMessage| {
            NetlinkMessage::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
                message,
            ))
        };
        let first = self.next_seq;
        push(control(ControlMessage::BatchBegin), NLM_F_REQUEST, first);
        let count = messages.len();
        for (offset, (message, flags)) in messages.into_iter().enumerate() {
            let message = NetlinkMessage::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Bridge, 0, 0),
                message,
            ));
            push(
                message,
                NLM_F_REQUEST | NLM_F_ACK | flags,
                first + 1 + offset as u32,
            );
        }
        push(
            control(ControlMessage::BatchEnd),
            NLM_F_REQUEST,
            first + 1 + count as u32,
        );
        self.next_seq = first + 2 + count as u32;
        self.socket.send(&bytes, 0)?;

        let mut acknowledged = 0;
        let mut first_error = None;
        let mut buffer = vec![0u8; 64 << 10];
        while acknowledged < count {
            let len = self.socket.recv(&mut &mut buffer[..], 0)?;
            let mut offset = 0;
            while offset < len {
                let message = NetlinkMessage::<NetfilterMessage>::deserialize(&buffer[offset..len])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let size = message.header.length as usize;
                if message.header.sequence_number >= first {
                    if let NetlinkPayload::Error(error) = message.payload {
                        acknowledged += 1;
                        if error.code.is_some() && first_error.is_none() {
                            first_error = Some(error.to_io());
                        }
                    }
                }
                if size == 0 {
                    break;
                }
                offset += (size + 3) & !3;
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The set key for frames entering at port `from` and leaving at port `to`.
fn pair_key(from: &str, to: &str) -> Vec<u8> {
    let mut key = vec![0u8; 2 * IFNAMSIZ];
    key[..from.len()].copy_from_slice(from.as_bytes());
    key[IFNAMSIZ..IFNAMSIZ + to.len()].copy_from_slice(to.as_bytes());
    key
}
