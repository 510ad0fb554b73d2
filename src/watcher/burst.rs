//! Bursts of saves become one change per service: a change is due after a
//! quiet period, or at the latest a fixed delay after its first hit, so a
//! steady stream of writes (a generator, a `git checkout`) still rebuilds.
//! The rule per service is the router's [`Debounce`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Hit;
use crate::router::debounce::Debounce;

/// Quiet time that ends a burst of saves: editors write a file (or a temp
/// file renamed over it) within a few ms, a checkout writes back to back.
/// Kept short, since a save that comes later still wins: it abandons the
/// build the earlier one started.
pub const QUIET: Duration = Duration::from_millis(50);
/// A steady stream of writes still rebuilds this long after it began.
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// A coalesced change: the last file touched (the one the last state comes
/// from), every file touched (for `sync`), and how many hits the burst held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    pub service: String,
    pub file: PathBuf,
    pub files: BTreeSet<PathBuf>,
    pub hits: usize,
}

impl Burst {
    /// Folds a later change of the same service into this one: its files
    /// join, its trigger is the latest.
    pub fn absorb(&mut self, later: Burst) {
        self.file = later.file;
        self.files.extend(later.files);
        self.hits += later.hits;
    }
}

#[derive(Debug)]
struct Pending {
    /// The router's rule, one per service: quiet time, capped delay.
    due: Debounce,
    file: PathBuf,
    files: BTreeSet<PathBuf>,
    hits: usize,
}

/// Pure debounce state, one pending burst per service; the caller owns the clock.
#[derive(Debug)]
pub struct Coalescer {
    quiet: Duration,
    max_delay: Duration,
    pending: BTreeMap<String, Pending>,
}

impl Coalescer {
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        Coalescer {
            quiet,
            max_delay,
            pending: BTreeMap::new(),
        }
    }

    pub fn hit(&mut self, hit: Hit, now: Instant) {
        let (quiet, max_delay) = (self.quiet, self.max_delay);
        let p = self.pending.entry(hit.service).or_insert_with(|| Pending {
            due: Debounce::new(quiet, max_delay),
            file: PathBuf::new(),
            files: BTreeSet::new(),
            hits: 0,
        });
        p.due.hit(now);
        p.files.insert(hit.file.clone());
        p.file = hit.file;
        p.hits += 1;
    }

    /// When the earliest pending burst is due, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.values().filter_map(|p| p.due.deadline()).min()
    }

    /// The bursts due at `now`, removed from the pending set.
    pub fn take_due(&mut self, now: Instant) -> Vec<Burst> {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due.deadline().is_some_and(|d| d <= now))
            .map(|(s, _)| s.clone())
            .collect();
        due.into_iter()
            .filter_map(|s| {
                let p = self.pending.remove(&s)?;
                Some(Burst {
                    service: s,
                    file: p.file,
                    files: p.files,
                    hits: p.hits,
                })
            })
            .collect()
    }
}

/// Runs a [`Coalescer`] between a stream of hits and a stream of changes,
/// until the hits end (what is still pending is flushed then).
pub async fn run(
    mut hits: mpsc::UnboundedReceiver<Hit>,
    changes: mpsc::UnboundedSender<Burst>,
    quiet: Duration,
    max_delay: Duration,
) {
    let mut c = Coalescer::new(quiet, max_delay);
    loop {
        let deadline = c.deadline();
        tokio::select! {
            hit = hits.recv() => match hit {
                Some(h) => c.hit(h, Instant::now()),
                None => {
                    for ch in c.take_due(Instant::now() + max_delay) {
                        let _ = changes.send(ch);
                    }
                    return;
                }
            },
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                for ch in c.take_due(Instant::now()) {
                    if changes.send(ch).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(s: &str, f: &str) -> Hit {
        Hit {
            service: s.into(),
            file: f.into(),
        }
    }

    /// A running coalescer: where hits go in, where bursts come out.
    fn coalescing(
        quiet: Duration,
        max_delay: Duration,
    ) -> (mpsc::UnboundedSender<Hit>, mpsc::UnboundedReceiver<Burst>) {
        let (htx, hrx) = mpsc::unbounded_channel();
        let (ctx, crx) = mpsc::unbounded_channel();
        tokio::spawn(run(hrx, ctx, quiet, max_delay));
        (htx, crx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_fifty_saves_is_one_change_with_the_last_file() {
        let (htx, mut crx) = coalescing(Duration::from_millis(200), Duration::from_secs(5));
        for i in 0..50 {
            htx.send(hit("web", &format!("f{i}"))).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let first = crx.recv().await.unwrap();
        assert_eq!(first.service, "web");
        assert_eq!(first.file, PathBuf::from("f49"));
        assert_eq!(first.files.len(), 50);
        assert_eq!(first.hits, 50);
        // Nothing else comes: the burst was one change.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(crx.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_is_cut_at_the_max_delay() {
        let (htx, mut crx) = coalescing(Duration::from_millis(200), Duration::from_secs(1));
        let t0 = Instant::now();
        let sender = tokio::spawn(async move {
            for _ in 0..300 {
                htx.send(hit("web", "a")).unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let first = crx.recv().await.unwrap();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_millis(1100),
            "{took:?}"
        );
        assert!(first.hits >= 19);
        sender.abort();
    }

    #[test]
    fn services_are_debounced_apart() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_millis(100), Duration::from_secs(1));
        c.hit(hit("web", "a"), t0);
        c.hit(hit("api", "b"), t0 + Duration::from_millis(80));
        assert_eq!(c.deadline(), Some(t0 + Duration::from_millis(100)));
        let due = c.take_due(t0 + Duration::from_millis(100));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].service, "web");
        assert!(c.take_due(t0 + Duration::from_millis(150)).is_empty());
        assert_eq!(
            c.take_due(t0 + Duration::from_millis(180))[0].service,
            "api"
        );
        assert_eq!(c.deadline(), None);
    }
}
