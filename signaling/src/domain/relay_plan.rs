//! Relay planning for a channel that spans SFU nodes (DESIGN §7.2): which node feeds which with
//! each publisher's tracks. Pure: no store, no nodes, no clock. [`plan_relays`] is what the relay
//! orchestration calls and what the fleet simulation drives.
//!
//! Rules, per publisher (its tracks travel together, so audio and video cross the same hops):
//! - every node serving the channel's receivers other than the publisher's own node is fed each
//!   of the publisher's tracks exactly once (one relay stream per track per remote node, however
//!   many subscribers are there);
//! - a node sends one publisher's tracks to at most `fan_out` other nodes; when the publisher's
//!   node cannot feed every other node, nodes it feeds feed others in turn: a tree, filled
//!   breadth-first so it stays as shallow as the bound allows (depth ⌈log_k⌉ of the node count);
//! - edges of the `previous` plan that still fit are kept (a join or leave elsewhere does not
//!   move working relays); only nodes that lost their feeder are attached again.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::ids::{SessionId, SfuServerId};

/// The relay fan-out bound used unless configured otherwise: a node forwards one publisher's
/// tracks to at most this many other nodes (more are fed through those).
pub const DEFAULT_RELAY_FAN_OUT: usize = 8;

/// One publisher as relay planning sees it: where it publishes and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublisherOnNode {
    /// The publishing session.
    pub publisher: SessionId,
    /// The node its publish transport is on (its tracks' source).
    pub node: SfuServerId,
    /// The ids of the tracks it publishes ([`super::model::PublishedTrack::id`]).
    pub tracks: Vec<String>,
}

/// One relay stream: `publisher`'s `track` flows from node `from` to node `to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayEdge {
    /// The publishing session.
    pub publisher: SessionId,
    /// The track id.
    pub track: String,
    /// The node that has the track (the publisher's node, or a node fed by it).
    pub from: SfuServerId,
    /// The node fed.
    pub to: SfuServerId,
}

/// Every relay stream a channel needs now, sorted (so plans compare and diff cheaply).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RelayPlan {
    /// The streams, sorted by publisher, track, then nodes.
    pub edges: Vec<RelayEdge>,
}

impl RelayPlan {
    /// The streams to open and to close to go from `previous` to this plan.
    pub fn diff(&self, previous: &Self) -> (Vec<RelayEdge>, Vec<RelayEdge>) {
        let now: BTreeSet<&RelayEdge> = self.edges.iter().collect();
        let before: BTreeSet<&RelayEdge> = previous.edges.iter().collect();
        let open = now.difference(&before).map(|e| (*e).clone()).collect();
        let close = before.difference(&now).map(|e| (*e).clone()).collect();
        (open, close)
    }

    /// Hops from the publisher's node to the farthest node fed, per (publisher, track); 0 when
    /// nothing is relayed.
    pub fn depth(&self) -> usize {
        let mut parent: BTreeMap<(&SessionId, &str, SfuServerId), SfuServerId> = BTreeMap::new();
        for e in &self.edges {
            parent.insert((&e.publisher, e.track.as_str(), e.to), e.from);
        }
        self.edges
            .iter()
            .map(|e| {
                let (mut hops, mut at) = (1, e.from);
                while let Some(up) = parent.get(&(&e.publisher, e.track.as_str(), at)) {
                    hops += 1;
                    at = *up;
                    if hops > self.edges.len() {
                        break; // never for a plan made here; a hand-made cycle stops
                    }
                }
                hops
            })
            .max()
            .unwrap_or(0)
    }

    /// The most nodes any node feeds with one track.
    pub fn max_fan_out(&self) -> usize {
        let mut feeds: BTreeMap<(&SessionId, &str, SfuServerId), usize> = BTreeMap::new();
        for e in &self.edges {
            *feeds
                .entry((&e.publisher, e.track.as_str(), e.from))
                .or_default() += 1;
        }
        feeds.into_values().max().unwrap_or(0)
    }

    /// Streams each node sends and receives (relay load per node).
    pub fn per_node(&self) -> BTreeMap<SfuServerId, RelayCounts> {
        let mut counts: BTreeMap<SfuServerId, RelayCounts> = BTreeMap::new();
        for e in &self.edges {
            counts.entry(e.from).or_default().out += 1;
            counts.entry(e.to).or_default().into += 1;
        }
        counts
    }
}

/// Relay streams one node takes part in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RelayCounts {
    /// Streams it sends to other nodes.
    pub out: usize,
    /// Streams it receives from other nodes.
    pub into: usize,
}

