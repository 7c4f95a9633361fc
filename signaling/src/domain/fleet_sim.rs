//! Past this machine, by simulation (issue 15 item 5): the real placement (`Placement`: serve,
//! spans, failover) and relay planning (`relay_plan`) driven against simulated nodes
//! ([`FakeNodes`]: transport caps enforced as `mooyaho sfu --max-transports` does, load reports
//! always current), no sockets. A 10,000-viewer room and 2,000 small rooms over 40 nodes, with
//! joins, leaves and a node failure. Asserts invariants (no node takes a new member past its
//! cap, every member served by a node serving its channel and holding its transports there,
//! every receiving node fed each track exactly once, bounded relay fan-out, nothing left on the
//! failed node) and prints the numbers (`cargo test -p mooyaho-signaling --lib fleet_sim --
//! --nocapture`; `docs/architecture.md` has them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::events::DomainEvent;
use super::ids::{ChannelId, ConnectionId, SessionId, SfuServerId};
use super::model::{SessionRecord, SessionUpdate, TokenHash};
use super::ports::{ChannelStore, SessionStore};
use super::relay_plan::{RelayPlan, plan_relays};
use super::session::Connection;
use super::tests::{CountingStore, FakeNodes, recorded_service};
use super::{RelayInputs, Signaling};
use crate::domain::events::recording::Recorder;

const NODES: u16 = 40;
/// Client transports per node.
const CAP: usize = 800;
const BIG_ROOM_VIEWERS: usize = 10_000;
const SMALL_ROOMS: usize = 2_000;
/// Each small room: two publishers (camera + microphone) and two viewers.
const SMALL_ROOM_PUBLISHERS: usize = 2;
const SMALL_ROOM_VIEWERS: usize = 2;
/// Relay fan-out bounds planned with.
const FAN_OUTS: [usize; 3] = [2, 4, 8];
/// Big-room viewers who leave, and small rooms that end.
const BIG_ROOM_LEAVES: usize = 500;
const SMALL_ROOMS_ENDING: usize = 200;

const TWO_TRACKS: &str = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                          a=msid:s mic\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:s cam\r\n";

struct Sim {
    signaling: std::sync::Arc<Signaling>,
    store: std::sync::Arc<CountingStore>,
    fake: std::sync::Arc<FakeNodes>,
    recorder: std::sync::Arc<Recorder>,
    nodes: Vec<SfuServerId>,
    next: usize,
}

impl Sim {
    async fn start() -> Self {
        let (signaling, store, recorder) = recorded_service();
        let (fake, _events) = FakeNodes::attach(&signaling);
        fake.report_load(true);
        let mut nodes = Vec::new();
        for n in 0..NODES {
            let view = signaling
                .sfu_servers()
                .register(format!("10.0.0.{}:4433", n + 1), None)
                .await
                .unwrap();
            fake.set_cap(view.record.id, CAP);
            nodes.push(view.record.id);
        }
        Self {
            signaling,
            store,
            fake,
            recorder,
            nodes,
            next: 0,
        }
    }

    /// A member enters `channel` (the store's membership and the placement's `entered`, as
    /// `Channels::enter` does, without its broadcast to the other members) and, if
    /// `publishes`, publishes two tracks.
    async fn join(&mut self, channel: &ChannelId, publishes: bool) -> SessionRecord {
        self.next += 1;
        let token = TokenHash {
            hash: String::new(),
            expires_ms: 0,
        };
        let mut record = SessionRecord::dropped_for_test(&format!("m{}", self.next), token);
        record.channel = Some(channel.clone());
        record.connected = true;
        let store = &self.store.inner;
        store.create_session(&record).await.unwrap();
        store.set_member(channel, &record.id, true).await.unwrap();
        let channel_record = store.channel(channel).await.unwrap().unwrap();
        self.signaling
            .placement()
            .entered(&record, &channel_record)
            .await;
        if publishes {
            let connection = Connection {
                id: ConnectionId::from("c0"),
                session: record.id.clone(),
            };
            self.signaling
                .placement()
                .publish(&connection, TWO_TRACKS.into())
                .await
                .unwrap();
        }
        record
    }

