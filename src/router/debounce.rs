//! Coalescing bursts of registry changes into one render.
//!
//! A burst (a scale to ten replicas, a stack coming up) is many etcd events
//! within milliseconds. The router renders once the registry has been quiet
//! for `quiet`, but never later than `max_delay` after the first change of a
//! burst, so a steady trickle of changes cannot postpone routing forever.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Debounce {
    quiet: Duration,
    max_delay: Duration,
    /// When the pending burst began.
    first: Option<Instant>,
    /// The latest change of the pending burst.
    last: Option<Instant>,
}

impl Debounce {
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        Debounce {
            quiet,
            max_delay: max_delay.max(quiet),
            first: None,
            last: None,
        }
    }

    /// Records a change at `now`.
    pub fn hit(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending burst should be rendered; `None` when nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.quiet).min(first + self.max_delay))
    }

    /// Whether the pending burst is due at `now`; if so it is cleared.
    pub fn take(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(d) if d <= now => {
                self.first = None;
                self.last = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `hits` (milliseconds after the start) and returns when renders happen.
    async fn renders(quiet: u64, max: u64, hits: &[u64], until: u64) -> Vec<u64> {
        let start = Instant::now();
        let mut d = Debounce::new(Duration::from_millis(quiet), Duration::from_millis(max));
        let mut out = Vec::new();
        let mut hits = hits.iter().peekable();
        loop {
            let now = Instant::now();
            let elapsed = (now - start).as_millis() as u64;
            if elapsed > until {
                return out;
            }
            while hits.peek().is_some_and(|h| **h <= elapsed) {
                hits.next();
                d.hit(now);
            }
            if d.take(now) {
                out.push(elapsed);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_renders_once_after_the_quiet_time() {
        let got = tokio::time::timeout(
            Duration::from_secs(60),
            renders(10, 100, &[0, 2, 4, 6, 8], 200),
        )
        .await
        .expect("likely deadlocked");
        assert_eq!(got, vec![18]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_trickle_still_renders_at_the_max_delay() {
        let hits: Vec<u64> = (0..50).map(|i| i * 5).collect();
        let got = tokio::time::timeout(Duration::from_secs(60), renders(10, 100, &hits, 300))
            .await
            .expect("likely deadlocked");
        // Hits every 5 ms until 245: cut at 100 after the first, at 205 after
        // the next (105), and the tail renders 10 ms after the last hit.
        assert_eq!(got, vec![100, 205, 255]);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_pending_means_no_deadline() {
        let mut d = Debounce::new(Duration::from_millis(10), Duration::from_millis(100));
        assert_eq!(d.deadline(), None);
        let now = Instant::now();
        d.hit(now);
        assert!(!d.take(now));
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(d.take(Instant::now()));
        assert_eq!(d.deadline(), None);
    }
}
