//! [`Network`]: hosts joined by a bridge that lives in a network namespace of its own,
//! where an nftables table lets frames pass only along the network's edges.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::host::{lock, Host};
use crate::net::filter::Filter;
use crate::net::link::{self, VethEnd};
use crate::net::netlink::{Mode, RouteSocket};
use crate::net::{namespace, Subnet};
use crate::ns::{self, Namespaces};

/// The bridge's ifindex in the network's namespace (lo is 1).
const BRIDGE_INDEX: u32 = 2;
/// Member `i`'s bridge port is `p{i}` with ifindex `PORT_INDEX_BASE + i`.
const PORT_INDEX_BASE: u32 = 16;
/// A host's `eth{k}` gets ifindex `HOST_INDEX_BASE + k` in the host's namespace.
const HOST_INDEX_BASE: u32 = 16;
/// A Linux bridge takes at most 1023 ports (BR_MAX_PORTS - 1).
const MAX_MEMBERS: usize = 1023;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A virtual network: a bridge in a network namespace of its own, the hosts attached to
/// it (each with one address, on an interface `eth0`, `eth1`, ... of its own), and the
/// edges between them. Only hosts joined by an edge exchange any traffic, ARP included.
///
/// `Network` is a cheap handle; clones share the network. It is torn down when the last
/// handle is dropped or the process ends.
///
/// ```no_run
/// # fn main() -> dojjail_core::Result<()> {
/// use dojjail_core::{Host, Network};
///
/// let (a, b) = (Host::new("host-1"), Host::new("host-2"));
/// let network = Network::new("router");
/// network.connect(&a, &b)?;
/// network.run()?;
/// assert_eq!(network.ip(&b), Some("10.0.0.2".parse().unwrap()));
/// let ping = a.exec_shell("ping -c 1 host-2")?;
/// assert!(ping.status.success());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Network {
    inner: Arc<NetworkInner>,
}

struct NetworkInner {
    id: u64,
    name: String,
    state: Mutex<State>,
}

struct State {
    subnet: Subnet,
    members: Vec<Member>,
    /// Pairs of member indices, smaller first.
    edges: BTreeSet<(usize, usize)>,
    live: Option<Live>,
}

struct Member {
    host: Host,
    address: Ipv4Addr,
    /// `k` of the host's `eth{k}`, once attached.
    interface: Option<u32>,
}

/// The kernel side of a running network.
struct Live {
    /// Keeps the namespace (and with it the bridge and every port) alive.
    _netns: File,
    route: RouteSocket,
    filter: Filter,
}

