//! Values a client keeps per peer: a table when the run is small, a map of the peers met
//! when it is large (C10K: a client of thousands talks to few, and a table in every client
//! would make the run's memory, and the time to fill it, quadratic in the clients).

use std::collections::HashMap;

/// Runs with at most this many names keep a table per client (an index per message, no
/// hashing: the fast path of the default 8-client run); larger ones, a map.
pub const DENSE_PEERS: usize = 1024;

/// A value per peer, made by `make` when first needed.
#[derive(Debug, Clone)]
pub enum PerPeer<T> {
    /// Every peer's value, by index.
    Dense(Vec<T>),
    /// Only the peers met so far.
    Sparse(HashMap<usize, T>),
}

impl<T> PerPeer<T> {
    /// Values for `n` peers: a table made now, or an empty map.
    pub fn new(n: usize, make: impl Fn(usize) -> T) -> PerPeer<T> {
        if n <= DENSE_PEERS {
            PerPeer::Dense((0..n).map(make).collect())
        } else {
            PerPeer::Sparse(HashMap::new())
        }
    }

    /// Peer `s`'s value, if it has one.
    pub fn get(&self, s: usize) -> Option<&T> {
        match self {
            PerPeer::Dense(v) => v.get(s),
            PerPeer::Sparse(m) => m.get(&s),
        }
    }

    /// Peer `s`'s value, to change, if it has one.
    pub fn get_mut(&mut self, s: usize) -> Option<&mut T> {
        match self {
            PerPeer::Dense(v) => v.get_mut(s),
            PerPeer::Sparse(m) => m.get_mut(&s),
        }
    }

    /// Peer `s`'s value, made by `make` if it had none.
    pub fn at(&mut self, s: usize, make: impl Fn(usize) -> T) -> &mut T {
        match self {
            PerPeer::Dense(v) => {
                while v.len() <= s {
                    v.push(make(v.len()));
                }
                &mut v[s]
            }
            PerPeer::Sparse(m) => m.entry(s).or_insert_with(|| make(s)),
        }
    }

    /// Every value held, by peer index, in index order.
    pub fn sorted(&self) -> Vec<(usize, &T)> {
        match self {
            PerPeer::Dense(v) => v.iter().enumerate().collect(),
            PerPeer::Sparse(m) => {
                let mut all: Vec<(usize, &T)> = m.iter().map(|(&k, v)| (k, v)).collect();
                all.sort_unstable_by_key(|(k, _)| *k);
                all
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_runs_get_a_table_and_large_ones_a_map_with_the_same_answers() {
        for n in [3, DENSE_PEERS + 1] {
            let mut p = PerPeer::new(n, |s| s as u64 * 10);
            *p.at(2, |s| s as u64 * 10) += 1;
            assert_eq!(p.get(2), Some(&21));
            assert_eq!(*p.at(1, |s| s as u64 * 10), 10);
            let held: Vec<usize> = p.sorted().into_iter().map(|(k, _)| k).collect();
            if n == 3 {
                assert!(matches!(p, PerPeer::Dense(_)));
                assert_eq!(held, [0, 1, 2]);
            } else {
                assert!(matches!(p, PerPeer::Sparse(_)));
                assert_eq!(held, [1, 2], "only the peers met");
                assert_eq!(p.get(0), None);
            }
        }
    }
}
