//! Weighted Maglev consistent hashing: builds the lookup table ("ring") that maps a flow
//! hash to a backend for one VIP.
//!
//! # The algorithm (Eisenbud et al., "Maglev", NSDI 2016, §3.4)
//!
//! The table has `M` slots, `M` prime. Each backend gets a *preference list*, a permutation
//! of the slots `offset, offset + skip, offset + 2·skip, … (mod M)` with
//! `offset = h1(key) mod M` and `skip = h2(key) mod (M − 1) + 1`. Because `M` is prime and
//! `1 ≤ skip < M`, the list visits every slot exactly once. Backends then take *turns*: on
//! its turn a backend walks its own list to the first slot that is still empty and claims
//! it. When every slot is claimed, the table is done. The data plane reads
//! `slots[flow_hash % M]`.
//!
//! Why this is consistent: a backend's slots are the earliest free entries of its own
//! list, and the lists depend only on the backend's key. Removing one backend frees its
//! slots, which the survivors claim from their lists; the survivors' other slots mostly stay
//! put. Some "collateral" slots do move, because a survivor that now reaches a freed slot
//! earlier no longer needs a slot it used to take later, and that change ripples. With 100
//! equal backends and `M = 65537`, removing one moves its ~1% of the slots plus roughly
//! 0.5% collateral (see the tests, which print the figures).
//!
//! # Weights
//!
//! The paper's variant gives every backend one turn per round, so shares are equal. Katran's
//! first weighted version needed weights summing to about `M`; its second (MaglevHashV2)
//! hands out turns by accumulated weight, so small integers such as 1 vs 10 work. This
//! module keeps that idea, and makes the shares exact:
//!
//! 1. **Quotas by apportionment.** Backend *i*'s exact share is `M·wᵢ/W` slots (`W = Σw`).
//!    Each gets `⌊M·wᵢ/W⌋`; the `L = M − Σ⌊…⌋` leftover slots (`L` < number of backends) go
//!    one each, first to positive-weight backends whose floor is 0 (so that a positive weight
//!    means *some* traffic whenever the bound below allows it), then by largest remainder,
//!    ties to the smaller key. All of this is integer arithmetic in `u128`, so weights up to
//!    `u32::MAX` each cannot overflow.
//! 2. **Turns in proportion to the quotas.** With `Q` the largest quota, backend *i*'s
//!    `k`-th turn is in round `⌈k·Q/qᵢ⌉`, for `k = 1..=qᵢ`: a backend with the largest quota
//!    has a turn every round, one with half of it every other round, and every backend's last
//!    turn is in round `Q`. Each backend's turns are thus spread evenly over the whole fill
//!    (the virtual time `k/qᵢ` quantised to `Q` rounds), as in Katran's cumulative-weight
//!    rounds, instead of a heavy backend taking all its slots first. Within a round,
//!    backends go in the order they were scheduled into it, initially key order; with equal
//!    quotas that is the paper's plain round robin.
//!
//! Since the number of turns is exactly `Σqᵢ = M`, each turn claims one slot, and a free slot
//! exists before every turn, the fill ends with a full table in which **backend *i* holds
//! exactly `qᵢ` slots**.
//!
//! # Guarantees
//!
//! * **Shares:** every backend with weight `w > 0` holds `⌊M·w/W⌋` or `⌈M·w/W⌉` slots, so it
//!   is always less than one slot from its exact share, whatever the weights; the counts sum to
//!   `M`. A backend whose exact share is below one slot still gets one unless more such
//!   backends exist than leftover slots. Weight 0 (quiesce) gets no slot.
//!   With `M > 100·N`, one slot is under 1% of an equal share; [`warn_small`] says so otherwise.
//! * **Empty:** no backend, or every weight 0, gives a table of [`NO_BACKEND`] slots.
//! * **Determinism:** the table is a pure function of the *set* of `(key, id, weight)`, `M` and
//!   the seed. Input order does not matter (backends are sorted by key, duplicates are
//!   errors), and the hash is SipHash-2-4 written out in this crate with fixed keys derived
//!   from the seed (the `hash` submodule pins it with known-answer tests), so every load balancer host
//!   behind one ECMP group builds the same table, on any platform and across releases. A
//!   backend's *positions* depend on its key only; its `id` is just the value written into
//!   its slots. So hosts that number their backends differently still send every flow to
//!   the same backend (only their fingerprints differ).
//! * **Cost:** `O(N log N)` to sort and apportion, `O(M + Q)` to schedule the turns (a
//!   calendar of per-round FIFO lists, O(1) per turn whatever the weights), plus Maglev's
//!   expected `O(M log M)` walking of preference lists. A handful of allocations per table
//!   (`O(M + N)` memory), none per slot. `M = 65537`, `N = 1000` takes about 2 ms in a
//!   release build on the development machine (`build_time_n1000` prints it).
//!
//! The table is not bit-compatible with Katran's or Cilium's (different hash); it does not
//! need to be, only every host running this builder must agree.

mod hash;

use std::{collections::BTreeMap, fmt};

/// Slot value when the table has no backend (no backends, or every weight 0).
pub const NO_BACKEND: u32 = lb_common::NO_BACKEND;

