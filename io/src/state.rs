//! Saving the node's state for a warm restart (Grape `--state`): every few minutes and at
//! shutdown, atomically. The format is the core's ([`grenache_core::dht::state`]); this
//! module only decides when to save and writes the file.
//!
//! It only uses std: a file write is short and rare, so the driver does it in place.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use grenache_core::api::Grape;

/// How often a running Grape saves its state. A crash loses at most this much of the
/// table's changes, which a restarted node relearns within a lookup or two.
pub(crate) const SAVE_EVERY: Duration = Duration::from_secs(5 * 60);

/// When and where the driver saves the node's state; does nothing without a file.
///
/// The write is synchronous, on the driver's task: the file is small (at most about 38 KB,
/// usually a few hundred bytes) and written every few minutes, so a short block costs less
/// than handing the bytes to another thread and tracking it to the end of shutdown.
#[derive(Debug)]
pub(crate) struct StateSaver {
    path: Option<PathBuf>,
    next: Instant,
}

impl StateSaver {
    /// A saver writing to `path` (none: never), first after [`SAVE_EVERY`] from `now`.
    pub(crate) fn new(path: Option<PathBuf>, now: Instant) -> Self {
        Self {
            path,
            next: now + SAVE_EVERY,
        }
    }

    /// The earlier of `deadline` (the core's next timer) and the next periodic save.
    pub(crate) fn wake_at(&self, deadline: Option<Instant>) -> Option<Instant> {
        match (&self.path, deadline) {
            (None, deadline) => deadline,
            (Some(_), None) => Some(self.next),
            (Some(_), Some(at)) => Some(at.min(self.next)),
        }
    }

    /// Saves if the periodic save is due at `now`.
    pub(crate) fn tick(&mut self, now: Instant, grape: &Grape) {
        if now >= self.next {
            self.save(now, grape);
        }
    }

    /// Saves now (at shutdown, say) and starts a new period. A failure is logged, never
    /// fatal: the Grape serves on and tries again next period.
    pub(crate) fn save(&mut self, now: Instant, grape: &Grape) {
        let Some(path) = &self.path else {
            return;
        };
        self.next = now + SAVE_EVERY;
        let snapshot = grape.node().snapshot(now);
        match write_atomically(path, &snapshot.encode()) {
            Ok(()) => tracing::debug!(
                path = %path.display(),
                nodes = snapshot.nodes().len(),
                "state saved"
            ),
            Err(err) => tracing::warn!(
                path = %path.display(),
                %err,
                "cannot save the state file (--state); will try again"
            ),
        }
    }
}

/// Replaces `path` with `bytes` so that a crash at any moment leaves either the old file or
/// the new one, never a mix: write a temporary file beside it, flush it to disk, rename it
/// over `path`, then flush the directory so the rename itself survives a power cut.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = name.to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(err) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    sync_dir(path)
}

/// Flushes the directory holding `path` (its entries, so a rename in it is durable).
#[cfg(unix)]
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Elsewhere a directory cannot be opened as a file; the rename is what we can do.
#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use grenache_core::api::GrapeConfig;
    use grenache_core::dht::state::Snapshot;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("grenache-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a temp dir");
        dir
    }

    #[test]
    fn write_replaces_the_file_and_leaves_no_temp_file() {
        let dir = dir("replace");
        let path = dir.join("grape.state");
        fs::write(&path, b"old").expect("write");

        let result = write_atomically(&path, b"new");

        assert!(result.is_ok(), "{result:?}");
        assert_eq!(fs::read(&path).ok().as_deref(), Some(&b"new"[..]));
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("read dir")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names, ["grape.state"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn write_into_a_missing_directory_fails_cleanly() {
        let dir = dir("missing");
        let path = dir.join("no-such-dir").join("grape.state");

        let result = write_atomically(&path, b"x");

        assert!(result.is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn saver_saves_when_due_and_on_demand() {
        let dir = dir("saver");
        let path = dir.join("grape.state");
        let t = Instant::now();
        let grape = Grape::new(GrapeConfig::default(), [9; 32], t);
        let mut saver = StateSaver::new(Some(path.clone()), t);

        saver.tick(t + SAVE_EVERY / 2, &grape);
        let early = path.exists();
        saver.tick(t + SAVE_EVERY, &grape);
        let saved = fs::read(&path).ok();

        assert!(!early, "saved before it was due");
        let snapshot = saved.map(|bytes| Snapshot::decode(&bytes));
        assert_eq!(
            snapshot.map(|s| s.map(|s| s.id())),
            Some(Ok(grape.node().id()))
        );
        assert_eq!(saver.wake_at(None), Some(t + SAVE_EVERY * 2));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn saver_without_a_file_never_wakes_or_writes() {
        let t = Instant::now();
        let grape = Grape::new(GrapeConfig::default(), [9; 32], t);
        let mut saver = StateSaver::new(None, t);

        saver.save(t, &grape);

        assert_eq!(saver.wake_at(None), None);
        assert_eq!(saver.wake_at(Some(t)), Some(t));
    }
}
