//! The wire side of domain events: [`WireDelivery`] renders each event to its WebSocket message
//! (once) and queues it on the sockets of its audience, locally through the [`Hub`] or, for
//! sessions held by other instances, through the [`Bus`] (one envelope per instance). It also
//! serves this instance's bus inbox.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::domain::events::{Emitted, EventSubscriber, Recipient};
use crate::domain::hub::{Delivery, Hub};
use crate::domain::ids::{InstanceId, SessionId};
use crate::domain::ports::{Bus, Envelope};
use crate::metrics::Metrics;
use crate::protocol::ServerMessage;

/// Depth of the bus inbox.
const INBOX_DEPTH: usize = 4096;

/// Delivers rendered events to sockets, wherever they are held.
pub struct WireDelivery {
    instance: InstanceId,
    hub: Arc<Hub>,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for WireDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireDelivery")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl WireDelivery {
    /// Starts serving `instance`'s bus inbox (frames for sockets held here, resume kicks).
    pub fn start(
        instance: InstanceId,
        hub: Arc<Hub>,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let delivery = Arc::new(Self {
            instance: instance.clone(),
            hub,
            bus: bus.clone(),
            metrics,
        });
        let (inbox_tx, mut inbox) = mpsc::channel(INBOX_DEPTH);
        bus.subscribe(instance, inbox_tx);
        let weak = Arc::downgrade(&delivery);
        tokio::spawn(async move {
            while let Some(envelope) = inbox.recv().await {
                let Some(delivery) = weak.upgrade() else {
                    break;
                };
                delivery.receive(envelope);
            }
        });
        delivery
    }

    /// Handles an envelope from the bus.
    fn receive(&self, envelope: Envelope) {
        match envelope {
            Envelope::Deliver { to, text } => {
                let text: Arc<str> = text.into();
                for session in &to {
                    self.push_local(session, &text);
                }
            }
            Envelope::Kick { session, except } => self.hub.kick(&session, &except),
        }
    }

    fn push_local(&self, session: &SessionId, text: &Arc<str>) {
        if self.hub.send(session, text) == Delivery::Dropped {
            tracing::info!(%session, "slow WebSocket consumer dropped");
            self.metrics.ws_slow_consumers.inc();
        }
    }

    /// Sends `text` to each recipient's socket: local ones directly, the others with one bus
    /// envelope per instance.
    async fn deliver(&self, audience: &[Recipient], text: Arc<str>) {
        let mut remote: HashMap<&InstanceId, Vec<SessionId>> = HashMap::new();
        for recipient in audience {
            if recipient.instance == self.instance {
                self.push_local(&recipient.session, &text);
            } else {
                remote
                    .entry(&recipient.instance)
                    .or_default()
                    .push(recipient.session.clone());
            }
        }
        for (instance, to) in remote {
            let envelope = Envelope::Deliver {
                to,
                text: text.to_string(),
            };
            self.metrics.bus_published.inc();
            // Losing a message to a broken bus is logged; the sender's request already succeeded
            // as far as this instance can tell, like any network send.
            if let Err(e) = self.bus.publish(instance, &envelope).await {
                tracing::warn!(error = %e, %instance, "bus publish failed");
            }
        }
    }
}

#[async_trait]
impl EventSubscriber for WireDelivery {
    async fn on_event(&self, emitted: &Emitted) {
        if emitted.audience.is_empty() {
            return;
        }
        let Some(message) = ServerMessage::render(&emitted.event) else {
            return;
        };
        // Encoded once for every recipient.
        let text: Arc<str> = message.encode(None).into();
        self.deliver(&emitted.audience, text).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::InProcessBus;
    use crate::domain::events::DomainEvent;
    use crate::domain::hub::Outgoing;
    use crate::domain::ids::{ChannelId, ConnectionId};

    fn texts(queue: &mut mpsc::Receiver<Outgoing>) -> Vec<String> {
        let mut texts = Vec::new();
        while let Ok(Outgoing::Text(text)) = queue.try_recv() {
            texts.push(text.to_string());
        }
        texts
    }

    #[tokio::test]
    async fn an_event_reaches_local_and_remote_sockets_once_as_its_message() {
        let bus: Arc<dyn Bus> = Arc::new(InProcessBus::new());
        let metrics = Arc::new(Metrics::new());
        let here_hub = Arc::new(Hub::default());
        let there_hub = Arc::new(Hub::default());
        let here = WireDelivery::start(
            InstanceId::from("here"),
            here_hub.clone(),
            bus.clone(),
            metrics.clone(),
        );
        let _there = WireDelivery::start(
            InstanceId::from("there"),
            there_hub.clone(),
            bus.clone(),
            metrics.clone(),
        );
        let (outbox, mut alice) = mpsc::channel(8);
        here_hub.register(SessionId::from("alice"), ConnectionId::from("a"), outbox);
        let (outbox, mut bob) = mpsc::channel(8);
        there_hub.register(SessionId::from("bob"), ConnectionId::from("b"), outbox);
        let audience = vec![
            Recipient {
                session: SessionId::from("alice"),
                instance: InstanceId::from("here"),
            },
            Recipient {
                session: SessionId::from("bob"),
                instance: InstanceId::from("there"),
            },
        ];
        let left = DomainEvent::MemberLeft {
            channel: ChannelId::from("c"),
            session: SessionId::from("carol"),
            user: None,
        };
        here.on_event(&Emitted {
            event: left,
            audience,
        })
        .await;
        let expected = r#"{"type":"left","sessionId":"carol"}"#;
        assert_eq!(texts(&mut alice), [expected]);
        // The bus hop is a task away.
        let bob_texts = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                let got = texts(&mut bob);
                if !got.is_empty() {
                    return got;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("bob's frame crossed the bus");
        assert_eq!(bob_texts, [expected]);
        assert_eq!(metrics.bus_published.get(), 1, "one envelope per instance");
    }

    #[tokio::test]
    async fn events_without_a_message_or_audience_send_nothing() {
        let hub = Arc::new(Hub::default());
        let delivery = WireDelivery::start(
            InstanceId::from("here"),
            hub.clone(),
            Arc::new(InProcessBus::new()),
            Arc::new(Metrics::new()),
        );
        let (outbox, mut alice) = mpsc::channel(8);
        hub.register(SessionId::from("alice"), ConnectionId::from("a"), outbox);
        let alice_here = Recipient {
            session: SessionId::from("alice"),
            instance: InstanceId::from("here"),
        };
        delivery
            .on_event(&Emitted {
                event: DomainEvent::SessionStarted {
                    session: SessionId::from("alice"),
                },
                audience: vec![alice_here],
            })
            .await;
        delivery
            .on_event(&Emitted {
                event: DomainEvent::ChannelDeleted {
                    channel: ChannelId::from("c"),
                },
                audience: Vec::new(),
            })
            .await;
        assert!(texts(&mut alice).is_empty());
    }
}
