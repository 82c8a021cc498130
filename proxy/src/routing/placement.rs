//! Load-aware placement of new sessions.
//!
//! Candidates are ranked by fill ratio `sessions / capacity` (lowest first), where
//! `sessions` is the last health-probe count plus the proxy's own placements since, and
//! `capacity = min(config capacity, worker max_sessions)`. Equal fills are ordered by a
//! per-request random value mixed with each candidate's position ([`tiebreak`]), i.e. a
//! uniform random tie-break that needs no shared state. The caller reserves on the first
//! candidate that still has room (the check is repeated under the worker's lock), so no
//! worker goes past its capacity while another has room.
//!
//! Cost: [`first`] is one pass without allocation (the common case: the best candidate has
//! room); [`rank`] sorts, for the rare retry after a lost reservation race.

use std::cmp::Ordering;

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

/// The tie-break value of the candidate at position `i` for the request's random `r`
/// (higher wins): a bijective 64-bit mix, so every candidate is equally likely to win a tie.
fn tiebreak(r: u64, i: usize) -> u64 {
    hrw::fmix64(r ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Placement order of candidates `i` and `j`: lower fill first, then the higher tie-break.
fn order(cands: &[Candidate<'_>], r: u64, i: usize, j: usize) -> Ordering {
    cands[i]
        .fill()
        .total_cmp(&cands[j].fill())
        .then_with(|| tiebreak(r, j).cmp(&tiebreak(r, i)))
}

/// Index of the first candidate in placement order (`None`: no candidates). `r`: the
/// request's random value.
pub fn first(cands: &[Candidate<'_>], r: u64) -> Option<usize> {
    (0..cands.len()).min_by(|&i, &j| order(cands, r, i, j))
}

/// Indices of `cands` in placement order (`first` is its head).
pub fn rank(cands: &[Candidate<'_>], r: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..cands.len()).collect();
    idx.sort_by(|&i, &j| order(cands, r, i, j));
    idx
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
        assert_eq!(rank(&c, 7), vec![2, 1, 0]);
        assert_eq!(first(&c, 7), Some(2));
        assert_eq!(first(&[], 7), None);
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
        let mut wins = [0usize; 3];
        for k in 0..3000 {
            wins[rank(&c, hrw::hash("t", format!("{k}").as_bytes()))[0]] += 1;
        }
        assert!(wins.iter().all(|&n| n > 850), "{wins:?}");

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
            load[first(&cands, hrw::hash("t", format!("{k}").as_bytes())).expect("3")] += 1;
        }
        let max = *load.iter().max().expect("3");
        assert!(max <= 334, "{load:?}");
    }

    #[test]
    fn first_is_the_head_of_rank() {
        let c: Vec<Candidate<'_>> = ["a", "b", "c", "d", "e"]
            .iter()
            .zip([3u64, 1, 1, 2, 1])
            .map(|(id, s)| Candidate {
                id,
                sessions: s,
                capacity: 4,
            })
            .collect();
        for r in 0..500u64 {
            let order = rank(&c, hrw::hash("r", &r.to_le_bytes()));
            assert_eq!(first(&c, hrw::hash("r", &r.to_le_bytes())), Some(order[0]));
            // Ties (fill 1/4: b, c, e) come before the fuller d, then a.
            assert_eq!(&order[3..], &[3, 0], "{order:?}");
        }
    }
}
