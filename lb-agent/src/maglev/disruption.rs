//! How much a table change disturbs flows: what moved ([`disruption`]) against what any
//! consistent hash would have had to move ([`min_moved_fraction`]), for the agent's log
//! lines and the benchmark.

use std::{collections::BTreeMap, fmt};

use super::Table;

/// How much a table change disturbs flows that are not pinned by the flow table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disruption {
    /// Slots whose backend changed.
    pub moved: u32,
    /// Slots that had to move: for each backend (by id, [`NO_BACKEND`](super::NO_BACKEND)
    /// included), how many slots it lost, `max(0, old count − new count)`, summed. No table
    /// could do better.
    pub forced: u32,
    /// `moved − forced`: slots moved only because of how Maglev fills the table.
    pub collateral: u32,
    /// Table size the counts refer to.
    pub size: u32,
}

impl Disruption {
    pub fn moved_fraction(&self) -> f64 {
        self.fraction(self.moved)
    }

    pub fn forced_fraction(&self) -> f64 {
        self.fraction(self.forced)
    }

    pub fn collateral_fraction(&self) -> f64 {
        self.fraction(self.collateral)
    }

    fn fraction(&self, n: u32) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            f64::from(n) / f64::from(self.size)
        }
    }
}

impl fmt::Display for Disruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "moved {} of {} slots ({:.2}%): forced {} ({:.2}%), collateral {} ({:.2}%)",
            self.moved,
            self.size,
            100.0 * self.moved_fraction(),
            self.forced,
            100.0 * self.forced_fraction(),
            self.collateral,
            100.0 * self.collateral_fraction(),
        )
    }
}

/// Compares two tables of the same VIP. If their sizes differ every slot counts as moved
/// and forced (a resize remaps every flow hash), with `size` the new table's size.
pub fn disruption(old: &Table, new: &Table) -> Disruption {
    let size = new.size();
    if old.slots.len() != new.slots.len() {
        return Disruption {
            moved: size,
            forced: size,
            collateral: 0,
            size,
        };
    }
    let moved = old
        .slots
        .iter()
        .zip(&new.slots)
        .filter(|(o, n)| o != n)
        .count() as u32;
    let new_counts = new.counts();
    let forced: u32 = old
        .counts()
        .into_iter()
        .map(|(id, was)| was.saturating_sub(new_counts.get(&id).copied().unwrap_or(0)))
        .sum();
    Disruption {
        moved,
        forced,
        // Each lost slot is a slot whose value changed, so moved ≥ forced.
        collateral: moved.saturating_sub(forced),
        size,
    }
}

/// The smallest fraction of the table any consistent-hash table must move when the weights
/// change from `old` to `new`: `Σ max(0, old_share − new_share)` over backends, where a
/// backend's share is its weight over the total. Backends are matched by `K` (e.g. the
/// backend key or id); repeated `K`s add up; a missing `K` has weight 0. An assignment with
/// total weight 0 counts as one pseudo-backend "nobody" holding everything, as the table's
/// [`NO_BACKEND`](super::NO_BACKEND) slots do, so going from or to no backends moves
/// everything (1.0).
pub fn min_moved_fraction<K: Ord>(
    old: impl IntoIterator<Item = (K, u32)>,
    new: impl IntoIterator<Item = (K, u32)>,
) -> f64 {
    let mut weights: BTreeMap<K, (u128, u128)> = BTreeMap::new();
    for (k, w) in old {
        weights.entry(k).or_default().0 += u128::from(w);
    }
    for (k, w) in new {
        weights.entry(k).or_default().1 += u128::from(w);
    }
    let old_total: u128 = weights.values().map(|w| w.0).sum();
    let new_total: u128 = weights.values().map(|w| w.1).sum();
    match (old_total, new_total) {
        (0, 0) => 0.0,
        (0, _) | (_, 0) => 1.0,
        _ => weights
            .values()
            .map(|&(o, n)| {
                // Compare o/To and n/Tn exactly; convert only the positive difference.
                let (lhs, rhs) = (o * new_total, n * old_total);
                if lhs > rhs {
                    (lhs - rhs) as f64 / (old_total as f64 * new_total as f64)
                } else {
                    0.0
                }
            })
            .sum(),
    }
}
