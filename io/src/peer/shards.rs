//! A client's shards: driver tasks with a core `Client` each, so that one client's RPC is
//! not one core's serial work (docs/design.md, "Peer clients over several cores").
//!
//! Requests and maps go round-robin over the shards: each shard's core keeps its own
//! lookup cache, balancer and dead-peer list, which costs at most one lookup and one
//! refused connect per shard and name. Whatever must live in one place stays on the home
//! shard (the first): the Link's announce schedules and user lookups, put and get,
//! subscriptions, watches, request-stream plans, and requests to a watched name (the
//! watched set lives in the home shard's core, and only it answers from that set).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use grenache_core::peer::{Client, ConfigError};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use super::config::PeerConfig;
use super::driver::{Command, Driver};
use super::http_client::HttpPool;
use crate::runtime::Runtime;
use crate::tls::TlsClient;

/// Every shard of one client, and how calls are spread over them.
pub(crate) struct Shards<R: Runtime> {
    /// Never empty; the first is the home shard.
    shards: Box<[Shard<R>]>,
    /// The round-robin cursor of calls.
    next: AtomicUsize,
    watched: Arc<Watched>,
}

/// One driver: its command queue, and the driver itself until its task is spawned.
pub(crate) struct Shard<R: Runtime> {
    commands: async_channel::Sender<Command>,
    started: AtomicBool,
    idle: Mutex<Option<Driver<R>>>,
}

impl<R: Runtime> Shards<R> {
    /// `config.shards` drivers (at least one), sharing one HTTP connection pool so that
    /// `max_connections_per_peer` bounds the client, not each shard.
    ///
    /// # Errors
    /// [`ConfigError::GrapeUrl`] when the Grape URL is not `http(s)://` or `ws(s)://`.
    pub(crate) fn new(
        config: &PeerConfig,
        tls: Option<&Arc<TlsClient>>,
    ) -> Result<Self, ConfigError> {
        // The core is sans-IO and takes a seed; drawing one from the OS is the adapter's job.
        let seed = config
            .seed
            .unwrap_or_else(|| ChaCha8Rng::from_os_rng().get_seed());
        // The home shard takes the seed itself, so a one-shard client replays as before.
        let mut more_seeds = ChaCha8Rng::from_seed(seed);
        let http = Arc::new(
            HttpPool::new(
                config.max_connections_per_peer,
                config.max_pooled_peers,
                config.pool_idle_timeout,
            )
            .with_tls(tls.cloned())
            .with_busy_poll(config.busy_poll),
        );
        let shards = (0..config.shards.max(1))
            .map(|i| {
                let seed = if i == 0 { seed } else { more_seeds.random() };
                let client = Client::new(config.client.clone(), seed)?;
                let (commands, queue) = async_channel::bounded(config.command_queue.max(1));
                let driver = Driver::new(client, queue, config, tls.cloned(), Arc::clone(&http));
                Ok(Shard {
                    commands,
                    started: AtomicBool::new(false),
                    idle: Mutex::new(Some(driver)),
                })
            })
            .collect::<Result<Box<[_]>, ConfigError>>()?;
        Ok(Shards {
            shards,
            next: AtomicUsize::new(0),
            watched: Arc::default(),
        })
    }

    /// The shard that keeps the client's state (schedules, subscriptions, watches).
    pub(crate) fn home(&self) -> &Shard<R> {
        &self.shards[0]
    }

    /// The shard for the next request or map to `name`: the home shard for a watched
    /// name, else the next in turn.
    pub(crate) fn for_call(&self, name: &str) -> &Shard<R> {
        let n = self.shards.len();
        if n == 1 || self.watched.contains(name) {
            return self.home();
        }
        &self.shards[self.next.fetch_add(1, Ordering::Relaxed) % n]
    }

    /// Every shard whose driver has started (one that has not has done nothing).
    pub(crate) fn started(&self) -> impl Iterator<Item = &Shard<R>> {
        self.shards
            .iter()
            .filter(|s| s.started.load(Ordering::Acquire))
    }

    /// Commands queued on all shards.
    pub(crate) fn queued(&self) -> usize {
        self.shards.iter().map(|s| s.commands.len()).sum()
    }

    /// Marks `name` watched until the guard is dropped, so its calls stay home.
    pub(crate) fn watching(&self, name: &str) -> WatchedName {
        self.watched.hold(name)
    }
}

impl<R: Runtime> Shard<R> {
    /// The driver's queue, spawning the driver if this is its first command.
    ///
    /// # Panics
    /// On tokio, outside a runtime (a tokio future awaited by another executor).
    pub(crate) fn commands(&self) -> &async_channel::Sender<Command> {
        if !self.started.load(Ordering::Acquire) {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(driver) = idle {
                R::spawn_detached(driver.run());
                self.started.store(true, Ordering::Release);
            }
        }
        &self.commands
    }

    /// The driver's queue, without starting it (for `Drop`, which may run anywhere).
    pub(crate) fn queue(&self) -> &async_channel::Sender<Command> {
        &self.commands
    }
}

/// The names with a live [`Watch`](super::Watch), counted (watches of one name share
/// the core's watch).
#[derive(Debug, Default)]
struct Watched {
    names: Mutex<BTreeMap<String, usize>>,
    /// Watches alive, so a client with none skips the lock on every call.
    live: AtomicUsize,
}

impl Watched {
    fn hold(self: &Arc<Self>, name: &str) -> WatchedName {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        *names.entry(name.to_owned()).or_default() += 1;
        self.live.fetch_add(1, Ordering::AcqRel);
        WatchedName {
            watched: Arc::clone(self),
            name: name.to_owned(),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.live.load(Ordering::Acquire) > 0
            && self
                .names
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(name)
    }
}

/// Keeps a name's calls on the home shard while a watch of it lives.
#[derive(Debug)]
pub(crate) struct WatchedName {
    watched: Arc<Watched>,
    name: String,
}

impl Drop for WatchedName {
    fn drop(&mut self) {
        let mut names = self
            .watched
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = names.get_mut(&self.name) {
            *count -= 1;
            if *count == 0 {
                names.remove(&self.name);
            }
        }
        self.watched.live.fetch_sub(1, Ordering::AcqRel);
    }
}