/// The paper's and Katran's table size, and the size of the data plane's ring template.
pub const DEFAULT_SIZE: u32 = 65537;

/// Primes suitable as table sizes: Cilium's and IPVS `mh`'s list, plus 65537 (the paper's
/// and Katran's). Any prime up to [`MAX_SIZE`] is accepted; these are the suggested ones.
pub const SIZES: &[u32] = &[
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 65537, 131071,
];

/// The largest table [`build`] accepts (2^24 slots, 64 MiB). It bounds the allocation a
/// typo can cause and keeps slot arithmetic within `u32`. The data plane's own limit is
/// smaller ([`lb_common::service::MAX_RING_SIZE`]); the agent checks that one.
pub const MAX_SIZE: u32 = 1 << 24;

// Every suggested size must fit the data plane's ring map, and the default is its template's.
const _: () = assert!(DEFAULT_SIZE == lb_common::service::DEFAULT_RING_SIZE);
const _: () = assert!(SIZES[SIZES.len() - 1] <= lb_common::service::MAX_RING_SIZE);
const _: () = assert!(lb_common::service::MAX_RING_SIZE <= MAX_SIZE);

/// One backend of a VIP as the builder sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    /// The data plane's backend index: the value written into this backend's slots.
    /// Must not be [`NO_BACKEND`].
    pub id: u32,
    /// Stable identity bytes (e.g. address octets followed by the port), hashed to place the
    /// backend. Must be the same on every host and across restarts; ids may differ.
    pub key: Vec<u8>,
    /// Relative weight; 0 = quiesce (no slots, so no new flows; the build is then the same
    /// as without this backend).
    pub weight: u32,
}

impl Backend {
    pub fn new(id: u32, key: impl Into<Vec<u8>>, weight: u32) -> Self {
        Self {
            id,
            key: key.into(),
            weight,
        }
    }
}

/// Why a table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error("Maglev table size must not be 0")]
    ZeroSize,
    #[error(
        "Maglev table size {0} is not prime: the preference lists would not visit every slot \
         (suggested sizes: 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 65537, 131071)"
    )]
    SizeNotPrime(u32),
    #[error("Maglev table size {size} is larger than the maximum {max}")]
    TooLarge { size: u32, max: u32 },
    #[error(
        "Maglev table size {size} is smaller than the number of backends with weight > 0 \
         ({backends}); use a size of at least 100 × that"
    )]
    TooSmall { size: u32, backends: usize },
    #[error("duplicate backend key {}", hex(.0))]
    DuplicateKey(Vec<u8>),
    #[error("duplicate backend id {0}")]
    DuplicateId(u32),
    #[error("backend id {id} (key {}) is reserved for empty slots", hex(.key))]
    ReservedId { id: u32, key: Vec<u8> },
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)".to_owned();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A built lookup table: `slots[flow_hash % size]` is the backend id for a flow.
#[derive(Clone, PartialEq, Eq)]
pub struct Table {
    slots: Vec<u32>,
}

impl fmt::Debug for Table {
    // The slots themselves are far too many to print; the size and fingerprint identify it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("size", &self.size())
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint()))
            .finish()
    }
}

impl Table {
    /// Wraps slots read back from elsewhere (e.g. a ring map already in the kernel) so they
    /// can be compared with a freshly built table. No validation.
    pub fn from_slots(slots: Vec<u32>) -> Self {
        Self { slots }
    }

    /// Number of slots (`M`).
    pub fn size(&self) -> u32 {
        // A built table has at most MAX_SIZE slots; one from `from_slots` came from a
        // u32-indexed map. Saturate rather than wrap if someone passes something bigger.
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }

    /// The slots, in index order, ready to be written to the ring map.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// The backend id for a flow hash (what the data plane computes).
    pub fn lookup(&self, flow_hash: u32) -> u32 {
        match self.slots.len() {
            0 => NO_BACKEND,
            len => self.slots[flow_hash as usize % len],
        }
    }

    /// FNV-1a 64 over the slots as little-endian `u32` bytes: a short, stable identity for
    /// `status` output and for checking that two hosts built the same table.
    pub fn fingerprint(&self) -> u64 {
        hash::fnv1a64(self.slots.iter().flat_map(|s| s.to_le_bytes()))
    }

