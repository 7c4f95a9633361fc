//! The Redis store: shared state for many signaling instances.
//!
//! Keys (all under `mooyaho:`):
//! - `channel:{id}` JSON [`ChannelRecord`]; `channels` SET of ids
//! - `channel:{id}:members` SET of session ids
//! - `session:{id}` HASH of a session's fields, with a presence TTL the holding instance refreshes;
//!   direct-call relations are fields `call:{peer}`
//! - `sfu:{id}` JSON [`SfuServerRecord`]; `sfus` SET of ids; `sfu:next-id` counter
//!
//! Field-level updates keep instances from overwriting each other's changes to one session.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::domain::ids::{ChannelId, ConnectionId, InstanceId, SessionId, SfuServerId};
use crate::domain::model::{
    CallState, ChannelRecord, MediaState, NewSfuServer, SessionRecord, SessionUpdate,
    SfuServerRecord, now_ms,
};
use crate::domain::ports::{ChannelStore, SessionStore, SfuRegistry, StoreError};

/// Redis-backed shared store.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    /// How long a session's presence lasts without a refresh from its instance, milliseconds.
    session_ttl_ms: i64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects (the manager reconnects by itself after Redis comes back). Session presence
    /// expires `session_ttl` after its last refresh.
    pub async fn connect(client: redis::Client, session_ttl: Duration) -> Result<Self, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            connection,
            session_ttl_ms: i64::try_from(session_ttl.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
        })
    }

    /// A handle on the shared connection (for the bus's publisher).
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    fn conn(&self) -> ConnectionManager {
        self.connection.clone()
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn channel_key(id: &ChannelId) -> String {
    format!("mooyaho:channel:{id}")
}

fn members_key(id: &ChannelId) -> String {
    format!("mooyaho:channel:{id}:members")
}

fn session_key(id: &SessionId) -> String {
    format!("mooyaho:session:{id}")
}

fn sfu_key(id: SfuServerId) -> String {
    format!("mooyaho:sfu:{id}")
}

const CHANNELS: &str = "mooyaho:channels";
const SFUS: &str = "mooyaho:sfus";
const SFU_NEXT_ID: &str = "mooyaho:sfu:next-id";
const CALL_PREFIX: &str = "call:";

/// HSET only when the hash exists, so an update never resurrects an expired session.
const HSET_IF_EXISTS: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
  return 1
end
return 0";

/// Places a channel unless already placed; returns the channel JSON as it now is (nil if absent).
/// Runs inside Redis so two instances placing at once agree on one room.
const PLACE_CHANNEL: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local c = cjson.decode(v)
if c.sfu_server_id ~= nil and c.sfu_server_id ~= cjson.null then return v end
c.sfu_server_id = tonumber(ARGV[1])
c.sfu_room = ARGV[2]
local n = cjson.encode(c)
redis.call('SET', KEYS[1], n)
return n";

/// Clears a channel's placement if it is still on room ARGV[1].
const UNPLACE_CHANNEL: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local c = cjson.decode(v)
if c.sfu_room ~= ARGV[1] then return 0 end
c.sfu_server_id = cjson.null
c.sfu_room = cjson.null
redis.call('SET', KEYS[1], cjson.encode(c))
return 1";

#[async_trait]
impl ChannelStore for RedisStore {
    async fn create_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(channel).map_err(corrupt)?;
        redis::pipe()
            .atomic()
            .set(channel_key(&channel.id), json)
            .sadd(CHANNELS, channel.id.as_str())
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        let json: Option<String> = self
            .conn()
            .get(channel_key(id))
            .await
            .map_err(unavailable)?;
        json.map(|j| serde_json::from_str(&j).map_err(corrupt))
            .transpose()
    }

    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        let mut conn = self.conn();
        let ids: Vec<String> = conn.smembers(CHANNELS).await.map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| channel_key(&ChannelId(id.clone())))
            .collect();
        let values: Vec<Option<String>> = conn.mget(&keys).await.map_err(unavailable)?;
        let mut all = values
            .into_iter()
            .flatten()
            .map(|j| serde_json::from_str::<ChannelRecord>(&j).map_err(corrupt))
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(all)
    }

    async fn place_channel(
        &self,
        id: &ChannelId,
        server: SfuServerId,
        room: &str,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        let json: Option<String> = redis::Script::new(PLACE_CHANNEL)
            .key(channel_key(id))
            .arg(server.0)
            .arg(room)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        json.map(|j| serde_json::from_str(&j).map_err(corrupt))
            .transpose()
    }

    async fn unplace_channel(&self, id: &ChannelId, room: &str) -> Result<(), StoreError> {
        redis::Script::new(UNPLACE_CHANNEL)
            .key(channel_key(id))
            .arg(room)
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn delete_channel(&self, id: &ChannelId) -> Result<Option<Vec<SessionId>>, StoreError> {
        let (members, removed): (Vec<String>, i64) = redis::pipe()
            .atomic()
            .smembers(members_key(id))
            .del(channel_key(id))
            .ignore()
            .del(members_key(id))
            .ignore()
            .srem(CHANNELS, id.as_str())
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((removed > 0).then(|| members.into_iter().map(SessionId).collect()))
    }

    async fn set_member(
        &self,
        channel: &ChannelId,
        session: &SessionId,
        member: bool,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let key = members_key(channel);
        if member {
            conn.sadd::<_, _, ()>(key, session.as_str()).await
        } else {
            conn.srem::<_, _, ()>(key, session.as_str()).await
        }
        .map_err(unavailable)
    }

    async fn members(&self, channel: &ChannelId) -> Result<Vec<SessionId>, StoreError> {
        let mut ids: Vec<String> = self
            .conn()
            .smembers(members_key(channel))
            .await
            .map_err(unavailable)?;
        ids.sort();
        Ok(ids.into_iter().map(SessionId).collect())
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let key = session_key(&session.id);
        let fields = session_fields(session)?;
        redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset_multiple(&key, &fields)
            .ignore()
            .pexpire(&key, self.session_ttl_ms)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let map: HashMap<String, String> = self
            .conn()
            .hgetall(session_key(id))
            .await
            .map_err(unavailable)?;
        parse_session(id, map)
    }

    async fn sessions(&self, ids: &[SessionId]) -> Result<Vec<Option<SessionRecord>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(session_key(id));
        }
        let maps: Vec<HashMap<String, String>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        ids.iter()
            .zip(maps)
            .map(|(id, map)| parse_session(id, map))
            .collect()
    }

    async fn update_session(
        &self,
        id: &SessionId,
        update: &SessionUpdate,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let key = session_key(id);
        let mut set: Vec<(String, String)> = Vec::new();
        if let Some(instance) = &update.instance {
            set.push(("instance".into(), instance.0.clone()));
        }
        if let Some(connection) = &update.connection {
            set.push(("connection".into(), connection.0.clone()));
        }
        if let Some(user) = &update.user {
            set.push(("user".into(), user.to_string()));
        }
        if let Some(state) = &update.state {
            set.push((
                "state".into(),
                serde_json::to_string(state).map_err(corrupt)?,
            ));
        }
        if let Some(Some(channel)) = &update.channel {
            set.push(("channel".into(), channel.0.clone()));
        }
        if let Some(token) = &update.resume_token {
            set.push(("token".into(), token.clone()));
        }
        if let Some(connected) = update.connected {
            set.push(("connected".into(), flag(connected).into()));
        }
        let exists: bool = if set.is_empty() {
            conn.exists(&key).await.map_err(unavailable)?
        } else {
            let script = redis::Script::new(HSET_IF_EXISTS);
            let mut invocation = script.key(&key);
            for (field, value) in &set {
                invocation.arg(field).arg(value);
            }
            let updated: i64 = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            updated == 1
        };
        if exists && matches!(update.channel, Some(None)) {
            conn.hdel::<_, _, ()>(&key, "channel")
                .await
                .map_err(unavailable)?;
        }
        Ok(exists)
    }

    async fn set_call(
        &self,
        session: &SessionId,
        peer: &SessionId,
        state: Option<CallState>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let key = session_key(session);
        let field = format!("{CALL_PREFIX}{peer}");
        match state {
            Some(state) => {
                let value = serde_json::to_string(&state).map_err(corrupt)?;
                redis::Script::new(HSET_IF_EXISTS)
                    .key(&key)
                    .arg(field)
                    .arg(value)
                    .invoke_async::<i64>(&mut conn)
                    .await
                    .map(drop)
            }
            None => conn.hdel::<_, _, ()>(&key, field).await,
        }
        .map_err(unavailable)
    }

    async fn delete_session(&self, id: &SessionId) -> Result<(), StoreError> {
        self.conn()
            .del::<_, ()>(session_key(id))
            .await
            .map_err(unavailable)
    }

    async fn touch_sessions(&self, ids: &[SessionId]) -> Result<Vec<SessionId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.pexpire(session_key(id), self.session_ttl_ms);
        }
        // PEXPIRE answers 0 for a key that no longer exists.
        let refreshed: Vec<i64> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(ids
            .iter()
            .zip(refreshed)
            .filter(|(_, refreshed)| *refreshed == 0)
            .map(|(id, _)| id.clone())
            .collect())
    }
}

