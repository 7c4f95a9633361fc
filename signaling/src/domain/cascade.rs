//! Relay links between nodes for channels that span nodes (DESIGN §7.2): what turns a channel's
//! relay plan (which publisher's tracks go from which node to which) into links on the nodes,
//! and keeps them in step as the plan changes.
//!
//! A link carries one publisher's tracks from one node's room to another's. Opening it takes two
//! control requests over the authenticated control connections: `acceptRelay` to the receiving
//! node (which answers with the address to send to) and `openRelay` to the sending node. Both get
//! the link's two keys, generated here per link (one per direction, 128 random bits each): the
//! keys never travel anywhere but those two encrypted control connections. Closing is
//! `closeRelay` on both ends. Link ids are random too, so a link of a past placement never
//! matches one of a new placement.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use mooyaho_control::{RelayKeyHex, Request, Response};

use super::ids::{ChannelId, SessionId, SfuServerId};
use super::ports::SfuNodes;
use super::relay_plan::RelayPlan;

/// One relay link a channel needs: `publisher`'s tracks from node `from` to node `to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct LinkKey {
    /// The publishing session.
    pub(super) publisher: SessionId,
    /// The node that has its tracks (its own node, or one fed by it).
    pub(super) from: SfuServerId,
    /// The node fed.
    pub(super) to: SfuServerId,
}

impl LinkKey {
    /// The links a relay plan needs: one per (publisher, from, to), whatever its number of
    /// tracks (a link carries all of a publisher's tracks between two nodes).
    pub(super) fn of_plan(plan: &RelayPlan) -> BTreeSet<Self> {
        plan.edges
            .iter()
            .map(|e| Self {
                publisher: e.publisher.clone(),
                from: e.from,
                to: e.to,
            })
            .collect()
    }
}

/// An open link: its id, and the rooms it joins (so it is closed where it was opened even if
/// the channel's rooms changed since).
#[derive(Clone, Debug, PartialEq, Eq)]
struct OpenLink {
    id: u64,
    from_room: String,
    to_room: String,
}

/// What changed in a channel, as far as its relay links go: what a sync of it re-plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RelayChange {
    /// Anything: plan again from the store.
    Any,
    /// A member was served on this node (nothing to plan if the node already received).
    ServedOn(SfuServerId),
    /// The channel closed: every link goes, whatever the store says.
    Closed,
}

impl RelayChange {
    /// One change covering `self`, requested first, and `newer`: a sync for both must do what
    /// either needs (a close is undone by a later change, which plans from the store).
    fn and_then(self, newer: Self) -> Self {
        match (self, newer) {
            (_, Self::Closed) => Self::Closed,
            (Self::ServedOn(a), Self::ServedOn(b)) if a == b => newer,
            _ => Self::Any,
        }
    }
}

/// Where a channel's links should be, as one round of a sync planned it.
#[derive(Clone, Debug, Default)]
pub(super) struct Target {
    /// The channel's room on each node serving it.
    pub(super) rooms: BTreeMap<SfuServerId, String>,
    /// Its relay plan.
    pub(super) plan: RelayPlan,
    /// The nodes that had receiving members when it was planned.
    pub(super) receivers: BTreeSet<SfuServerId>,
    /// The relay addresses the receiving nodes may name.
    pub(super) addresses: RelayAddresses,
}

/// The addresses a receiving node may name for a link (outside review G6): a compromised or
/// misconfigured node must not point another node's relay stream at a third party. Its
/// registered control host (when an IP address) or one of `--relay-ip`; never an unspecified,
/// multicast or broadcast address, nor port 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RelayAddresses {
    /// Each node's registered control host, when it is an IP address.
    pub(super) hosts: BTreeMap<SfuServerId, IpAddr>,
    /// Addresses any node may name (`--relay-ip`).
    pub(super) extra: Vec<IpAddr>,
}

