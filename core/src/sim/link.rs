//! What a simulated link does to a datagram: delay it, lose it, or deliver it twice.
//!
//! Loss is either independent per datagram or bursty: real links lose packets in runs
//! (a congested queue, a radio fade), and a lookup that survives 10% independent loss may
//! still stall when five packets in a row vanish. Bursts follow the Gilbert-Elliott model:
//! each direction of a link is in a good or a bad state, switching before each datagram.

use std::time::Duration;

use rand::Rng;

/// How the simulated network treats datagrams between two nodes, after netem.
///
/// Reordering needs no setting of its own: two datagrams sent close together swap
/// whenever their jitter differs by more than the gap between them.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct PathConfig {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Extra one-way delay, drawn uniformly from zero to this for each datagram.
    pub jitter: Duration,
    /// Chance, 0.0 to 1.0, that a datagram is lost.
    pub loss: f64,
    /// Chance, 0.0 to 1.0, that a delivered datagram arrives a second time.
    pub duplicate: f64,
    /// Burst loss on top of `loss` (which then applies in the good state only).
    pub burst: Option<Burst>,
}

/// Gilbert-Elliott burst loss: a two-state chain per direction of a link, stepped once
/// per datagram. The mean burst lasts `1 / leave` datagrams, and the share of datagrams
/// sent in the bad state is `enter / (enter + leave)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Burst {
    /// Chance that a datagram in the good state finds the link turned bad.
    pub enter: f64,
    /// Chance that a datagram in the bad state finds the link good again.
    pub leave: f64,
    /// Chance that a datagram sent in the bad state is lost.
    pub loss: f64,
}

impl Burst {
    /// Bursts of `mean_len` datagrams on average, covering `share` of all datagrams, each
    /// lost with probability `loss` (1.0: a burst loses everything).
    pub fn new(mean_len: f64, share: f64, loss: f64) -> Burst {
        let leave = probability(1.0 / mean_len.max(1.0));
        let share = probability(share).min(0.99);
        Burst {
            enter: probability(leave * share / (1.0 - share)),
            leave,
            loss: probability(loss),
        }
    }
}

impl Default for PathConfig {
    /// 20 ms plus up to 20 ms of jitter, no loss, no duplicates: a quiet regional network.
    fn default() -> Self {
        PathConfig {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(20),
            loss: 0.0,
            duplicate: 0.0,
            burst: None,
        }
    }
}

impl PathConfig {
    /// A link with this fixed delay and nothing else: no jitter, loss or duplicates.
    pub fn new(latency: Duration) -> Self {
        PathConfig {
            latency,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            burst: None,
        }
    }

    /// Sets the jitter.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the loss probability; values outside 0.0..=1.0 (and NaN) are clamped.
    #[must_use]
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = probability(loss);
        self
    }

    /// Sets the duplication probability; values outside 0.0..=1.0 (and NaN) are clamped.
    #[must_use]
    pub fn with_duplicate(mut self, duplicate: f64) -> Self {
        self.duplicate = probability(duplicate);
        self
    }

    /// Adds Gilbert-Elliott burst loss (see [`Burst`]).
    #[must_use]
    pub fn with_burst(mut self, burst: Burst) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Draws whether one datagram is lost, stepping the burst state `bad` of its
    /// direction first when the link has bursts. No draw is made on a lossless link, so
    /// adding loss to one link does not reshuffle the randomness of the others.
    pub(crate) fn lost(&self, bad: &mut bool, rng: &mut impl Rng) -> bool {
        let Some(burst) = self.burst else {
            *bad = false;
            return self.loss > 0.0 && rng.random::<f64>() < self.loss;
        };
        let switch = if *bad { burst.leave } else { burst.enter };
        if rng.random::<f64>() < switch {
            *bad = !*bad;
        }
        let loss = if *bad { burst.loss } else { self.loss };
        loss > 0.0 && rng.random::<f64>() < loss
    }

    /// Draws whether a datagram is duplicated (no draw when duplication is off).
    pub(crate) fn duplicated(&self, rng: &mut impl Rng) -> bool {
        self.duplicate > 0.0 && rng.random::<f64>() < self.duplicate
    }

    /// Draws one datagram's delay.
    pub(crate) fn delay(&self, rng: &mut impl Rng) -> Duration {
        let jitter = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
        if jitter == 0 {
            return self.latency;
        }
        self.latency
            .saturating_add(Duration::from_nanos(rng.random_range(0..=jitter)))
    }
}

fn probability(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn delay_stays_within_latency_plus_jitter() {
        let link = PathConfig::new(Duration::from_millis(10)).with_jitter(Duration::from_millis(5));
        let mut rng = ChaCha8Rng::seed_from_u64(1);

        let delays: Vec<Duration> = (0..1000).map(|_| link.delay(&mut rng)).collect();

        assert!(delays.iter().all(|d| *d >= Duration::from_millis(10)));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(15)));
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "jitter varies the delay"
        );
    }

    #[test]
    fn loss_rate_is_roughly_the_setting() {
        let link = PathConfig::default().with_loss(0.25);
        let mut rng = ChaCha8Rng::seed_from_u64(2);

        let mut bad = false;
        let lost = (0..10_000)
            .filter(|_| link.lost(&mut bad, &mut rng))
            .count();

        assert!((2_200..2_800).contains(&lost), "{lost} lost of 10000");
    }

    #[test]
    fn lossless_link_draws_nothing() {
        let link = PathConfig::new(Duration::from_millis(1));
        let mut a = ChaCha8Rng::seed_from_u64(3);
        let mut b = ChaCha8Rng::seed_from_u64(3);

        assert!(!link.lost(&mut false, &mut a));
        assert!(!link.duplicated(&mut a));
        let _ = link.delay(&mut a);

        assert_eq!(
            a.random::<u64>(),
            b.random::<u64>(),
            "the rng was not advanced"
        );
    }

    #[test]
    fn bursts_lose_in_runs_at_the_set_share() {
        let link = PathConfig::new(Duration::from_millis(1)).with_burst(Burst::new(5.0, 0.1, 1.0));
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut bad = false;

        let lost: Vec<bool> = (0..100_000)
            .map(|_| link.lost(&mut bad, &mut rng))
            .collect();

        let total = lost.iter().filter(|l| **l).count();
        assert!((8_500..11_500).contains(&total), "{total} lost of 100000");
        let runs = lost.windows(2).filter(|w| w[1] && !w[0]).count();
        let mean_run = total as f64 / runs as f64;
        assert!((4.0..6.0).contains(&mean_run), "mean burst {mean_run}");
    }

    #[test]
    fn probabilities_are_clamped() {
        let link = PathConfig::default()
            .with_loss(f64::NAN)
            .with_duplicate(7.0);

        assert_eq!(link.loss, 0.0);
        assert_eq!(link.duplicate, 1.0);
    }
}