#[async_trait]
impl SfuRegistry for RedisStore {
    async fn create_sfu_server(&self, new: &NewSfuServer) -> Result<SfuServerRecord, StoreError> {
        let mut conn = self.conn();
        let id: u64 = conn.incr(SFU_NEXT_ID, 1).await.map_err(unavailable)?;
        let record = SfuServerRecord {
            id: SfuServerId(id),
            address: new.address.clone(),
            fingerprint: new.fingerprint.clone(),
            disabled: false,
            draining: false,
            created_at_ms: now_ms(),
        };
        let json = serde_json::to_string(&record).map_err(corrupt)?;
        redis::pipe()
            .atomic()
            .set(sfu_key(record.id), json)
            .sadd(SFUS, id)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(record)
    }

    async fn sfu_servers(&self) -> Result<Vec<SfuServerRecord>, StoreError> {
        let mut conn = self.conn();
        let ids: Vec<u64> = conn.smembers(SFUS).await.map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| sfu_key(SfuServerId(*id))).collect();
        let values: Vec<Option<String>> = conn.mget(&keys).await.map_err(unavailable)?;
        let mut all = values
            .into_iter()
            .flatten()
            .map(|j| serde_json::from_str::<SfuServerRecord>(&j).map_err(corrupt))
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by_key(|s| s.id);
        Ok(all)
    }

    async fn update_sfu_server(&self, record: &SfuServerRecord) -> Result<bool, StoreError> {
        let json = serde_json::to_string(record).map_err(corrupt)?;
        // SET XX: only replace an existing record.
        let updated: Option<String> = redis::cmd("SET")
            .arg(sfu_key(record.id))
            .arg(json)
            .arg("XX")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(updated.is_some())
    }

    async fn delete_sfu_server(&self, id: SfuServerId) -> Result<bool, StoreError> {
        let (removed,): (i64,) = redis::pipe()
            .atomic()
            .del(sfu_key(id))
            .srem(SFUS, id.0)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }
}