impl RelayAddresses {
    /// `address` as `node` named it, if it may send there.
    fn check(&self, node: SfuServerId, address: &str) -> Result<SocketAddr, String> {
        let parsed: SocketAddr = address
            .parse()
            .map_err(|_| format!("relay address {address:?} is not ip:port"))?;
        let ip = parsed.ip().to_canonical();
        let unusable = ip.is_unspecified()
            || ip.is_multicast()
            || ip == IpAddr::from([255, 255, 255, 255])
            || parsed.port() == 0;
        let allowed = self.hosts.get(&node).map(|h| h.to_canonical()) == Some(ip)
            || self.extra.iter().any(|e| e.to_canonical() == ip);
        if unusable || !allowed {
            return Err(format!(
                "relay address {parsed} is neither node {node}'s registered host nor a --relay-ip"
            ));
        }
        Ok(parsed)
    }
}

/// What a [`Cascade::sync`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Synced {
    /// Links opened.
    pub(super) opened: usize,
    /// Links closed.
    pub(super) closed: usize,
    /// Links that could not be opened (a node refused or was unreachable); tried again at the
    /// next sync.
    pub(super) failed: usize,
    /// Rounds planned (each reads the channel once; more than one when changes arrived while
    /// a round was under way).
    pub(super) rounds: usize,
}

/// The relay links this instance opened, per channel.
///
/// Each channel is synced by one task at a time (outside review G1, G2): a sync requested while
/// another runs for the channel does not wait for it, it leaves its change for the running one,
/// which plans again (from the store, after its current round) before it stops. So two syncs
/// never open a link twice, a plan read before a change is never applied after that change's
/// plan (every round reads after every change merged into it), one channel's slow node never
/// holds up another channel or a failover, and no lock is held across a node call.
#[derive(Debug, Default)]
pub(super) struct Cascade {
    channels: Mutex<HashMap<ChannelId, BTreeMap<LinkKey, OpenLink>>>,
    /// Each channel's last relay plan (planning keeps its edges where they still fit) and the
    /// nodes that had receiving members then.
    plans: Mutex<HashMap<ChannelId, (RelayPlan, BTreeSet<SfuServerId>)>>,
    /// Channels being synced now, or whose sync was dropped with changes left.
    syncing: Mutex<HashMap<ChannelId, ChannelSync>>,
}

/// A channel's sync state.
#[derive(Debug, Default)]
struct ChannelSync {
    /// A task is syncing it.
    running: bool,
    /// Changes requested since its current round planned (or left by a dropped sync).
    left: Option<RelayChange>,
}

/// The one running sync of a channel: if its task is dropped mid-round, the channel's next
/// request plans everything again.
struct Turn<'a> {
    cascade: &'a Cascade,
    channel: &'a ChannelId,
    done: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut syncing = self.cascade.syncing();
            if let Some(sync) = syncing.get_mut(self.channel) {
                sync.running = false;
                sync.left = Some(
                    sync.left
                        .map_or(RelayChange::Any, |l| l.and_then(RelayChange::Any)),
                );
            }
        }
    }
}