    /// `member` leaves its channel (as `Channels::leave_channel` does, without the broadcast).
    async fn leave(&self, member: &SessionId, channel: &ChannelId) {
        let store = &self.store.inner;
        let record = store.session(member).await.unwrap().unwrap();
        store.set_member(channel, member, false).await.unwrap();
        store
            .update_session(member, &SessionUpdate::out_of_channel())
            .await
            .unwrap();
        self.signaling.placement().release(&record, channel).await;
    }

    async fn channels(&self) -> Vec<super::model::ChannelRecord> {
        self.store.inner.channels().await.unwrap()
    }

    async fn members(&self, channel: &ChannelId) -> Vec<SessionRecord> {
        let ids = self.store.inner.members(channel).await.unwrap();
        let records = self.store.inner.sessions(&ids).await.unwrap();
        records.into_iter().flatten().collect()
    }

    /// Every member is served by a node serving its channel, which holds its transports; no
    /// live node holds transports of anyone else (`dead`, failed, is never told), and none
    /// took more sessions than its cap.
    async fn assert_consistent(&self, dead: Option<SfuServerId>) {
        let held = self.fake.placements();
        let mut served: BTreeSet<(SfuServerId, String)> = BTreeSet::new();
        for channel in self.channels().await {
            let serving = channel.sfu_server_ids();
            for member in self.members(&channel.id).await {
                let node = member
                    .sfu_node
                    .unwrap_or_else(|| panic!("{} of {} served by no node", member.id, channel.id));
                assert!(serving.contains(&node), "{} on {node}", member.id);
                served.insert((node, member.id.0.clone()));
            }
        }
        for placed in held.iter().filter(|(node, _)| Some(*node) != dead) {
            assert!(served.contains(placed), "{placed:?} held but not served");
        }
        for node in &self.nodes {
            assert!(
                self.fake.sessions_on(*node).len() <= CAP,
                "{node} over its cap"
            );
        }
    }

    async fn inputs(&self, channel: &ChannelId) -> RelayInputs {
        let placement = self.signaling.placement();
        placement.relay_inputs(channel).await.unwrap().unwrap()
    }
}

/// Every receiving node but the source is fed each track exactly once, from a node that has
/// it, and no node feeds more than `fan_out` others.
fn assert_sound(plan: &RelayPlan, inputs: &RelayInputs, fan_out: usize) {
    for publisher in &inputs.publishers {
        for track in &publisher.tracks {
            let mut fed: BTreeMap<SfuServerId, usize> = BTreeMap::new();
            let edges: Vec<_> = (plan.edges.iter())
                .filter(|e| e.publisher == publisher.publisher && &e.track == track)
                .collect();
            for edge in &edges {
                *fed.entry(edge.to).or_default() += 1;
            }
            let expected: BTreeSet<_> = (inputs.receivers.iter())
                .copied()
                .filter(|n| *n != publisher.node)
                .collect();
            assert_eq!(fed.keys().copied().collect::<BTreeSet<_>>(), expected);
            assert!(fed.values().all(|n| *n == 1), "fed twice: {fed:?}");
            for edge in &edges {
                assert!(edge.from == publisher.node || fed.contains_key(&edge.from));
            }
        }
    }
    assert!(plan.max_fan_out() <= fan_out);
}

