//! The per-instance hub: which sockets of which users are connected here, and delivery to them.
//!
//! One task owns the map (user id → sockets) and takes [`Command`]s over a channel, so the
//! hot path takes no lock. Delivery never waits on a socket: each socket has a bounded queue,
//! and a socket whose queue is full is dropped from the hub and told to close (slow consumer,
//! DESIGN.md §4); it reconnects and resumes. A frame's JSON text is built once per event and
//! shared by every socket it goes to.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
};

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// A server frame on its way to sockets.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The JSON text, shared.
    pub text: Arc<str>,
    /// For a stored change: its conversation and revision, which each socket uses to deliver
    /// changes in order, once, and to fetch any it missed.
    pub at: Option<(Uuid, i64)>,
    /// When the change was committed (Unix microseconds), for `fanout_delay_seconds`.
    pub committed_us: Option<i64>,
}

/// What the hub hands a socket task.
#[derive(Debug, Clone)]
pub enum Outbound {
    Frame(Frame),
    /// Events may have been missed (the LISTEN connection was re-established): catch up
    /// every conversation from the database.
    Resync,
    /// The user's membership of this conversation ended: drop its typing state and stop
    /// following it.
    Left(Uuid),
}

/// Why the hub wants a socket closed: a WebSocket close code (RFC 6455 §7.4) and reason.
pub type CloseReason = Option<(u16, &'static str)>;

/// Close code and reason sent to a slow consumer (1008, policy violation).
pub const SLOW_CONSUMER: (u16, &str) = (1008, "slow consumer: reconnect and resume");
/// Close code and reason when the session ended (application range 4000–4999).
pub const SESSION_REVOKED: (u16, &str) = (4001, "session revoked");
/// Close code and reason when the access token behind the socket expired without a fresh
/// one presented on it (`{type:"auth"}`): get a new ticket and reconnect.
pub const TOKEN_EXPIRED: (u16, &str) = (4003, "access token expired");
/// Close code and reason on shutdown (1001, going away): reconnect elsewhere.
pub const GOING_AWAY: (u16, &str) = (1001, "server going away: reconnect and resume");

/// Frames queued per socket before it counts as a slow consumer.
pub const SOCKET_QUEUE: usize = 256;

/// A connected socket as the hub knows it.
pub struct Connection {
    pub id: u64,
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub tx: mpsc::Sender<Outbound>,
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
        frame: Frame,
    },
    /// Close every local socket of a session (logout, reuse, revocation).
    CloseSession {
        session_id: Uuid,
    },
    /// Tell every local socket of `users` that their membership of `conversation_id` ended.
    MembershipEnded {
        conversation_id: Uuid,
        users: Vec<Uuid>,
    },
    /// Tell every socket to catch up from the database.
    Resync,
    /// Close every socket with 1001 (graceful shutdown).
    Shutdown,
}

/// Handle to the hub task; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    tx: mpsc::UnboundedSender<Command>,
    next_id: Arc<AtomicU64>,
    sockets: Arc<AtomicUsize>,
}

impl Hub {
    /// Starts the hub task (it stops with the service's other tasks).
    pub fn spawn(tasks: &crate::platform::tasks::Tasks) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let sockets = Arc::new(AtomicUsize::new(0));
        tasks.spawn("hub", run(rx, sockets.clone()));
        Self {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
            sockets,
        }
    }

    /// Registers a socket and returns its id, the receiving end of its queue, and the close
    /// signal it must watch.
    pub fn register(
        &self,
        user_id: Uuid,
        session_id: Uuid,
    ) -> (u64, mpsc::Receiver<Outbound>, watch::Receiver<CloseReason>) {
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

    /// Sockets registered on this instance right now.
    pub fn sockets(&self) -> usize {
        self.sockets.load(Ordering::Relaxed)
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Command>, count: Arc<AtomicUsize>) {
    let mut by_user: HashMap<Uuid, Vec<Connection>> = HashMap::new();
    // Sockets registered: kept as a running count (delivery touches only its users' lists).
    let mut n: usize = 0;
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Register(c) => {
                by_user.entry(c.user_id).or_default().push(c);
                n += 1;
            }
            Command::Unregister { id, user_id } => {
                if let Some(list) = by_user.get_mut(&user_id) {
                    let before = list.len();
                    list.retain(|c| c.id != id);
                    n -= before - list.len();
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
                    let before = list.len();
                    list.retain(|c| offer(c, Outbound::Frame(frame.clone())));
                    n -= before - list.len();
                    if list.is_empty() {
                        by_user.remove(&u);
                    }
                }
            }
            Command::CloseSession { session_id } => {
                for list in by_user.values_mut() {
                    list.retain(|c| {
                        if c.session_id == session_id {
                            let _ = c.close.send(Some(SESSION_REVOKED));
                            false
                        } else {
                            true
                        }
                    });
                }
                by_user.retain(|_, l| !l.is_empty());
                n = by_user.values().map(Vec::len).sum();
            }
            Command::MembershipEnded {
                conversation_id,
                users,
            } => {
                for u in users {
                    if let Some(list) = by_user.get_mut(&u) {
                        list.retain(|c| offer(c, Outbound::Left(conversation_id)));
                    }
                }
                by_user.retain(|_, l| !l.is_empty());
                n = by_user.values().map(Vec::len).sum();
            }
            Command::Resync => {
                for list in by_user.values_mut() {
                    list.retain(|c| offer(c, Outbound::Resync));
                }
                by_user.retain(|_, l| !l.is_empty());
                n = by_user.values().map(Vec::len).sum();
            }
            Command::Shutdown => {
                for c in by_user.values().flatten() {
                    let _ = c.close.send(Some(GOING_AWAY));
                }
                by_user.clear();
                n = 0;
            }
        }
        count.store(n, Ordering::Relaxed);
        crate::platform::metrics::set_sockets(n);
    }
}

/// Queues `out` for one socket; a full queue closes it as a slow consumer. Returns whether
/// the socket stays registered.
fn offer(c: &Connection, out: Outbound) -> bool {
    match c.tx.try_send(out) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::info!(conn = c.id, user.id = %c.user_id, "slow consumer; closing socket");
            let _ = c.close.send(Some(SLOW_CONSUMER));
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}