    /// Slots per backend id. A table built with no usable backend has the single entry
    /// `NO_BACKEND → size`; a built table with backends never contains `NO_BACKEND`.
    pub fn counts(&self) -> BTreeMap<u32, u32> {
        let mut counts = BTreeMap::new();
        for &id in &self.slots {
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    }

    /// Indices of the slots whose value differs from `old`, ascending: the ring entries to
    /// rewrite. If the sizes differ, slot indices do not correspond (every flow hash maps to
    /// a new index), so every index of `self` is returned and the whole ring must be
    /// replaced.
    pub fn changed_slots(&self, old: &Table) -> Vec<u32> {
        if self.slots.len() != old.slots.len() {
            return (0..self.size()).collect();
        }
        (0..self.size())
            .zip(self.slots.iter().zip(&old.slots))
            .filter_map(|(i, (new, old))| (new != old).then_some(i))
            .collect()
    }
}

/// How much a table change disturbs flows that are not pinned by the flow table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disruption {
    /// Slots whose backend changed.
    pub moved: u32,
    /// Slots that had to move: for each backend (by id, [`NO_BACKEND`] included), how many
    /// slots it lost, `max(0, old count − new count)`, summed. No table could do better.
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
/// [`NO_BACKEND`] slots do, so going from or to no backends moves everything (1.0).
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

/// A warning for the operator when a table of `size` slots is too small for `n` backends to
/// stay within 1% of their shares (`size < 100·n`), with a suggested size.
pub fn warn_small(size: u32, n: usize) -> Option<String> {
    let wanted = (n as u64).saturating_mul(100);
    if n == 0 || u64::from(size) >= wanted {
        return None;
    }
    let suggestion = match SIZES.iter().find(|&&s| u64::from(s) >= wanted) {
        Some(s) => format!("use a size of at least {wanted}, e.g. {s}"),
        None => format!(
            "use a size of at least {wanted}, or fewer backends per VIP (the largest suggested size is {})",
            SIZES[SIZES.len() - 1]
        ),
    };
    Some(format!(
        "Maglev table size {size} is less than 100 × {n} backends: a one-slot difference is \
         more than 1% of a backend's share; {suggestion}"
    ))
}

/// Builds the table for `backends` (in any order) with `size` slots and hash `seed`.
/// See the module documentation for the algorithm and its guarantees.
pub fn build(backends: &[Backend], size: u32, seed: u32) -> Result<Table, MaglevError> {
    check_size(size)?;
    let sorted = sorted_and_checked(backends)?;
    // Weight-0 backends are left out before anything is hashed or scheduled, so quiescing a
    // backend is exactly the same table as removing it.
    let active: Vec<&Backend> = sorted.into_iter().filter(|b| b.weight > 0).collect();
    if active.is_empty() {
        return Ok(Table {
            slots: vec![NO_BACKEND; size as usize],
        });
    }
    if active.len() > size as usize {
        return Err(MaglevError::TooSmall {
            size,
            backends: active.len(),
        });
    }
    let weights: Vec<u32> = active.iter().map(|b| b.weight).collect();
    let quotas = apportion(size, &weights);
    Ok(Table {
        slots: fill(&active, &quotas, size, seed),
    })
}

fn check_size(size: u32) -> Result<(), MaglevError> {
    if size == 0 {
        return Err(MaglevError::ZeroSize);
    }
    if size > MAX_SIZE {
        return Err(MaglevError::TooLarge {
            size,
            max: MAX_SIZE,
        });
    }
    if !is_prime(size) {
        return Err(MaglevError::SizeNotPrime(size));
    }
    Ok(())
}

/// Trial division; at most ~2000 odd divisors for sizes up to [`MAX_SIZE`].
fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let n = u64::from(n);
    (3u64..)
        .step_by(2)
        .take_while(|d| d * d <= n)
        .all(|d| !n.is_multiple_of(d))
}

/// Sorts by key, the only order-independent identity, and rejects inputs that would make the
/// table ambiguous: two backends with one key (which placement?) or one id (which backend
/// does a slot mean?), or an id that reads as "empty slot".
fn sorted_and_checked(backends: &[Backend]) -> Result<Vec<&Backend>, MaglevError> {
    let mut sorted: Vec<&Backend> = backends.iter().collect();
    sorted.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    if let Some(pair) = sorted.windows(2).find(|p| p[0].key == p[1].key) {
        return Err(MaglevError::DuplicateKey(pair[1].key.clone()));
    }
    if let Some(b) = sorted.iter().find(|b| b.id == NO_BACKEND) {
        return Err(MaglevError::ReservedId {
            id: b.id,
            key: b.key.clone(),
        });
    }
    let mut ids: Vec<u32> = sorted.iter().map(|b| b.id).collect();
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|p| p[0] == p[1]) {
        return Err(MaglevError::DuplicateId(pair[0]));
    }
    Ok(sorted)
}

/// Slot quotas for positive `weights` summing to `size` exactly, each `⌊size·w/W⌋` or
/// `⌈size·w/W⌉` (largest-remainder apportionment; see the module docs for the order).
fn apportion(size: u32, weights: &[u32]) -> Vec<u32> {
    // u128: W can exceed u64 only with billions of backends, but M·w alone needs 64 bits and
    // the sum must not wrap whatever the caller passes.
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let m = u128::from(size);
    let (mut quotas, remainders): (Vec<u32>, Vec<u128>) = weights
        .iter()
        .map(|&w| {
            let exact = m * u128::from(w);
            // exact / total ≤ m = size, so the quotient fits in u32.
            ((exact / total) as u32, exact % total)
        })
        .unzip();
    // Σ⌊·⌋ ≤ size, and the leftover is Σ remainders / W < number of backends.
    let floor_sum: u64 = quotas.iter().map(|&q| u64::from(q)).sum();
    let leftover = (u64::from(size) - floor_sum) as usize;

    // Only backends with a fractional share are candidates, so every +1 turns a floor into
    // the ceiling. There are always more than `leftover` of them.
    let mut candidates: Vec<usize> = (0..weights.len()).filter(|&i| remainders[i] > 0).collect();
    candidates.sort_unstable_by(|&a, &b| {
        // Floor 0 first (false < true), then larger remainder, then smaller key (index).
        (quotas[a] != 0)
            .cmp(&(quotas[b] != 0))
            .then(remainders[b].cmp(&remainders[a]))
            .then(a.cmp(&b))
    });
    for &i in candidates.iter().take(leftover) {
        quotas[i] += 1;
    }
    quotas
}

