//! The bus of a single-instance deployment: the only inbox is our own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::domain::ids::InstanceId;
use crate::domain::ports::{Bus, Envelope, StoreError};

/// Delivers envelopes between instances living in one process.
#[derive(Debug, Default)]
pub struct InProcessBus {
    inboxes: Mutex<HashMap<InstanceId, mpsc::Sender<Envelope>>>,
}

impl InProcessBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, to: &InstanceId, envelope: &Envelope) -> Result<(), StoreError> {
        let inbox = self
            .inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(to)
            .cloned();
        // An instance that is gone holds no sessions: dropping its mail is correct.
        if let Some(inbox) = inbox {
            let _ = inbox.send(envelope.clone()).await;
        }
        Ok(())
    }

    fn subscribe(self: Arc<Self>, instance: InstanceId, sink: mpsc::Sender<Envelope>) {
        self.inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(instance, sink);
    }
}
