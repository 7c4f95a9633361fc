//! Offer/answer/candidate relay and its rules: peers may signal each other only when they share a
//! channel, or within a direct call that both allow and the callee accepted. A caller may trickle
//! candidates before the answer; the callee's address is revealed only once it answers.

use serde_json::Value;

use super::Signaling;
use super::ids::SessionId;
use super::model::{CallState, SessionRecord};
use super::session::Connection;
use crate::protocol::{ErrorCode, ServerMessage, SignalError};

type Reply = Result<Option<ServerMessage>, SignalError>;

impl Signaling {
    pub(super) async fn relay_call(
        &self,
        connection: &Connection,
        to: Option<SessionId>,
        sdp: String,
        is_sfu: bool,
    ) -> Reply {
        let me = self.me(connection).await?;
        if is_sfu {
            return self.sfu_publish(&me, sdp).await;
        }
        let target = self.target(&me, to).await?;
        if !shares_channel(&me, &target) && me.calls.get(&target.id) != Some(&CallState::Accepted) {
            if !(me.allow_direct_call && target.allow_direct_call) {
                return Err(forbidden());
            }
            // Counted per (callee, caller) first, so one caller cannot spend the callee's whole
            // budget and lock everyone else out; then per callee across every caller and
            // instance, so many sessions cannot flood one person with calls.
            let window = self.config.direct_call_window;
            let mine = self
                .store
                .count_direct_call(&target.id, Some(&me.id), window)
                .await?;
            if mine > self.config.direct_calls_per_caller {
                return Err(SignalError::new(
                    ErrorCode::RateLimited,
                    "too many calls to that session; try again later",
                ));
            }
            let offered = self
                .store
                .count_direct_call(&target.id, None, window)
                .await?;
            if offered > self.config.direct_calls_per_callee {
                return Err(SignalError::new(
                    ErrorCode::RateLimited,
                    "that session is receiving too many calls; try again later",
                ));
            }
            self.store
                .set_call(&me.id, &target.id, Some(CallState::Outgoing))
                .await?;
            self.store
                .set_call(&target.id, &me.id, Some(CallState::Incoming))
                .await?;
        }
        let called = ServerMessage::Called {
            from: Some(me.id.clone()),
            sdp,
            is_sfu: false,
        };
        self.deliver(&[&target], &called).await;
        Ok(None)
    }

    pub(super) async fn relay_answer(
        &self,
        connection: &Connection,
        to: Option<SessionId>,
        sdp: String,
        is_sfu: bool,
    ) -> Reply {
        let me = self.me(connection).await?;
        if is_sfu {
            return self.sfu_answer(&me, sdp).await;
        }
        let target = self.target(&me, to).await?;
        if !shares_channel(&me, &target) {
            match me.calls.get(&target.id) {
                Some(CallState::Incoming | CallState::Accepted) => {
                    self.store
                        .set_call(&me.id, &target.id, Some(CallState::Accepted))
                        .await?;
                    self.store
                        .set_call(&target.id, &me.id, Some(CallState::Accepted))
                        .await?;
                }
                _ => return Err(no_pending_call()),
            }
        }
        let answered = ServerMessage::Answered {
            from: Some(me.id.clone()),
            sdp,
            is_sfu: false,
        };
        self.deliver(&[&target], &answered).await;
        Ok(None)
    }

    pub(super) async fn relay_candidate(
        &self,
        connection: &Connection,
        to: Option<SessionId>,
        candidate: Value,
        is_sfu: bool,
    ) -> Reply {
        if !(candidate.is_object() || candidate.is_null()) {
            return Err(SignalError::new(
                ErrorCode::InvalidMessage,
                "`candidate` must be an RTCIceCandidateInit object or null",
            ));
        }
        let me = self.me(connection).await?;
        if is_sfu {
            return self.sfu_candidate(&me).await;
        }
        let target = self.target(&me, to).await?;
        let allowed = shares_channel(&me, &target)
            || matches!(
                me.calls.get(&target.id),
                Some(CallState::Outgoing | CallState::Accepted)
            );
        if !allowed {
            return Err(forbidden());
        }
        let candidated = ServerMessage::Candidated {
            from: Some(me.id.clone()),
            candidate,
            is_sfu: false,
        };
        self.deliver(&[&target], &candidated).await;
        Ok(None)
    }

    pub(super) async fn relay_reject(
        &self,
        connection: &Connection,
        to: SessionId,
        reason: Option<String>,
    ) -> Reply {
        let me = self.me(connection).await?;
        if me.calls.get(&to) != Some(&CallState::Incoming) {
            return Err(no_pending_call());
        }
        self.store.set_call(&me.id, &to, None).await?;
        self.store.set_call(&to, &me.id, None).await?;
        if let Some(caller) = self.store.session(&to).await? {
            let rejected = ServerMessage::Rejected {
                from: me.id.clone(),
                reason: reason.map(|r| r.chars().take(200).collect()),
            };
            self.deliver(&[&caller], &rejected).await;
        }
        Ok(None)
    }

    /// The live target of a peer-to-peer message.
    async fn target(
        &self,
        me: &SessionRecord,
        to: Option<SessionId>,
    ) -> Result<SessionRecord, SignalError> {
        let to = to.ok_or_else(|| {
            SignalError::new(
                ErrorCode::InvalidMessage,
                "`to` is required unless `isSFU` is true",
            )
        })?;
        if to == me.id {
            return Err(SignalError::new(
                ErrorCode::InvalidMessage,
                "cannot signal yourself",
            ));
        }
        self.store
            .session(&to)
            .await?
            .ok_or_else(|| SignalError::new(ErrorCode::SessionNotFound, "no such session"))
    }
}

fn shares_channel(a: &SessionRecord, b: &SessionRecord) -> bool {
    a.channel.is_some() && a.channel == b.channel
}

fn forbidden() -> SignalError {
    SignalError::new(
        ErrorCode::Forbidden,
        "that session is not in your channel and no direct call with it is allowed",
    )
}

fn no_pending_call() -> SignalError {
    SignalError::new(
        ErrorCode::NoPendingCall,
        "no pending call from that session",
    )
}
