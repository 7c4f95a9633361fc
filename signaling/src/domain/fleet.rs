//! The SFU fleet registry as the service server manages it. Placement of rooms and live load come
//! from the QUIC control plane; until a control connection reports, a node's health is `unknown`.

use std::collections::HashMap;
use std::sync::Arc;

use super::DomainError;
use super::events::DomainEvent;
use super::ids::{ChannelId, SessionId, SfuServerId};
use super::model::{ChannelRecord, NewSfuServer, SfuServerRecord};
use super::placement::Placement;
use super::ports::NodeStatus;
use super::shared::Shared;

/// A node with the load this instance can derive from the store.
#[derive(Clone, Debug)]
pub struct SfuServerView {
    /// The stored record.
    pub record: SfuServerRecord,
    /// Channels the node serves (as their first node or a span).
    pub rooms: usize,
    /// Members it serves in those channels.
    pub sessions: usize,
    /// Live state from the control connection (`None` when this instance uses no SFU).
    pub status: Option<NodeStatus>,
}

impl SfuServerView {
    /// Draining and hosting nothing any more: it can be deleted without `force`.
    pub fn drained(&self) -> bool {
        self.record.draining && self.rooms == 0
    }
}

/// Changes to a node; `None` keeps a field.
#[derive(Clone, Debug, Default)]
pub struct SfuServerPatch {
    /// New control address.
    pub address: Option<String>,
    /// New certificate fingerprint.
    pub fingerprint: Option<String>,
    /// Exclude from (or re-include in) placement.
    pub disabled: Option<bool>,
    /// Start or stop draining.
    pub draining: Option<bool>,
}

/// The SFU fleet registry as the service server manages it (`/sfu-servers`).
pub struct SfuServers {
    shared: Arc<Shared>,
    placement: Arc<Placement>,
}

impl std::fmt::Debug for SfuServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuServers").finish_non_exhaustive()
    }
}

impl SfuServers {
    pub(super) fn new(shared: Arc<Shared>, placement: Arc<Placement>) -> Self {
        Self { shared, placement }
    }

    /// Registers a node, idempotently: a node registering again at the address of a record
    /// (a restart) gets that record. With the same fingerprint nothing changes (it kept its
    /// identity, `mooyaho sfu --data-dir`); with a new one the record pins the new certificate
    /// (it restarted without its identity: a process at that address is that node now, and
    /// channels whose rooms it lost are placed again). Unpinning a pinned node this way is
    /// refused: that takes a `PATCH` or `DELETE`.
    pub async fn register(
        &self,
        address: String,
        fingerprint: Option<String>,
    ) -> Result<SfuServerView, DomainError> {
        validate_address(&address)?;
        let fingerprint = fingerprint.map(|f| normalize_fingerprint(&f)).transpose()?;
        let existing = self
            .shared
            .store
            .sfu_servers()
            .await?
            .into_iter()
            .find(|record| record.address == address);
        if let Some(record) = existing {
            if record.fingerprint == fingerprint {
                return self.get(record.id).await;
            }
            return match fingerprint {
                Some(new) => {
                    tracing::info!(node = %record.id, %address, "SFU node re-registered with a new certificate");
                    let patch = SfuServerPatch {
                        fingerprint: Some(new),
                        ..SfuServerPatch::default()
                    };
                    self.update(record.id, patch).await
                }
                None => Err(DomainError::Conflict(format!(
                    "SFU server {} at {address} is pinned to a certificate; register with its \
                     fingerprint, or PATCH or DELETE it",
                    record.id
                ))),
            };
        }
        let record = self
            .shared
            .store
            .create_sfu_server(&NewSfuServer {
                address,
                fingerprint,
            })
            .await?;
        let registered = DomainEvent::SfuServerRegistered { node: record.id };
        self.shared.events.record(registered).await;
        Ok(SfuServerView {
            status: self.placement.nodes().map(|n| n.status(record.id)),
            record,
            rooms: 0,
            sessions: 0,
        })
    }

