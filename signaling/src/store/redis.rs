//! The Redis store: shared state for many signaling instances.
//!
//! Keys (all under the configured prefix, `mooyaho:` by default; see [`KeySpace`]):
//! - `channel:{id}` JSON [`ChannelRecord`]; `channels` SET of ids
//! - `channel:{id}:members` SET of session ids
//! - `session:{id}` HASH of a session's fields, with a presence TTL the holding instance refreshes;
//!   direct-call relations are fields `call:{peer}`; resume tokens are stored as SHA-256 hashes
//!   (`token`, `token_exp`, `prev_token`, `prev_token_exp`)
//! - `call-rate:{id}` counter of direct calls offered to a session in the current window;
//!   `call-rate:{id}:{caller}` the same for one caller
//! - `sfu:{id}` JSON [`SfuServerRecord`]; `sfus` SET of ids; `sfu:next-id` counter;
//!   `sfu:{id}:link` the fleet's recorded control-link state (`up` / `down`)
//!
//! Field-level updates keep instances from overwriting each other's changes to one session.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::keys::KeySpace;
use crate::domain::ids::{ChannelId, ConnectionId, InstanceId, SessionId, SfuServerId};
use crate::domain::model::{
    CallState, ChannelRecord, MediaState, NewSfuServer, ResumeTokens, SessionRecord, SessionRoute,
    SessionUpdate, SfuServerRecord, SfuSpan, Takeover, TokenHash, now_ms,
};
use crate::domain::ports::{ChannelStore, SessionStore, SfuRegistry, StoreError};
use crate::domain::token;

/// Redis-backed shared store.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    keys: KeySpace,
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
    /// expires `session_ttl` after its last refresh. Every key is under `keys`.
    pub async fn connect(
        client: redis::Client,
        keys: KeySpace,
        session_ttl: Duration,
    ) -> Result<Self, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let mut connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        // A server that needs credentials the URL lacks accepts the connection and refuses the
        // first command: fail here, at start, rather than at the first request.
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            connection,
            keys,
            session_ttl_ms: i64::try_from(session_ttl.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
        })
    }

    /// The key space (the bus names its channels in it too).
    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }

    /// A handle on the shared connection (for the bus's publisher).
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    fn conn(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// The atomic half of a resume, after `before` was read: the script checks the presented
    /// token itself, so a rotation (or another resume) since that read is taken into account.
    async fn resume_from(
        &self,
        before: SessionRecord,
        presented: &str,
        now_ms: u64,
        takeover: &Takeover,
    ) -> Result<Option<SessionRecord>, StoreError> {
        // The constant-time check against the read spares a script call for a wrong token; the
        // script's own check decides.
        let known = token::accepts(&before.resume.current, presented, now_ms)
            || before
                .resume
                .previous
                .as_ref()
                .is_some_and(|p| token::accepts(p, presented, now_ms));
        if !known {
            return Ok(None);
        }
        let script = redis::Script::new(RESUME_IF_TOKEN);
        let mut invocation = script.key(self.keys.session(&before.id));
        invocation.arg(presented).arg(now_ms);
        let mut set = vec![
            ("instance".to_owned(), takeover.instance.0.clone()),
            ("connection".to_owned(), takeover.connection.0.clone()),
            ("connected".to_owned(), flag(true).to_owned()),
        ];
        set.extend(token_fields(&takeover.token, ""));
        for (field, value) in &set {
            invocation.arg(field).arg(value);
        }
        let moved: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((moved == 1).then_some(before))
    }
}

/// The JSON records stored at `keys`, read in one MGET; a key deleted since its id was listed
/// is skipped.
async fn records<T: serde::de::DeserializeOwned>(
    conn: &mut ConnectionManager,
    keys: Vec<String>,
) -> Result<Vec<T>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<Option<String>> = conn.mget(&keys).await.map_err(unavailable)?;
    values
        .into_iter()
        .flatten()
        .map(|json| serde_json::from_str(&json).map_err(corrupt))
        .collect()
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

