//! Offer/answer/candidate relay and its rules: peers may signal each other only when they share a
//! channel, or within a direct call that both allow and the callee accepted. A caller may trickle
//! candidates before the answer; the callee's address is revealed only once it answers.

use serde_json::Value;

use super::Signaling;
use super::error::{ErrorCode, SignalError};
use super::events::DomainEvent;
use super::ids::SessionId;
use super::model::{CallState, SessionRecord};
use super::session::Connection;

impl Signaling {
    /// `call`: an offer to a channel peer, or a direct call to a session outside the channel
    /// (both must allow direct calls; rate-limited per caller and per callee).
    pub async fn relay_call(
        &self,
        connection: &Connection,
        to: Option<SessionId>,
        sdp: String,
    ) -> Result<(), SignalError> {
        let me = self.me(connection).await?;
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
        let offered = DomainEvent::CallOffered {
            from: me.id.clone(),
            to: target.id.clone(),
            sdp,
        };
        self.emit(offered, &[&target]).await;
        Ok(())
    }

    /// `answer`: an answer to a channel peer, or accepting a pending direct call.
    pub async fn relay_answer(
        &self,
        connection: &Connection,
        to: Option<SessionId>,
        sdp: String,
    ) -> Result<(), SignalError> {
        let me = self.me(connection).await?;
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
        let answered = DomainEvent::CallAnswered {
            from: me.id.clone(),
            to: target.id.clone(),
            sdp,
        };
        self.emit(answered, &[&target]).await;
        Ok(())
    }

    /// `candidate`: a trickled ICE candidate to a channel peer or a direct-call peer (a caller
    /// may trickle before the answer; the callee only once it answered).
    pub async fn relay_candidate(
        &self,
        connection: &Connection,
        to: Option<SessionId>,
        candidate: Value,
    ) -> Result<(), SignalError> {
        check_candidate(&candidate)?;
        let me = self.me(connection).await?;
        let target = self.target(&me, to).await?;
        let allowed = shares_channel(&me, &target)
            || matches!(
                me.calls.get(&target.id),
                Some(CallState::Outgoing | CallState::Accepted)
            );
        if !allowed {
            return Err(forbidden());
        }
        let sent = DomainEvent::CandidateSent {
            from: me.id.clone(),
            to: target.id.clone(),
            candidate,
        };
        self.emit(sent, &[&target]).await;
        Ok(())
    }

    /// `reject`: the callee declines a pending direct call; the caller hears of it.
    pub async fn relay_reject(
        &self,
        connection: &Connection,
        to: SessionId,
        reason: Option<String>,
    ) -> Result<(), SignalError> {
        let me = self.me(connection).await?;
        if me.calls.get(&to) != Some(&CallState::Incoming) {
            return Err(no_pending_call());
        }
        self.store.set_call(&me.id, &to, None).await?;
        self.store.set_call(&to, &me.id, None).await?;
        if let Some(caller) = self.store.session(&to).await? {
            let rejected = DomainEvent::CallRejected {
                from: me.id.clone(),
                to: caller.id.clone(),
                reason: reason.map(|r| r.chars().take(200).collect()),
            };
            self.emit(rejected, &[&caller]).await;
        }
        Ok(())
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

/// A trickled candidate is an `RTCIceCandidateInit` object or null (end of candidates).
pub(super) fn check_candidate(candidate: &Value) -> Result<(), SignalError> {
    if candidate.is_object() || candidate.is_null() {
        Ok(())
    } else {
        Err(SignalError::new(
            ErrorCode::InvalidMessage,
            "`candidate` must be an RTCIceCandidateInit object or null",
        ))
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