    /// Every node with its derived load, least loaded first (ties by id). Three store round
    /// trips however many nodes and channels, a fourth for the members of channels spanning
    /// nodes (each counts on the node serving it).
    pub async fn list(&self) -> Result<Vec<SfuServerView>, DomainError> {
        let records = self.shared.store.sfu_servers().await?;
        let placed: Vec<ChannelRecord> = self
            .shared
            .store
            .channels()
            .await?
            .into_iter()
            .filter(|c| c.sfu_server_id.is_some())
            .collect();
        let ids: Vec<ChannelId> = placed.iter().map(|c| c.id.clone()).collect();
        let members = self.shared.store.members_of(&ids).await?;
        let mut load: HashMap<SfuServerId, (usize, usize)> = HashMap::new();
        let mut spanned_members = Vec::new();
        for (channel, members) in placed.iter().zip(members) {
            for node in channel.sfu_server_ids() {
                load.entry(node).or_default().0 += 1;
            }
            if channel.sfu_spans.is_empty() {
                if let Some(node) = channel.sfu_server_id {
                    load.entry(node).or_default().1 += members.len();
                }
            } else {
                spanned_members.extend(members.into_iter().map(|m| (m, channel)));
            }
        }
        if !spanned_members.is_empty() {
            let ids: Vec<SessionId> = spanned_members.iter().map(|(m, _)| m.clone()).collect();
            let sessions = self.shared.store.sessions(&ids).await?;
            for ((_, channel), session) in spanned_members.iter().zip(sessions) {
                let node = session
                    .and_then(|s| s.sfu_node)
                    .filter(|n| channel.room_on(*n).is_some())
                    .or(channel.sfu_server_id);
                if let Some(node) = node {
                    load.entry(node).or_default().1 += 1;
                }
            }
        }
        let mut views: Vec<_> = records
            .into_iter()
            .map(|record| {
                let (rooms, sessions) = load.get(&record.id).copied().unwrap_or_default();
                SfuServerView {
                    status: self.placement.nodes().map(|n| n.status(record.id)),
                    record,
                    rooms,
                    sessions,
                }
            })
            .collect();
        views.sort_by_key(|v| (v.sessions, v.record.id));
        Ok(views)
    }

    /// One node.
    pub async fn get(&self, id: SfuServerId) -> Result<SfuServerView, DomainError> {
        self.list()
            .await?
            .into_iter()
            .find(|v| v.record.id == id)
            .ok_or(DomainError::NotFound("SFU server is not found"))
    }

    /// Applies a patch.
    pub async fn update(
        &self,
        id: SfuServerId,
        patch: SfuServerPatch,
    ) -> Result<SfuServerView, DomainError> {
        let mut view = self.get(id).await?;
        if let Some(address) = patch.address {
            validate_address(&address)?;
            view.record.address = address;
        }
        if let Some(fingerprint) = patch.fingerprint {
            view.record.fingerprint = Some(normalize_fingerprint(&fingerprint)?);
        }
        if let Some(disabled) = patch.disabled {
            view.record.disabled = disabled;
        }
        if let Some(draining) = patch.draining {
            view.record.draining = draining;
        }
        let drain_changed = patch.draining.is_some();
        let refusal_changed = drain_changed || patch.disabled.is_some();
        if !self.shared.store.update_sfu_server(&view.record).await? {
            return Err(DomainError::NotFound("SFU server is not found"));
        }
        if refusal_changed {
            // The node learns it too, so it refuses new rooms from any signaling instance (a
            // disabled node as much as a draining one).
            let refuses = view.record.draining || view.record.disabled;
            self.placement.tell_node_draining(id, refuses).await;
        }
        if drain_changed {
            let draining = DomainEvent::SfuServerDraining {
                node: id,
                draining: view.record.draining,
            };
            self.shared.events.record(draining).await;
        }
        Ok(view)
    }

    /// `POST /sfu-servers/{id}/drain`: the node takes no new rooms (placement skips it and the
    /// node itself refuses), and its channels move to other nodes a few at a time in the
    /// background, their members told `sfuRestart`; `drained` once it hosts nothing. Refused
    /// (409) while it hosts channels that no other healthy, enabled, non-draining node could take.
    pub async fn drain(&self, id: SfuServerId) -> Result<SfuServerView, DomainError> {
        let view = self.get(id).await?;
        if view.rooms > 0 && !self.placement.has_other_eligible_node(id).await? {
            return Err(DomainError::Conflict(format!(
                "SFU server {id} hosts {} channel(s) and no other healthy SFU node (enabled, not \
                 draining) could take them; add or enable a node first",
                view.rooms
            )));
        }
        let patch = SfuServerPatch {
            draining: Some(true),
            ..SfuServerPatch::default()
        };
        let view = self.update(id, patch).await?;
        self.placement.move_rooms_off(id);
        Ok(view)
    }

