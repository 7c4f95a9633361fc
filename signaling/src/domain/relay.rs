//! Offer/answer/candidate relay and its rules: peers may signal each other only when they share a
//! channel, or within a direct call that both allow and the callee accepted. A caller may trickle
//! candidates before the answer; the callee's address is revealed only once it answers.

use std::sync::Arc;

use serde_json::Value;

use super::error::{ErrorCode, SignalError};
use super::events::DomainEvent;
use super::ids::SessionId;
use super::model::{CallState, SessionRecord};
use super::session::Connection;
use super::shared::Shared;

/// Offer/answer/candidate relay between peers.
pub struct Relay {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

impl Relay {
    /// Records a direct call's state on both sides: `mine` on `me`'s session toward `peer`,
    /// `theirs` on `peer`'s toward `me` (`None` ends it).
    async fn set_call(
        &self,
        me: &SessionId,
        peer: &SessionId,
        mine: Option<CallState>,
        theirs: Option<CallState>,
    ) -> Result<(), SignalError> {
        self.shared.store.set_call(me, peer, mine).await?;
        self.shared.store.set_call(peer, me, theirs).await?;
        Ok(())
    }

    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// `call`: an offer to a channel peer, or a direct call to a session outside the channel
    /// (both must allow direct calls; rate-limited per caller and per callee).
    pub async fn call(
        &self,
        connection: &Connection,
        to: Option<SessionId>,
        sdp: String,
    ) -> Result<(), SignalError> {
        let (me, target) = self.parties(connection, to).await?;
        if !shares_channel(&me, &target) && me.calls.get(&target.id) != Some(&CallState::Accepted) {
            if !(me.allow_direct_call && target.allow_direct_call) {
                return Err(forbidden());
            }
            // Counted per (callee, caller) first, so one caller cannot spend the callee's whole
            // budget and lock everyone else out; then per callee across every caller and
            // instance, so many sessions cannot flood one person with calls.
            let config = &self.shared.config;
            let (per_caller, per_callee) = (
                config.direct_calls_per_caller,
                config.direct_calls_per_callee,
            );
            let too_many = "too many calls to that session; try again later";
            self.count_call(&target.id, Some(&me.id), per_caller, too_many)
                .await?;
            let flooded = "that session is receiving too many calls; try again later";
            self.count_call(&target.id, None, per_callee, flooded)
                .await?;
            let (mine, theirs) = (CallState::Outgoing, CallState::Incoming);
            self.set_call(&me.id, &target.id, Some(mine), Some(theirs))
                .await?;
        }
        let offered = DomainEvent::CallOffered {
            from: me.id.clone(),
            to: target.id.clone(),
            sdp,
        };
        self.shared.emit(offered, &[&target]).await;
        Ok(())
    }