/// The relay streams a channel needs: each of `publishers`' tracks reaches every node of
/// `receivers` (the nodes serving members that receive) but the publisher's own, exactly once,
/// over a tree in which a node feeds at most `fan_out` others (at least 1). Edges of `previous`
/// are kept where they still fit. See the module docs.
pub fn plan_relays(
    publishers: &[PublisherOnNode],
    receivers: &BTreeSet<SfuServerId>,
    fan_out: usize,
    previous: &RelayPlan,
) -> RelayPlan {
    let fan_out = fan_out.max(1);
    let mut edges = Vec::new();
    for publisher in publishers {
        if publisher.tracks.is_empty() {
            continue;
        }
        // The publisher's tree, kept from the previous plan: its first track's edges (every
        // track of a publisher follows one tree).
        let kept: Vec<(SfuServerId, SfuServerId)> = previous
            .edges
            .iter()
            .filter(|e| e.publisher == publisher.publisher && e.track == publisher.tracks[0])
            .map(|e| (e.from, e.to))
            .collect();
        let tree = feed_tree(publisher.node, receivers, fan_out, &kept);
        for track in &publisher.tracks {
            for (from, to) in &tree {
                edges.push(RelayEdge {
                    publisher: publisher.publisher.clone(),
                    track: track.clone(),
                    from: *from,
                    to: *to,
                });
            }
        }
    }
    edges.sort();
    edges.dedup();
    RelayPlan { edges }
}

