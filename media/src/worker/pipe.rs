//! Pipes: how one room spans several workers. The room's home worker (where publishers connect)
//! subscribes a virtual *pipe transport* to every track and, instead of encrypting, hands each
//! forwarded packet (`Bytes`) to the other worker over a bounded lock-free queue. There a virtual
//! publish transport feeds it into that worker's own `sfu_core::Worker`, which fans it out to the
//! local subscribers with their own rewriting, retransmission buffer and keyframe gating.
//! RTCP the remote core addresses to its "publisher" (keyframe requests, NACKs) travels back the
//! same way and enters the home core as if a subscriber sent it, so throttling stays in one place.
//!
//! Cost: one copy of each packet per remote worker (not per subscriber), no lock, and one eventfd
//! wake per drain that queued anything.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sfu_core::{
    Direction, OutPacket, Pt, RoomId, Ssrc, SubscriptionConfig, SubscriptionId, TrackId,
    TransportConfig, TransportId,
};

use super::MediaError;
use super::negotiate::{extension_map, track_config};
use super::thread::Worker;
use super::wishes::Wish;
use crate::sdp::{PublishedEncoding, PublishedTrack, SUBSCRIBE_EXTENSIONS};
use mooyaho_control::VideoQuality;
use mooyaho_net::udp::Wake;

/// Packets queued toward one worker before the pipe drops (and counts) the excess.
pub(crate) const PIPE_DEPTH: usize = 16 * 1024;

/// A message between workers.
#[derive(Debug)]
pub(crate) enum PipeMessage {
    /// A home track now flows through the pipe: publish it on the remote side.
    TrackAdded {
        /// Remote room.
        room: RoomId,
        /// Remote pipe (publish) transport.
        transport: TransportId,
        /// Home pipe (subscribe) transport, where RTCP goes back.
        home_transport: TransportId,
        /// Publishing session.
        session: String,
        /// What it publishes.
        track: PublishedTrack,
    },
    /// A home track ended.
    TrackRemoved {
        /// Remote room.
        room: RoomId,
        /// Publishing session.
        session: String,
        /// The track's SSRC.
        ssrc: u32,
    },
    /// A forwarded RTP (or RTCP, e.g. sender reports) packet for the remote pipe transport.
    Media {
        /// Remote pipe transport.
        transport: TransportId,
        /// RTCP rather than RTP.
        rtcp: bool,
        /// The plain packet.
        packet: Bytes,
    },
    /// Remote side → home: the most any of the remote worker's subscribers wants of a piped
    /// track (dynacast and wishes across workers): the home pipe subscription forwards that
    /// layer, or nothing for `Off`.
    Demand {
        /// Home pipe transport.
        transport: TransportId,
        /// The piped track's SSRC (as in `TrackRemoved`).
        ssrc: u32,
        /// The highest wish among the remote subscribers of that track.
        video: VideoQuality,
    },
    /// RTCP from the remote core back to the home pipe transport.
    Feedback {
        /// Home pipe transport.
        transport: TransportId,
        /// The plain RTCP packet.
        packet: Bytes,
    },
}

/// Where a worker can send pipe messages: another worker's queue and wake-up.
#[derive(Clone, Debug)]
pub(crate) struct PipeSender {
    pub(crate) queue: mpsc::SyncSender<PipeMessage>,
    pub(crate) wake: Arc<Wake>,
}

/// Home side of a pipe: the virtual subscriber standing for a remote worker.
#[derive(Debug)]
pub(super) struct PipeOut {
    room: RoomId,
    worker: usize,
    remote_room: RoomId,
    remote_transport: TransportId,
    /// Home track → (its subscription on the pipe, the session that publishes it, its SSRC).
    tracks: HashMap<TrackId, (SubscriptionId, String, u32)>,
}

/// Remote side of a pipe: the virtual publisher standing for the home worker.
#[derive(Debug)]
pub(super) struct PipeIn {
    worker: usize,
    home_transport: Option<TransportId>,
    /// The demand last sent home per piped track (none sent: the home forwards the top layer).
    demands: HashMap<TrackId, VideoQuality>,
}

/// A worker's pipes, both directions.
#[derive(Debug, Default)]
pub(super) struct Pipes {
    /// Home pipe transports (keys are ids we allocate).
    pub(super) outgoing: HashMap<TransportId, PipeOut>,
    /// Remote pipe transports.
    pub(super) incoming: HashMap<TransportId, PipeIn>,
    /// Workers that were sent something since the last wake-up.
    pending_wakes: HashSet<usize>,
    /// Piped packets are cut from this chunk, so a copy per remote worker costs no allocation
    /// per packet (a fresh chunk every ~50 video packets).
    chunk: BytesMut,
}

