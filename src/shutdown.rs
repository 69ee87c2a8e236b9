//! The daemon's stop signal. [`Stopper`] (held by `app`) starts the drain once; every task that
//! must stop holds a [`Shutdown`], a cheap clone that says whether the drain has started and can
//! be awaited until it does. Started is final: it never goes back.

use tokio::sync::watch;

/// Starts the shutdown (`app` holds it; SIGTERM and tests call [`Stopper::stop`]).
#[derive(Debug)]
pub struct Stopper(watch::Sender<bool>);

/// A task's view of the shutdown.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Stopper {
    /// A signal not yet given, and the first view of it.
    pub fn new() -> (Stopper, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Stopper(tx), Shutdown(rx))
    }

    /// Starts the shutdown (idempotent).
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Another view of the signal.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// True once the shutdown has started.
    pub fn is_started(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the shutdown starts (at once when it has). A [`Stopper`] dropped without
    /// stopping counts as a stop: nothing could start the drain any more (a daemon handle a test
    /// dropped).
    pub async fn started(&mut self) {
        // An error is the dropped stopper: stopped as well.
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_started_shutdown_is_seen_by_every_view_and_stays_started() {
        let (stopper, mut shutdown) = Stopper::new();
        let mut later = stopper.subscribe();
        assert!(!shutdown.is_started());
        stopper.stop();
        shutdown.started().await;
        later.started().await;
        stopper.stop();
        assert!(shutdown.is_started() && later.is_started());
        // A view taken after the stop sees it at once.
        stopper.subscribe().started().await;
    }

    #[tokio::test]
    async fn a_dropped_stopper_counts_as_a_stop() {
        let (stopper, mut shutdown) = Stopper::new();
        drop(stopper);
        shutdown.started().await;
    }
}