/// Min / mean / max of per-node numbers.
fn spread(values: impl IntoIterator<Item = usize>) -> String {
    let values: Vec<usize> = values.into_iter().collect();
    let min = values.iter().copied().min().unwrap_or(0);
    let max = values.iter().copied().max().unwrap_or(0);
    let mean = values.iter().sum::<usize>() as f64 / values.len().max(1) as f64;
    format!("min {min} / mean {mean:.0} / max {max}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_sim_a_10000_viewer_room_and_2000_small_rooms_over_40_nodes() {
    let mut sim = Sim::start().await;
    let signaling = sim.signaling.clone();
    let channels = signaling.channels();

    // Half the small rooms, then the big room fills, then the other half.
    let mut small = Vec::new();
    let mut small_members: HashMap<ChannelId, Vec<SessionId>> = HashMap::new();
    for half in 0..2 {
        for _ in 0..SMALL_ROOMS / 2 {
            let room = channels.create(true).await.unwrap().id;
            let mut members = Vec::new();
            for p in 0..SMALL_ROOM_PUBLISHERS + SMALL_ROOM_VIEWERS {
                members.push(sim.join(&room, p < SMALL_ROOM_PUBLISHERS).await.id);
            }
            small_members.insert(room.clone(), members);
            small.push(room);
        }
        if half == 0 {
            let big = channels.create(true).await.unwrap().id;
            sim.join(&big, true).await;
            let mut viewers = Vec::new();
            for _ in 0..BIG_ROOM_VIEWERS {
                viewers.push(sim.join(&big, false).await.id);
            }
            small_members.insert(big.clone(), viewers);
            small.insert(0, big);
        }
        sim.recorder.take();
    }
    let big = small.remove(0);
    let big_viewers = small_members.remove(&big).unwrap();
    sim.assert_consistent(None).await;

    let mut report = Vec::new();
    let per_node = |sim: &Sim| {
        let transports: Vec<usize> = sim
            .nodes
            .iter()
            .map(|n| sim.fake.transports_on(*n))
            .collect();
        let sessions: Vec<usize> = (sim.nodes.iter())
            .map(|n| sim.fake.sessions_on(*n).len())
            .collect();
        (transports, sessions)
    };
    let (transports, sessions) = per_node(&sim);
    report.push(format!(
        "after joins: transports per node {}, members per node {} (cap {CAP} transports)",
        spread(transports),
        spread(sessions)
    ));
    let big_record = sim.store.inner.channel(&big).await.unwrap().unwrap();
    let big_nodes = big_record.sfu_server_ids();
    let mut per_channel_nodes: BTreeMap<usize, usize> = BTreeMap::new();
    for room in &small {
        let record = sim.store.inner.channel(room).await.unwrap().unwrap();
        *per_channel_nodes
            .entry(record.sfu_server_ids().len())
            .or_default() += 1;
    }
    report.push(format!(
        "big room served by {} nodes; small rooms by node count: {per_channel_nodes:?}",
        big_nodes.len()
    ));

    // Relay planning for the big room at several fan-out bounds, and for every small room.
    let inputs = sim.inputs(&big).await;
    assert_eq!(inputs.receivers.len(), big_nodes.len());
    let mut plans = BTreeMap::new();
    for fan_out in FAN_OUTS {
        let plan = plan_relays(
            &inputs.publishers,
            &inputs.receivers,
            fan_out,
            &RelayPlan::default(),
        );
        assert_sound(&plan, &inputs, fan_out);
        let per_node = plan.per_node();
        report.push(format!(
            "big room, fan-out {fan_out}: {} relay streams per track ({} in all), tree depth {}, \
             streams sent per node {}",
            plan.edges.len() / 2,
            plan.edges.len(),
            plan.depth(),
            spread(per_node.values().map(|c| c.out))
        ));
        plans.insert(fan_out, plan);
    }
    let mut small_streams = 0;
    let mut spanned = 0;
    for room in &small {
        let inputs = sim.inputs(room).await;
        let plan = plan_relays(
            &inputs.publishers,
            &inputs.receivers,
            8,
            &RelayPlan::default(),
        );
        assert_sound(&plan, &inputs, 8);
        small_streams += plan.edges.len();
        spanned += usize::from(!plan.edges.is_empty());
    }
    report.push(format!(
        "small rooms: {spanned} of {} need relays, {small_streams} relay streams in all",
        small.len()
    ));

    // Leaves: big-room viewers, and whole small rooms ending.
    for viewer in big_viewers.iter().take(BIG_ROOM_LEAVES) {
        sim.leave(viewer, &big).await;
    }
    for room in small.iter().take(SMALL_ROOMS_ENDING) {
        for member in &small_members[room] {
            sim.leave(member, room).await;
        }
    }
    sim.assert_consistent(None).await;
    for room in small.iter().take(SMALL_ROOMS_ENDING) {
        let record = sim.store.inner.channel(room).await.unwrap().unwrap();
        assert!(record.sfu_spans.is_empty(), "an empty room spans no node");
    }
    let (transports, _) = per_node(&sim);
    report.push(format!(
        "after {BIG_ROOM_LEAVES} big-room leaves and {SMALL_ROOMS_ENDING} small rooms ending: \
         transports per node {}",
        spread(transports)
    ));

    // A node failure: the node serving the most big-room viewers besides its first node.
    let big_record = sim.store.inner.channel(&big).await.unwrap().unwrap();
    let failed = big_record.sfu_spans[0].node;
    let on_failed = sim.fake.sessions_on(failed).len();
    let before: HashMap<SessionId, Option<SfuServerId>> = {
        let mut all = HashMap::new();
        for channel in sim.channels().await {
            for member in sim.members(&channel.id).await {
                all.insert(member.id, member.sfu_node);
            }
        }
        all
    };
    let first_on_failed = (sim.channels().await.iter())
        .filter(|c| c.sfu_server_id == Some(failed))
        .count();
    let big_before = plan_relays(
        &inputs.publishers,
        &inputs.receivers,
        4,
        &RelayPlan::default(),
    );
    tokio::time::sleep(super::failover::CHECK_EVERY * 2).await;
    sim.recorder.take();
    sim.fake.set_healthy(failed, false);
    // Settled once nobody is served by the failed node and every member is served.
    let settled = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut done = true;
            'channels: for channel in sim.channels().await {
                if channel.sfu_server_ids().contains(&failed) {
                    done = false;
                    break;
                }
                for member in sim.members(&channel.id).await {
                    if member.sfu_node.is_none_or(|n| n == failed) {
                        done = false;
                        break 'channels;
                    }
                }
            }
            if done {
                return;
            }
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "the fleet did not settle after the failure"
    );
    let seen = sim.recorder.take();
    let restarted: usize = (seen.iter())
        .filter(|e| matches!(e.event, DomainEvent::SfuRestarted { .. }))
        .map(|e| e.audience.len())
        .sum();
    let replaced = (seen.iter())
        .filter(|e| matches!(e.event, DomainEvent::ChannelPlaced { .. }))
        .count();
    let mut moved = 0;
    for channel in sim.channels().await {
        for member in sim.members(&channel.id).await {
            if before.get(&member.id).copied().flatten() != member.sfu_node {
                moved += 1;
            }
        }
    }
    sim.assert_consistent(Some(failed)).await;
    let inputs_after = sim.inputs(&big).await;
    let big_after = plan_relays(
        &inputs_after.publishers,
        &inputs_after.receivers,
        4,
        &big_before,
    );
    assert_sound(&big_after, &inputs_after, 4);
    let (opened, closed) = big_after.diff(&big_before);
    let (transports, _) = per_node(&sim);
    report.push(format!(
        "node {failed} fails (it served {on_failed} members; first node of {first_on_failed} \
         channels): {restarted} members told sfuRestart, {moved} served by another node now, \
         {replaced} channels placed again; big-room relays (fan-out 4): {} streams opened, {} \
         closed of {}; transports per live node {}",
        opened.len(),
        closed.len(),
        big_before.edges.len(),
        spread(
            transports
                .into_iter()
                .zip(&sim.nodes)
                .filter(|(_, n)| **n != failed)
                .map(|(t, _)| t)
        )
    ));
    assert!(moved >= on_failed, "every member of the failed node moved");

    println!("fleet simulation ({NODES} nodes, cap {CAP} transports each):");
    for line in report {
        println!("- {line}");
    }
}
