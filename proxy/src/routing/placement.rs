//! Load-aware placement of new sessions.
//!
//! Candidates are ranked by fill ratio `sessions / capacity` (lowest first), where
//! `sessions` is the last health-probe count plus the proxy's own placements since, and
//! `capacity = min(config capacity, worker max_sessions)`. Equal fills are ordered by the
//! rendezvous score of a per-request random value, i.e. a uniform random tie-break that
//! needs no shared state. The caller then reserves on the first candidate that still has
//! room (the check is repeated under the worker's lock), so no worker goes past its
//! capacity while another has room.

use super::hrw;

/// A worker as placement sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub sessions: u64,
    pub capacity: u64,
}

impl Candidate<'_> {
    fn fill(&self) -> f64 {
        self.sessions as f64 / self.capacity.max(1) as f64
    }
}

/// Indices of `cands` in placement order.
pub fn rank(cands: &[Candidate<'_>], tiebreak: &[u8]) -> Vec<usize> {
    let mut idx: Vec<(usize, f64, f64)> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.fill(), hrw::score(c.id, 1, tiebreak)))
        .collect();
    idx.sort_by(|a, b| {
        a.1.total_cmp(&b.1)
            .then_with(|| b.2.total_cmp(&a.2))
            .then_with(|| a.0.cmp(&b.0))
    });
    idx.into_iter().map(|(i, _, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_fill_first() {
        let c = [
            Candidate {
                id: "a",
                sessions: 5,
                capacity: 10,
            },
            Candidate {
                id: "b",
                sessions: 5,
                capacity: 100,
            },
            Candidate {
                id: "c",
                sessions: 0,
                capacity: 1,
            },
        ];
        assert_eq!(rank(&c, b"x"), vec![2, 1, 0]);
    }

    #[test]
    fn ties_spread_evenly_and_sequential_placement_balances() {
        // Equal fills: the random tie-break spreads first choices uniformly.
        let c = [
            Candidate {
                id: "w1",
                sessions: 0,
                capacity: 10,
            },
            Candidate {
                id: "w2",
                sessions: 0,
                capacity: 10,
            },
            Candidate {
                id: "w3",
                sessions: 0,
                capacity: 10,
            },
        ];
        let mut first = [0usize; 3];
        for k in 0..3000 {
            first[rank(&c, format!("{k}").as_bytes())[0]] += 1;
        }
        assert!(first.iter().all(|&n| n > 850), "{first:?}");

        // Placing 1000 sessions one after another on 3 equal workers.
        let mut load = [0u64; 3];
        for k in 0..1000 {
            let cands: Vec<Candidate<'_>> = ["w1", "w2", "w3"]
                .iter()
                .zip(load.iter())
                .map(|(id, &s)| Candidate {
                    id,
                    sessions: s,
                    capacity: 1000,
                })
                .collect();
            load[rank(&cands, format!("{k}").as_bytes())[0]] += 1;
        }
        let max = *load.iter().max().expect("3");
        assert!(max <= 334, "{load:?}");
    }
}