/// Size of a pipe chunk.
const PIPE_CHUNK: usize = 64 * 1024;

impl Worker {
    /// Remote side: opens a room mirroring `home`'s and its pipe transport.
    pub(super) fn accept_pipe(
        &mut self,
        now: Instant,
        home: usize,
    ) -> Result<(RoomId, TransportId), MediaError> {
        let room = self.create_room()?;
        let transport = self.core.add_transport(
            now,
            room,
            TransportConfig {
                direction: Direction::Publish,
                extensions: pipe_extensions(),
            },
        )?;
        self.pipes.incoming.insert(
            transport,
            PipeIn {
                worker: home,
                home_transport: None,
                demands: HashMap::new(),
            },
        );
        Ok((room, transport))
    }

    /// Home side: subscribes a pipe transport toward `worker` to every track of `room`.
    pub(super) fn open_pipe(
        &mut self,
        now: Instant,
        room: RoomId,
        worker: usize,
        remote_room: RoomId,
        remote_transport: TransportId,
    ) -> Result<(), MediaError> {
        self.known_room(room)?;
        let published = self.published(room);
        let transport = self.core.add_transport(
            now,
            room,
            TransportConfig {
                direction: Direction::Subscribe,
                extensions: pipe_extensions(),
            },
        )?;
        self.pipes.outgoing.insert(
            transport,
            PipeOut {
                room,
                worker,
                remote_room,
                remote_transport,
                tracks: HashMap::new(),
            },
        );
        for (session, track, sdp) in published {
            self.pipe_track(now, transport, session, track, sdp)?;
        }
        Ok(())
    }

    /// Home side: a track was published in a room with pipes: send it through each.
    pub(super) fn pipe_new_tracks(
        &mut self,
        now: Instant,
        room: RoomId,
        session: &str,
        tracks: &[(TrackId, PublishedTrack)],
    ) {
        let pipes: Vec<TransportId> = self
            .pipes
            .outgoing
            .iter()
            .filter(|(_, p)| p.room == room)
            .map(|(t, _)| *t)
            .collect();
        for pipe in pipes {
            for (track, sdp) in tracks {
                if let Err(e) = self.pipe_track(now, pipe, session.to_owned(), *track, sdp.clone())
                {
                    tracing::warn!(error = %e, "piping a new track failed");
                }
            }
        }
    }

    fn pipe_track(
        &mut self,
        now: Instant,
        pipe: TransportId,
        session: String,
        track: TrackId,
        sdp: PublishedTrack,
    ) -> Result<(), MediaError> {
        let (ssrc, config, mirrored) = mirrored_track(sdp);
        let subscription = self.core.subscribe(now, pipe, track, config)?;
        let out = self.pipes.outgoing.get_mut(&pipe).expect("caller checked");
        out.tracks
            .insert(track, (subscription, session.clone(), ssrc));
        let message = PipeMessage::TrackAdded {
            room: out.remote_room,
            transport: out.remote_transport,
            home_transport: pipe,
            session,
            track: mirrored,
        };
        let worker = out.worker;
        self.pipe_send(worker, message);
        Ok(())
    }

    /// Sends a message to another worker (dropped and counted when its queue is full).
    fn pipe_send(&mut self, worker: usize, message: PipeMessage) {
        let Some(peer) = self.pipe_peers.get(worker) else {
            return;
        };
        let media = matches!(
            message,
            PipeMessage::Media { .. } | PipeMessage::Feedback { .. }
        );
        match peer.queue.try_send(message) {
            Ok(()) => {
                self.counters.pipe_packets += u64::from(media);
                self.pipes.pending_wakes.insert(worker);
            }
            Err(_) => self.counters.pipe_drops += 1,
        }
    }

    /// Wakes every worker that was sent something (once per drain).
    pub(super) fn pipe_wake(&mut self) {
        for worker in self.pipes.pending_wakes.drain() {
            if let Some(peer) = self.pipe_peers.get(worker) {
                peer.wake.wake();
            }
        }
    }

