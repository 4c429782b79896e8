//! Choosing peers: one for a request, a subset for a map, leaving out peers found dead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::peer::types::PeerAddr;

/// Names whose round-robin position is remembered; past it the positions start over.
const MAX_CURSORS: usize = 4096;

/// Peers remembered as dead at once; past it the one due to revive first is forgotten.
const MAX_DEAD: usize = 1024;

/// How a request picks one of the peers a lookup returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerChoice {
    /// Each request to a name goes to the next peer, in address order, so the load is
    /// even and a retry goes to another peer.
    #[default]
    RoundRobin,
    /// Any peer, uniformly (Node's `sample`).
    Random,
}

/// Peers a request could not reach (refused or failed connect), skipped until `until`.
///
/// A Grape lists a stopped server until its announce expires (minutes); without this
/// every request routed to it would pay a failed connect first.
#[derive(Debug)]
pub(crate) struct DeadPeers {
    ttl: Duration,
    until: BTreeMap<PeerAddr, Instant>,
}

impl DeadPeers {
    /// Remembers each dead peer for `ttl`.
    pub(crate) fn new(ttl: Duration) -> Self {
        DeadPeers {
            ttl,
            until: BTreeMap::new(),
        }
    }

    /// `peer` could not be reached at `now`.
    pub(crate) fn mark(&mut self, peer: &PeerAddr, now: Instant) {
        if !self.until.contains_key(peer) && self.until.len() >= MAX_DEAD {
            self.until.retain(|_, until| *until > now);
            if self.until.len() >= MAX_DEAD
                && let Some(first) = self
                    .until
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(p, _)| p.clone())
            {
                self.until.remove(&first);
            }
        }
        self.until.insert(peer.clone(), now + self.ttl);
    }

    /// `peer` answered: it is alive again.
    pub(crate) fn revive(&mut self, peer: &PeerAddr) {
        self.until.remove(peer);
    }

    /// Whether `peer` is to be skipped at `now`.
    pub(crate) fn is_dead(&self, peer: &PeerAddr, now: Instant) -> bool {
        self.until.get(peer).is_some_and(|until| *until > now)
    }

    /// The peers of `peers` not known dead at `now`; all of them if every one is, so a
    /// call is never failed without trying.
    pub(crate) fn alive<'a>(&self, peers: &'a [PeerAddr], now: Instant) -> Vec<&'a PeerAddr> {
        let alive: Vec<&PeerAddr> = peers.iter().filter(|p| !self.is_dead(p, now)).collect();
        if alive.is_empty() {
            peers.iter().collect()
        } else {
            alive
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.until.len()
    }
}

/// Round-robin positions by service name.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    cursors: BTreeMap<String, usize>,
}

