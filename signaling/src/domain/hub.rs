//! The sockets this instance holds, by session. The only place that knows which local connection
//! a message must go to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::ids::{ConnectionId, SessionId};

/// What a connection's socket writer receives.
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// A text frame, encoded once and shared by every recipient.
    Text(Arc<str>),
}

#[derive(Debug)]
struct Entry {
    connection: ConnectionId,
    outbox: mpsc::Sender<Outgoing>,
}

/// Local connection registry. The hub holds each connection's only outbox sender, so removing an
/// entry closes the outbox and ends that connection (how kicks and slow consumers are handled).
#[derive(Debug, Default)]
pub struct Hub {
    entries: Mutex<HashMap<SessionId, Entry>>,
}

/// Result of a delivery attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Queued on the socket.
    Queued,
    /// No local socket holds that session.
    NotHere,
    /// The socket's queue was full: the connection was dropped as too slow.
    Dropped,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `connection` the holder of `session`.
    pub fn register(
        &self,
        session: SessionId,
        connection: ConnectionId,
        outbox: mpsc::Sender<Outgoing>,
    ) {
        self.lock().insert(session, Entry { connection, outbox });
    }

    /// Moves `connection`'s entry from `from` to `to` (a resume), closing any other holder of
    /// `to`. Returns false if `connection` does not hold `from`.
    pub fn rekey(&self, from: &SessionId, to: &SessionId, connection: &ConnectionId) -> bool {
        let mut entries = self.lock();
        match entries.get(from) {
            Some(entry) if &entry.connection == connection => {}
            _ => return false,
        }
        let entry = entries.remove(from).expect("checked above");
        entries.insert(to.clone(), entry);
        true
    }

    /// Removes the entry if `connection` still holds `session`.
    pub fn unregister(&self, session: &SessionId, connection: &ConnectionId) {
        let mut entries = self.lock();
        if entries
            .get(session)
            .is_some_and(|e| &e.connection == connection)
        {
            entries.remove(session);
        }
    }

    /// Closes the connection holding `session` unless it is `except`.
    pub fn kick(&self, session: &SessionId, except: &ConnectionId) {
        let mut entries = self.lock();
        if entries
            .get(session)
            .is_some_and(|e| &e.connection != except)
        {
            entries.remove(session);
        }
    }

    /// Closes the connection holding `session`, if any, once its queued frames are sent.
    pub fn close(&self, session: &SessionId) {
        self.lock().remove(session);
    }

    /// Queues a frame for `session`'s socket without waiting.
    pub fn send(&self, session: &SessionId, text: &Arc<str>) -> Delivery {
        let mut entries = self.lock();
        let Some(entry) = entries.get(session) else {
            return Delivery::NotHere;
        };
        match entry.outbox.try_send(Outgoing::Text(text.clone())) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                entries.remove(session);
                Delivery::NotHere
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // A client that cannot keep up would otherwise grow our memory without bound.
                entries.remove(session);
                Delivery::Dropped
            }
        }
    }

    /// Every session held here.
    pub fn sessions(&self) -> Vec<SessionId> {
        self.lock().keys().cloned().collect()
    }

    /// Number of sockets held here.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No sockets are held here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
