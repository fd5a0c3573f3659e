//! Background tasks owned by a running service: spawned through [`Tasks`], so each one can
//! be told to stop (a [`CancellationToken`]) and the service can wait for all of them when it
//! stops, instead of leaving them to die with the runtime.

use std::{future::Future, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The background tasks of one service instance; cheap to clone (all clones share them).
#[derive(Clone, Default)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    /// No tasks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `work` on the tokio runtime; it is dropped at its next `.await` once
    /// [`Tasks::stop`] runs. For tasks with nothing to finish (timers, watchers).
    pub fn spawn<F>(&self, name: &'static str, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => tracing::debug!(task = name, "stopped"),
                _ = work => {}
            }
        });
    }

    /// Spawns `work`, which watches [`Tasks::stopping`] itself, for tasks that must finish
    /// something before they end (the event publisher sends what is queued).
    pub fn spawn_graceful<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(work);
    }

    /// Resolves once the service is stopping.
    pub fn stopping(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }

    /// A token cancelled when the service stops, which its holder may also cancel earlier
    /// (one task stopped ahead of the others, without stopping them).
    pub fn child_token(&self) -> CancellationToken {
        self.token.child_token()
    }

    /// Whether the service is stopping.
    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Tells every task to stop and waits up to `grace` for all of them to end; returns
    /// whether they all did.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    /// How many tasks are still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}
