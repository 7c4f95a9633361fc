//! Test clients negotiated directly against a [`mooyaho_media::Node`] (the control plane's
//! role), built on the shared `webrtc`-crate peer of `mooyaho-test-support`: a publisher sending
//! Opus + VP8 and subscribers that record every RTP payload they receive.

#![allow(dead_code, unreachable_pub)]

pub mod relay;

use std::time::Duration;

use mooyaho_media::{Node, RoomKey};
use mooyaho_test_support::peer::{LocalMedia, Media, Peer};

/// What a subscriber got: the payloads of every remote stream (in a test room there is one
/// publisher) and the stream id of each remote track.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub audio: Vec<Vec<u8>>,
    pub video: Vec<Vec<u8>>,
    pub stream_ids: Vec<String>,
}

/// A publishing client.
pub struct Publisher {
    peer: Peer,
    media: LocalMedia,
}

impl Publisher {
    /// Offers Opus + VP8 to the node and applies its answer.
    pub async fn connect(node: &Node, room: RoomKey, session: &str) -> anyhow::Result<Self> {
        Self::connect_with(node, room, session, |sdp| sdp).await
    }

    /// Like [`Self::connect`], passing each SDP through `edit` on its way (offer to the node,
    /// answer to the client) — how tests tamper with signaling or insert a relay.
    pub async fn connect_with(
        node: &Node,
        room: RoomKey,
        session: &str,
        edit: impl Fn(String) -> String,
    ) -> anyhow::Result<Self> {
        let peer = Peer::new().await?;
        let (media, offer) = LocalMedia::offer(&peer).await?;
        let answer = edit(node.publish(room, session, &edit(offer)).await?);
        peer.apply_answer(answer).await?;
        Ok(Self { peer, media })
    }

    pub async fn wait_connected(&self) -> anyhow::Result<()> {
        self.peer.wait_connected("publisher").await
    }

    /// Sends the payloads as RTP, one audio and one video packet per `interval`.
    pub async fn send(
        &self,
        audio: &[Vec<u8>],
        video: &[Vec<u8>],
        interval: Duration,
    ) -> anyhow::Result<()> {
        self.media.send_from(0, audio, video, interval).await
    }

    pub async fn close(self) {
        self.peer.close().await;
    }
}

/// A subscribing client.
pub struct Subscriber {
    peer: Peer,
    pub name: String,
}

impl Subscriber {
    /// Takes the node's subscribe offer and answers it.
    pub async fn connect(node: &Node, room: RoomKey, session: &str) -> anyhow::Result<Self> {
        Self::connect_with(node, room, session, |sdp| sdp).await
    }

    /// Like [`Self::connect`], passing each SDP through `edit`.
    pub async fn connect_with(
        node: &Node,
        room: RoomKey,
        session: &str,
        edit: impl Fn(String) -> String,
    ) -> anyhow::Result<Self> {
        let peer = Peer::new().await?;
        let offer = node
            .subscribe_offer(room, session)
            .await?
            .ok_or_else(|| anyhow::anyhow!("nothing to subscribe to"))?;
        let answer = peer.answer(edit(offer)).await?;
        node.subscribe_answer(room, session, &edit(answer)).await?;
        Ok(Self {
            peer,
            name: session.to_owned(),
        })
    }

    pub async fn wait_connected(&self) -> anyhow::Result<()> {
        self.peer.wait_connected(&self.name).await
    }

    /// Waits until at least this many packets of each kind arrived (or the timeout).
    pub async fn wait_for(
        &self,
        audio: usize,
        video: usize,
        within: Duration,
    ) -> anyhow::Result<Received> {
        let enough = |streams: &std::collections::HashMap<String, Media>| {
            let all = merged(streams);
            all.audio.len() >= audio && all.video.len() >= video
        };
        match self.peer.wait_for(within, enough).await {
            Ok(_) => Ok(self.received().await),
            Err(streams) => {
                let all = merged(&streams);
                anyhow::bail!(
                    "{}: got {} audio / {} video packets, wanted {audio} / {video}",
                    self.name,
                    all.audio.len(),
                    all.video.len()
                )
            }
        }
    }

    pub async fn received(&self) -> Received {
        let all = merged(&self.peer.received().await);
        Received {
            audio: all.audio,
            video: all.video,
            stream_ids: self.peer.track_streams().await,
        }
    }

    pub async fn close(self) {
        self.peer.close().await;
    }
}

/// The payloads of every stream, streams in id order.
fn merged(streams: &std::collections::HashMap<String, Media>) -> Media {
    let mut ids: Vec<&String> = streams.keys().collect();
    ids.sort();
    let mut all = Media::default();
    for id in ids {
        all.audio.extend_from_slice(&streams[id].audio);
        all.video.extend_from_slice(&streams[id].video);
    }
    all
}