impl Balancer {
    /// Picks a peer for `name` among `peers`, skipping those `dead` at `now` unless all
    /// are; `None` only when `peers` is empty.
    pub(crate) fn pick(
        &mut self,
        name: &str,
        peers: &[PeerAddr],
        choice: PeerChoice,
        dead: &DeadPeers,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Option<PeerAddr> {
        let mut live = dead.alive(peers, now);
        if live.is_empty() {
            return None;
        }
        match choice {
            PeerChoice::Random => live
                .get(rng.random_range(0..live.len()))
                .map(|p| (*p).clone()),
            PeerChoice::RoundRobin => {
                // The Grape's order may change between lookups; address order does not.
                live.sort();
                if !self.cursors.contains_key(name) && self.cursors.len() >= MAX_CURSORS {
                    self.cursors.clear();
                }
                // Looked up before it is made: a name's key is allocated once, not per pick.
                let cursor = match self.cursors.get_mut(name) {
                    Some(cursor) => cursor,
                    None => self.cursors.entry(name.to_owned()).or_insert(0),
                };
                let pick = live.get(*cursor % live.len()).map(|p| (*p).clone());
                *cursor = cursor.wrapping_add(1);
                pick
            }
        }
    }
}

/// The peers a map goes to: all of them in the Grape's order, or `limit` of them drawn
/// at random (Node: `shuffle(dests).slice(0, limit)`); a limit of 0 means all. Peers
/// `dead` at `now` are left out, unless all are.
pub(crate) fn map_targets(
    peers: &[PeerAddr],
    limit: usize,
    dead: &DeadPeers,
    now: Instant,
    rng: &mut impl Rng,
) -> Vec<PeerAddr> {
    let mut out: Vec<PeerAddr> = dead.alive(peers, now).into_iter().cloned().collect();
    if limit == 0 {
        return out;
    }
    // Fisher-Yates from the back, over the injected RNG.
    for i in (1..out.len()).rev() {
        let j = rng.random_range(0..=i);
        out.swap(i, j);
    }
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const TTL: Duration = Duration::from_secs(10);

    fn addrs(list: &[&str]) -> Vec<PeerAddr> {
        list.iter()
            .map(|s| PeerAddr::parse(s).expect("valid"))
            .collect()
    }

    /// Four round-robin picks for one name.
    fn round_robin(
        b: &mut Balancer,
        peers: &[PeerAddr],
        dead: &DeadPeers,
        now: Instant,
        rng: &mut ChaCha8Rng,
    ) -> Vec<String> {
        (0..4)
            .map(|_| {
                b.pick("svc", peers, PeerChoice::RoundRobin, dead, now, rng)
                    .expect("some")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles_in_address_order() {
        let mut b = Balancer::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (none, now) = (DeadPeers::new(TTL), Instant::now());
        let peers = addrs(&["h:3", "h:1", "h:2"]);

        let picks = round_robin(&mut b, &peers, &none, now, &mut rng);

        assert_eq!(picks, ["h:1", "h:2", "h:3", "h:1"]);
    }

    #[test]
    fn round_robin_is_per_name_and_ignores_reply_order() {
        let mut b = Balancer::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (none, now) = (DeadPeers::new(TTL), Instant::now());

        let a1 = b.pick(
            "a",
            &addrs(&["h:1", "h:2"]),
            PeerChoice::RoundRobin,
            &none,
            now,
            &mut rng,
        );
        let b1 = b.pick(
            "b",
            &addrs(&["h:1", "h:2"]),
            PeerChoice::RoundRobin,
            &none,
            now,
            &mut rng,
        );
        let a2 = b.pick(
            "a",
            &addrs(&["h:2", "h:1"]),
            PeerChoice::RoundRobin,
            &none,
            now,
            &mut rng,
        );

        assert_eq!(a1, PeerAddr::parse("h:1"));
        assert_eq!(b1, PeerAddr::parse("h:1"));
        assert_eq!(a2, PeerAddr::parse("h:2"));
    }

    #[test]
    fn random_choice_stays_within_the_list() {
        let mut b = Balancer::default();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (none, now) = (DeadPeers::new(TTL), Instant::now());
        let peers = addrs(&["h:1", "h:2", "h:3"]);

        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            seen.insert(
                b.pick("svc", &peers, PeerChoice::Random, &none, now, &mut rng)
                    .expect("some"),
            );
        }

        assert_eq!(seen.len(), 3);
        assert_eq!(
            b.pick("svc", &[], PeerChoice::Random, &none, now, &mut rng),
            None
        );
    }

    #[test]
    fn map_limit_draws_a_random_subset() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (none, now) = (DeadPeers::new(TTL), Instant::now());
        let peers = addrs(&["h:1", "h:2", "h:3", "h:4"]);

        let all = map_targets(&peers, 0, &none, now, &mut rng);
        let two = map_targets(&peers, 2, &none, now, &mut rng);
        let more = map_targets(&peers, 10, &none, now, &mut rng);

        assert_eq!(all, peers);
        assert_eq!(two.len(), 2);
        assert_ne!(two[0], two[1]);
        assert!(two.iter().all(|p| peers.contains(p)));
        assert_eq!(more.len(), 4);
    }

    #[test]
    fn dead_peers_are_skipped_until_they_expire() {
        let mut b = Balancer::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let peers = addrs(&["h:1", "h:2", "h:3"]);
        let mut dead = DeadPeers::new(TTL);
        dead.mark(&peers[1], now);

        let picks = round_robin(&mut b, &peers, &dead, now, &mut rng);
        let later = now + TTL;
        let revived = (0..3)
            .filter_map(|_| {
                b.pick(
                    "svc",
                    &peers,
                    PeerChoice::RoundRobin,
                    &dead,
                    later,
                    &mut rng,
                )
            })
            .any(|p| p == peers[1]);

        assert_eq!(picks, ["h:1", "h:3", "h:1", "h:3"]);
        assert!(revived, "a dead mark expires");
        assert_eq!(
            map_targets(&peers, 0, &dead, now, &mut rng),
            addrs(&["h:1", "h:3"])
        );
    }

    #[test]
    fn when_every_peer_is_dead_all_are_still_tried() {
        let mut b = Balancer::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = Instant::now();
        let peers = addrs(&["h:1", "h:2"]);
        let mut dead = DeadPeers::new(TTL);
        for p in &peers {
            dead.mark(p, now);
        }

        let first = b.pick("svc", &peers, PeerChoice::Random, &dead, now, &mut rng);
        let targets = map_targets(&peers, 0, &dead, now, &mut rng);

        assert!(first.is_some_and(|p| peers.contains(&p)));
        assert_eq!(targets, peers);
    }

    #[test]
    fn an_answer_revives_and_the_set_is_bounded() {
        let now = Instant::now();
        let mut dead = DeadPeers::new(TTL);
        let one = PeerAddr::parse("h:1").expect("valid");
        dead.mark(&one, now);
        dead.revive(&one);
        assert!(!dead.is_dead(&one, now));

        for port in 1..=(MAX_DEAD + 10) {
            let p = PeerAddr::parse(&format!("h:{port}")).expect("valid");
            dead.mark(&p, now + Duration::from_millis(port as u64));
        }

        assert_eq!(dead.len(), MAX_DEAD);
        assert!(
            !dead.is_dead(&one, now + Duration::from_millis(20)),
            "the oldest went first"
        );
        let last = PeerAddr::parse(&format!("h:{}", MAX_DEAD + 10)).expect("valid");
        assert!(dead.is_dead(&last, now + Duration::from_secs(1)));
    }
}
