//! The connections' copy of the core's lookup cache: a hot lookup is answered on its own
//! connection's task, with no hand-off to the driver and back (a queue, a wake-up of
//! another thread, a reply channel), which was most of its cost (docs/benchmarks.md).
//!
//! One map behind a reader-writer lock (see docs/design.md, "Hot lookups"): connections
//! only read it; the driver writes it as the core changes its cache
//! ([`LookupMirror`]), so a name an announce dropped is gone before the announce is
//! answered. What the core would have counted for a hit (metrics, the dashboard's recent
//! lookups) is gathered in atomics and handed to it by the driver before it serves anything
//! that reads them ([`HotLookups::report`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use grenache_core::api::{Grape, LookupMirror};

/// How much later than the last recorded hit a hit must be to be recorded: the dashboard
/// shows ages in milliseconds, and a hot name's every hit writing its time would keep its
/// entry's cache line bouncing between the cores.
const HIT_TIME_STEP: Duration = Duration::from_micros(100);

/// The copy of the core's lookup cache, and what its hits owe the core.
#[derive(Debug)]
pub(crate) struct HotLookups {
    entries: RwLock<HashMap<Box<[u8]>, Arc<Entry>>>,
    /// Hits served since the driver last reported them.
    hits: AtomicU64,
    /// Entries hit since the driver last reported them, each once.
    touched: Mutex<Vec<Arc<Entry>>>,
    /// Where hit times count from.
    epoch: Instant,
}

/// One cached reply.
#[derive(Debug)]
struct Entry {
    name: Box<[u8]>,
    /// The reply is stale from here (`None`: never).
    expires: Option<Instant>,
    body: Bytes,
    /// When the last recorded hit was, in nanoseconds from [`HotLookups::epoch`].
    last_hit: AtomicU64,
    /// In [`HotLookups::touched`] already.
    queued: AtomicBool,
}

impl HotLookups {
    /// An empty copy; hit times count from `epoch`.
    pub(crate) fn new(epoch: Instant) -> Self {
        HotLookups {
            entries: RwLock::new(HashMap::new()),
            hits: AtomicU64::new(0),
            touched: Mutex::new(Vec::new()),
            epoch,
        }
    }

    /// The core's side: what it calls to keep this copy (give it to
    /// [`Grape::mirror_lookup_cache`]).
    pub(crate) fn writer(self: &Arc<Self>) -> Box<dyn LookupMirror> {
        Box::new(Writer(Arc::clone(self)))
    }

    /// The cached reply body to a lookup of `name` at `now`, counted as a hit; `None` when
    /// the core must answer it.
    pub(crate) fn answer(&self, now: Instant, name: &[u8]) -> Option<Bytes> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(name)?;
        if entry.expires.is_some_and(|at| now >= at) {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        let at = nanos(now.saturating_duration_since(self.epoch));
        let last = entry.last_hit.load(Ordering::Relaxed);
        if at >= last.saturating_add(nanos(HIT_TIME_STEP)) {
            entry.last_hit.fetch_max(at, Ordering::Relaxed);
        }
        // SeqCst with the driver's reset: a hit it does not see queues the entry again.
        if !entry.queued.load(Ordering::SeqCst) && !entry.queued.swap(true, Ordering::SeqCst) {
            self.touched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::clone(entry));
        }
        Some(entry.body.clone())
    }

    /// Hands the core what the hits served here since the last call owe it: their count
    /// and the names' last hit times. The driver calls it before it serves a request, so
    /// whatever reads them (`/metrics`, `/status`) sees every hit answered before.
    pub(crate) fn report(&self, grape: &mut Grape) {
        let hits = self.hits.swap(0, Ordering::Relaxed);
        if hits > 0 {
            grape.mirror_hits(hits);
        }
        let touched =
            std::mem::take(&mut *self.touched.lock().unwrap_or_else(PoisonError::into_inner));
        for entry in touched {
            entry.queued.store(false, Ordering::SeqCst);
            let since = Duration::from_nanos(entry.last_hit.load(Ordering::Relaxed));
            grape.mirror_hit_at(self.epoch + since, &entry.name);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What the core holds to keep a [`HotLookups`] a copy of its cache.
#[derive(Debug)]
struct Writer(Arc<HotLookups>);

impl LookupMirror for Writer {
    fn put(&mut self, name: &[u8], expires: Option<Instant>, body: &[u8]) {
        let entry = Arc::new(Entry {
            name: name.into(),
            expires,
            body: Bytes::copy_from_slice(body),
            last_hit: AtomicU64::new(0),
            queued: AtomicBool::new(false),
        });
        let mut entries = self
            .0
            .entries
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        entries.insert(name.into(), entry);
    }

    fn remove(&mut self, name: &[u8]) {
        let mut entries = self
            .0
            .entries
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        entries.remove(name);
    }
}