impl Network {
    /// A network named `name` on `10.0.0.0/24`, not yet running.
    pub fn new(name: impl Into<String>) -> Self {
        Network {
            inner: Arc::new(NetworkInner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                name: name.into(),
                state: Mutex::new(State {
                    subnet: "10.0.0.0/24".parse().expect("a valid subnet"),
                    members: Vec::new(),
                    edges: BTreeSet::new(),
                    live: None,
                }),
            }),
        }
    }

    /// Uses `cidr` (like `"192.168.7.0/24"`) instead of `10.0.0.0/24`. Must come before
    /// any host is added.
    pub fn subnet(self, cidr: &str) -> Result<Self> {
        let subnet: Subnet =
            cidr.parse()
                .map_err(|e: crate::net::SubnetError| Error::InvalidSubnet {
                    network: self.inner.name.clone(),
                    cidr: cidr.to_owned(),
                    reason: e.to_string(),
                })?;
        {
            let mut state = lock(&self.inner.state);
            if !state.members.is_empty() {
                return Err(self.topology("set the subnet before adding hosts"));
            }
            state.subnet = subnet;
        }
        Ok(self)
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The network's subnet.
    pub fn cidr(&self) -> Subnet {
        lock(&self.inner.state).subnet
    }

    /// Adds `host` with the next free address (lowest first) and returns its address; a
    /// host that is already a member keeps its address. On a running network the host is
    /// started and attached at once.
    pub fn add(&self, host: &Host) -> Result<Ipv4Addr> {
        let mut state = lock(&self.inner.state);
        let (index, added) = self.ensure_member(&mut state, host, None)?;
        if added {
            self.join(&mut state, &[index])?;
        }
        Ok(state.members[index].address)
    }

    /// Adds `host` with the address `address`, which must lie in the subnet, be neither
    /// its network nor broadcast address, and be free.
    pub fn add_with_ip(&self, host: &Host, address: Ipv4Addr) -> Result<()> {
        let mut state = lock(&self.inner.state);
        let (index, added) = self.ensure_member(&mut state, host, Some(address))?;
        if added {
            self.join(&mut state, &[index])?;
        }
        Ok(())
    }

    /// Adds both hosts (if they are not members yet) and an edge between them: from then
    /// on they exchange ARP, ICMP, TCP and UDP. Works on a running network too.
    pub fn connect(&self, a: &Host, b: &Host) -> Result<()> {
        if a.same_as(b) {
            return Err(self.topology(format!("cannot connect host {:?} to itself", a.name())));
        }
        let mut state = lock(&self.inner.state);
        let (ia, added_a) = self.ensure_member(&mut state, a, None)?;
        let (ib, added_b) = match self.ensure_member(&mut state, b, None) {
            Ok(result) => result,
            Err(error) => {
                if added_a {
                    state.members.pop();
                }
                return Err(error);
            }
        };
        let added: Vec<usize> = [(ia, added_a), (ib, added_b)]
            .into_iter()
            .filter(|(_, added)| *added)
            .map(|(i, _)| i)
            .collect();
        if !added.is_empty() {
            self.join(&mut state, &added)?;
        }
        let edge = (ia.min(ib), ia.max(ib));
        if state.edges.contains(&edge) {
            return Ok(());
        }
        if let Some(live) = &mut state.live {
            live.filter
                .set_edges(&[(&port_name(edge.0), &port_name(edge.1))], true)
                .map_err(|e| self.netlink("adding an edge to the filter", e))?;
        }
        state.edges.insert(edge);
        Ok(())
    }

    /// Removes the edge between `a` and `b`: traffic between them stops at once on a
    /// running network. Both stay members.
    pub fn disconnect(&self, a: &Host, b: &Host) -> Result<()> {
        let mut state = lock(&self.inner.state);
        let (Some(ia), Some(ib)) = (state.index_of(a), state.index_of(b)) else {
            return Err(self.topology(format!(
                "no edge between {:?} and {:?}: they are not both members",
                a.name(),
                b.name()
            )));
        };
        let edge = (ia.min(ib), ia.max(ib));
        if !state.edges.contains(&edge) {
            return Err(self.topology(format!(
                "no edge between {:?} and {:?} to remove",
                a.name(),
                b.name()
            )));
        }
        if let Some(live) = &mut state.live {
            live.filter
                .set_edges(&[(&port_name(edge.0), &port_name(edge.1))], false)
                .map_err(|e| self.netlink("removing an edge from the filter", e))?;
        }
        state.edges.remove(&edge);
        Ok(())
    }

    /// Starts the network and every host in it: the bridge, one veth pair per host, the
    /// addresses, the edge filter and every host's /etc/hosts. Does nothing if it runs
    /// already. If anything fails half way, everything this call started is torn down: the
    /// hosts it started are new again, and `run` may be called again once the cause is
    /// fixed.
    pub fn run(&self) -> Result<()> {
        let mut state = lock(&self.inner.state);
        if state.live.is_some() {
            return Ok(());
        }
        ns::ensure_privileged()?;
        let started = Started::default();
        let result = self.bring_up(&mut state, &started);
        if result.is_err() {
            let all: Vec<usize> = (0..state.members.len()).collect();
            detach(&mut state, &all);
            state.live = None;
            self.release(&state, &all, started);
        } else {
            for member in &state.members {
                member.host.keep();
            }
        }
        result
    }

    /// After a failed start of the members `indices`: the hosts this call started are new
    /// again (unless another network uses them by now); the others lose this network's
    /// names.
    fn release(&self, state: &State, indices: &[usize], started: Started) {
        let started = started.into_inner().unwrap_or_else(|e| e.into_inner());
        for &index in indices {
            let host = &state.members[index].host;
            if !(started.contains(&index) && host.abandon_start(self.inner.id)) {
                host.leave(self.inner.id);
                let _ = host.set_hosts_entries(self.inner.id, Arc::from(""));
            }
        }
    }

    fn bring_up(&self, state: &mut State, started: &Started) -> Result<()> {
        let netns = namespace::create().map_err(|e| self.netlink("creating its namespace", e))?;
        let (mut route, mut filter) =
            namespace::within(&netns, || Ok((RouteSocket::open()?, Filter::open()?)))
                .map_err(|e| self.netlink("opening netlink sockets", e))?;
        route
            .execute(link::new_bridge("br0", BRIDGE_INDEX), Mode::Create)
            .map_err(|e| self.netlink("creating the bridge", e))?;
        filter
            .install()
            .map_err(|e| self.netlink("installing the edge filter", e))?;
        state.live = Some(Live {
            _netns: netns,
            route,
            filter,
        });
        let all: Vec<usize> = (0..state.members.len()).collect();
        self.apply_new_members(state, &all, started)?;
        let edges: Vec<(String, String)> = state
            .edges
            .iter()
            .map(|(a, b)| (port_name(*a), port_name(*b)))
            .collect();
        let edges: Vec<(&str, &str)> = edges.iter().map(|(a, b)| (&a[..], &b[..])).collect();
        let live = state.live.as_mut().expect("set above");
        live.filter
            .set_edges(&edges, true)
            .map_err(|e| self.netlink("adding the edges to the filter", e))
    }

    /// Whether the network runs.
    pub fn is_running(&self) -> bool {
        lock(&self.inner.state).live.is_some()
    }

    /// The address of `host` in this network, if it is a member.
    pub fn ip(&self, host: &Host) -> Option<Ipv4Addr> {
        let state = lock(&self.inner.state);
        state.index_of(host).map(|i| state.members[i].address)
    }

    /// The member called `name`.
    ///
    /// # Panics
    /// When there is none; the message lists the members. See [`Network::get`].
    pub fn host(&self, name: &str) -> Host {
        self.get(name).unwrap_or_else(|| {
            let names: Vec<String> = self.hosts().iter().map(|h| h.name().to_owned()).collect();
            panic!(
                "network {:?} has no host named {name:?}; its hosts are: {}",
                self.inner.name,
                names.join(", ")
            )
        })
    }

    /// The member called `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<Host> {
        lock(&self.inner.state)
            .members
            .iter()
            .find(|m| m.host.name() == name)
            .map(|m| m.host.clone())
    }

    /// Every member, in the order they joined.
    pub fn hosts(&self) -> Vec<Host> {
        lock(&self.inner.state)
            .members
            .iter()
            .map(|m| m.host.clone())
            .collect()
    }

    /// Every edge as a pair of host names.
    pub fn edges(&self) -> Vec<(String, String)> {
        let state = lock(&self.inner.state);
        state
            .edges
            .iter()
            .map(|(a, b)| {
                (
                    state.members[*a].host.name().to_owned(),
                    state.members[*b].host.name().to_owned(),
                )
            })
            .collect()
    }

    /// The topology as text: the subnet, each host with its address and interface, the
    /// edges.
    pub fn describe(&self) -> String {
        let state = lock(&self.inner.state);
        let mut text = format!(
            "network {:?} {} ({})\n",
            self.inner.name,
            state.subnet,
            if state.live.is_some() {
                "running"
            } else {
                "not running"
            }
        );
        for member in &state.members {
            let interface = member
                .interface
                .map(|k| format!("eth{k}"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                text,
                "  host {:<20} {:<15} {}",
                member.host.name(),
                member.address,
                interface
            );
        }
        for (a, b) in &state.edges {
            let _ = writeln!(
                text,
                "  edge {} -- {}",
                state.members[*a].host.name(),
                state.members[*b].host.name()
            );
        }
        text
    }

    /// The topology as a Graphviz DOT graph.
    pub fn to_dot(&self) -> String {
        let state = lock(&self.inner.state);
        let mut dot = format!("graph {:?} {{\n", self.inner.name);
        for member in &state.members {
            let _ = writeln!(
                dot,
                "  {:?} [label=\"{}\\n{}\"];",
                member.host.name(),
                member.host.name().escape_default(),
                member.address
            );
        }
        for (a, b) in &state.edges {
            let _ = writeln!(
                dot,
                "  {:?} -- {:?};",
                state.members[*a].host.name(),
                state.members[*b].host.name()
            );
        }
        dot.push_str("}\n");
        dot
    }

    /// The member index of `host`, adding it (with `address`, or the next free one) when
    /// it is not a member yet. Returns whether it was added.
    fn ensure_member(
        &self,
        state: &mut State,
        host: &Host,
        address: Option<Ipv4Addr>,
    ) -> Result<(usize, bool)> {
        if let Some(index) = state.index_of(host) {
            let current = state.members[index].address;
            return match address {
                Some(wanted) if wanted != current => Err(self.topology(format!(
                    "host {:?} is a member already, with address {current}",
                    host.name()
                ))),
                _ => Ok((index, false)),
            };
        }
        if state.members.iter().any(|m| m.host.name() == host.name()) {
            return Err(self.topology(format!(
                "it has another host named {:?} already; host names are unique in a network",
                host.name()
            )));
        }
        if state.members.len() >= MAX_MEMBERS {
            return Err(self.topology(format!(
                "a network holds at most {MAX_MEMBERS} hosts (the Linux bridge's port limit); \
                 split the hosts over several networks"
            )));
        }
        if !host.has_namespace(Namespaces::NET) {
            return Err(self.topology(format!(
                "host {:?} has no network namespace of its own to attach",
                host.name()
            )));
        }
        let used: std::collections::HashMap<Ipv4Addr, &str> = state
            .members
            .iter()
            .map(|m| (m.address, m.host.name()))
            .collect();
        let taken = |a: Ipv4Addr| used.get(&a).copied();
        let address = match address {
            Some(address) => {
                let subnet = state.subnet;
                let reason = if !subnet.contains(address) {
                    Some(format!("it is outside the subnet {subnet}"))
                } else if address == subnet.network() {
                    Some(format!("it is the network address of {subnet}"))
                } else if address == subnet.broadcast() {
                    Some(format!("it is the broadcast address of {subnet}"))
                } else {
                    taken(address).map(|holder| format!("host {holder:?} has it already"))
                };
                if let Some(reason) = reason {
                    return Err(Error::InvalidAddress {
                        network: self.inner.name.clone(),
                        host: host.name().to_owned(),
                        address,
                        reason,
                    });
                }
                address
            }
            None => state
                .subnet
                .hosts()
                .find(|a| taken(*a).is_none())
                .ok_or_else(|| Error::SubnetFull {
                    network: self.inner.name.clone(),
                    subnet: state.subnet.to_string(),
                    host: host.name().to_owned(),
                })?,
        };
        state.members.push(Member {
            host: host.clone(),
            address,
            interface: None,
        });
        Ok((state.members.len() - 1, true))
    }

    /// Brings members just added (the last ones) into a running network; if that fails,
    /// they are taken out again, with their bridge ports, and hosts this call started are
    /// new again, so a failed `add` or `connect` leaves the network as it was.
    fn join(&self, state: &mut State, new: &[usize]) -> Result<()> {
        let started = Started::default();
        let Err(error) = self.apply_new_members(state, new, &started) else {
            if state.live.is_some() {
                for &index in new {
                    state.members[index].host.keep();
                }
            }
            return Ok(());
        };
        detach(state, new);
        self.release(state, new, started);
        let first = new.iter().copied().min().unwrap_or(state.members.len());
        state.members.truncate(first);
        // The remaining members may have been given the new members' names.
        if state.live.is_some() {
            let _ = self.refresh_hosts_files(state);
        }
        Err(error)
    }

    /// On a running network: starts the new members, attaches them, and refreshes every
    /// member's /etc/hosts. Does nothing on a network that is not running. Notes in
    /// `started` the members it started.
    fn apply_new_members(&self, state: &mut State, new: &[usize], started: &Started) -> Result<()> {
        if state.live.is_none() {
            return Ok(());
        }
        self.start_hosts(state, new, started)?;
        self.attach(state, new)?;
        self.refresh_hosts_files(state)?;
        // Entrypoints start last, so they find their interfaces, addresses and names.
        for &index in new {
            state.members[index].host.start_pending_main()?;
        }
        Ok(())
    }

    /// Starts the hosts of `new` on a few threads at once; on each, every init is cloned
    /// first and then awaited, so their set-up overlaps too.
    fn start_hosts(&self, state: &State, new: &[usize], started: &Started) -> Result<()> {
        // Each chunk holds its hosts' locks from the first half of the start to the second:
        // taking them in one global order keeps two networks that share hosts, started at
        // once, from deadlocking.
        let mut new = new.to_vec();
        new.sort_by_key(|&index| state.members[index].host.address());
        in_chunks(&new, |indices| {
            let mut starting = Vec::with_capacity(indices.len());
            for &index in indices {
                if let Some(host) = state.members[index].host.begin_run(Some(self.inner.id))? {
                    lock(started).insert(index);
                    starting.push(host);
                }
            }
            for host in starting {
                host.finish()?;
            }
            Ok(())
        })
    }

    /// Creates each new member's veth pair (one batch), then configures the host's end
    /// from inside the host.
    fn attach(&self, state: &mut State, new: &[usize]) -> Result<()> {
        let prefix = state.subnet.prefix();
        let live = state.live.as_mut().expect("attach needs a running network");
        let members = &mut state.members;
        // Every namespace first: a failure here leaves nothing queued or allocated.
        let mut namespaces = Vec::with_capacity(new.len());
        for &index in new {
            let member = &members[index];
            let running = member.host.running()?;
            // Held only until the batch is sent: the kernel resolves it in the request.
            let netns =
                crate::ns::open_proc(&format!("{}/ns/net", running.pid), false).map_err(|e| {
                    self.netlink(
                        &format!(
                            "opening the network namespace of host {:?}",
                            member.host.name()
                        ),
                        e,
                    )
                })?;
            namespaces.push(netns);
        }
        let mut planned = Vec::with_capacity(new.len());
        for (&index, netns) in new.iter().zip(&namespaces) {
            let k = members[index].host.allocate_interface();
            members[index].interface = Some(k);
            live.route.push(
                link::new_veth_port(
                    VethEnd {
                        name: &port_name(index),
                        index: PORT_INDEX_BASE + index as u32,
                    },
                    BRIDGE_INDEX,
                    VethEnd {
                        name: &format!("eth{k}"),
                        index: HOST_INDEX_BASE + k,
                    },
                    netns.as_raw_fd(),
                ),
                Mode::Create,
            );
            let port = PORT_INDEX_BASE + index as u32;
            live.route.push(link::quiet_ipv6(port), Mode::Change);
            live.route.push(link::set_up(port), Mode::Change);
            planned.push((index, k));
        }
        let sent = live.route.commit();
        drop(namespaces);
        if let Err((i, e)) = sent {
            // Three requests per host: create, quiet IPv6, up.
            let host = planned.get(i / 3).map_or("?".to_owned(), |(index, _)| {
                members[*index].host.name().to_owned()
            });
            // The pairs the batch did create go now (the others answer ENODEV).
            detach(state, new);
            return Err(self.netlink(&format!("creating the veth pair of host {host:?}"), e));
        }
        let members = &state.members;
        in_parallel(&planned, |&(index, k)| {
            let member = &members[index];
            let address = member.address;
            member
                .host
                .exec(|| {
                    let mut socket = RouteSocket::open()?;
                    socket.push(link::quiet_ipv6(HOST_INDEX_BASE + k), Mode::Change);
                    socket.push(link::set_up(HOST_INDEX_BASE + k), Mode::Change);
                    socket.push(
                        link::add_address(HOST_INDEX_BASE + k, address, prefix),
                        Mode::Create,
                    );
                    socket.commit().map_err(|(_, e)| e)
                })?
                .map_err(|e| {
                    self.netlink(
                        &format!("configuring eth{k} of host {:?}", member.host.name()),
                        e,
                    )
                })
        })
    }

    fn refresh_hosts_files(&self, state: &State) -> Result<()> {
        // One block of lines for the whole network, shared by every member.
        let mut block = String::with_capacity(state.members.len() * 32);
        for member in &state.members {
            let _ = writeln!(block, "{}\t{}", member.address, member.host.name());
        }
        let block: Arc<str> = block.into();
        in_parallel(&state.members, |member| {
            match member.host.set_hosts_entries(self.inner.id, block.clone()) {
                // A member whose entrypoint has returned has no /etc/hosts to update.
                Err(Error::Stopped { .. }) => Ok(()),
                other => other,
            }
        })
    }

    fn topology(&self, reason: impl Into<String>) -> Error {
        Error::Topology {
            network: self.inner.name.clone(),
            reason: reason.into(),
        }
    }

    fn netlink(&self, op: &str, source: std::io::Error) -> Error {
        Error::Netlink {
            network: self.inner.name.clone(),
            op: op.to_owned(),
            source,
        }
    }
}

