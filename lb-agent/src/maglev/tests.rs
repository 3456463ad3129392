//! The builder's table tests: shares, determinism, disruption, errors.

use super::*;

/// Distinct keys for the table tests: IPv4 address octets and a port. Any distinct bytes
/// will do here; the agent keys its targets by [`target_key`].
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

/// The target-key rule is part of every ring's layout: this pins it (see [`target_key`]).
#[test]
fn target_key_is_the_address_text() {
    let v4: IpAddr = "198.18.0.10".parse().unwrap();
    let v6: IpAddr = "2001:db8:0:0::1".parse().unwrap();
    assert_eq!(target_key(v4), b"198.18.0.10");
    assert_eq!(target_key(v6), b"2001:db8::1");
    assert_eq!(
        Backend::for_target(7, v4, 3),
        Backend::new(7, b"198.18.0.10".to_vec(), 3)
    );
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
    let f =
        |a: &[(u8, u32)], b: &[(u8, u32)]| min_moved_fraction(a.iter().copied(), b.iter().copied());
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