    /// `answer`: an answer to a channel peer, or accepting a pending direct call.
    pub async fn answer(
        &self,
        connection: &Connection,
        to: Option<SessionId>,
        sdp: String,
    ) -> Result<(), SignalError> {
        let (me, target) = self.parties(connection, to).await?;
        if !shares_channel(&me, &target) {
            match me.calls.get(&target.id) {
                Some(CallState::Incoming | CallState::Accepted) => {
                    let accepted = Some(CallState::Accepted);
                    self.set_call(&me.id, &target.id, accepted, accepted)
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
        self.shared.emit(answered, &[&target]).await;
        Ok(())
    }

    /// `candidate`: a trickled ICE candidate to a channel peer or a direct-call peer (a caller
    /// may trickle before the answer; the callee only once it answered).
    pub async fn candidate(
        &self,
        connection: &Connection,
        to: Option<SessionId>,
        candidate: Value,
    ) -> Result<(), SignalError> {
        check_candidate(&candidate)?;
        let (me, target) = self.parties(connection, to).await?;
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
        self.shared.emit(sent, &[&target]).await;
        Ok(())
    }

    /// `reject`: the callee declines a pending direct call; the caller hears of it.
    pub async fn reject(
        &self,
        connection: &Connection,
        to: SessionId,
        reason: Option<String>,
    ) -> Result<(), SignalError> {
        let me = self.shared.me(connection).await?;
        if me.calls.get(&to) != Some(&CallState::Incoming) {
            return Err(no_pending_call());
        }
        self.set_call(&me.id, &to, None, None).await?;
        if let Some(caller) = self.shared.store.session(&to).await? {
            let rejected = DomainEvent::CallRejected {
                from: me.id.clone(),
                to: caller.id.clone(),
                reason: reason.map(|r| r.chars().take(200).collect()),
            };
            self.shared.emit(rejected, &[&caller]).await;
        }
        Ok(())
    }

    /// Counts a direct call to `callee` (from `caller`, or from anyone with `None`) in the
    /// current window, and refuses it with `refusal` when that makes more than `limit`.
    async fn count_call(
        &self,
        callee: &SessionId,
        caller: Option<&SessionId>,
        limit: u64,
        refusal: &'static str,
    ) -> Result<(), SignalError> {
        let window = self.shared.config.direct_call_window;
        let calls = self
            .shared
            .store
            .count_direct_call(callee, caller, window)
            .await?;
        if calls > limit {
            return Err(SignalError::new(ErrorCode::RateLimited, refusal));
        }
        Ok(())
    }

    /// The sender of a peer-to-peer message (the session `connection` holds) and its live
    /// target.
    async fn parties(
        &self,
        connection: &Connection,
        to: Option<SessionId>,
    ) -> Result<(SessionRecord, SessionRecord), SignalError> {
        let me = self.shared.me(connection).await?;
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
        let target = self
            .shared
            .store
            .session(&to)
            .await?
            .ok_or_else(|| SignalError::new(ErrorCode::SessionNotFound, "no such session"))?;
        Ok((me, target))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::domain::events::DomainEvent;
    use crate::domain::ids::SessionId;
    use crate::domain::tests::{audience, drain, integrated, kinds, recorded_service, two_members};

    #[tokio::test]
    async fn channel_peers_relay_offer_answer_and_candidate_as_events_to_the_target() {
        let (signaling, _, recorder) = recorded_service();
        let (_, (alice, mut alice_queue), (bob, mut bob_queue)) =
            two_members(&signaling, &recorder, false).await;

        let (a, b) = (alice.session.clone(), bob.session.clone());
        signaling
            .relay()
            .call(&alice, Some(b.clone()), "offer".into())
            .await
            .unwrap();
        signaling
            .relay()
            .candidate(&alice, Some(b.clone()), json!({"candidate": "c"}))
            .await
            .unwrap();
        signaling
            .relay()
            .answer(&bob, Some(a.clone()), "answer".into())
            .await
            .unwrap();
        let seen = recorder.take();
        assert_eq!(
            seen.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
            [
                DomainEvent::CallOffered {
                    from: a.clone(),
                    to: b.clone(),
                    sdp: "offer".into()
                },
                DomainEvent::CandidateSent {
                    from: a.clone(),
                    to: b.clone(),
                    candidate: json!({"candidate": "c"})
                },
                DomainEvent::CallAnswered {
                    from: b.clone(),
                    to: a.clone(),
                    sdp: "answer".into()
                },
            ]
        );
        assert_eq!(audience(&seen[0]), vec![b.clone()]);
        assert_eq!(audience(&seen[1]), vec![b.clone()]);
        assert_eq!(audience(&seen[2]), vec![a.clone()]);
        assert_eq!(
            drain(&mut bob_queue),
            [
                format!(r#"{{"type":"called","from":"{a}","sdp":"offer","isSFU":false}}"#),
                format!(
                    r#"{{"type":"candidated","from":"{a}","candidate":{{"candidate":"c"}},"isSFU":false}}"#
                ),
            ]
        );
        assert_eq!(
            drain(&mut alice_queue),
            [format!(
                r#"{{"type":"answered","from":"{b}","sdp":"answer","isSFU":false}}"#
            )]
        );

        // A refused relay emits nothing.
        let stranger = SessionId::from("nobody");
        assert!(
            signaling
                .relay()
                .call(&alice, Some(stranger), "offer".into())
                .await
                .is_err()
        );
        assert!(recorder.take().is_empty());
    }

    #[tokio::test]
    async fn a_rejected_direct_call_emits_call_rejected_to_the_caller_as_rejected() {
        let (signaling, _, recorder) = recorded_service();
        let (alice, mut alice_queue) = integrated(&signaling, "alice", true).await;
        let (bob, mut bob_queue) = integrated(&signaling, "bob", true).await;
        recorder.take();
        signaling
            .relay()
            .call(&alice, Some(bob.session.clone()), "offer".into())
            .await
            .unwrap();
        assert_eq!(drain(&mut bob_queue).len(), 1);
        signaling
            .relay()
            .reject(&bob, alice.session.clone(), Some("busy".into()))
            .await
            .unwrap();
        let seen = recorder.take();
        assert_eq!(kinds(&seen), ["call_offered", "call_rejected"]);
        assert_eq!(audience(&seen[1]), vec![alice.session.clone()]);
        assert_eq!(
            drain(&mut alice_queue),
            [format!(
                r#"{{"type":"rejected","from":"{}","reason":"busy"}}"#,
                bob.session
            )]
        );
    }
}