    /// Drain hook: a transmit addressed to a pipe transport goes to the other worker instead of
    /// the network. Returns false if `to` is not a pipe.
    pub(super) fn pipe_transmit(&mut self, to: TransportId, packet: &OutPacket) -> bool {
        let (worker, message) = if let Some(out) = self.pipes.outgoing.get(&to) {
            let chunk = &mut self.pipes.chunk;
            if chunk.capacity() < mooyaho_net::udp::MAX_DATAGRAM {
                *chunk = BytesMut::with_capacity(PIPE_CHUNK);
            }
            packet.write_to(chunk);
            let message = PipeMessage::Media {
                transport: out.remote_transport,
                rtcp: matches!(packet, OutPacket::Rtcp(_)),
                packet: chunk.split().freeze(),
            };
            (out.worker, message)
        } else if let Some(incoming) = self.pipes.incoming.get(&to) {
            let (OutPacket::Rtcp(rtcp), Some(home_transport)) = (packet, incoming.home_transport)
            else {
                return true; // nothing else flows back
            };
            let message = PipeMessage::Feedback {
                transport: home_transport,
                packet: rtcp.clone(),
            };
            (incoming.worker, message)
        } else {
            return false;
        };
        self.pipe_send(worker, message);
        true
    }

    /// Applies a message from another worker.
    pub(super) fn handle_pipe_message(&mut self, now: Instant, message: PipeMessage) {
        match message {
            PipeMessage::Media {
                transport,
                rtcp,
                packet,
            } => {
                if rtcp {
                    self.core.handle_rtcp(now, transport, packet);
                } else {
                    self.core.handle_rtp(now, transport, packet);
                }
            }
            PipeMessage::Feedback { transport, packet } => {
                self.core.handle_rtcp(now, transport, packet);
            }
            PipeMessage::Demand {
                transport,
                ssrc,
                video,
            } => self.apply_pipe_demand(now, transport, ssrc, video),
            PipeMessage::TrackAdded {
                room,
                transport,
                home_transport,
                session,
                track,
            } => {
                if let Some(incoming) = self.pipes.incoming.get_mut(&transport) {
                    incoming.home_transport = Some(home_transport);
                }
                match self.core.publish_relayed_track(
                    now,
                    transport,
                    &session,
                    track_config(&track),
                ) {
                    Ok(id) => {
                        self.track_sdp.insert(id, track);
                        self.renegotiate_others(room, &session);
                    }
                    Err(e) => tracing::warn!(error = %e, "pipe track refused"),
                }
            }
            PipeMessage::TrackRemoved {
                room,
                session,
                ssrc,
            } => {
                let removed = self
                    .core
                    .participant_tracks(room, &session)
                    .iter()
                    .copied()
                    .find(|t| {
                        self.track_sdp
                            .get(t)
                            .is_some_and(|sdp| sdp.top_ssrc() == Some(ssrc))
                    });
                if let Some(track) = removed {
                    let _ = self.core.unpublish_track(track);
                    self.renegotiate_others(room, &session);
                }
            }
        }
    }

    /// Remote side: tells the home worker, per piped track of `room`, the most any local
    /// subscriber wants of it (its publisher's wishes; `High` while nobody here subscribes to
    /// it), when that changed. Called when wishes or subscriptions change.
    pub(super) fn pipe_report_demand(&mut self, room: RoomId) {
        let pipes: Vec<TransportId> = self
            .core
            .room_transports(room)
            .iter()
            .copied()
            .filter(|t| self.pipes.incoming.contains_key(t))
            .collect();
        for pipe in pipes {
            let mut changed = Vec::new();
            for &track in self.core.transport_tracks(pipe) {
                let Some((publisher, _)) = self.core.published(room).find(|(_, t)| *t == track)
                else {
                    continue;
                };
                let Some(ssrc) = self.track_sdp.get(&track).and_then(|sdp| sdp.top_ssrc()) else {
                    continue;
                };
                let mut wanted: Option<VideoQuality> = None;
                for link in self.links.values().filter(|l| l.room == room) {
                    let Some(subscribing) = &link.subscribing else {
                        continue;
                    };
                    if subscribing.subscriptions().any(|(_, t, _)| t == track) {
                        let wish = self.wishes.get(room, &link.session, publisher).video;
                        wanted = Some(wanted.map_or(wish, |w| higher(w, wish)));
                    }
                }
                changed.push((track, ssrc, wanted.unwrap_or(VideoQuality::High)));
            }
            let Some(incoming) = self.pipes.incoming.get_mut(&pipe) else {
                continue;
            };
            let (worker, Some(home_transport)) = (incoming.worker, incoming.home_transport) else {
                continue;
            };
            let live: Vec<TrackId> = changed.iter().map(|(t, _, _)| *t).collect();
            incoming.demands.retain(|t, _| live.contains(t));
            let mut messages = Vec::new();
            for (track, ssrc, video) in changed {
                let sent = incoming.demands.get(&track).copied();
                if sent == Some(video) || (sent.is_none() && video == VideoQuality::High) {
                    continue;
                }
                incoming.demands.insert(track, video);
                messages.push(PipeMessage::Demand {
                    transport: home_transport,
                    ssrc,
                    video,
                });
            }
            for message in messages {
                self.pipe_send(worker, message);
            }
        }
    }