fn flag(value: bool) -> &'static str {
    if value { "1" } else { "0" }
}

fn session_fields(session: &SessionRecord) -> Result<Vec<(String, String)>, StoreError> {
    let mut fields = vec![
        ("instance".to_owned(), session.instance.0.clone()),
        ("connection".to_owned(), session.connection.0.clone()),
        (
            "state".to_owned(),
            serde_json::to_string(&session.state).map_err(corrupt)?,
        ),
        (
            "direct".to_owned(),
            flag(session.allow_direct_call).to_owned(),
        ),
        ("token".to_owned(), session.resume_token.clone()),
        ("connected".to_owned(), flag(session.connected).to_owned()),
    ];
    if let Some(user) = &session.user {
        fields.push(("user".to_owned(), user.to_string()));
    }
    if let Some(channel) = &session.channel {
        fields.push(("channel".to_owned(), channel.0.clone()));
    }
    for (peer, state) in &session.calls {
        let value = serde_json::to_string(state).map_err(corrupt)?;
        fields.push((format!("{CALL_PREFIX}{peer}"), value));
    }
    Ok(fields)
}

fn parse_session(
    id: &SessionId,
    mut map: HashMap<String, String>,
) -> Result<Option<SessionRecord>, StoreError> {
    let Some(instance) = map.remove("instance") else {
        // An empty hash: the session does not exist (or expired).
        return Ok(None);
    };
    let mut calls = BTreeMap::new();
    for (field, value) in &map {
        if let Some(peer) = field.strip_prefix(CALL_PREFIX) {
            let state: CallState = serde_json::from_str(value).map_err(corrupt)?;
            calls.insert(SessionId(peer.to_owned()), state);
        }
    }
    let state: MediaState = match map.get("state") {
        Some(json) => serde_json::from_str(json).map_err(corrupt)?,
        None => MediaState::default(),
    };
    let user = map
        .get("user")
        .map(|json| serde_json::from_str(json).map_err(corrupt))
        .transpose()?;
    Ok(Some(SessionRecord {
        id: id.clone(),
        instance: InstanceId(instance),
        connection: ConnectionId(map.remove("connection").unwrap_or_default()),
        user,
        state,
        channel: map.remove("channel").map(ChannelId),
        allow_direct_call: map.get("direct").is_some_and(|v| v == "1"),
        resume_token: map.remove("token").unwrap_or_default(),
        connected: map.get("connected").is_some_and(|v| v == "1"),
        calls,
    }))
}
