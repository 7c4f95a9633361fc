//! Subscribers' wishes: how much of each publisher's media a subscriber wants (`setSubscription`),
//! kept per worker and applied to the sfu-core subscriptions that deliver that publisher's
//! tracks, now and whenever a new one starts.

use std::collections::HashMap;
use std::time::Instant;

use mooyaho_control::VideoQuality;
use sfu_core::{Direction, RoomId, SubscriptionId, TrackId};

use super::MediaError;
use super::thread::Worker;
use crate::sdp::Kind;

/// Most publishers one subscriber may hold a wish about in a room. Each wish is a few dozen
/// bytes on the node; the cap keeps a client that names made-up sessions from growing it.
pub(super) const MAX_WISHES_PER_SUBSCRIBER: usize = 256;

/// What a subscriber wants of one publisher. The default (no wish) is everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Wish {
    pub(super) video: VideoQuality,
    pub(super) audio: bool,
}

impl Default for Wish {
    fn default() -> Self {
        Self {
            video: VideoQuality::High,
            audio: true,
        }
    }
}

impl Wish {
    /// What a subscription to a track of `kind` with `layers` encodings should do: its layer
    /// (0 = lowest) and whether it is paused.
    pub(super) fn for_track(self, kind: Kind, layers: usize) -> (u8, bool) {
        let top = layers.saturating_sub(1).min(usize::from(u8::MAX)) as u8;
        match kind {
            Kind::Audio => (top, !self.audio),
            Kind::Video => match self.video {
                VideoQuality::High => (top, false),
                VideoQuality::Medium => (top.min(1), false),
                VideoQuality::Low => (0, false),
                VideoQuality::Off => (top, true),
            },
        }
    }
}

/// Wishes by (room, subscribing session), then by publishing session. Keys are
/// control-plane-chosen session ids (signaling checks both are members of the channel).
#[derive(Debug, Default)]
pub(super) struct Wishes {
    by_subscriber: HashMap<(RoomId, String), HashMap<String, Wish>>,
}

impl Wishes {
    /// The wish of `subscriber` about `publisher`'s media.
    pub(super) fn get(&self, room: RoomId, subscriber: &str, publisher: &str) -> Wish {
        self.by_subscriber
            .get(&(room, subscriber.to_owned()))
            .and_then(|wishes| wishes.get(publisher))
            .copied()
            .unwrap_or_default()
    }

    /// Records a wish; `audio: None` keeps the previous audio wish.
    fn set(
        &mut self,
        room: RoomId,
        subscriber: &str,
        publisher: &str,
        video: VideoQuality,
        audio: Option<bool>,
    ) -> Result<(), MediaError> {
        let wishes = self
            .by_subscriber
            .entry((room, subscriber.to_owned()))
            .or_default();
        if !wishes.contains_key(publisher) && wishes.len() >= MAX_WISHES_PER_SUBSCRIBER {
            return Err(MediaError::TooManyWishes(MAX_WISHES_PER_SUBSCRIBER));
        }
        let wish = wishes.entry(publisher.to_owned()).or_default();
        wish.video = video;
        if let Some(audio) = audio {
            wish.audio = audio;
        }
        Ok(())
    }

    /// `session` left `room`: its wishes, and the others' wishes about it, go.
    pub(super) fn forget_session(&mut self, room: RoomId, session: &str) {
        self.by_subscriber.remove(&(room, session.to_owned()));
        for ((r, _), wishes) in &mut self.by_subscriber {
            if *r == room {
                wishes.remove(session);
            }
        }
    }

    /// `room` closed.
    pub(super) fn forget_room(&mut self, room: RoomId) {
        self.by_subscriber.retain(|(r, _), _| *r != room);
    }

    /// Wishes held (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_subscriber.values().map(HashMap::len).sum()
    }
}