    /// Home side: a remote worker's demand for a piped track sets what the pipe subscription
    /// forwards, as a subscriber's wish would (so dynacast counts only what is watched there).
    fn apply_pipe_demand(
        &mut self,
        now: Instant,
        transport: TransportId,
        ssrc: u32,
        video: VideoQuality,
    ) {
        let Some(out) = self.pipes.outgoing.get(&transport) else {
            return;
        };
        let Some((&track, &(subscription, _, _))) =
            out.tracks.iter().find(|(_, (_, _, s))| *s == ssrc)
        else {
            return;
        };
        let Some(sdp) = self.track_sdp.get(&track) else {
            return;
        };
        if sdp.kind != crate::sdp::Kind::Video {
            return;
        }
        let wish = Wish { video, audio: true };
        let (layer, paused) = wish.for_track(sdp.kind, sdp.encodings.len());
        if self
            .core
            .set_preferred_layer(now, subscription, layer)
            .is_ok()
        {
            let _ = self.core.set_paused(now, subscription, paused);
        }
    }

    /// Core event hook (home side): a piped track ended; tell the remote worker.
    pub(super) fn pipe_subscription_closed(
        &mut self,
        transport: TransportId,
        subscription: SubscriptionId,
    ) {
        let Some(out) = self.pipes.outgoing.get_mut(&transport) else {
            return;
        };
        let Some(track) = out
            .tracks
            .iter()
            .find(|(_, (s, _, _))| *s == subscription)
            .map(|(t, _)| *t)
        else {
            return;
        };
        let (_, session, ssrc) = out.tracks.remove(&track).expect("found above");
        let message = PipeMessage::TrackRemoved {
            room: out.remote_room,
            session,
            ssrc,
        };
        let worker = out.worker;
        self.pipe_send(worker, message);
    }

    /// Forgets the pipes of a closed room, given its transports.
    pub(super) fn drop_pipes(&mut self, room: RoomId, transports: &[TransportId]) {
        self.pipes.outgoing.retain(|_, p| p.room != room);
        for transport in transports {
            self.pipes.incoming.remove(transport);
        }
    }
}

/// The larger of two wishes (`High` > `Medium` > `Low` > `Off`).
fn higher(a: VideoQuality, b: VideoQuality) -> VideoQuality {
    let rank = |q| match q {
        VideoQuality::Off => 0,
        VideoQuality::Low => 1,
        VideoQuality::Medium => 2,
        VideoQuality::High => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// How a track crosses a pipe or a relay link: the subscription that forwards it there and the
/// track as the other side publishes it. The other side sees the publisher's own SSRC (its top
/// layer's; one of our choosing when a simulcast layer's is learned from packets) and payload
/// type; our rewriting keeps the sequence continuous across publisher restarts and layers, as
/// for any subscriber. A simulcast track crosses as one stream, its highest layer.
pub(super) fn mirrored_track(sdp: PublishedTrack) -> (u32, SubscriptionConfig, PublishedTrack) {
    let ssrc = sdp.top_ssrc().unwrap_or_else(rand::random);
    let config = SubscriptionConfig {
        ssrc: Ssrc(ssrc),
        pt: Pt(sdp.codec.pt),
        rtx: None,
        mid: None,
    };
    let mirrored = PublishedTrack {
        encodings: vec![PublishedEncoding {
            rid: None,
            ssrc: Some(ssrc),
            rtx_ssrc: None,
        }],
        ..sdp
    };
    (ssrc, config, mirrored)
}

/// Both ends of a pipe or relay link parse and write the same header extensions.
pub(super) fn pipe_extensions() -> sfu_core::rtp::ExtensionMap {
    extension_map(SUBSCRIBE_EXTENSIONS.iter().map(|(id, uri)| (*id, *uri)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_higher_wish_wins_across_a_worker_s_subscribers() {
        use VideoQuality::*;
        let all = [Off, Low, Medium, High];
        for (i, &a) in all.iter().enumerate() {
            for (j, &b) in all.iter().enumerate() {
                assert_eq!(higher(a, b), all[i.max(j)], "{a:?} {b:?}");
            }
        }
    }
}