impl Drop for NetworkInner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for member in &state.members {
            member.host.leave(self.id);
        }
    }
}

impl State {
    fn index_of(&self, host: &Host) -> Option<usize> {
        self.members.iter().position(|m| m.host.same_as(host))
    }
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Runs `f` on every item, spread over one thread per core: most of the time of per-host
/// work goes to system calls and to waiting on the host's threads, which overlaps.
fn in_parallel<T: Sync>(items: &[T], f: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    in_chunks(items, |chunk| chunk.iter().try_for_each(&f))
}

/// Splits `items` in one chunk per core (of at least 8 items) and runs `f` on each chunk on
/// a thread of its own; the first error wins.
fn in_chunks<T: Sync>(items: &[T], f: impl Fn(&[T]) -> Result<()> + Sync) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
    let chunk = items.len().div_ceil(threads).max(8);
    if items.len() <= chunk {
        return f(items);
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|chunk| scope.spawn(|| f(chunk)))
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    })
}

/// Takes the members `indices` off the bridge now, and gives their interface numbers back.
/// Deleting the bridge end of a veth pair deletes the host's end too; left to the cleanup
/// of the bridge's namespace, it would linger in the host under the name a retry gives
/// again.
fn detach(state: &mut State, indices: &[usize]) {
    if let Some(live) = &mut state.live {
        for &index in indices {
            live.route
                .push(link::delete(PORT_INDEX_BASE + index as u32), Mode::Change);
        }
        let _ = live.route.commit();
    }
    for &index in indices.iter().rev() {
        let member = &mut state.members[index];
        if let Some(k) = member.interface.take() {
            member.host.release_interface(k);
        }
    }
}

/// The members a call started (rather than found running), by index.
type Started = Mutex<BTreeSet<usize>>;

fn port_name(index: usize) -> String {
    format!("p{index}")
}
