//! Choosing peers: one for a request, a subset for a map.

use std::collections::BTreeMap;

use rand::Rng;

use crate::peer::types::PeerAddr;

/// Names whose round-robin position is remembered; past it the positions start over.
const MAX_CURSORS: usize = 4096;

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

/// Round-robin positions by service name.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    cursors: BTreeMap<String, usize>,
}

impl Balancer {
    /// Picks a peer for `name`; `None` only when `peers` is empty.
    pub(crate) fn pick(
        &mut self,
        name: &str,
        peers: &[PeerAddr],
        choice: PeerChoice,
        rng: &mut impl Rng,
    ) -> Option<PeerAddr> {
        if peers.is_empty() {
            return None;
        }
        match choice {
            PeerChoice::Random => peers.get(rng.random_range(0..peers.len())).cloned(),
            PeerChoice::RoundRobin => {
                // The Grape's order may change between lookups; address order does not.
                let mut sorted: Vec<&PeerAddr> = peers.iter().collect();
                sorted.sort();
                if !self.cursors.contains_key(name) && self.cursors.len() >= MAX_CURSORS {
                    self.cursors.clear();
                }
                let cursor = self.cursors.entry(name.to_owned()).or_insert(0);
                let pick = sorted.get(*cursor % sorted.len()).map(|p| (*p).clone());
                *cursor = cursor.wrapping_add(1);
                pick
            }
        }
    }
}

/// The peers a map goes to: all of them in the Grape's order, or `limit` of them drawn
/// at random (Node: `shuffle(dests).slice(0, limit)`); a limit of 0 means all.
pub(crate) fn map_targets(peers: &[PeerAddr], limit: usize, rng: &mut impl Rng) -> Vec<PeerAddr> {
    let mut out = peers.to_vec();
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

    fn addrs(list: &[&str]) -> Vec<PeerAddr> {
        list.iter()
            .map(|s| PeerAddr::parse(s).expect("valid"))
            .collect()
    }

    #[test]
    fn round_robin_cycles_in_address_order() {
        let mut b = Balancer::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let peers = addrs(&["h:3", "h:1", "h:2"]);

        let picks: Vec<String> = (0..4)
            .map(|_| {
                b.pick("svc", &peers, PeerChoice::RoundRobin, &mut rng)
                    .expect("some")
                    .to_string()
            })
            .collect();

        assert_eq!(picks, ["h:1", "h:2", "h:3", "h:1"]);
    }

    #[test]
    fn round_robin_is_per_name_and_ignores_reply_order() {
        let mut b = Balancer::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);

        let a1 = b.pick(
            "a",
            &addrs(&["h:1", "h:2"]),
            PeerChoice::RoundRobin,
            &mut rng,
        );
        let b1 = b.pick(
            "b",
            &addrs(&["h:1", "h:2"]),
            PeerChoice::RoundRobin,
            &mut rng,
        );
        let a2 = b.pick(
            "a",
            &addrs(&["h:2", "h:1"]),
            PeerChoice::RoundRobin,
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
        let peers = addrs(&["h:1", "h:2", "h:3"]);

        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            seen.insert(
                b.pick("svc", &peers, PeerChoice::Random, &mut rng)
                    .expect("some"),
            );
        }

        assert_eq!(seen.len(), 3);
        assert_eq!(b.pick("svc", &[], PeerChoice::Random, &mut rng), None);
    }

    #[test]
    fn map_limit_draws_a_random_subset() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let peers = addrs(&["h:1", "h:2", "h:3", "h:4"]);

        let all = map_targets(&peers, 0, &mut rng);
        let two = map_targets(&peers, 2, &mut rng);
        let more = map_targets(&peers, 10, &mut rng);

        assert_eq!(all, peers);
        assert_eq!(two.len(), 2);
        assert_ne!(two[0], two[1]);
        assert!(two.iter().all(|p| peers.contains(p)));
        assert_eq!(more.len(), 4);
    }
}