/// The (from, to) edges feeding every node of `receivers` but `source` from `source`, each
/// node feeding at most `fan_out`, keeping the edges of `kept` that still fit.
fn feed_tree(
    source: SfuServerId,
    receivers: &BTreeSet<SfuServerId>,
    fan_out: usize,
    kept: &[(SfuServerId, SfuServerId)],
) -> Vec<(SfuServerId, SfuServerId)> {
    // Node → its depth in the tree (the source at 0), and how many it feeds.
    let mut depth: BTreeMap<SfuServerId, usize> = BTreeMap::from([(source, 0)]);
    let mut feeds: BTreeMap<SfuServerId, usize> = BTreeMap::new();
    let mut tree = Vec::new();
    let wanted = |node: &SfuServerId| *node != source && receivers.contains(node);
    // Keep previous edges from nodes already in the tree, parents before children, until no
    // more fit (each pass adds at least one node or stops).
    loop {
        let mut added = false;
        for (from, to) in kept {
            let Some(&from_depth) = depth.get(from) else {
                continue;
            };
            if !wanted(to) || depth.contains_key(to) {
                continue;
            }
            let feeding = feeds.entry(*from).or_default();
            if *feeding >= fan_out {
                continue;
            }
            *feeding += 1;
            depth.insert(*to, from_depth + 1);
            tree.push((*from, *to));
            added = true;
        }
        if !added {
            break;
        }
    }
    // Attach the rest, in id order, each to the shallowest node with room (fewest fed, then
    // lowest id): breadth-first, so the tree stays as shallow as the bound allows.
    for to in receivers.iter().filter(|n| wanted(n)) {
        if depth.contains_key(to) {
            continue;
        }
        let parent = depth
            .iter()
            .filter(|(node, _)| feeds.get(node).copied().unwrap_or(0) < fan_out)
            .min_by_key(|(node, d)| (**d, feeds.get(node).copied().unwrap_or(0), **node))
            .map(|(node, d)| (*node, *d));
        // Every node in the tree has room or feeds `fan_out` new nodes that have room: a
        // parent always exists.
        let Some((parent, parent_depth)) = parent else {
            break;
        };
        *feeds.entry(parent).or_default() += 1;
        depth.insert(*to, parent_depth + 1);
        tree.push((parent, *to));
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: impl IntoIterator<Item = u64>) -> BTreeSet<SfuServerId> {
        ids.into_iter().map(SfuServerId).collect()
    }

    fn publisher(name: &str, node: u64, tracks: &[&str]) -> PublisherOnNode {
        PublisherOnNode {
            publisher: SessionId::from(name),
            node: SfuServerId(node),
            tracks: tracks.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    /// Every node of `receivers` but the source is fed each track exactly once, from a node
    /// that has it, and nobody feeds more than `fan_out`.
    fn assert_sound(
        plan: &RelayPlan,
        publishers: &[PublisherOnNode],
        receivers: &BTreeSet<SfuServerId>,
        fan_out: usize,
    ) {
        for p in publishers {
            for track in &p.tracks {
                let edges: Vec<_> = plan
                    .edges
                    .iter()
                    .filter(|e| e.publisher == p.publisher && &e.track == track)
                    .collect();
                let fed: Vec<_> = edges.iter().map(|e| e.to).collect();
                let expected: Vec<_> = receivers.iter().copied().filter(|n| *n != p.node).collect();
                let mut sorted_fed = fed.clone();
                sorted_fed.sort();
                assert_eq!(sorted_fed, expected, "each fed exactly once: {edges:?}");
                for e in &edges {
                    assert!(
                        e.from == p.node || fed.contains(&e.from),
                        "fed by a node that has it: {e:?}"
                    );
                }
            }
        }
        assert!(plan.max_fan_out() <= fan_out, "{plan:?}");
    }

    #[test]
    fn a_single_node_channel_needs_no_relay() {
        let publishers = [publisher("a", 1, &["mic", "cam"])];
        let plan = plan_relays(&publishers, &nodes([1]), 4, &RelayPlan::default());
        assert!(plan.edges.is_empty());
        assert_eq!(plan.depth(), 0);
        // Nor does a publisher with no tracks, or a channel with no receivers.
        let silent = [publisher("a", 1, &[])];
        assert!(
            plan_relays(&silent, &nodes([1, 2]), 4, &RelayPlan::default())
                .edges
                .is_empty()
        );
        assert!(
            plan_relays(&publishers, &nodes([]), 4, &RelayPlan::default())
                .edges
                .is_empty()
        );
    }

    #[test]
    fn within_the_bound_the_publisher_node_feeds_every_other_node_directly() {
        let publishers = [publisher("a", 2, &["mic", "cam"])];
        let receivers = nodes([1, 2, 3, 4]);
        let plan = plan_relays(&publishers, &receivers, 3, &RelayPlan::default());
        assert_sound(&plan, &publishers, &receivers, 3);
        assert_eq!(plan.edges.len(), 6, "one stream per track per remote node");
        assert!(plan.edges.iter().all(|e| e.from == SfuServerId(2)));
        assert_eq!(plan.depth(), 1);
        let per_node = plan.per_node();
        assert_eq!(per_node[&SfuServerId(2)], RelayCounts { out: 6, into: 0 });
        assert_eq!(per_node[&SfuServerId(3)], RelayCounts { out: 0, into: 2 });
    }

    #[test]
    fn past_the_bound_the_feed_becomes_a_shallow_tree() {
        let publishers = [publisher("a", 1, &["cam"])];
        let receivers = nodes(1..=50);
        for fan_out in [1, 2, 3, 7, 49] {
            let plan = plan_relays(&publishers, &receivers, fan_out, &RelayPlan::default());
            assert_sound(&plan, &publishers, &receivers, fan_out);
            // Breadth-first: depth d holds up to fan_out^d nodes.
            let mut reach = 0usize;
            let mut depth = 0;
            while reach < 49 {
                depth += 1;
                reach += fan_out.pow(depth as u32);
            }
            if fan_out == 1 {
                depth = 49;
            }
            assert_eq!(plan.depth(), depth, "fan-out {fan_out}");
        }
        // A bound of 0 is taken as 1 (a chain), never as "relay nothing".
        let chain = plan_relays(&publishers, &nodes(1..=4), 0, &RelayPlan::default());
        assert_sound(&chain, &publishers, &nodes(1..=4), 1);
        assert_eq!(chain.depth(), 3);
    }

    #[test]
    fn publishers_on_different_nodes_each_get_their_own_tree() {
        let publishers = [publisher("a", 1, &["cam"]), publisher("b", 3, &["mic"])];
        let receivers = nodes([1, 2, 3]);
        let plan = plan_relays(&publishers, &receivers, 1, &RelayPlan::default());
        assert_sound(&plan, &publishers, &receivers, 1);
        assert_eq!(plan.edges.len(), 4);
    }

    #[test]
    fn a_new_node_or_a_lost_one_moves_only_what_it_must() {
        let publishers = [publisher("a", 1, &["mic", "cam"])];
        let before = plan_relays(&publishers, &nodes(1..=10), 3, &RelayPlan::default());
        // A node joins: every earlier edge stays, the newcomer is attached.
        let joined = plan_relays(&publishers, &nodes(1..=11), 3, &before);
        assert_sound(&joined, &publishers, &nodes(1..=11), 3);
        let (open, close) = joined.diff(&before);
        assert!(close.is_empty(), "{close:?}");
        assert_eq!(open.len(), 2, "one stream per track to the newcomer");
        assert!(open.iter().all(|e| e.to == SfuServerId(11)));

        // An inner node (node 2 feeds others) fails: its children are fed again, from nodes
        // with room; edges that did not touch it stay.
        let feeds_of_2 = before
            .edges
            .iter()
            .filter(|e| e.from == SfuServerId(2) && e.track == "cam")
            .count();
        assert!(feeds_of_2 > 0, "{before:?}");
        let mut without_2 = nodes(1..=10);
        without_2.remove(&SfuServerId(2));
        let healed = plan_relays(&publishers, &without_2, 3, &before);
        assert_sound(&healed, &publishers, &without_2, 3);
        let (open, close) = healed.diff(&before);
        assert!(
            close
                .iter()
                .all(|e| e.from == SfuServerId(2) || e.to == SfuServerId(2)),
            "{close:?}"
        );
        assert_eq!(open.len(), feeds_of_2 * 2, "{open:?}");
    }

    #[test]
    fn a_previous_plan_that_no_longer_fits_the_bound_is_reshaped() {
        let publishers = [publisher("a", 1, &["cam"])];
        let receivers = nodes(1..=6);
        let wide = plan_relays(&publishers, &receivers, 5, &RelayPlan::default());
        let narrow = plan_relays(&publishers, &receivers, 2, &wide);
        assert_sound(&narrow, &publishers, &receivers, 2);
        // The publisher moved to another node: the old tree's edges from nowhere are dropped.
        let moved = [publisher("a", 4, &["cam"])];
        let replanned = plan_relays(&moved, &receivers, 2, &narrow);
        assert_sound(&replanned, &moved, &receivers, 2);
    }
}