/// Offset and skip of a backend's preference list. The two hashes use independent SipHash
/// keys (so offset and skip are independent, as the paper's h1 and h2), both mixed with the
/// seed so that different seeds give unrelated tables.
fn permutation(key: &[u8], size: u32, seed: u32) -> (u32, u32) {
    // Arbitrary fixed constants (ASCII, to make their origin obvious). Changing any of them
    // changes every table; the golden test catches that.
    const OFFSET_K0: u64 = u64::from_le_bytes(*b"lb:magle");
    const OFFSET_K1: u64 = u64::from_le_bytes(*b"v:offset");
    const SKIP_K0: u64 = u64::from_le_bytes(*b"lb:magle");
    const SKIP_K1: u64 = u64::from_le_bytes(*b"v:skip::");
    let seed = u64::from(seed);
    let m = u64::from(size);
    let offset = hash::siphash24(OFFSET_K0 ^ seed, OFFSET_K1 ^ seed, key) % m;
    // size ≥ 2 (prime), so size − 1 ≥ 1; skip ∈ [1, size − 1] is coprime with the prime size.
    let skip = hash::siphash24(SKIP_K0 ^ seed, SKIP_K1 ^ seed, key) % (m - 1) + 1;
    // Both are < size ≤ MAX_SIZE.
    (offset as u32, skip as u32)
}

/// A backend during the fill: its place in its preference list and its turn schedule.
struct Walker {
    id: u32,
    /// Next entry of the preference list to try, and the list's stride.
    pos: u32,
    skip: u32,
    /// Turns left after the one currently scheduled.
    left: u32,
    /// The scheduled turn's round is `⌈k·Q/q⌉` (`q` = quota, `Q` = largest quota), kept as
    /// `k·Q = floor·q + rem` and advanced by `Q = step·q + step_rem` without dividing.
    floor: u32,
    rem: u32,
    step: u32,
    step_rem: u32,
    q: u32,
}

impl Walker {
    fn round(&self) -> u32 {
        self.floor + u32::from(self.rem > 0)
    }

    fn advance_turn(&mut self) {
        self.floor += self.step;
        self.rem += self.step_rem;
        if self.rem >= self.q {
            self.floor += 1;
            self.rem -= self.q;
        }
    }
}

/// End of a round's list.
const NIL: u32 = u32::MAX;

/// The turn schedule: for each round, a FIFO list of backend indices, threaded through
/// `link` (a backend is in at most one round's list at a time).
struct Calendar {
    head: Vec<u32>,
    tail: Vec<u32>,
    link: Vec<u32>,
}

impl Calendar {
    /// Rounds `1..=rounds` for `backends` backends.
    fn new(rounds: u32, backends: usize) -> Self {
        let len = rounds as usize + 1;
        Self {
            head: vec![NIL; len],
            tail: vec![NIL; len],
            link: vec![NIL; backends],
        }
    }

    /// Appends backend `idx` to `round`'s list.
    fn schedule(&mut self, round: u32, idx: u32) {
        let round = round as usize;
        self.link[idx as usize] = NIL;
        match self.tail[round] {
            NIL => self.head[round] = idx,
            last => self.link[last as usize] = idx,
        }
        self.tail[round] = idx;
    }

    fn first(&self, round: u32) -> u32 {
        self.head[round as usize]
    }

    fn next(&self, idx: u32) -> u32 {
        self.link[idx as usize]
    }
}

