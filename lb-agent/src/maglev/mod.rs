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
//!   backend's *positions* depend on its key only (for a configured target, its address:
//!   [`target_key`]); its `id` is just the value written into its slots. So hosts that
//!   number their backends differently still send every flow to the same backend (only
//!   their fingerprints differ).
//! * **Cost:** `O(N log N)` to sort and apportion, `O(M + Q)` to schedule the turns (a
//!   calendar of per-round FIFO lists, O(1) per turn whatever the weights), plus Maglev's
//!   expected `O(M log M)` walking of preference lists. A handful of allocations per table
//!   (`O(M + N)` memory), none per slot. `M = 65537`, `N = 1000` takes about 2 ms in a
//!   release build on the development machine (`build_time_n1000` prints it).
//!
//! The table is not bit-compatible with Katran's or Cilium's (different hash); it does not
//! need to be, only every host running this builder must agree.

mod disruption;
mod hash;
pub(crate) use hash::fnv1a64;

pub use disruption::{disruption, min_moved_fraction, Disruption};

use std::{collections::BTreeMap, fmt, net::IpAddr};

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
    /// Stable identity bytes, hashed to place the backend: for a configured target,
    /// [`target_key`]. Must be the same on every host and across restarts; ids may differ.
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

    /// The configured target at `addr`, placed by its [`target_key`].
    pub fn for_target(id: u32, addr: impl Into<IpAddr>, weight: u32) -> Self {
        Self::new(id, target_key(addr.into()), weight)
    }
}

/// The key that places a configured target in every ring: its address as text, as
/// `IpAddr`'s `Display` writes it (`198.18.0.10`, `2001:db8::1`), in bytes. Addresses are
/// unique within a group; the weight is not part of the key, so a weight change keeps the
/// target's preference list.
///
/// This rule must never change: a backend's slots follow from its key alone, so another
/// rule would reshuffle every ring on upgrade (moving every flow the flow table does not
/// hold), and hosts of one ECMP group on different versions would disagree on flows.
pub fn target_key(addr: IpAddr) -> Vec<u8> {
    addr.to_string().into_bytes()
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
mod tests;