impl Cascade {
    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, BTreeMap<LinkKey, OpenLink>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn syncing(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, ChannelSync>> {
        self.syncing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `channel`'s last relay plan (empty if none).
    pub(super) fn last_plan(&self, channel: &ChannelId) -> RelayPlan {
        let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        plans
            .get(channel)
            .map(|(plan, _)| plan.clone())
            .unwrap_or_default()
    }

    /// Whether `node` had receiving members of `channel` at its last planned sync (a member
    /// served there then changes nothing the plan depends on).
    pub(super) fn planned_receiver(&self, channel: &ChannelId, node: SfuServerId) -> bool {
        let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        plans
            .get(channel)
            .is_some_and(|(_, receivers)| receivers.contains(&node))
    }

    /// Keeps `plan` as `channel`'s last, with the nodes that had receiving members (forgotten
    /// when both are empty).
    fn keep_plan(&self, channel: &ChannelId, plan: RelayPlan, receivers: BTreeSet<SfuServerId>) {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if plan.edges.is_empty() && receivers.is_empty() {
            plans.remove(channel);
        } else {
            plans.insert(channel.clone(), (plan, receivers));
        }
    }

    /// Syncs `channel`'s links after `change`: unless a sync of it is running already (then
    /// `change` is left to it and this returns at once, [`Synced::rounds`] 0), plans with
    /// `target` (`None`: nothing to do) and brings the links there, round after round while
    /// changes arrive.
    pub(super) async fn sync<F, Fut>(
        &self,
        nodes: &dyn SfuNodes,
        channel: &ChannelId,
        change: RelayChange,
        mut target: F,
    ) -> Synced
    where
        F: FnMut(RelayChange) -> Fut,
        Fut: Future<Output = Option<Target>>,
    {
        let mut change = {
            let mut syncing = self.syncing();
            let sync = syncing.entry(channel.clone()).or_default();
            if sync.running {
                sync.left = Some(sync.left.map_or(change, |l| l.and_then(change)));
                return Synced::default();
            }
            sync.running = true;
            sync.left.take().map_or(change, |l| l.and_then(change))
        };
        let mut turn = Turn {
            cascade: self,
            channel,
            done: false,
        };
        let mut synced = Synced::default();
        loop {
            synced.rounds += 1;
            if let Some(target) = target(change).await {
                let round = self.apply(nodes, channel, target).await;
                synced.opened += round.opened;
                synced.closed += round.closed;
                synced.failed += round.failed;
            }
            let mut syncing = self.syncing();
            match syncing.get_mut(channel).and_then(|s| s.left.take()) {
                Some(left) => change = left,
                None => {
                    syncing.remove(channel);
                    turn.done = true;
                    return synced;
                }
            }
        }
    }

    /// Brings `channel`'s links to `target`: closes the links it no longer plans (or whose
    /// rooms changed), opens the missing ones. A planned link whose nodes do not both have a
    /// room is not opened.
    async fn apply(&self, nodes: &dyn SfuNodes, channel: &ChannelId, target: Target) -> Synced {
        let Target {
            rooms,
            plan,
            receivers,
            addresses,
        } = target;
        let wanted = LinkKey::of_plan(&plan);
        self.keep_plan(channel, plan.clone(), receivers);
        let mut synced = Synced::default();
        let current = self.links().get(channel).cloned().unwrap_or_default();
        for (key, link) in &current {
            let still = wanted.contains(key)
                && rooms.get(&key.from) == Some(&link.from_room)
                && rooms.get(&key.to) == Some(&link.to_room);
            if !still {
                self.forget(channel, key);
                close(nodes, key, link).await;
                synced.closed += 1;
            }
        }
        for key in &wanted {
            if self.is_open(channel, key) {
                continue;
            }
            let (Some(from_room), Some(to_room)) = (rooms.get(&key.from), rooms.get(&key.to))
            else {
                continue;
            };
            match open(nodes, &addresses, key, from_room, to_room).await {
                Ok(link) => {
                    self.links()
                        .entry(channel.clone())
                        .or_default()
                        .insert(key.clone(), link);
                    synced.opened += 1;
                }
                Err(e) => {
                    tracing::warn!(%channel, publisher = %key.publisher, from = %key.from, to = %key.to, error = %e, "relay link not opened");
                    synced.failed += 1;
                }
            }
        }
        if synced.failed > 0 {
            // Not every link opened: the next member served anywhere plans (and tries) again.
            self.keep_plan(channel, plan, BTreeSet::new());
        }
        synced
    }

    /// `node` is gone (failed over): its links are forgotten, and their surviving ends closed.
    /// Takes no part in any channel's sync (a failover never waits on one): a link to `node`
    /// a running sync opens meanwhile is closed by that channel's next round, which the
    /// failover's span change requests.
    pub(super) async fn node_lost(&self, nodes: &dyn SfuNodes, node: SfuServerId) {
        let mut dropped = Vec::new();
        self.links().retain(|_, links| {
            links.retain(|key, link| {
                let keep = key.from != node && key.to != node;
                if !keep {
                    dropped.push((key.clone(), link.clone()));
                }
                keep
            });
            !links.is_empty()
        });
        for (key, link) in dropped {
            let (survivor, room) = if key.from == node {
                (key.to, &link.to_room)
            } else {
                (key.from, &link.from_room)
            };
            close_end(nodes, survivor, room, link.id).await;
        }
    }

    /// `node` closed its end of link `link` in its room `room` by itself (its other end went
    /// unanswered, outside review G5): the link is forgotten and its other end closed. Returns
    /// the link's channel, whose links are to be planned again; `None` for a link this
    /// instance does not hold at that node and room (another instance's, or a forged report).
    pub(super) async fn end_closed_by_node(
        &self,
        nodes: &dyn SfuNodes,
        node: SfuServerId,
        room: &str,
        link: u64,
    ) -> Option<ChannelId> {
        let (channel, key, open) = {
            let mut channels = self.links();
            let (channel, key) = channels.iter().find_map(|(channel, links)| {
                links.iter().find_map(|(key, open)| {
                    let end = (key.from == node && open.from_room == room)
                        || (key.to == node && open.to_room == room);
                    (open.id == link && end).then(|| (channel.clone(), key.clone()))
                })
            })?;
            let links = channels.get_mut(&channel)?;
            let open = links.remove(&key)?;
            if links.is_empty() {
                channels.remove(&channel);
            }
            (channel, key, open)
        };
        let (other, other_room) = if key.from == node {
            (key.to, &open.to_room)
        } else {
            (key.from, &open.from_room)
        };
        close_end(nodes, other, other_room, open.id).await;
        Some(channel)
    }

    /// Open links per node: (sending, receiving), over every channel this instance relays.
    #[cfg(test)]
    pub(super) fn per_node(&self) -> BTreeMap<SfuServerId, (usize, usize)> {
        let mut counts: BTreeMap<SfuServerId, (usize, usize)> = BTreeMap::new();
        for links in self.links().values() {
            for key in links.keys() {
                counts.entry(key.from).or_default().0 += 1;
                counts.entry(key.to).or_default().1 += 1;
            }
        }
        counts
    }

    /// The links `channel` has open now.
    #[cfg(test)]
    pub(super) fn open_links(&self, channel: &ChannelId) -> BTreeSet<LinkKey> {
        self.links()
            .get(channel)
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether this instance has links of `channel` open.
    pub(super) fn has_links(&self, channel: &ChannelId) -> bool {
        self.links().contains_key(channel)
    }

    fn is_open(&self, channel: &ChannelId, key: &LinkKey) -> bool {
        self.links()
            .get(channel)
            .is_some_and(|l| l.contains_key(key))
    }

    fn forget(&self, channel: &ChannelId, key: &LinkKey) {
        let mut links = self.links();
        if let Some(l) = links.get_mut(channel) {
            l.remove(key);
            if l.is_empty() {
                links.remove(channel);
            }
        }
    }
}

/// A fresh 128-bit key as the control protocol carries it (32 hex digits).
fn fresh_key() -> RelayKeyHex {
    RelayKeyHex::new(
        rand::random::<[u8; 16]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

/// Opens one link: the receiving end first (it names the address), then the sending end; a
/// sending end that fails takes both ends down again (an `openRelay` that timed out here may
/// still have opened it there; outside review F12).
async fn open(
    nodes: &dyn SfuNodes,
    addresses: &RelayAddresses,
    key: &LinkKey,
    from_room: &str,
    to_room: &str,
) -> Result<OpenLink, String> {
    let id = rand::random();
    let (forward, back) = (fresh_key(), fresh_key());
    let accept = Request::AcceptRelay {
        room: to_room.to_owned(),
        link: id,
        publisher: key.publisher.as_str().to_owned(),
        send_key: back.clone(),
        receive_key: forward.clone(),
    };
    let address = match nodes.call(key.to, accept).await {
        Ok(Response::RelayAddress { address }) => address,
        Ok(other) => return Err(format!("acceptRelay: {other:?}")),
        Err(e) => return Err(format!("acceptRelay: {e}")),
    };
    let address = match addresses.check(key.to, &address) {
        Ok(address) => address.to_string(),
        Err(e) => {
            close_end(nodes, key.to, to_room, id).await;
            return Err(e);
        }
    };
    let open = Request::OpenRelay {
        room: from_room.to_owned(),
        link: id,
        publisher: key.publisher.as_str().to_owned(),
        address,
        send_key: forward,
        receive_key: back,
    };
    let opened = match nodes.call(key.from, open).await {
        Ok(Response::Done) => Ok(()),
        Ok(other) => Err(format!("openRelay: {other:?}")),
        Err(e) => Err(format!("openRelay: {e}")),
    };
    if let Err(e) = opened {
        close_end(nodes, key.to, to_room, id).await;
        close_end(nodes, key.from, from_room, id).await;
        return Err(e);
    }
    Ok(OpenLink {
        id,
        from_room: from_room.to_owned(),
        to_room: to_room.to_owned(),
    })
}

/// Closes both ends of a link (an end whose node or room is gone is gone already).
async fn close(nodes: &dyn SfuNodes, key: &LinkKey, link: &OpenLink) {
    close_end(nodes, key.from, &link.from_room, link.id).await;
    close_end(nodes, key.to, &link.to_room, link.id).await;
}

async fn close_end(nodes: &dyn SfuNodes, node: SfuServerId, room: &str, link: u64) {
    let request = Request::CloseRelay {
        room: room.to_owned(),
        link,
    };
    match nodes.call(node, request).await {
        Ok(Response::Done) => {}
        outcome => tracing::debug!(%node, room, ?outcome, "relay link end not closed (gone?)"),
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;

    pub(super) fn key(publisher: &str, from: u64, to: u64) -> LinkKey {
        LinkKey {
            publisher: SessionId::from(publisher),
            from: SfuServerId(from),
            to: SfuServerId(to),
        }
    }

    pub(super) fn rooms(pairs: &[(u64, &str)]) -> BTreeMap<SfuServerId, String> {
        pairs
            .iter()
            .map(|(n, r)| (SfuServerId(*n), (*r).to_owned()))
            .collect()
    }

    /// A plan with one stream per link of `keys`.
    pub(super) fn plan(keys: &BTreeSet<LinkKey>) -> RelayPlan {
        RelayPlan {
            edges: keys
                .iter()
                .map(|k| crate::domain::relay_plan::RelayEdge {
                    publisher: k.publisher.clone(),
                    track: "t".into(),
                    from: k.from,
                    to: k.to,
                })
                .collect(),
        }
    }

    /// Relay addresses with every one of `nodes` registered on 127.0.0.1 (where the fake
    /// nodes' relay addresses are).
    pub(super) fn loopback_nodes<'a>(
        nodes: impl Iterator<Item = &'a SfuServerId>,
    ) -> RelayAddresses {
        RelayAddresses {
            hosts: nodes.map(|n| (*n, IpAddr::from([127, 0, 0, 1]))).collect(),
            extra: Vec::new(),
        }
    }

    /// Syncs `channel` to `wanted` between `rooms` (planned once, whatever the change).
    pub(super) async fn sync_to(
        cascade: &Cascade,
        nodes: &dyn SfuNodes,
        channel: &ChannelId,
        rooms: &BTreeMap<SfuServerId, String>,
        wanted: &BTreeSet<LinkKey>,
    ) -> Synced {
        let target = Target {
            rooms: rooms.clone(),
            plan: plan(wanted),
            receivers: BTreeSet::new(),
            addresses: loopback_nodes(rooms.keys()),
        };
        let synced = cascade
            .sync(nodes, channel, RelayChange::Any, |_| {
                std::future::ready(Some(target.clone()))
            })
            .await;
        Synced {
            rounds: 0,
            ..synced
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;
    use crate::domain::tests::FakeNodes;

    /// (kind, node-less summary) of what the nodes were asked.
    fn relay_requests(nodes: &FakeNodes) -> Vec<Request> {
        nodes
            .take()
            .into_iter()
            .filter(|r| {
                matches!(
                    r,
                    Request::AcceptRelay { .. }
                        | Request::OpenRelay { .. }
                        | Request::CloseRelay { .. }
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_wanted_link_is_opened_once_with_matching_keys_and_closed_when_unwanted() {
        let nodes = FakeNodes::default();
        let cascade = Cascade::default();
        let channel = ChannelId::from("c");
        let rooms = rooms(&[(1, "room-a"), (2, "room-b")]);
        let wanted = BTreeSet::from([key("p", 1, 2)]);
        let synced = sync_to(&cascade, &nodes, &channel, &rooms, &wanted).await;
        assert_eq!((synced.opened, synced.closed, synced.failed), (1, 0, 0));
        let requests = relay_requests(&nodes);
        let [
            Request::AcceptRelay {
                room: to_room,
                link: accepted,
                publisher: accepted_publisher,
                send_key: back,
                receive_key: forward,
            },
            Request::OpenRelay {
                room: from_room,
                link: opened,
                publisher,
                address,
                send_key,
                receive_key,
            },
        ] = &requests[..]
        else {
            panic!("{requests:?}");
        };
        assert_eq!((to_room.as_str(), from_room.as_str()), ("room-b", "room-a"));
        assert_eq!(accepted, opened);
        assert_eq!(
            (publisher.as_str(), accepted_publisher.as_str()),
            ("p", "p")
        );
        assert_eq!(address, "127.0.0.1:9");
        // What A seals B opens, and back; the two directions differ; keys are 128-bit hex.
        assert_eq!((send_key, receive_key), (forward, back));
        assert_ne!(forward, back);
        let hex = forward.expose();
        assert!(hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()));

        // Again: nothing to do.
        assert_eq!(
            sync_to(&cascade, &nodes, &channel, &rooms, &wanted).await,
            Synced::default()
        );
        assert!(relay_requests(&nodes).is_empty());
        assert_eq!(
            cascade.per_node(),
            BTreeMap::from([(SfuServerId(1), (1, 0)), (SfuServerId(2), (0, 1))])
        );

        // Unwanted: both ends closed.
        let synced = sync_to(&cascade, &nodes, &channel, &rooms, &BTreeSet::new()).await;
        assert_eq!(synced.closed, 1);
        let closes: Vec<(String, u64)> = relay_requests(&nodes)
            .into_iter()
            .map(|r| match r {
                Request::CloseRelay { room, link } => (room, link),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            closes,
            [
                ("room-a".to_owned(), *opened),
                ("room-b".to_owned(), *opened)
            ]
        );
        assert!(cascade.per_node().is_empty());
    }

    #[tokio::test]
    async fn links_without_both_rooms_wait_and_a_room_change_reopens() {
        let nodes = FakeNodes::default();
        let cascade = Cascade::default();
        let channel = ChannelId::from("c");
        let wanted = BTreeSet::from([key("p", 1, 2), key("p", 2, 3)]);
        let synced = sync_to(
            &cascade,
            &nodes,
            &channel,
            &rooms(&[(1, "a"), (2, "b")]),
            &wanted,
        )
        .await;
        assert_eq!(synced.opened, 1, "node 3 has no room yet");
        let synced = sync_to(
            &cascade,
            &nodes,
            &channel,
            &rooms(&[(1, "a"), (2, "b"), (3, "c")]),
            &wanted,
        )
        .await;
        assert_eq!((synced.opened, synced.closed), (1, 0));
        // Node 2's room was replaced: both links through it are closed and opened again.
        nodes.take();
        let synced = sync_to(
            &cascade,
            &nodes,
            &channel,
            &rooms(&[(1, "a"), (2, "b2"), (3, "c")]),
            &wanted,
        )
        .await;
        assert_eq!((synced.opened, synced.closed), (2, 2));
        assert_eq!(cascade.open_links(&channel), wanted);
    }

    #[tokio::test]
    async fn a_lost_node_s_links_are_forgotten_and_their_other_ends_closed() {
        let nodes = FakeNodes::default();
        let cascade = Cascade::default();
        let (c1, c2) = (ChannelId::from("c1"), ChannelId::from("c2"));
        let r = rooms(&[(1, "a"), (2, "b"), (3, "c")]);
        sync_to(&cascade, &nodes, &c1, &r, &BTreeSet::from([key("p", 1, 2)])).await;
        sync_to(&cascade, &nodes, &c2, &r, &BTreeSet::from([key("q", 1, 3)])).await;
        nodes.take();
        cascade.node_lost(&nodes, SfuServerId(2)).await;
        let requests = relay_requests(&nodes);
        assert!(
            matches!(&requests[..], [Request::CloseRelay { room, .. }] if room == "a"),
            "{requests:?}"
        );
        assert!(cascade.open_links(&c1).is_empty());
        assert_eq!(cascade.open_links(&c2).len(), 1);
        cascade
            .sync(&nodes, &c2, RelayChange::Closed, |_| {
                std::future::ready(Some(Target::default()))
            })
            .await;
        assert_eq!(relay_requests(&nodes).len(), 2);
        assert!(cascade.per_node().is_empty());
    }

    /// Outside review G6: the address a receiving node names is where the sending node will
    /// send; only the node's registered host or a `--relay-ip` is accepted.
    #[test]
    fn a_relay_address_must_be_the_node_s_host_or_a_configured_one() {
        let mut addresses = loopback_nodes([SfuServerId(2)].iter());
        let node = SfuServerId(2);
        assert!(addresses.check(node, "127.0.0.1:5000").is_ok());
        assert!(addresses.check(node, "[::ffff:127.0.0.1]:5000").is_ok());
        for refused in [
            "192.0.2.7:5000",
            "0.0.0.0:5000",
            "127.0.0.1:0",
            "224.0.0.1:5000",
            "example.org:5000",
            "127.0.0.1",
            "",
        ] {
            let error = addresses.check(node, refused).unwrap_err();
            assert!(error.contains("relay address"), "{refused}: {error}");
        }
        assert!(
            addresses.check(SfuServerId(3), "127.0.0.1:5000").is_err(),
            "an unknown node"
        );
        addresses.extra.push(IpAddr::from([192, 0, 2, 7]));
        assert!(addresses.check(node, "192.0.2.7:5000").is_ok());
        addresses.extra.push(IpAddr::from([0, 0, 0, 0]));
        assert!(
            addresses.check(node, "0.0.0.0:5000").is_err(),
            "never unspecified"
        );
    }

    #[tokio::test]
    async fn a_link_to_an_address_its_node_may_not_name_is_not_opened() {
        let nodes = FakeNodes::default();
        nodes.name_relay_address("192.0.2.7:5000");
        let cascade = Cascade::default();
        let channel = ChannelId::from("c");
        let synced = sync_to(
            &cascade,
            &nodes,
            &channel,
            &rooms(&[(1, "a"), (2, "b")]),
            &BTreeSet::from([key("p", 1, 2)]),
        )
        .await;
        assert_eq!((synced.opened, synced.failed), (0, 1));
        let requests = relay_requests(&nodes);
        assert!(
            matches!(&requests[..], [
                Request::AcceptRelay { .. },
                Request::CloseRelay { room, .. },
            ] if room == "b"),
            "no openRelay, the receiving end closed: {requests:?}"
        );
        assert!(cascade.open_links(&channel).is_empty());
    }

    #[tokio::test]
    async fn a_link_the_sending_node_refuses_is_not_left_half_open() {
        let nodes = FakeNodes::default();
        nodes.refuse_open_relay();
        let cascade = Cascade::default();
        let channel = ChannelId::from("c");
        let synced = sync_to(
            &cascade,
            &nodes,
            &channel,
            &rooms(&[(1, "a"), (2, "b")]),
            &BTreeSet::from([key("p", 1, 2)]),
        )
        .await;
        assert_eq!((synced.opened, synced.failed), (0, 1));
        let requests = relay_requests(&nodes);
        assert!(
            matches!(&requests[2..], [
                Request::CloseRelay { room: b, .. },
                Request::CloseRelay { room: a, .. },
            ] if b == "b" && a == "a"),
            "{requests:?}"
        );
        assert!(cascade.open_links(&channel).is_empty());
    }
}

#[cfg(test)]
mod coalescing_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::tests_support::*;
    use super::*;
    use crate::domain::ports::{NodeStatus, SfuError};
    use crate::domain::tests::FakeNodes;

    /// [`FakeNodes`] whose `acceptRelay` to node 2 answers only when the test lets one through
    /// (a slow node, up to the control timeout in production).
    struct SlowNode2 {
        inner: FakeNodes,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait::async_trait]
    impl SfuNodes for SlowNode2 {
        async fn call(&self, node: SfuServerId, request: Request) -> Result<Response, SfuError> {
            if node == SfuServerId(2) && matches!(request, Request::AcceptRelay { .. }) {
                self.gate.acquire().await.expect("open").forget();
            }
            self.inner.call(node, request).await
        }
        fn status(&self, node: SfuServerId) -> NodeStatus {
            self.inner.status(node)
        }
    }

    fn slow_node_2() -> SlowNode2 {
        SlowNode2 {
            inner: FakeNodes::default(),
            gate: tokio::sync::Semaphore::new(0),
        }
    }

    /// Outside review G1, G2: while a channel's sync waits on a slow node, a newer change of
    /// the channel neither waits nor races it (the running sync plans again and applies the
    /// newer plan last), and other channels sync unhindered.
    #[tokio::test]
    async fn a_change_during_a_slow_sync_never_waits_and_its_newer_plan_is_applied_last() {
        let nodes = slow_node_2();
        let cascade = Cascade::default();
        let (c1, c2) = (ChannelId::from("c1"), ChannelId::from("c2"));
        let ab = rooms(&[(1, "a"), (2, "b")]);
        // What the store says c1 needs now, and how often it was planned.
        let wanted = Mutex::new(BTreeSet::from([key("p", 1, 2)]));
        let planned = AtomicUsize::new(0);
        let target = |_| {
            planned.fetch_add(1, Ordering::Relaxed);
            let plan = plan(&wanted.lock().unwrap());
            std::future::ready(Some(Target {
                rooms: ab.clone(),
                plan,
                receivers: BTreeSet::new(),
                addresses: loopback_nodes(ab.keys()),
            }))
        };
        let first = cascade.sync(&nodes, &c1, RelayChange::Any, &target);
        tokio::pin!(first);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut first)
                .await
                .is_err(),
            "the first sync waits on node 2"
        );

        // p leaves: the link is no longer needed. That sync returns at once, leaving its change.
        wanted.lock().unwrap().clear();
        let second = tokio::time::timeout(
            Duration::from_secs(1),
            cascade.sync(&nodes, &c1, RelayChange::Any, &target),
        )
        .await
        .expect("a sync never waits on a running one");
        assert_eq!(second, Synced::default());
        // Another channel's link (not through node 2) opens meanwhile.
        let other = tokio::time::timeout(
            Duration::from_secs(1),
            sync_to(
                &cascade,
                &nodes,
                &c2,
                &rooms(&[(1, "a"), (3, "c")]),
                &BTreeSet::from([key("q", 1, 3)]),
            ),
        )
        .await
        .expect("one channel's slow node holds up no other channel");
        assert_eq!(other.opened, 1);

        // Node 2 answers: the first sync opens its (stale) link, then plans the newer state
        // and closes it; the newer plan is the one that stands.
        nodes.gate.add_permits(1);
        let first = tokio::time::timeout(Duration::from_secs(1), first)
            .await
            .unwrap();
        assert_eq!((first.opened, first.closed, first.rounds), (1, 1, 2));
        assert_eq!(planned.load(Ordering::Relaxed), 2);
        assert!(cascade.open_links(&c1).is_empty());
        assert_eq!(cascade.open_links(&c2), BTreeSet::from([key("q", 1, 3)]));
    }

    /// A sync dropped mid-round (its task cancelled) does not leave the channel marked as
    /// syncing: the next request plans, in full.
    #[tokio::test]
    async fn a_sync_dropped_mid_round_leaves_the_next_request_to_plan_in_full() {
        let nodes = slow_node_2();
        let cascade = Cascade::default();
        let channel = ChannelId::from("c");
        let changes = Mutex::new(Vec::new());
        let target = |change| {
            changes.lock().unwrap().push(change);
            std::future::ready(Some(Target {
                rooms: rooms(&[(1, "a"), (2, "b")]),
                plan: plan(&BTreeSet::from([key("p", 1, 2)])),
                receivers: BTreeSet::new(),
                addresses: loopback_nodes([SfuServerId(1), SfuServerId(2)].iter()),
            }))
        };
        let first = cascade.sync(
            &nodes,
            &channel,
            RelayChange::ServedOn(SfuServerId(2)),
            &target,
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(50), first)
                .await
                .is_err()
        );
        nodes.gate.add_permits(1);
        let next = cascade
            .sync(
                &nodes,
                &channel,
                RelayChange::ServedOn(SfuServerId(2)),
                &target,
            )
            .await;
        assert_eq!((next.opened, next.rounds), (1, 1));
        assert_eq!(
            *changes.lock().unwrap(),
            [RelayChange::ServedOn(SfuServerId(2)), RelayChange::Any]
        );
    }

    #[test]
    fn changes_merge_to_one_that_does_what_each_needs() {
        use RelayChange::{Any, Closed, ServedOn};
        let (a, b) = (ServedOn(SfuServerId(1)), ServedOn(SfuServerId(2)));
        assert_eq!(a.and_then(a), a);
        assert_eq!(a.and_then(b), Any);
        assert_eq!(Any.and_then(Closed), Closed);
        assert_eq!(
            Closed.and_then(a),
            Any,
            "a later change plans from the store"
        );
        assert_eq!(Closed.and_then(Any), Any);
    }
}