const CALL_PREFIX: &str = "call:";

/// HSET only when the hash exists, so an update never resurrects an expired session.
const HSET_IF_EXISTS: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
  return 1
end
return 0";

/// Moves a session to a new holder if hash ARGV[1] is its current or previous token and that
/// token is still valid at ARGV[2] (ms). Both are checked here, not chosen from an earlier read:
/// a rotation in between moves the presented token to `prev_token`, where it is still found. Of
/// two racing resumes with one token exactly one finds it. ARGV[3..] are the field/value pairs to
/// set.
const RESUME_IF_TOKEN: &str = r"
local now = tonumber(ARGV[2])
local function valid(field)
  local hash = redis.call('HGET', KEYS[1], field)
  local expires = tonumber(redis.call('HGET', KEYS[1], field .. '_exp'))
  return hash == ARGV[1] and expires ~= nil and now < expires
end
if not (valid('token') or valid('prev_token')) then return 0 end
redis.call('HDEL', KEYS[1], 'prev_token', 'prev_token_exp')
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1";

/// Expires both resume tokens of a session if connection ARGV[1] holds it and it is not
/// connected (a dropped session about to end): no resume can win afterwards.
const RETIRE_IF_DROPPED: &str = r"
if redis.call('HGET', KEYS[1], 'connection') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'connected') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'token_exp', '0')
if redis.call('HEXISTS', KEYS[1], 'prev_token') == 1 then
  redis.call('HSET', KEYS[1], 'prev_token_exp', '0')
end
return 1";

/// Rotates a session's token if connection ARGV[1] still holds it: the current token becomes the
/// previous one, ARGV[2]/ARGV[3] the current one.
const ROTATE_TOKEN: &str = r"
if redis.call('HGET', KEYS[1], 'connection') ~= ARGV[1] then return 0 end
local current = redis.call('HGET', KEYS[1], 'token')
local expires = redis.call('HGET', KEYS[1], 'token_exp')
if current and expires then
  redis.call('HSET', KEYS[1], 'prev_token', current, 'prev_token_exp', expires)
end
redis.call('HSET', KEYS[1], 'token', ARGV[2], 'token_exp', ARGV[3])
return 1";

/// Counts a call in a fixed window: INCR, and the window's expiry on its first call.
const COUNT_IN_WINDOW: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n";

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
c.sfu_spans = nil
redis.call('SET', KEYS[1], cjson.encode(c))
return 1";

/// Adds span {node = ARGV[2], room = ARGV[3]} if the channel is still placed on room ARGV[1] and
/// no node of its is ARGV[2]; returns the channel JSON as it now is (nil if absent).
const ADD_CHANNEL_SPAN: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local c = cjson.decode(v)
if c.sfu_room ~= ARGV[1] then return v end
local node = tonumber(ARGV[2])
if c.sfu_server_id == node then return v end
local spans = c.sfu_spans
if spans == nil or spans == cjson.null then spans = {} end
for _, s in ipairs(spans) do
  if s.node == node then return v end
end
table.insert(spans, {node = node, room = ARGV[3]})
c.sfu_spans = spans
local n = cjson.encode(c)
redis.call('SET', KEYS[1], n)
return n";

/// Removes span {node = ARGV[1], room = ARGV[2]}; returns 1 if it was there. An emptied list is
/// removed (cjson would write it back as an object).
const REMOVE_CHANNEL_SPAN: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local c = cjson.decode(v)
local spans = c.sfu_spans
if spans == nil or spans == cjson.null then return 0 end
local node = tonumber(ARGV[1])
local kept, removed = {}, 0
for _, s in ipairs(spans) do
  if s.node == node and s.room == ARGV[2] then removed = 1 else table.insert(kept, s) end
end
if removed == 0 then return 0 end
if #kept == 0 then c.sfu_spans = nil else c.sfu_spans = kept end
redis.call('SET', KEYS[1], cjson.encode(c))
return 1";