    /// Removes a node. Refused while channels are placed on it, unless `force`, which closes
    /// their rooms on the node (best effort: it may be gone) and unplaces them (they are placed
    /// again at their next SFU join).
    pub async fn delete(&self, id: SfuServerId, force: bool) -> Result<(), DomainError> {
        let view = self.get(id).await?;
        if view.rooms > 0 && !force {
            return Err(DomainError::Conflict(format!(
                "SFU server {id} hosts {} channel(s); drain it or delete with ?force=true",
                view.rooms
            )));
        }
        for mut channel in self.shared.store.channels().await? {
            if let Some(span) = channel.sfu_spans.iter().find(|s| s.node == id) {
                // Its members there move to the channel's other nodes.
                let span = span.clone();
                self.placement.drop_span(&channel.id, span, None).await;
            }
            if channel.sfu_server_id == Some(id) {
                // Once unregistered the node is out of reach, and rooms left on it would keep
                // forwarding media and holding transports until it restarts.
                self.placement.close_room(&channel).await;
                channel.sfu_server_id = None;
                channel.sfu_room = None;
                channel.sfu_spans.clear();
                self.shared.store.create_channel(&channel).await?;
            }
        }
        if !self.shared.store.delete_sfu_server(id).await? {
            return Err(DomainError::NotFound("SFU server is not found"));
        }
        self.shared
            .events
            .record(DomainEvent::SfuServerRemoved { node: id })
            .await;
        Ok(())
    }
}

/// JSON-Schema pattern of a node's control address; `validate_address` accepts exactly these.
pub const ADDRESS_PATTERN: &str = r"^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._-]{1,253}):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";

/// JSON-Schema pattern of a certificate fingerprint; `normalize_fingerprint` accepts exactly
/// these.
pub const FINGERPRINT_PATTERN: &str =
    r"^((sha|SHA)-256 )?([0-9A-Fa-f]{64}|[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31})$";

/// `host:port`: a bracketed IPv6 address or a name / IPv4 address of `[A-Za-z0-9._-]` (at most
/// 253 characters), and a port in 1..=65535 without sign or leading zeros ([`ADDRESS_PATTERN`]).
fn validate_address(address: &str) -> Result<(), DomainError> {
    let invalid = || DomainError::Invalid(format!("`address` must be host:port, got {address:?}"));
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            (2..=45).contains(&v6.len())
                && v6
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
        }
        None => {
            (1..=253).contains(&host.len())
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        }
    };
    let port_ok = (1..=5).contains(&port.len())
        && !port.starts_with('0')
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok();
    if !host_ok || !port_ok {
        return Err(invalid());
    }
    Ok(())
}