/// Runs the turns; `active` is sorted by key, `quotas` sum to `size`.
///
/// Scheduling: with `Q` the largest quota, backend *i*'s `k`-th turn is in round `⌈k·Q/qᵢ⌉`
/// (the virtual time `k/qᵢ` of the module docs, quantised to `Q` rounds: a backend with the
/// largest quota has a turn every round, one with half of it every other round, as in
/// Katran's cumulative-weight rounds). Rounds run in order; within a round, backends go in
/// the order they were scheduled into it (initially key order), which for equal quotas is
/// the paper's round robin. A round is a FIFO list threaded through `link`, so a turn costs
/// O(1) and the whole schedule O(M + Q), whatever the weights.
fn fill(active: &[&Backend], quotas: &[u32], size: u32, seed: u32) -> Vec<u32> {
    let max_quota = quotas.iter().copied().max().unwrap_or(0);
    let mut walkers: Vec<Walker> = active
        .iter()
        .zip(quotas)
        .map(|(b, &q)| {
            let (offset, skip) = permutation(&b.key, size, seed);
            // q = 0 never gets scheduled; the division guard only keeps the arithmetic sane.
            let qd = q.max(1);
            Walker {
                id: b.id,
                pos: offset,
                skip,
                left: q.saturating_sub(1),
                floor: max_quota / qd,
                rem: max_quota % qd,
                step: max_quota / qd,
                step_rem: max_quota % qd,
                q: qd,
            }
        })
        .collect();

    let mut calendar = Calendar::new(max_quota, walkers.len());
    for (idx, (w, &q)) in (0u32..).zip(walkers.iter().zip(quotas)) {
        if q > 0 {
            calendar.schedule(w.round(), idx);
        }
    }

    // NO_BACKEND marks a free slot: no backend may have that id (checked).
    let mut slots = vec![NO_BACKEND; size as usize];
    let advance = |pos: u32, skip: u32| {
        // pos, skip < size ≤ 2^24: no overflow, and one subtraction reduces mod size.
        let next = pos + skip;
        if next >= size {
            next - size
        } else {
            next
        }
    };
    for round in 1..=max_quota {
        let mut cur = calendar.first(round);
        while cur != NIL {
            // Read before `schedule` reuses this backend's link for a later round.
            let next = calendar.next(cur);
            let w = &mut walkers[cur as usize];
            // Terminates: a turn is pending, so fewer than `size` slots are taken (one per
            // turn, Σquotas = size), and the list visits every slot within `size` steps.
            // (Locals, so the probe loop keeps them in registers.)
            let (mut pos, skip) = (w.pos, w.skip);
            while slots[pos as usize] != NO_BACKEND {
                pos = advance(pos, skip);
            }
            slots[pos as usize] = w.id;
            w.pos = advance(pos, skip);
            if w.left > 0 {
                w.left -= 1;
                w.advance_turn();
                // Always a later round: q ≤ Q, so consecutive turns are ≥ 1 round apart,
                // and the last one (k = q) is round Q exactly.
                calendar.schedule(w.round(), cur);
            }
            cur = next;
        }
    }
    slots
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly by design")]
mod tests {
    use super::*;

    /// IPv4 address + port bytes, as the agent builds keys.
    fn key(i: u32) -> Vec<u8> {
        let [a, b, c, d] = (0x0a00_0000u32 + i).to_be_bytes();
        vec![a, b, c, d, 0, 80]
    }

    fn equal(n: u32) -> Vec<Backend> {
        (0..n).map(|i| Backend::new(i, key(i), 1)).collect()
    }

    /// Deterministic pseudo-random numbers (xorshift64*), so the tests need no `rand`.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn shuffle<T>(&mut self, v: &mut [T]) {
            for i in (1..v.len()).rev() {
                let j = (self.next() % (i as u64 + 1)) as usize;
                v.swap(i, j);
            }
        }
    }

    /// Asserts the share guarantee: each positive-weight backend has ⌊M·w/W⌋ or ⌈M·w/W⌉
    /// slots, weight-0 backends none, and nothing else is in the table.
    fn assert_apportioned(table: &Table, backends: &[Backend]) {
        let m = u128::from(table.size());
        let total: u128 = backends.iter().map(|b| u128::from(b.weight)).sum();
        let counts = table.counts();
        let mut seen = 0u64;
        for b in backends {
            let got = u128::from(counts.get(&b.id).copied().unwrap_or(0));
            seen += got as u64;
            let exact = m * u128::from(b.weight);
            let (floor, ceil) = (exact / total, exact.div_ceil(total));
            assert!(
                got == floor || got == ceil,
                "backend {} weight {}: {got} slots, want {floor} or {ceil}",
                b.id,
                b.weight
            );
        }
        assert_eq!(
            seen,
            u64::from(table.size()),
            "slots outside the backend set"
        );
    }

    #[test]
    fn constants() {
        assert_eq!(DEFAULT_SIZE, 65537);
        assert_eq!(NO_BACKEND, u32::MAX);
        assert!(SIZES.windows(2).all(|w| w[0] < w[1]));
        for &s in SIZES {
            assert!(is_prime(s), "{s}");
        }
        assert!(!is_prime(0) && !is_prime(1) && is_prime(2) && is_prime(3) && !is_prime(4));
        assert!(!is_prime(65535) && !is_prime(65541) && is_prime(65539));
        assert!(!is_prime(4093 * 4091) && is_prime(16_777_213));
    }

    #[test]
    fn golden_table() {
        let backends = vec![
            Backend::new(7, [10, 0, 0, 1, 0, 80], 1),
            Backend::new(3, [10, 0, 0, 2, 0, 80], 2),
            Backend::new(5, [10, 0, 0, 3, 0, 80], 3),
        ];
        let t = build(&backends, 251, 0x5eed).unwrap();
        // Frozen from the first build, and reproduced by an independent Python transcription
        // of the module docs. If this fails, the algorithm, the hash or its constants
        // changed: every host's tables change with it, so such a change must be deliberate
        // and rolled out to a whole ECMP group at once.
        const FIRST_20: [u32; 20] = [5, 3, 3, 3, 7, 5, 5, 7, 5, 5, 5, 3, 3, 3, 3, 5, 5, 5, 5, 5];
        assert_eq!(t.slots()[..20], FIRST_20);
        assert_eq!(t.fingerprint(), 0x97a3_b692_741a_5d70);
        // 251·{1,2,3}/6 = 41.83, 83.67, 125.5
        assert_eq!(t.counts(), BTreeMap::from([(7, 42), (3, 84), (5, 125)]));

        // A larger weighted case, pinned by the same Python transcription only.
        let backends: Vec<Backend> = (0u32..4).map(|i| Backend::new(i, key(i), i + 1)).collect();
        let t = build(&backends, 4093, 9).unwrap();
        assert_eq!(t.fingerprint(), 0xab9c_59f3_33ff_50c7);
    }

    #[test]
    fn order_independent() {
        let mut rng = Rng(0x1234_5678);
        let mut backends: Vec<Backend> = (0..50)
            .map(|i| Backend::new(i, key(i), 1 + (rng.next() % 5) as u32))
            .collect();
        let reference = build(&backends, 4093, 1).unwrap();
        backends.reverse();
        assert_eq!(build(&backends, 4093, 1).unwrap(), reference);
        for _ in 0..5 {
            rng.shuffle(&mut backends);
            assert_eq!(build(&backends, 4093, 1).unwrap(), reference);
        }
    }

    #[test]
    fn ids_only_label_slots() {
        // Placement depends on keys, not ids: renumbering relabels the same slots.
        let a: Vec<Backend> = (0..20)
            .map(|i| Backend::new(i, key(i), 1 + i % 3))
            .collect();
        let b: Vec<Backend> = a
            .iter()
            .map(|x| Backend::new(1000 + 7 * x.id, x.key.clone(), x.weight))
            .collect();
        let (ta, tb) = (build(&a, 2039, 3).unwrap(), build(&b, 2039, 3).unwrap());
        assert!(ta
            .slots()
            .iter()
            .zip(tb.slots())
            .all(|(&x, &y)| y == 1000 + 7 * x));
    }

    #[test]
    fn equal_weights_within_one_slot() {
        for (n, m) in [
            (7, 65537),
            (100, 65537),
            (100, 16381),
            (3, 251),
            (1000, 131071),
        ] {
            let backends = equal(n);
            let t = build(&backends, m, 42).unwrap();
            assert_apportioned(&t, &backends);
            let counts = t.counts();
            let (lo, hi) = (
                counts.values().min().unwrap(),
                counts.values().max().unwrap(),
            );
            assert!(hi - lo <= 1, "n={n} m={m}: {lo}..={hi}");
            assert_eq!(counts.len(), n as usize);
        }
    }

    #[test]
    fn weighted_shares_within_one_slot() {
        let cases: &[&[u32]] = &[
            &[1, 10],
            &[1, 2, 3, 4],
            &[1_000_000, 1],
            &[5, 5, 5, 1],
            &[100, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        ];
        for weights in cases {
            for &m in &[251, 65537] {
                let backends: Vec<Backend> = (0u32..)
                    .zip(weights.iter())
                    .map(|(i, &w)| Backend::new(i, key(i), w))
                    .collect();
                let t = build(&backends, m, 9).unwrap();
                assert_apportioned(&t, &backends);
            }
        }
        // Exact figures for the headline cases at M = 65537.
        let t = build(
            &[Backend::new(0, key(0), 1), Backend::new(1, key(1), 10)],
            65537,
            9,
        )
        .unwrap();
        // 65537/11 = 5957.9 and 59579.1
        assert_eq!(t.counts(), BTreeMap::from([(0, 5958), (1, 59579)]));
        // Share 0.066 slot: below one slot, but still one rather than none (ceil is allowed).
        let t = build(
            &[
                Backend::new(0, key(0), 1_000_000),
                Backend::new(1, key(1), 1),
            ],
            65537,
            9,
        )
        .unwrap();
        assert_eq!(t.counts(), BTreeMap::from([(0, 65536), (1, 1)]));
    }

    #[test]
    fn random_weights_within_one_slot() {
        let mut rng = Rng(77);
        for round in 0..200u32 {
            let m = SIZES[(round as usize) % 5];
            let n = 1 + (rng.next() % 40) as u32;
            let backends: Vec<Backend> = (0..n)
                .map(|i| {
                    let w = match rng.next() % 4 {
                        0 => 0,
                        1 => (rng.next() % 10) as u32,
                        2 => (rng.next() % 100_000) as u32,
                        _ => rng.next() as u32,
                    };
                    Backend::new(i, key(i), w)
                })
                .collect();
            let t = build(&backends, m, round).unwrap();
            if backends.iter().all(|b| b.weight == 0) {
                assert!(t.slots().iter().all(|&s| s == NO_BACKEND));
            } else {
                assert_apportioned(&t, &backends);
            }
        }
    }

    fn print_disruption(what: &str, d: &Disruption, min: f64) {
        println!("{what}: {d}; theoretical minimum {:.2}%", 100.0 * min);
    }

    #[test]
    fn removing_one_of_100() {
        let before = equal(100);
        let after: Vec<Backend> = before.iter().filter(|b| b.id != 37).cloned().collect();
        let (old, new) = (
            build(&before, DEFAULT_SIZE, 0xabc).unwrap(),
            build(&after, DEFAULT_SIZE, 0xabc).unwrap(),
        );
        let d = disruption(&old, &new);
        let min = min_moved_fraction(
            before.iter().map(|b| (b.id, b.weight)),
            after.iter().map(|b| (b.id, b.weight)),
        );
        print_disruption("remove 1 of 100", &d, min);
        let removed = old.counts()[&37];
        assert_eq!(d.forced, removed);
        assert_eq!(d.moved, d.forced + d.collateral);
        assert!((d.forced_fraction() - min).abs() < 2.0 / f64::from(DEFAULT_SIZE));
        // Every slot of the removed backend moved, and only survivors' slots are collateral.
        assert!(old
            .slots()
            .iter()
            .zip(new.slots())
            .all(|(&o, &n)| o != 37 || n != 37));
        assert!(d.collateral_fraction() < 0.02, "{d}");
    }

    #[test]
    fn adding_one_to_100() {
        let before = equal(100);
        let mut after = before.clone();
        after.push(Backend::new(100, key(100), 1));
        let (old, new) = (
            build(&before, DEFAULT_SIZE, 0xabc).unwrap(),
            build(&after, DEFAULT_SIZE, 0xabc).unwrap(),
        );
        let d = disruption(&old, &new);
        let min = min_moved_fraction(
            before.iter().map(|b| (b.id, b.weight)),
            after.iter().map(|b| (b.id, b.weight)),
        );
        print_disruption("add 1 to 100", &d, min);
        // The newcomer's slots all had to come from someone.
        assert_eq!(d.forced, new.counts()[&100]);
        assert!(d.collateral_fraction() < 0.02, "{d}");
    }

    #[test]
    fn reweighting_one_of_100() {
        let before = equal(100);
        let mut after = before.clone();
        after[10].weight = 2;
        let (old, new) = (
            build(&before, DEFAULT_SIZE, 0xabc).unwrap(),
            build(&after, DEFAULT_SIZE, 0xabc).unwrap(),
        );
        let d = disruption(&old, &new);
        let min = min_moved_fraction(
            before.iter().map(|b| (b.id, b.weight)),
            after.iter().map(|b| (b.id, b.weight)),
        );
        print_disruption("weight 1 -> 2 for 1 of 100", &d, min);
        assert!(d.collateral_fraction() < 0.03, "{d}");
    }

    #[test]
    fn quiesce_is_removal() {
        let before = equal(20);
        let mut quiesced = before.clone();
        quiesced[4].weight = 0;
        let removed: Vec<Backend> = before.iter().filter(|b| b.id != 4).cloned().collect();
        assert_eq!(
            build(&quiesced, 4093, 5).unwrap(),
            build(&removed, 4093, 5).unwrap()
        );
    }

    #[test]
    fn no_backends() {
        for backends in [
            vec![],
            vec![Backend::new(1, key(1), 0), Backend::new(2, key(2), 0)],
        ] {
            let t = build(&backends, 251, 0).unwrap();
            assert_eq!(t.size(), 251);
            assert!(t.slots().iter().all(|&s| s == NO_BACKEND));
            assert_eq!(t.counts(), BTreeMap::from([(NO_BACKEND, 251)]));
            assert_eq!(t.lookup(12345), NO_BACKEND);
        }
    }

    #[test]
    fn one_backend_gets_everything() {
        for w in [1, 7, u32::MAX] {
            let t = build(&[Backend::new(9, key(9), w)], 65537, 3).unwrap();
            assert!(t.slots().iter().all(|&s| s == 9));
        }
    }

    #[test]
    fn bad_sizes() {
        let b = equal(3);
        assert_eq!(build(&b, 0, 0), Err(MaglevError::ZeroSize));
        assert_eq!(build(&b, 1, 0), Err(MaglevError::SizeNotPrime(1)));
        assert_eq!(build(&b, 65536, 0), Err(MaglevError::SizeNotPrime(65536)));
        assert_eq!(build(&[], 1000, 0), Err(MaglevError::SizeNotPrime(1000)));
        assert_eq!(
            build(&b, u32::MAX, 0),
            Err(MaglevError::TooLarge {
                size: u32::MAX,
                max: MAX_SIZE
            })
        );
        assert_eq!(
            build(&equal(5), 3, 0),
            Err(MaglevError::TooSmall {
                size: 3,
                backends: 5
            })
        );
        // As many backends as slots still works: one slot each.
        let t = build(&equal(3), 3, 0).unwrap();
        assert_eq!(t.counts().len(), 3);
        let t = build(&equal(2), 2, 0).unwrap();
        assert_eq!(t.counts(), BTreeMap::from([(0, 1), (1, 1)]));
        let msg = MaglevError::SizeNotPrime(1000).to_string();
        assert!(msg.contains("1000 is not prime"), "{msg}");
    }

    #[test]
    fn duplicates_rejected() {
        let dup_key = vec![Backend::new(1, key(5), 1), Backend::new(2, key(5), 1)];
        let err = build(&dup_key, 251, 0).unwrap_err();
        assert_eq!(err, MaglevError::DuplicateKey(key(5)));
        assert_eq!(err.to_string(), "duplicate backend key 0a0000050050");
        // Duplicates are errors even when one of them is quiesced.
        let dup_id = vec![Backend::new(4, key(1), 1), Backend::new(4, key(2), 0)];
        assert_eq!(build(&dup_id, 251, 0), Err(MaglevError::DuplicateId(4)));
        let reserved = vec![Backend::new(NO_BACKEND, key(1), 1)];
        assert!(matches!(
            build(&reserved, 251, 0),
            Err(MaglevError::ReservedId { .. })
        ));
    }

    #[test]
    fn small_size_warning() {
        assert_eq!(warn_small(65537, 655), None);
        assert_eq!(warn_small(251, 0), None);
        let w = warn_small(65537, 1000).unwrap();
        assert!(
            w.contains("65537") && w.contains("1000") && w.contains("131071"),
            "{w}"
        );
        let w = warn_small(251, 3).unwrap();
        assert!(w.contains("509"), "{w}");
        let w = warn_small(131071, 5000).unwrap();
        assert!(w.contains("at least 500000"), "{w}");
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let backends: Vec<Backend> = (0..1000)
            .map(|i| Backend::new(i, key(i), u32::MAX))
            .collect();
        let t = build(&backends, 65537, 0).unwrap();
        assert_apportioned(&t, &backends);
        let mut mixed = backends[..3].to_vec();
        mixed.push(Backend::new(3, key(3), 1));
        let t = build(&mixed, 251, 0).unwrap();
        assert_apportioned(&t, &mixed);
        assert_eq!(
            min_moved_fraction(
                backends.iter().map(|b| (b.id, b.weight)),
                backends.iter().map(|b| (b.id, b.weight))
            ),
            0.0
        );
    }

    #[test]
    fn seed_changes_table() {
        let b = equal(10);
        let a1 = build(&b, 4093, 1).unwrap();
        assert_eq!(build(&b, 4093, 1).unwrap(), a1);
        let a2 = build(&b, 4093, 2).unwrap();
        assert_ne!(a1.fingerprint(), a2.fingerprint());
        // Unrelated, not merely shifted: about 9/10 of slots differ.
        assert!(a2.changed_slots(&a1).len() > 3000);
    }

    #[test]
    fn diffs_and_fingerprints() {
        let old = build(&equal(10), 251, 0).unwrap();
        let new = build(&equal(11), 251, 0).unwrap();
        let changed = new.changed_slots(&old);
        assert!(!changed.is_empty());
        for i in 0..251u32 {
            let differs = old.slots()[i as usize] != new.slots()[i as usize];
            assert_eq!(differs, changed.binary_search(&i).is_ok());
        }
        assert!(new.changed_slots(&new).is_empty());
        let bigger = build(&equal(10), 509, 0).unwrap();
        assert_eq!(bigger.changed_slots(&old).len(), 509);
        let d = disruption(&old, &bigger);
        assert_eq!(
            (d.moved, d.forced, d.collateral, d.size),
            (509, 509, 0, 509)
        );
        assert_eq!(Table::from_slots(old.slots().to_vec()), old);
        assert_eq!(
            Table::from_slots(vec![1, 2]).fingerprint(),
            hash::fnv1a64([1, 0, 0, 0, 2, 0, 0, 0])
        );
        // From nothing to something moves everything, and that is all forced.
        let empty = build(&[], 251, 0).unwrap();
        let d = disruption(&empty, &old);
        assert_eq!((d.moved, d.forced, d.collateral), (251, 251, 0));
    }

    #[test]
    fn min_moved_fraction_cases() {
        let f = |a: &[(u8, u32)], b: &[(u8, u32)]| {
            min_moved_fraction(a.iter().copied(), b.iter().copied())
        };
        assert_eq!(f(&[(1, 1), (2, 1)], &[(1, 1), (2, 1)]), 0.0);
        assert!((f(&[(1, 1), (2, 1)], &[(1, 1)]) - 0.5).abs() < 1e-12);
        assert!((f(&[(1, 1), (2, 1)], &[(1, 1), (2, 1), (3, 2)]) - 0.5).abs() < 1e-12);
        assert!((f(&[(1, 1), (2, 3)], &[(1, 3), (2, 1)]) - 0.5).abs() < 1e-12);
        assert_eq!(f(&[], &[(1, 1)]), 1.0);
        assert_eq!(f(&[(1, 1)], &[(1, 0)]), 1.0);
        assert_eq!(f(&[], &[]), 0.0);
    }

    #[test]
    fn build_time_n1000() {
        // Median of 11 builds; printed, not asserted (the target is ≤ 3 ms in release).
        let median = |backends: &[Backend]| {
            let mut times: Vec<_> = (0..11)
                .map(|_| {
                    let start = std::time::Instant::now();
                    let t = build(backends, DEFAULT_SIZE, 7).unwrap();
                    let elapsed = start.elapsed();
                    assert_eq!(t.size(), DEFAULT_SIZE);
                    elapsed
                })
                .collect();
            times.sort();
            times[times.len() / 2]
        };
        let backends = equal(1000);
        let mut skewed = backends.clone();
        skewed[0].weight = 1000;
        println!(
            "build N=1000 M=65537 ({} build): equal weights {:?}, one backend weight 1000 {:?} (medians)",
            if cfg!(debug_assertions) { "debug" } else { "release" },
            median(&backends),
            median(&skewed),
        );
    }
}