#[async_trait]
impl ChannelStore for RedisStore {
    async fn create_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(channel).map_err(corrupt)?;
        redis::pipe()
            .atomic()
            .set(self.keys.channel(&channel.id), json)
            .sadd(self.keys.channels(), channel.id.as_str())
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        let json: Option<String> = self
            .conn()
            .get(self.keys.channel(id))
            .await
            .map_err(unavailable)?;
        json.map(|j| serde_json::from_str(&j).map_err(corrupt))
            .transpose()
    }

    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        let mut conn = self.conn();
        let ids: Vec<String> = conn
            .smembers(self.keys.channels())
            .await
            .map_err(unavailable)?;
        let keys = ids.into_iter().map(|id| self.keys.channel(&ChannelId(id)));
        let mut all: Vec<ChannelRecord> = records(&mut conn, keys.collect()).await?;
        ChannelRecord::sort_oldest_first(&mut all);
        Ok(all)
    }

    async fn place_channel(
        &self,
        id: &ChannelId,
        server: SfuServerId,
        room: &str,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        let json: Option<String> = redis::Script::new(PLACE_CHANNEL)
            .key(self.keys.channel(id))
            .arg(server.0)
            .arg(room)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        json.map(|j| serde_json::from_str(&j).map_err(corrupt))
            .transpose()
    }

    async fn unplace_channel(&self, id: &ChannelId, room: &str) -> Result<bool, StoreError> {
        redis::Script::new(UNPLACE_CHANNEL)
            .key(self.keys.channel(id))
            .arg(room)
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(|cleared| cleared == 1)
            .map_err(unavailable)
    }

    async fn add_channel_span(
        &self,
        id: &ChannelId,
        first_room: &str,
        span: &SfuSpan,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        let json: Option<String> = redis::Script::new(ADD_CHANNEL_SPAN)
            .key(self.keys.channel(id))
            .arg(first_room)
            .arg(span.node.0)
            .arg(&span.room)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        json.map(|j| serde_json::from_str(&j).map_err(corrupt))
            .transpose()
    }

    async fn remove_channel_span(
        &self,
        id: &ChannelId,
        span: &SfuSpan,
    ) -> Result<bool, StoreError> {
        redis::Script::new(REMOVE_CHANNEL_SPAN)
            .key(self.keys.channel(id))
            .arg(span.node.0)
            .arg(&span.room)
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(|removed| removed == 1)
            .map_err(unavailable)
    }

    async fn delete_channel(&self, id: &ChannelId) -> Result<Option<Vec<SessionId>>, StoreError> {
        let (members, removed): (Vec<String>, i64) = redis::pipe()
            .atomic()
            .smembers(self.keys.members(id))
            .del(self.keys.channel(id))
            .ignore()
            .del(self.keys.members(id))
            .ignore()
            .srem(self.keys.channels(), id.as_str())
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
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let key = self.keys.members(channel);
        let changed: i64 = if member {
            conn.sadd(key, session.as_str()).await
        } else {
            conn.srem(key, session.as_str()).await
        }
        .map_err(unavailable)?;
        Ok(changed > 0)
    }

    async fn members(&self, channel: &ChannelId) -> Result<Vec<SessionId>, StoreError> {
        let mut ids: Vec<String> = self
            .conn()
            .smembers(self.keys.members(channel))
            .await
            .map_err(unavailable)?;
        ids.sort();
        Ok(ids.into_iter().map(SessionId).collect())
    }

    async fn members_of(&self, channels: &[ChannelId]) -> Result<Vec<Vec<SessionId>>, StoreError> {
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for channel in channels {
            pipe.smembers(self.keys.members(channel));
        }
        let sets: Vec<Vec<String>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(sets
            .into_iter()
            .map(|mut ids| {
                ids.sort();
                ids.into_iter().map(SessionId).collect()
            })
            .collect())
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let key = self.keys.session(&session.id);
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
            .hgetall(self.keys.session(id))
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
            pipe.hgetall(self.keys.session(id));
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

    async fn routes(&self, ids: &[SessionId]) -> Result<Vec<Option<SessionRoute>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Two fields per session, not the whole hash (user, tokens, calls, tracks).
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hmget(self.keys.session(id), &["instance", "channel"]);
        }
        let fields: Vec<(Option<String>, Option<String>)> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(fields
            .into_iter()
            .map(|(instance, channel)| {
                // No instance: the hash is gone (the session ended or its presence expired).
                instance.map(|instance| SessionRoute {
                    instance: InstanceId(instance),
                    channel: channel.map(ChannelId),
                })
            })
            .collect())
    }

    async fn update_session(
        &self,
        id: &SessionId,
        update: &SessionUpdate,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let key = self.keys.session(id);
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
        if let Some(connected) = update.connected {
            set.push(("connected".into(), flag(connected).into()));
        }
        if let Some(published) = update.published.as_ref().filter(|p| !p.is_empty()) {
            set.push((
                "published".into(),
                serde_json::to_string(published).map_err(corrupt)?,
            ));
        }
        if let Some(Some(node)) = update.sfu_node {
            set.push(("sfu_node".into(), node.0.to_string()));
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
        let mut cleared = Vec::new();
        if matches!(update.channel, Some(None)) {
            cleared.push("channel");
        }
        if update.published.as_ref().is_some_and(Vec::is_empty) {
            cleared.push("published");
        }
        if matches!(update.sfu_node, Some(None)) {
            cleared.push("sfu_node");
        }
        if exists && !cleared.is_empty() {
            conn.hdel::<_, _, ()>(&key, cleared)
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
        let key = self.keys.session(session);
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

    async fn resume_session(
        &self,
        id: &SessionId,
        presented: &str,
        now_ms: u64,
        takeover: &Takeover,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let Some(before) = self.session(id).await? else {
            return Ok(None);
        };
        self.resume_from(before, presented, now_ms, takeover).await
    }

    async fn rotate_token(
        &self,
        id: &SessionId,
        connection: &ConnectionId,
        next: &TokenHash,
    ) -> Result<bool, StoreError> {
        let rotated: i64 = redis::Script::new(ROTATE_TOKEN)
            .key(self.keys.session(id))
            .arg(connection.as_str())
            .arg(&next.hash)
            .arg(next.expires_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(rotated == 1)
    }

    async fn count_direct_call(
        &self,
        callee: &SessionId,
        caller: Option<&SessionId>,
        window: Duration,
    ) -> Result<u64, StoreError> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let key = match caller {
            Some(caller) => self.keys.call_rate_from(callee, caller),
            None => self.keys.call_rate(callee),
        };
        redis::Script::new(COUNT_IN_WINDOW)
            .key(key)
            .arg(window_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn retire_session(
        &self,
        id: &SessionId,
        connection: &ConnectionId,
    ) -> Result<bool, StoreError> {
        let retired: i64 = redis::Script::new(RETIRE_IF_DROPPED)
            .key(self.keys.session(id))
            .arg(connection.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(retired == 1)
    }

    async fn delete_session(&self, id: &SessionId) -> Result<(), StoreError> {
        self.conn()
            .del::<_, ()>(self.keys.session(id))
            .await
            .map_err(unavailable)
    }

    async fn touch_sessions(&self, ids: &[SessionId]) -> Result<Vec<SessionId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.pexpire(self.keys.session(id), self.session_ttl_ms);
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
        let id: u64 = conn
            .incr(self.keys.sfu_next_id(), 1)
            .await
            .map_err(unavailable)?;
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
            .set(self.keys.sfu(record.id), json)
            .sadd(self.keys.sfus(), id)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(record)
    }

    async fn sfu_servers(&self) -> Result<Vec<SfuServerRecord>, StoreError> {
        let mut conn = self.conn();
        let ids: Vec<u64> = conn.smembers(self.keys.sfus()).await.map_err(unavailable)?;
        let keys = ids.into_iter().map(|id| self.keys.sfu(SfuServerId(id)));
        let mut all: Vec<SfuServerRecord> = records(&mut conn, keys.collect()).await?;
        all.sort_by_key(|s| s.id);
        Ok(all)
    }

    async fn update_sfu_server(&self, record: &SfuServerRecord) -> Result<bool, StoreError> {
        let json = serde_json::to_string(record).map_err(corrupt)?;
        // SET XX: only replace an existing record.
        let updated: Option<String> = redis::cmd("SET")
            .arg(self.keys.sfu(record.id))
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
            .del(self.keys.sfu(id))
            .srem(self.keys.sfus(), id.0)
            .ignore()
            .del(self.keys.sfu_link(id))
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    async fn set_sfu_link(&self, id: SfuServerId, up: bool) -> Result<bool, StoreError> {
        let state = if up { "up" } else { "down" };
        // SET … GET (Redis 6.2+): one atomic swap, so one instance sees each change.
        let before: Option<String> = redis::cmd("SET")
            .arg(self.keys.sfu_link(id))
            .arg(state)
            .arg("GET")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(before.as_deref() != Some(state))
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
        ("connected".to_owned(), flag(session.connected).to_owned()),
    ];
    fields.extend(token_fields(&session.resume.current, ""));
    if let Some(previous) = &session.resume.previous {
        fields.extend(token_fields(previous, PREVIOUS));
    }
    if let Some(user) = &session.user {
        fields.push(("user".to_owned(), user.to_string()));
    }
    if let Some(channel) = &session.channel {
        fields.push(("channel".to_owned(), channel.0.clone()));
    }
    if let Some(grant) = &session.grant {
        let value = serde_json::to_string(grant).map_err(corrupt)?;
        fields.push(("grant".to_owned(), value));
    }
    if !session.published.is_empty() {
        let value = serde_json::to_string(&session.published).map_err(corrupt)?;
        fields.push(("published".to_owned(), value));
    }
    if let Some(node) = session.sfu_node {
        fields.push(("sfu_node".to_owned(), node.0.to_string()));
    }
    for (peer, state) in &session.calls {
        let value = serde_json::to_string(state).map_err(corrupt)?;
        fields.push((format!("{CALL_PREFIX}{peer}"), value));
    }
    Ok(fields)
}

/// Field-name prefix of the previous resume token (`prev_token`, `prev_token_exp`).
const PREVIOUS: &str = "prev_";

/// The hash fields of a resume token: `{prefix}token` and `{prefix}token_exp`.
fn token_fields(token: &TokenHash, prefix: &str) -> [(String, String); 2] {
    [
        (format!("{prefix}token"), token.hash.clone()),
        (format!("{prefix}token_exp"), token.expires_ms.to_string()),
    ]
}

fn parse_token(map: &HashMap<String, String>, prefix: &str) -> Option<TokenHash> {
    let hash = map.get(&format!("{prefix}token"))?;
    let expires_ms = map.get(&format!("{prefix}token_exp"))?.parse().ok()?;
    Some(TokenHash {
        hash: hash.clone(),
        expires_ms,
    })
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
    let grant = map
        .get("grant")
        .map(|json| serde_json::from_str(json).map_err(corrupt))
        .transpose()?;
    let published = map
        .get("published")
        .map(|json| serde_json::from_str(json).map_err(corrupt))
        .transpose()?
        .unwrap_or_default();
    Ok(Some(SessionRecord {
        id: id.clone(),
        instance: InstanceId(instance),
        connection: ConnectionId(map.remove("connection").unwrap_or_default()),
        user,
        state,
        channel: map.remove("channel").map(ChannelId),
        allow_direct_call: map.get("direct").is_some_and(|v| v == "1"),
        resume: ResumeTokens {
            current: parse_token(&map, "").unwrap_or(TokenHash {
                hash: String::new(),
                expires_ms: 0,
            }),
            previous: parse_token(&map, PREVIOUS),
        },
        connected: map.get("connected").is_some_and(|v| v == "1"),
        calls,
        grant,
        published,
        sfu_node: map
            .get("sfu_node")
            .map(|id| id.parse().map(SfuServerId).map_err(corrupt))
            .transpose()?,
    }))
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};

    use super::*;
    use crate::domain::ports::SessionStore;

    /// A throwaway `redis-server` on a free loopback port, killed on drop.
    struct RedisServer {
        child: Child,
        port: u16,
    }

    impl RedisServer {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap();
            let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
            let child = Command::new(binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server must be installed for the Redis store tests");
            Self { child, port }
        }

        async fn store(&self) -> RedisStore {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap();
            for _ in 0..100 {
                if let Ok(store) = RedisStore::connect(
                    client.clone(),
                    KeySpace::default(),
                    Duration::from_secs(60),
                )
                .await
                {
                    return store;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("redis-server did not come up");
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn dropped_session(token: &str) -> SessionRecord {
        let current = TokenHash {
            hash: token::hash(token),
            expires_ms: u64::MAX / 2,
        };
        SessionRecord::dropped_for_test("s", current)
    }

    #[test]
    fn a_sessions_join_grant_survives_the_hash_fields() {
        use crate::domain::ids::ChannelId;
        use crate::domain::join_token::JoinGrant;
        let mut record = dropped_session("t");
        record.user = Some(serde_json::json!({"id": "ada"}));
        record.grant = Some(JoinGrant {
            channel: ChannelId::from("room-1"),
            publish: false,
            subscribe: true,
            receives_own_offer: true,
        });
        let fields: HashMap<String, String> =
            session_fields(&record).unwrap().into_iter().collect();
        let parsed = parse_session(&record.id, fields.clone()).unwrap().unwrap();
        assert_eq!(parsed, record);
        record.grant = None;
        let mut without = fields;
        without.remove("grant");
        assert_eq!(parse_session(&record.id, without).unwrap().unwrap(), record);
    }

    #[test]
    fn a_sessions_published_tracks_survive_the_hash_fields() {
        use crate::domain::model::PublishedTrack;
        let mut record = dropped_session("t");
        record.published = vec![PublishedTrack {
            id: "mic".into(),
            mid: "0".into(),
            kind: "audio".into(),
        }];
        let fields: HashMap<String, String> =
            session_fields(&record).unwrap().into_iter().collect();
        assert_eq!(parse_session(&record.id, fields).unwrap().unwrap(), record);
    }

    fn takeover(connection: &str) -> Takeover {
        Takeover {
            instance: InstanceId::from("j"),
            connection: ConnectionId::from(connection),
            token: TokenHash {
                hash: token::hash(connection),
                expires_ms: u64::MAX / 2,
            },
        }
    }

    #[tokio::test]
    async fn a_rotation_between_the_read_and_the_script_does_not_refuse_a_valid_token() {
        let redis = RedisServer::start();
        let store = redis.store().await;
        let id = SessionId::from("s");
        store.create_session(&dropped_session("t1")).await.unwrap();
        let before = store.session(&id).await.unwrap().unwrap();
        // The rotation lands after the resume's read: t1 moves to `prev_token`.
        let next = TokenHash {
            hash: token::hash("t2"),
            expires_ms: u64::MAX / 2,
        };
        assert!(
            store
                .rotate_token(&id, &ConnectionId::from("c0"), &next)
                .await
                .unwrap()
        );
        let resumed = store
            .resume_from(before, &token::hash("t1"), now_ms(), &takeover("c1"))
            .await
            .unwrap();
        assert!(
            resumed.is_some(),
            "t1 is still valid (as the previous token)"
        );
        let after = store.session(&id).await.unwrap().unwrap();
        assert_eq!(after.connection, ConnectionId::from("c1"));
        // Both tokens were spent by that resume.
        for spent in ["t1", "t2"] {
            let again = store
                .resume_session(&id, &token::hash(spent), now_ms(), &takeover("c2"))
                .await
                .unwrap();
            assert!(again.is_none(), "{spent}");
        }
    }

    #[tokio::test]
    async fn of_two_instances_seeing_one_link_change_exactly_one_changes_it() {
        use crate::domain::ports::SfuRegistry;
        let redis = RedisServer::start();
        let (one, two) = (redis.store().await, redis.store().await);
        let node = SfuServerId(3);
        assert!(one.set_sfu_link(node, true).await.unwrap(), "unknown → up");
        assert!(!two.set_sfu_link(node, true).await.unwrap());
        assert!(two.set_sfu_link(node, false).await.unwrap(), "up → down");
        assert!(!one.set_sfu_link(node, false).await.unwrap());
        // Concurrent swaps: one winner.
        let (a, b) = tokio::join!(one.set_sfu_link(node, true), two.set_sfu_link(node, true));
        assert!(a.unwrap() ^ b.unwrap());
    }

    #[tokio::test]
    async fn the_script_checks_expiry_and_a_retired_session_cannot_be_resumed() {
        let redis = RedisServer::start();
        let store = redis.store().await;
        let id = SessionId::from("s");
        store.create_session(&dropped_session("t1")).await.unwrap();
        let presented = token::hash("t1");
        let before = store.session(&id).await.unwrap().unwrap();
        // Retiring needs the holding connection and a dropped session.
        let other = ConnectionId::from("other");
        assert!(!store.retire_session(&id, &other).await.unwrap());
        let holder = ConnectionId::from("c0");
        assert!(store.retire_session(&id, &holder).await.unwrap());
        assert!(
            store.retire_session(&id, &holder).await.unwrap(),
            "idempotent"
        );
        // The read before the retirement still shows a valid token: the script's own expiry
        // check refuses it.
        let resumed = store
            .resume_from(before, &presented, now_ms(), &takeover("c1"))
            .await
            .unwrap();
        assert!(resumed.is_none(), "a retired session cannot be resumed");
        let resumed = store
            .resume_session(&id, &presented, now_ms(), &takeover("c1"))
            .await
            .unwrap();
        assert!(resumed.is_none());
        // A resumed (connected) session is not retired.
        store.create_session(&dropped_session("t3")).await.unwrap();
        let resumed = store
            .resume_session(&id, &token::hash("t3"), now_ms(), &takeover("c1"))
            .await
            .unwrap();
        assert!(resumed.is_some());
        assert!(!store.retire_session(&id, &holder).await.unwrap());
        assert!(
            !store
                .retire_session(&id, &ConnectionId::from("c1"))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn unplacing_clears_only_the_named_room_and_says_whether_it_did() {
        let redis = RedisServer::start();
        let store = redis.store().await;
        super::super::tests::unplacing_clears_only_the_named_room(&store).await;
    }

    #[tokio::test]
    async fn routes_name_the_instance_and_channel_of_live_sessions_only() {
        let redis = RedisServer::start();
        let store = redis.store().await;
        super::super::tests::routes_name_the_instance_and_channel_of_live_sessions_only(&store)
            .await;
    }

    #[tokio::test]
    async fn spans_are_added_once_per_node_and_go_with_the_placement() {
        let redis = RedisServer::start();
        let store = redis.store().await;
        super::super::tests::spans_are_added_once_per_node_and_go_with_the_placement(&store).await;
        // A member's serving node survives the session hash, and clears.
        let mut session = dropped_session("t");
        session.sfu_node = Some(SfuServerId(7));
        store.create_session(&session).await.unwrap();
        let read = store.session(&session.id).await.unwrap().unwrap();
        assert_eq!(read.sfu_node, Some(SfuServerId(7)));
        let update = SessionUpdate {
            sfu_node: Some(None),
            ..Default::default()
        };
        store.update_session(&session.id, &update).await.unwrap();
        let read = store.session(&session.id).await.unwrap().unwrap();
        assert_eq!(read.sfu_node, None);
    }
}
