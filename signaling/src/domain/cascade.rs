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
}

/// The relay links this instance opened, per channel.
#[derive(Debug, Default)]
pub(super) struct Cascade {
    channels: Mutex<HashMap<ChannelId, BTreeMap<LinkKey, OpenLink>>>,
    /// Each channel's last relay plan (planning keeps its edges where they still fit) and the
    /// nodes that had receiving members then.
    plans: Mutex<HashMap<ChannelId, (RelayPlan, BTreeSet<SfuServerId>)>>,
    /// Serialises syncs, so two concurrent changes of one channel cannot open a link twice.
    sync: tokio::sync::Mutex<()>,
}

impl Cascade {
    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, BTreeMap<LinkKey, OpenLink>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
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
    pub(super) fn keep_plan(
        &self,
        channel: &ChannelId,
        plan: RelayPlan,
        receivers: BTreeSet<SfuServerId>,
    ) {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if plan.edges.is_empty() && receivers.is_empty() {
            plans.remove(channel);
        } else {
            plans.insert(channel.clone(), (plan, receivers));
        }
    }

    /// Brings `channel`'s links to `wanted`, given its room on each node (`rooms`): opens the
    /// missing ones and closes the rest. A wanted link whose nodes do not both have a room is
    /// not opened.
    pub(super) async fn sync(
        &self,
        nodes: &dyn SfuNodes,
        channel: &ChannelId,
        rooms: &BTreeMap<SfuServerId, String>,
        wanted: &BTreeSet<LinkKey>,
    ) -> Synced {
        let _sync = self.sync.lock().await;
        let mut synced = Synced::default();
        let current = self.links().get(channel).cloned().unwrap_or_default();
        for (key, link) in &current {
            let still = wanted.contains(key)
                && rooms.get(&key.from) == Some(&link.from_room)
                && rooms.get(&key.to) == Some(&link.to_room);
            if !still {
                close(nodes, key, link).await;
                self.forget(channel, key);
                synced.closed += 1;
            }
        }
        for key in wanted {
            if current.contains_key(key) && self.is_open(channel, key) {
                continue;
            }
            let (Some(from_room), Some(to_room)) = (rooms.get(&key.from), rooms.get(&key.to))
            else {
                continue;
            };
            match open(nodes, key, from_room, to_room).await {
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
        synced
    }

    /// Closes every link of `channel` (its rooms close, or it moves as a whole).
    pub(super) async fn close_channel(&self, nodes: &dyn SfuNodes, channel: &ChannelId) {
        let _sync = self.sync.lock().await;
        self.keep_plan(channel, RelayPlan::default(), BTreeSet::new());
        let links = self.links().remove(channel).unwrap_or_default();
        for (key, link) in &links {
            close(nodes, key, link).await;
        }
    }

    /// `node` is gone (failed over): its links are forgotten, and their surviving ends closed.
    /// Returns the channels that had links to or from it.
    pub(super) async fn node_lost(
        &self,
        nodes: &dyn SfuNodes,
        node: SfuServerId,
    ) -> Vec<ChannelId> {
        let _sync = self.sync.lock().await;
        let mut touched = Vec::new();
        let mut dropped = Vec::new();
        for (channel, links) in self.links().iter_mut() {
            let before = links.len();
            links.retain(|key, link| {
                let keep = key.from != node && key.to != node;
                if !keep {
                    dropped.push((key.clone(), link.clone()));
                }
                keep
            });
            if links.len() != before {
                touched.push(channel.clone());
            }
        }
        self.links().retain(|_, links| !links.is_empty());
        for (key, link) in dropped {
            let (survivor, room) = if key.from == node {
                (key.to, &link.to_room)
            } else {
                (key.from, &link.from_room)
            };
            close_end(nodes, survivor, room, link.id).await;
        }
        touched
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
/// sending end that fails takes the receiving end down again.
async fn open(
    nodes: &dyn SfuNodes,
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
mod tests {
    use super::*;
    use crate::domain::tests::FakeNodes;

    fn key(publisher: &str, from: u64, to: u64) -> LinkKey {
        LinkKey {
            publisher: SessionId::from(publisher),
            from: SfuServerId(from),
            to: SfuServerId(to),
        }
    }

    fn rooms(pairs: &[(u64, &str)]) -> BTreeMap<SfuServerId, String> {
        pairs
            .iter()
            .map(|(n, r)| (SfuServerId(*n), (*r).to_owned()))
            .collect()
    }

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
        let synced = cascade.sync(&nodes, &channel, &rooms, &wanted).await;
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
            cascade.sync(&nodes, &channel, &rooms, &wanted).await,
            Synced::default()
        );
        assert!(relay_requests(&nodes).is_empty());
        assert_eq!(
            cascade.per_node(),
            BTreeMap::from([(SfuServerId(1), (1, 0)), (SfuServerId(2), (0, 1))])
        );

        // Unwanted: both ends closed.
        let synced = cascade
            .sync(&nodes, &channel, &rooms, &BTreeSet::new())
            .await;
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
        let synced = cascade
            .sync(&nodes, &channel, &rooms(&[(1, "a"), (2, "b")]), &wanted)
            .await;
        assert_eq!(synced.opened, 1, "node 3 has no room yet");
        let synced = cascade
            .sync(
                &nodes,
                &channel,
                &rooms(&[(1, "a"), (2, "b"), (3, "c")]),
                &wanted,
            )
            .await;
        assert_eq!((synced.opened, synced.closed), (1, 0));
        // Node 2's room was replaced: both links through it are closed and opened again.
        nodes.take();
        let synced = cascade
            .sync(
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
        cascade
            .sync(&nodes, &c1, &r, &BTreeSet::from([key("p", 1, 2)]))
            .await;
        cascade
            .sync(&nodes, &c2, &r, &BTreeSet::from([key("q", 1, 3)]))
            .await;
        nodes.take();
        let touched = cascade.node_lost(&nodes, SfuServerId(2)).await;
        assert_eq!(touched, std::slice::from_ref(&c1));
        let requests = relay_requests(&nodes);
        assert!(
            matches!(&requests[..], [Request::CloseRelay { room, .. }] if room == "a"),
            "{requests:?}"
        );
        assert!(cascade.open_links(&c1).is_empty());
        assert_eq!(cascade.open_links(&c2).len(), 1);
        cascade.close_channel(&nodes, &c2).await;
        assert_eq!(relay_requests(&nodes).len(), 2);
        assert!(cascade.per_node().is_empty());
    }

    #[tokio::test]
    async fn a_link_the_sending_node_refuses_is_not_left_half_open() {
        let nodes = FakeNodes::default();
        nodes.refuse_open_relay();
        let cascade = Cascade::default();
        let channel = ChannelId::from("c");
        let synced = cascade
            .sync(
                &nodes,
                &channel,
                &rooms(&[(1, "a"), (2, "b")]),
                &BTreeSet::from([key("p", 1, 2)]),
            )
            .await;
        assert_eq!((synced.opened, synced.failed), (0, 1));
        let requests = relay_requests(&nodes);
        assert!(
            matches!(&requests[2], Request::CloseRelay { room, .. } if room == "b"),
            "{requests:?}"
        );
        assert!(cascade.open_links(&channel).is_empty());
    }
}
