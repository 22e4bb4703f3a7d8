//! The components of `kdfs local`, each on a tokio runtime of its own.
//!
//! A component's runtime threads (workers and blocking pool) carry its name, which is how
//! [`super::logs`] tells one datanode's lines from another's; it also keeps the components
//! as apart as separate processes would be. Each runtime lives on a thread that reports
//! once, on one channel, when its component's `run` returned (or panicked), so the
//! cluster notices a component that stops on its own and can stop the others in order.

use std::future::Future;
use std::time::Duration;

use anyhow::anyhow;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a stopped component's leftover blocking tasks may run before its runtime is
/// dropped under them (its `run` has already drained what matters).
const RUNTIME_GRACE: Duration = Duration::from_secs(5);

/// The components started so far, by index in start order.
pub(crate) struct Components {
    names: Vec<String>,
    tokens: Vec<CancellationToken>,
    exited: Vec<bool>,
    exits_tx: mpsc::UnboundedSender<Exit>,
    exits: mpsc::UnboundedReceiver<Exit>,
}

/// A component's index and what its `run` returned.
type Exit = (usize, anyhow::Result<()>);

impl Components {
    pub(crate) fn new() -> Self {
        let (exits_tx, exits) = mpsc::unbounded_channel();
        Self {
            names: Vec::new(),
            tokens: Vec::new(),
            exited: Vec::new(),
            exits_tx,
            exits,
        }
    }

    /// Starts `name` on its own runtime: `run(token)` builds its future there (so
    /// listeners are registered with that runtime's reactor). Returns its index.
    pub(crate) fn start<F, Fut>(&mut self, name: &str, run: F) -> anyhow::Result<usize>
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let index = self.names.len();
        let token = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(name)
            .build()
            .map_err(|e| anyhow!("cannot start the {name}'s runtime: {e}"))?;
        let exits = self.exits_tx.clone();
        let child = token.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(run(child))
                }))
                .unwrap_or_else(|_| Err(anyhow!("panicked")));
                runtime.shutdown_timeout(RUNTIME_GRACE);
                let _ = exits.send((index, outcome));
            })
            .map_err(|e| anyhow!("cannot start the {name}'s thread: {e}"))?;
        self.names.push(name.to_owned());
        self.tokens.push(token);
        self.exited.push(false);
        Ok(index)
    }

    pub(crate) fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// Waits for the next component to stop on its own; returns its index and why.
    pub(crate) async fn next_exit(&mut self) -> (usize, anyhow::Error) {
        let (i, outcome) = self.recv().await;
        let why = outcome
            .err()
            .unwrap_or_else(|| anyhow!("stopped although nothing asked it to"));
        (i, why)
    }

    /// Asks `indices` to stop and waits until each has. Returns the errors of every
    /// component that stopped meanwhile, each named.
    pub(crate) async fn stop(&mut self, indices: impl IntoIterator<Item = usize>) -> Vec<String> {
        let indices: Vec<usize> = indices.into_iter().collect();
        for &i in &indices {
            self.tokens[i].cancel();
        }
        let mut errors = Vec::new();
        while indices.iter().any(|&i| !self.exited[i]) {
            if let (i, Err(e)) = self.recv().await {
                errors.push(format!(
                    "the {} stopped with an error: {e:#}",
                    self.names[i]
                ));
            }
        }
        errors
    }

    async fn recv(&mut self) -> Exit {
        let (i, outcome) = self
            .exits
            .recv()
            .await
            .expect("a sender lives in self, so the channel stays open");
        self.exited[i] = true;
        (i, outcome)
    }
}