impl Worker {
    /// Records `session`'s wish about `publisher`'s media in `room` and applies it to the
    /// subscriptions that deliver that publisher's tracks.
    pub(super) fn set_subscription(
        &mut self,
        now: Instant,
        room: RoomId,
        session: &str,
        publisher: &str,
        video: VideoQuality,
        audio: Option<bool>,
    ) -> Result<(), MediaError> {
        self.known_room(room)?;
        if session == publisher {
            return Err(MediaError::OwnMedia);
        }
        self.wishes.set(room, session, publisher, video, audio)?;
        let Some(transport) = self
            .core
            .participant_transport(room, session, Direction::Subscribe)
        else {
            return Ok(()); // applied when its subscriptions start
        };
        let Some(subscribing) = self
            .links
            .get(&transport)
            .and_then(|l| l.subscribing.as_ref())
        else {
            return Ok(());
        };
        let live: Vec<(SubscriptionId, TrackId, String)> = subscribing
            .subscriptions()
            .filter(|(_, _, p)| *p == publisher)
            .map(|(s, t, p)| (s, t, p.to_owned()))
            .collect();
        for (subscription, track, publisher) in live {
            self.apply_wish(now, room, session, &publisher, subscription, track);
        }
        self.pipe_report_demand(room);
        Ok(())
    }

    /// Sets one subscription's layer and pause state from the subscriber's wish.
    pub(super) fn apply_wish(
        &mut self,
        now: Instant,
        room: RoomId,
        subscriber: &str,
        publisher: &str,
        subscription: SubscriptionId,
        track: TrackId,
    ) {
        let wish = self.wishes.get(room, subscriber, publisher);
        let Some(sdp) = self.track_sdp.get(&track) else {
            return;
        };
        let (layer, paused) = wish.for_track(sdp.kind, sdp.encodings.len());
        // The subscription may have closed with its track since; nothing to apply then.
        if self
            .core
            .set_preferred_layer(now, subscription, layer)
            .is_ok()
        {
            let _ = self.core.set_paused(now, subscription, paused);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualities_map_to_layers_of_one_two_and_three_layer_tracks() {
        let wish = |video| Wish { video, audio: true };
        // (quality, layers) → (layer, paused)
        let rows = [
            (VideoQuality::High, 3, (2, false)),
            (VideoQuality::Medium, 3, (1, false)),
            (VideoQuality::Low, 3, (0, false)),
            (VideoQuality::Off, 3, (2, true)),
            (VideoQuality::High, 2, (1, false)),
            (VideoQuality::Medium, 2, (1, false)),
            (VideoQuality::Low, 2, (0, false)),
            (VideoQuality::High, 1, (0, false)),
            (VideoQuality::Low, 1, (0, false)),
            (VideoQuality::Off, 1, (0, true)),
        ];
        for (quality, layers, expected) in rows {
            assert_eq!(
                wish(quality).for_track(Kind::Video, layers),
                expected,
                "{quality:?} of {layers}"
            );
        }
        let muted = Wish {
            video: VideoQuality::High,
            audio: false,
        };
        assert_eq!(muted.for_track(Kind::Audio, 1), (0, true));
        assert_eq!(
            wish(VideoQuality::Off).for_track(Kind::Audio, 1),
            (0, false)
        );
    }

    #[test]
    fn wishes_are_capped_per_subscriber_and_forgotten_with_either_session() {
        let mut room = sfu_core::Worker::new(sfu_core::Config::default());
        let (a, b) = (room.create_room().unwrap(), room.create_room().unwrap());
        let mut wishes = Wishes::default();
        for i in 0..MAX_WISHES_PER_SUBSCRIBER {
            wishes
                .set(a, "viewer", &format!("p{i}"), VideoQuality::Low, None)
                .unwrap();
        }
        assert!(matches!(
            wishes.set(a, "viewer", "one-more", VideoQuality::Low, None),
            Err(MediaError::TooManyWishes(_))
        ));
        // Changing an existing wish is always allowed; audio stays unless given.
        wishes
            .set(a, "viewer", "p0", VideoQuality::Off, Some(false))
            .unwrap();
        wishes
            .set(a, "viewer", "p0", VideoQuality::Medium, None)
            .unwrap();
        assert_eq!(
            wishes.get(a, "viewer", "p0"),
            Wish {
                video: VideoQuality::Medium,
                audio: false
            }
        );
        assert_eq!(wishes.get(a, "viewer", "nobody"), Wish::default());
        wishes
            .set(b, "other", "p1", VideoQuality::Low, None)
            .unwrap();
        wishes.forget_session(a, "p1");
        assert_eq!(wishes.len(), MAX_WISHES_PER_SUBSCRIBER - 1 + 1);
        wishes.forget_session(a, "viewer");
        assert_eq!(wishes.len(), 1, "the other room's wish stays");
        wishes.forget_room(b);
        assert_eq!(wishes.len(), 0);
    }
}
