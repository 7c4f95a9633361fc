//! The embedded store: everything in memory; channels and the SFU registry are also written to a
//! JSON snapshot (write to a temporary file, fsync, rename) so a restart keeps them. Sessions and
//! memberships are not persisted: after a restart no socket holds them any more.
//!
//! Snapshots are written by one background thread, never under the store's lock: a change bumps
//! a generation and wakes the writer, which serialises the latest state and writes it once for
//! every change made meanwhile (group commit; at most one snapshot in memory besides the state).
//! The changing call returns once its generation is on disk, so nothing acknowledged is lost in
//! a crash, while reads and session traffic never wait for the disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::ids::{ChannelId, ConnectionId, SessionId, SfuServerId};
use crate::domain::model::{
    CallState, ChannelRecord, NewSfuServer, ResumeTokens, SessionRecord, SessionRoute,
    SessionUpdate, SfuServerRecord, SfuSpan, Takeover, TokenHash, now_ms,
};
use crate::domain::ports::{ChannelStore, SessionStore, SfuRegistry, StoreError};
use crate::domain::token;

/// In-memory store with an optional on-disk snapshot.
#[derive(Debug)]
pub struct EmbeddedStore {
    inner: Arc<Mutex<Inner>>,
    writer: Option<Writer>,
}

#[derive(Debug, Default)]
struct Inner {
    persistent: Snapshot,
    /// Counts changes to `persistent`; the writer reports the last one it wrote.
    generation: u64,
    members: HashMap<ChannelId, HashSet<SessionId>>,
    sessions: HashMap<SessionId, SessionRecord>,
    /// Direct calls offered per callee: the current window's start and count.
    call_windows: HashMap<SessionId, (std::time::Instant, u64)>,
    /// The same per (callee, caller).
    caller_windows: HashMap<(SessionId, SessionId), (std::time::Instant, u64)>,
    /// The recorded control-link state of each node (`set_sfu_link`).
    sfu_links: HashMap<SfuServerId, bool>,
}

/// The part that survives restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Snapshot {
    channels: BTreeMap<ChannelId, ChannelRecord>,
    sfu_servers: BTreeMap<SfuServerId, SfuServerRecord>,
    next_sfu_id: u64,
}

/// The handle on the background snapshot writer.
#[derive(Debug)]
struct Writer {
    /// Wakes the writer; one pending wake-up is enough, since it writes the latest state.
    wake: SyncSender<()>,
    written: watch::Receiver<Written>,
}

/// What the writer has done so far.
#[derive(Clone, Debug, Default)]
struct Written {
    /// Every generation up to this one is on disk.
    generation: u64,
    /// The last failed write: the generation it held and why.
    failed: Option<(u64, String)>,
    /// Snapshot files written (each one covers every change since the previous).
    writes: u64,
}

impl EmbeddedStore {
    /// A store that forgets everything on exit (tests).
    pub fn in_memory() -> Self {
        Self {
            inner: Arc::default(),
            writer: None,
        }
    }