/// A SHA-256 fingerprint, 64 hex digits bare or as 32 colon-separated bytes, optionally after
/// `sha-256 ` ([`FINGERPRINT_PATTERN`]), normalized to colon-separated upper-case hex (the SDP
/// `a=fingerprint` form).
fn normalize_fingerprint(text: &str) -> Result<String, DomainError> {
    let text = text
        .strip_prefix("sha-256 ")
        .or_else(|| text.strip_prefix("SHA-256 "))
        .unwrap_or(text);
    let bytes = text.as_bytes();
    let well_formed = match bytes.len() {
        64 => bytes.iter().all(u8::is_ascii_hexdigit),
        95 => bytes.iter().enumerate().all(|(i, b)| {
            if i % 3 == 2 {
                *b == b':'
            } else {
                b.is_ascii_hexdigit()
            }
        }),
        _ => false,
    };
    if !well_formed {
        return Err(DomainError::Invalid(
            "`fingerprint` must be a SHA-256 fingerprint (32 hex bytes, colon-separated)".into(),
        ));
    }
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let upper = hex.to_ascii_uppercase();
    Ok(upper
        .as_bytes()
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).expect("ascii hex"))
        .collect::<Vec<_>>()
        .join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_validated() {
        assert!(validate_address("127.0.0.1:4433").is_ok());
        assert!(validate_address("sfu-1.example.com:4433").is_ok());
        assert!(validate_address("[::1]:4433").is_ok());
        for bad in [
            "",
            "host",
            "host:0",
            "host:70000",
            ":4433",
            "a b:1",
            "host:port",
            "host:+80",
            "host:080",
            "::1:4433",
            "[::1]]:4433",
            "host:1\n",
        ] {
            assert!(validate_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_are_normalized() {
        let hex = "ab".repeat(32);
        let expected = vec!["AB"; 32].join(":");
        assert_eq!(normalize_fingerprint(&hex).unwrap(), expected);
        assert_eq!(
            normalize_fingerprint(&format!("sha-256 {expected}")).unwrap(),
            expected
        );
        assert!(normalize_fingerprint("zz").is_err());
        assert!(normalize_fingerprint(&format!(" {expected}")).is_err());
        assert!(normalize_fingerprint(&format!("{hex}:")).is_err());
        assert!(normalize_fingerprint(&"a:b".repeat(32)).is_err());
    }
}

#[cfg(test)]
mod lifecycle_tests {
    use mooyaho_control::Request;

    use crate::domain::events::DomainEvent;
    use crate::domain::ports::ChannelStore;
    use crate::domain::tests::{FakeNodes, kinds, member, recorded_service, register_node};

    #[tokio::test]
    async fn registering_draining_and_removing_a_node_emit_fleet_events() {
        let (signaling, store, recorder) = recorded_service();
        let (nodes, _node_events) = FakeNodes::attach(&signaling);
        let servers = signaling.sfu_servers();
        let node = register_node(&signaling).await;
        let patch = super::SfuServerPatch {
            draining: Some(true),
            ..Default::default()
        };
        assert!(servers.update(node, patch).await.unwrap().record.draining);
        assert_eq!(nodes.take(), [Request::Drain { draining: true }]);
        let seen = recorder.take();
        assert_eq!(
            kinds(&seen),
            ["sfu_server_registered", "sfu_server_draining"]
        );
        assert_eq!(seen[0].event, DomainEvent::SfuServerRegistered { node });

        // A node hosting a channel is removed only by force, which closes its room.
        let channel = signaling.channels().create(true).await.unwrap().id;
        store
            .inner
            .place_channel(&channel, node, "room-x")
            .await
            .unwrap();
        let _alice = member(&signaling, &channel, "alice").await;
        recorder.take();
        nodes.take();
        assert!(servers.delete(node, false).await.is_err());
        assert!(recorder.take().is_empty(), "a refused delete emits nothing");
        servers.delete(node, true).await.unwrap();
        assert_eq!(
            nodes.take(),
            [Request::CloseRoom {
                room: "room-x".into()
            }]
        );
        assert_eq!(kinds(&recorder.take()), ["sfu_server_removed"]);
        assert!(servers.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn registering_again_at_an_address_keeps_its_record() {
        let (signaling, _store, recorder) = recorded_service();
        let servers = signaling.sfu_servers();
        let (one, two) = ("AA:".repeat(31) + "AA", "BB:".repeat(31) + "BB");
        let register = |fingerprint: Option<&str>| {
            servers.register("127.0.0.1:4100".into(), fingerprint.map(str::to_owned))
        };
        let first = register(Some(&one)).await.unwrap().record;
        recorder.take();

        // A restart that kept its identity: the same record, nothing emitted.
        let again = register(Some(&one.to_lowercase())).await.unwrap().record;
        assert_eq!(
            (again.id, &again.fingerprint),
            (first.id, &first.fingerprint)
        );
        assert!(recorder.take().is_empty());

        // A restart with a new certificate: the same record now pins it.
        let renewed = register(Some(&two)).await.unwrap().record;
        assert_eq!(renewed.id, first.id);
        assert_eq!(renewed.fingerprint.as_deref(), Some(two.as_str()));

        // Unpinning through registration is refused; a bad fingerprint is a 400, not a change.
        let unpinned = register(None).await.unwrap_err();
        assert!(
            matches!(unpinned, super::DomainError::Conflict(_)),
            "{unpinned:?}"
        );
        let bad = register(Some("zz")).await.unwrap_err();
        assert!(matches!(bad, super::DomainError::Invalid(_)), "{bad:?}");

        // Another address is another node; one record per address throughout.
        let other = servers
            .register("127.0.0.1:4101".into(), Some(one.clone()))
            .await
            .unwrap()
            .record;
        assert_ne!(other.id, first.id);
        assert_eq!(servers.list().await.unwrap().len(), 2);
    }
}
