//! The per-instance hub: which sockets of which users are connected here, and delivery to them.
//!
//! One task owns the map (user id → sockets) and takes [`Command`]s over a channel, so the
//! hot path takes no lock. Delivery never waits on a socket: each socket has a bounded queue,
//! and a socket whose queue is full is dropped from the hub and told to close (slow consumer,
//! DESIGN.md §4); it reconnects and resumes.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// A server frame (JSON text), shared by every socket it goes to.
pub type Frame = Arc<str>;

/// Why the hub wants a socket closed: a WebSocket close code (RFC 6455 §7.4) and reason.
pub type CloseReason = Option<(u16, &'static str)>;

/// Frames queued per socket before it counts as a slow consumer.
pub const SOCKET_QUEUE: usize = 256;

/// A connected socket as the hub knows it.
pub struct Connection {
    pub id: u64,
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub tx: mpsc::Sender<Frame>,
    /// Set to `Some` to make the socket task close, even while it is stuck writing.
    pub close: watch::Sender<CloseReason>,
}

/// Requests to the hub task.
pub enum Command {
    Register(Connection),
    Unregister {
        id: u64,
        user_id: Uuid,
    },
    /// Send `frame` to every local socket of `users`.
    Deliver {
        users: Vec<Uuid>,
        frame: Arc<str>,
    },
    /// Close every local socket of a session (logout, reuse, revocation).
    CloseSession {
        session_id: Uuid,
    },
}

/// Handle to the hub task; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    tx: mpsc::UnboundedSender<Command>,
    next_id: Arc<AtomicU64>,
}

impl Hub {
    /// Starts the hub task.
    pub fn spawn() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        Self {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Registers a socket and returns its id, the receiving end of its frame queue, and the
    /// close signal it must watch.
    pub fn register(
        &self,
        user_id: Uuid,
        session_id: Uuid,
    ) -> (u64, mpsc::Receiver<Frame>, watch::Receiver<CloseReason>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        let (close, close_rx) = watch::channel(None);
        self.send(Command::Register(Connection {
            id,
            user_id,
            session_id,
            tx,
            close,
        }));
        (id, rx, close_rx)
    }

    /// Sends a command; the hub task only stops when every handle is gone.
    pub fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd);
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Command>) {
    let mut by_user: HashMap<Uuid, Vec<Connection>> = HashMap::new();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Register(c) => by_user.entry(c.user_id).or_default().push(c),
            Command::Unregister { id, user_id } => {
                if let Some(list) = by_user.get_mut(&user_id) {
                    list.retain(|c| c.id != id);
                    if list.is_empty() {
                        by_user.remove(&user_id);
                    }
                }
            }
            Command::Deliver { users, frame } => {
                for u in users {
                    let Some(list) = by_user.get_mut(&u) else {
                        continue;
                    };
                    list.retain(|c| match c.tx.try_send(frame.clone()) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            tracing::info!(conn = c.id, user.id = %c.user_id, "slow consumer; closing socket");
                            // 1008 policy violation: the client did not keep up.
                            let _ = c.close.send(Some((1008, "slow consumer: reconnect and resume")));
                            false
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    });
                    if list.is_empty() {
                        by_user.remove(&u);
                    }
                }
            }
            Command::CloseSession { session_id } => {
                for list in by_user.values_mut() {
                    list.retain(|c| {
                        if c.session_id == session_id {
                            let _ = c.close.send(Some((4001, "session revoked")));
                            false
                        } else {
                            true
                        }
                    });
                }
                by_user.retain(|_, l| !l.is_empty());
            }
        }
    }
}