    /// A store persisted under `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Unavailable(format!("create {}: {e}", dir.display())))?;
        let path = dir.join("state.json");
        let persistent = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(StoreError::Unavailable(format!("{}: {e}", path.display()))),
        };
        let inner = Arc::new(Mutex::new(Inner {
            persistent,
            ..Inner::default()
        }));
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        let (report, written) = watch::channel(Written::default());
        let state = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("mooyaho-snapshot".into())
            .spawn(move || write_snapshots(&path, &state, &woken, &report))
            .map_err(|e| StoreError::Unavailable(format!("snapshot writer thread: {e}")))?;
        Ok(Self {
            inner,
            writer: Some(Writer { wake, written }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Marks the persistent part changed (call with the lock held); returns the generation to
    /// wait for with [`Self::persisted`].
    fn changed(inner: &mut Inner) -> u64 {
        inner.generation += 1;
        inner.generation
    }

    /// Waits until `generation` is on disk (at once for an in-memory store).
    async fn persisted(&self, generation: u64) -> Result<(), StoreError> {
        let Some(writer) = &self.writer else {
            return Ok(());
        };
        match writer.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                return Err(StoreError::Unavailable("snapshot writer stopped".into()));
            }
        }
        let mut written = writer.written.clone();
        let outcome = written
            .wait_for(|w| {
                w.generation >= generation || w.failed.as_ref().is_some_and(|f| f.0 >= generation)
            })
            .await
            .map_err(|_| StoreError::Unavailable("snapshot writer stopped".into()))?;
        if outcome.generation >= generation {
            return Ok(());
        }
        let reason = outcome
            .failed
            .as_ref()
            .map(|f| f.1.clone())
            .unwrap_or_default();
        Err(StoreError::Unavailable(reason))
    }

    /// Snapshot files written so far (each covers every change made while the previous one was
    /// being written).
    pub fn snapshot_writes(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(0, |w| w.written.borrow().writes)
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // A panic while holding the lock is a bug elsewhere; the data itself stays consistent
    // because every mutation below completes before any fallible step.
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writer thread: for each wake-up, serialises the latest state under the lock (memory work
/// only) and writes it atomically outside it. Ends when the store is dropped.
fn write_snapshots(
    path: &Path,
    state: &Mutex<Inner>,
    woken: &Receiver<()>,
    report: &watch::Sender<Written>,
) {
    let mut on_disk = 0;
    while woken.recv().is_ok() {
        let (generation, bytes) = {
            let inner = lock(state);
            if inner.generation == on_disk {
                continue;
            }
            (
                inner.generation,
                serde_json::to_vec_pretty(&inner.persistent),
            )
        };
        let result = bytes
            .map_err(|e| e.to_string())
            .and_then(|bytes| write_atomically(path, &bytes).map_err(|e| e.to_string()));
        report.send_modify(|w| match result {
            Ok(()) => {
                w.generation = generation;
                w.writes += 1;
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "writing the state snapshot failed");
                w.failed = Some((generation, format!("{}: {e}", path.display())));
            }
        });
        if report.borrow().generation == generation {
            on_disk = generation;
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old or the new file, never a torn one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[async_trait]
impl ChannelStore for EmbeddedStore {
    async fn create_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError> {
        let generation = {
            let mut inner = self.lock();
            inner
                .persistent
                .channels
                .insert(channel.id.clone(), channel.clone());
            Self::changed(&mut inner)
        };
        self.persisted(generation).await
    }

    async fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        Ok(self.lock().persistent.channels.get(id).cloned())
    }

    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        let mut all: Vec<_> = self.lock().persistent.channels.values().cloned().collect();
        ChannelRecord::sort_oldest_first(&mut all);
        Ok(all)
    }

    async fn place_channel(
        &self,
        id: &ChannelId,
        server: SfuServerId,
        room: &str,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        let (placed, generation) = {
            let mut inner = self.lock();
            let Some(channel) = inner.persistent.channels.get_mut(id) else {
                return Ok(None);
            };
            if channel.sfu_server_id.is_some() {
                return Ok(Some(channel.clone()));
            }
            channel.sfu_server_id = Some(server);
            channel.sfu_room = Some(room.to_owned());
            let placed = channel.clone();
            (placed, Self::changed(&mut inner))
        };
        self.persisted(generation).await?;
        Ok(Some(placed))
    }

    async fn unplace_channel(&self, id: &ChannelId, room: &str) -> Result<bool, StoreError> {
        let generation = {
            let mut inner = self.lock();
            let Some(channel) = inner.persistent.channels.get_mut(id) else {
                return Ok(false);
            };
            if channel.sfu_room.as_deref() != Some(room) {
                return Ok(false);
            }
            channel.sfu_server_id = None;
            channel.sfu_room = None;
            channel.sfu_spans.clear();
            Self::changed(&mut inner)
        };
        self.persisted(generation).await.map(|()| true)
    }

    async fn add_channel_span(
        &self,
        id: &ChannelId,
        first_room: &str,
        span: &SfuSpan,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        let (now, generation) = {
            let mut inner = self.lock();
            let Some(channel) = inner.persistent.channels.get_mut(id) else {
                return Ok(None);
            };
            if channel.sfu_room.as_deref() != Some(first_room)
                || channel.room_on(span.node).is_some()
            {
                return Ok(Some(channel.clone()));
            }
            channel.sfu_spans.push(span.clone());
            let now = channel.clone();
            (now, Self::changed(&mut inner))
        };
        self.persisted(generation).await?;
        Ok(Some(now))
    }

    async fn remove_channel_span(
        &self,
        id: &ChannelId,
        span: &SfuSpan,
    ) -> Result<bool, StoreError> {
        let generation = {
            let mut inner = self.lock();
            let Some(channel) = inner.persistent.channels.get_mut(id) else {
                return Ok(false);
            };
            let before = channel.sfu_spans.len();
            channel.sfu_spans.retain(|s| s != span);
            if channel.sfu_spans.len() == before {
                return Ok(false);
            }
            Self::changed(&mut inner)
        };
        self.persisted(generation).await.map(|()| true)
    }

    async fn delete_channel(&self, id: &ChannelId) -> Result<Option<Vec<SessionId>>, StoreError> {
        let (members, generation) = {
            let mut inner = self.lock();
            if inner.persistent.channels.remove(id).is_none() {
                return Ok(None);
            }
            let members = inner.members.remove(id).unwrap_or_default();
            (members, Self::changed(&mut inner))
        };
        self.persisted(generation).await?;
        Ok(Some(members.into_iter().collect()))
    }

    async fn set_member(
        &self,
        channel: &ChannelId,
        session: &SessionId,
        member: bool,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if member {
            return Ok(inner
                .members
                .entry(channel.clone())
                .or_default()
                .insert(session.clone()));
        }
        let Some(set) = inner.members.get_mut(channel) else {
            return Ok(false);
        };
        let removed = set.remove(session);
        if set.is_empty() {
            inner.members.remove(channel);
        }
        Ok(removed)
    }

    async fn members(&self, channel: &ChannelId) -> Result<Vec<SessionId>, StoreError> {
        let inner = self.lock();
        let mut members: Vec<_> = inner
            .members
            .get(channel)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        members.sort();
        Ok(members)
    }

    async fn members_of(&self, channels: &[ChannelId]) -> Result<Vec<Vec<SessionId>>, StoreError> {
        let inner = self.lock();
        Ok(channels
            .iter()
            .map(|channel| {
                let mut members: Vec<_> = inner
                    .members
                    .get(channel)
                    .map(|set| set.iter().cloned().collect())
                    .unwrap_or_default();
                members.sort();
                members
            })
            .collect())
    }
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.lock()
            .sessions
            .insert(session.id.clone(), session.clone());
        Ok(())
    }

    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock().sessions.get(id).cloned())
    }

    async fn sessions(&self, ids: &[SessionId]) -> Result<Vec<Option<SessionRecord>>, StoreError> {
        let inner = self.lock();
        Ok(ids
            .iter()
            .map(|id| inner.sessions.get(id).cloned())
            .collect())
    }

    async fn routes(&self, ids: &[SessionId]) -> Result<Vec<Option<SessionRoute>>, StoreError> {
        let inner = self.lock();
        Ok(ids
            .iter()
            .map(|id| {
                inner.sessions.get(id).map(|record| SessionRoute {
                    instance: record.instance.clone(),
                    channel: record.channel.clone(),
                })
            })
            .collect())
    }

    async fn update_session(
        &self,
        id: &SessionId,
        update: &SessionUpdate,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(session) = inner.sessions.get_mut(id) else {
            return Ok(false);
        };
        apply_update(session, update);
        Ok(true)
    }

    async fn set_call(
        &self,
        session: &SessionId,
        peer: &SessionId,
        state: Option<CallState>,
    ) -> Result<(), StoreError> {
        if let Some(record) = self.lock().sessions.get_mut(session) {
            match state {
                Some(state) => record.calls.insert(peer.clone(), state),
                None => record.calls.remove(peer),
            };
        }
        Ok(())
    }

    async fn resume_session(
        &self,
        id: &SessionId,
        presented: &str,
        now_ms: u64,
        takeover: &Takeover,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let mut inner = self.lock();
        let Some(session) = inner.sessions.get_mut(id) else {
            return Ok(None);
        };
        let current = token::accepts(&session.resume.current, presented, now_ms);
        let previous = session
            .resume
            .previous
            .as_ref()
            .is_some_and(|p| token::accepts(p, presented, now_ms));
        if !(current | previous) {
            return Ok(None);
        }
        let before = session.clone();
        session.instance = takeover.instance.clone();
        session.connection = takeover.connection.clone();
        session.connected = true;
        session.resume = ResumeTokens {
            current: takeover.token.clone(),
            previous: None,
        };
        Ok(Some(before))
    }

    async fn rotate_token(
        &self,
        id: &SessionId,
        connection: &ConnectionId,
        next: &TokenHash,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.sessions.get_mut(id) {
            Some(session) if &session.connection == connection => {
                let current = std::mem::replace(&mut session.resume.current, next.clone());
                session.resume.previous = Some(current);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn count_direct_call(
        &self,
        callee: &SessionId,
        caller: Option<&SessionId>,
        window: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let now = std::time::Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let bound = 4 * inner.sessions.len() + 1024;
        // Windows of sessions that ended are dropped with the session; this bounds the rest.
        if inner.call_windows.len() > bound {
            inner
                .call_windows
                .retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        if inner.caller_windows.len() > bound {
            inner
                .caller_windows
                .retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let (start, count) = match caller {
            Some(caller) => inner
                .caller_windows
                .entry((callee.clone(), caller.clone()))
                .or_insert((now, 0)),
            None => inner.call_windows.entry(callee.clone()).or_insert((now, 0)),
        };
        if now.duration_since(*start) >= window {
            *start = now;
            *count = 0;
        }
        *count += 1;
        Ok(*count)
    }

    async fn retire_session(
        &self,
        id: &SessionId,
        connection: &ConnectionId,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.sessions.get_mut(id) {
            Some(session) if &session.connection == connection && !session.connected => {
                session.resume.current.expires_ms = 0;
                if let Some(previous) = &mut session.resume.previous {
                    previous.expires_ms = 0;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete_session(&self, id: &SessionId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.sessions.remove(id);
        inner.call_windows.remove(id);
        Ok(())
    }

    async fn touch_sessions(&self, ids: &[SessionId]) -> Result<Vec<SessionId>, StoreError> {
        // Presence never expires in memory: the only instance reaps its own sessions.
        let inner = self.lock();
        Ok(ids
            .iter()
            .filter(|id| !inner.sessions.contains_key(*id))
            .cloned()
            .collect())
    }
}

#[async_trait]
impl SfuRegistry for EmbeddedStore {
    async fn create_sfu_server(&self, new: &NewSfuServer) -> Result<SfuServerRecord, StoreError> {
        let (record, generation) = {
            let mut inner = self.lock();
            inner.persistent.next_sfu_id += 1;
            let record = SfuServerRecord {
                id: SfuServerId(inner.persistent.next_sfu_id),
                address: new.address.clone(),
                fingerprint: new.fingerprint.clone(),
                disabled: false,
                draining: false,
                created_at_ms: now_ms(),
            };
            inner
                .persistent
                .sfu_servers
                .insert(record.id, record.clone());
            (record, Self::changed(&mut inner))
        };
        self.persisted(generation).await?;
        Ok(record)
    }

    async fn sfu_servers(&self) -> Result<Vec<SfuServerRecord>, StoreError> {
        Ok(self
            .lock()
            .persistent
            .sfu_servers
            .values()
            .cloned()
            .collect())
    }

    async fn update_sfu_server(&self, record: &SfuServerRecord) -> Result<bool, StoreError> {
        let generation = {
            let mut inner = self.lock();
            let Some(slot) = inner.persistent.sfu_servers.get_mut(&record.id) else {
                return Ok(false);
            };
            *slot = record.clone();
            Self::changed(&mut inner)
        };
        self.persisted(generation).await?;
        Ok(true)
    }

    async fn delete_sfu_server(&self, id: SfuServerId) -> Result<bool, StoreError> {
        let generation = {
            let mut inner = self.lock();
            if inner.persistent.sfu_servers.remove(&id).is_none() {
                return Ok(false);
            }
            inner.sfu_links.remove(&id);
            Self::changed(&mut inner)
        };
        self.persisted(generation).await?;
        Ok(true)
    }

    async fn set_sfu_link(&self, id: SfuServerId, up: bool) -> Result<bool, StoreError> {
        Ok(self.lock().sfu_links.insert(id, up) != Some(up))
    }
}

/// Applies the set fields of `update` to `session`; shared by every store.
pub(crate) fn apply_update(session: &mut SessionRecord, update: &SessionUpdate) {
    if let Some(instance) = &update.instance {
        session.instance = instance.clone();
    }
    if let Some(connection) = &update.connection {
        session.connection = connection.clone();
    }
    if let Some(user) = &update.user {
        session.user = Some(user.clone());
    }
    if let Some(state) = update.state {
        session.state = state;
    }
    if let Some(channel) = &update.channel {
        session.channel = channel.clone();
    }
    if let Some(connected) = update.connected {
        session.connected = connected;
    }
    if let Some(published) = &update.published {
        session.published = published.clone();
    }
    if let Some(node) = update.sfu_node {
        session.sfu_node = node;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(id: &str) -> ChannelRecord {
        ChannelRecord {
            id: ChannelId::from(id),
            sfu_enabled: false,
            sfu_server_id: None,
            sfu_room: None,
            sfu_spans: Vec::new(),
            created_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn channels_and_sfu_servers_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.create_channel(&channel("a")).await.unwrap();
            store.create_channel(&channel("b")).await.unwrap();
            store.delete_channel(&ChannelId::from("b")).await.unwrap();
            let new = NewSfuServer {
                address: "127.0.0.1:4000".into(),
                fingerprint: None,
            };
            assert_eq!(
                store.create_sfu_server(&new).await.unwrap().id,
                SfuServerId(1)
            );
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let ids: Vec<_> = store
            .channels()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, vec![ChannelId::from("a")]);
        let new = NewSfuServer {
            address: "127.0.0.1:4001".into(),
            fingerprint: None,
        };
        // Ids keep counting after a restart: a deleted node's id is never handed out again.
        assert_eq!(
            store.create_sfu_server(&new).await.unwrap().id,
            SfuServerId(2)
        );
    }

    fn session(id: &str, token_hash: TokenHash) -> SessionRecord {
        SessionRecord::dropped_for_test(id, token_hash)
    }

    fn takeover(connection: &str) -> Takeover {
        Takeover {
            instance: crate::domain::ids::InstanceId::from("i"),
            connection: ConnectionId::from(connection),
            token: TokenHash {
                hash: token::hash(connection),
                expires_ms: u64::MAX,
            },
        }
    }

    #[tokio::test]
    async fn a_token_resumes_once_and_rotation_keeps_the_previous_one() {
        let store = EmbeddedStore::in_memory();
        let id = SessionId::from("s");
        let stored = TokenHash {
            hash: token::hash("secret"),
            expires_ms: 1_000,
        };
        store.create_session(&session("s", stored)).await.unwrap();
        let record = format!("{:?}", store.session(&id).await.unwrap());
        assert!(
            !record.contains("\"secret\""),
            "only the hash is kept: {record}"
        );

        let presented = token::hash("secret");
        assert!(
            store
                .resume_session(&id, &presented, 1_000, &takeover("late"))
                .await
                .unwrap()
                .is_none(),
            "expired"
        );
        let won = store
            .resume_session(&id, &presented, 10, &takeover("c1"))
            .await
            .unwrap();
        assert_eq!(
            won.unwrap().connection,
            ConnectionId::from("c0"),
            "returns the record as it was"
        );
        assert!(
            store
                .resume_session(&id, &presented, 10, &takeover("c2"))
                .await
                .unwrap()
                .is_none(),
            "single use"
        );

        // c1 holds it now; its token is hash("c1"). A rotation keeps that one as the previous.
        let next = TokenHash {
            hash: token::hash("next"),
            expires_ms: u64::MAX,
        };
        assert!(
            !store
                .rotate_token(&id, &ConnectionId::from("c2"), &next)
                .await
                .unwrap(),
            "not the holder"
        );
        assert!(
            store
                .rotate_token(&id, &ConnectionId::from("c1"), &next)
                .await
                .unwrap()
        );
        assert!(
            store
                .resume_session(&id, &token::hash("c1"), 10, &takeover("c3"))
                .await
                .unwrap()
                .is_some(),
            "previous token still valid"
        );
        assert!(
            store
                .resume_session(&id, &token::hash("next"), 10, &takeover("c4"))
                .await
                .unwrap()
                .is_none(),
            "both consumed by the resume"
        );
    }

    /// The check and the spend of a token happen under one guard of the store's lock (a std
    /// `MutexGuard` cannot be held across an `.await` in these `Send` futures, so no await can
    /// split them). Racing resumes on several threads: exactly one wins every round.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_resumes_on_threads_let_exactly_one_win() {
        let store = Arc::new(EmbeddedStore::in_memory());
        let valid = TokenHash {
            hash: token::hash("secret"),
            expires_ms: u64::MAX,
        };
        for round in 0..200 {
            let id = format!("s{round}");
            store
                .create_session(&session(&id, valid.clone()))
                .await
                .unwrap();
            let start = Arc::new(tokio::sync::Barrier::new(8));
            let racers: Vec<_> = (0..8)
                .map(|i| {
                    let (store, start) = (store.clone(), start.clone());
                    let id = SessionId::from(id.as_str());
                    tokio::spawn(async move {
                        start.wait().await;
                        let presented = token::hash("secret");
                        let takeover = takeover(&format!("c{i}"));
                        store
                            .resume_session(&id, &presented, 1, &takeover)
                            .await
                            .unwrap()
                            .is_some()
                    })
                })
                .collect();
            let mut wins = 0;
            for racer in racers {
                wins += usize::from(racer.await.unwrap());
            }
            assert_eq!(wins, 1, "round {round}");
        }
    }

    #[tokio::test]
    async fn direct_calls_are_counted_per_callee_in_a_window() {
        let store = EmbeddedStore::in_memory();
        let window = std::time::Duration::from_millis(200);
        let (a, b, c) = (
            SessionId::from("a"),
            SessionId::from("b"),
            SessionId::from("c"),
        );
        for n in 1..=3 {
            assert_eq!(store.count_direct_call(&a, None, window).await.unwrap(), n);
        }
        assert_eq!(store.count_direct_call(&b, None, window).await.unwrap(), 1);
        // Per caller: a separate counter for each (callee, caller).
        for n in 1..=2 {
            let from_c = store.count_direct_call(&a, Some(&c), window).await.unwrap();
            assert_eq!(from_c, n);
        }
        assert_eq!(
            store.count_direct_call(&a, Some(&b), window).await.unwrap(),
            1
        );
        assert_eq!(
            store.count_direct_call(&c, Some(&a), window).await.unwrap(),
            1
        );
        tokio::time::sleep(window).await;
        assert_eq!(
            store.count_direct_call(&a, None, window).await.unwrap(),
            1,
            "a new window"
        );
        assert_eq!(
            store.count_direct_call(&a, Some(&c), window).await.unwrap(),
            1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_creations_is_on_disk_when_each_returns() {
        const BURST: usize = 200;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..BURST)
            .map(|n| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.create_channel(&channel(&format!("c{n}"))).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let writes = store.snapshot_writes();
        assert!((1..=BURST as u64).contains(&writes), "{writes}");
        println!("{BURST} concurrent creations took {writes} snapshot writes");
        // Read the file while the store is still open: acknowledged means written.
        let reopened = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(reopened.channels().await.unwrap().len(), BURST);
        drop(store);
        assert_eq!(
            EmbeddedStore::open(dir.path())
                .unwrap()
                .channels()
                .await
                .unwrap()
                .len(),
            BURST
        );
    }

    #[tokio::test]
    async fn a_failed_snapshot_write_is_an_error_for_the_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.create_channel(&channel("a")).await.unwrap();
        // The temporary file cannot be created where a directory stands.
        std::fs::create_dir(dir.path().join("state.json.tmp")).unwrap();
        assert!(matches!(
            store.create_channel(&channel("b")).await,
            Err(StoreError::Unavailable(_))
        ));
        std::fs::remove_dir(dir.path().join("state.json.tmp")).unwrap();
        store.create_channel(&channel("c")).await.unwrap();
        let ids: Vec<_> = EmbeddedStore::open(dir.path())
            .unwrap()
            .channels()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids.len(), 3, "the next write carries the failed change too");
    }

    #[tokio::test]
    async fn corrupt_snapshot_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), b"{not json").unwrap();
        assert!(matches!(
            EmbeddedStore::open(dir.path()),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn unplacing_clears_only_the_named_room_and_says_whether_it_did() {
        let store = EmbeddedStore::in_memory();
        super::super::tests::unplacing_clears_only_the_named_room(&store).await;
    }

    #[tokio::test]
    async fn routes_name_the_instance_and_channel_of_live_sessions_only() {
        let store = EmbeddedStore::in_memory();
        super::super::tests::routes_name_the_instance_and_channel_of_live_sessions_only(&store)
            .await;
    }

    #[tokio::test]
    async fn spans_are_added_once_per_node_and_go_with_the_placement() {
        let store = EmbeddedStore::in_memory();
        super::super::tests::spans_are_added_once_per_node_and_go_with_the_placement(&store).await;
    }
}
