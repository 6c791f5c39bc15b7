//! A compact set of 64-bit fingerprints: the dupefilter's seen-set.
//!
//! The set is split into 2^16 shards by the fingerprint's top 16 bits, and a
//! shard stores only the low 48 bits, in 6 bytes: the top bits are implied
//! by the shard, so the set is still exact on all 64 bits. Each shard is an
//! open-addressing table with linear probing. Fingerprints are already
//! uniform hashes, so the slot is picked by a multiply-shift ("fastrange") on
//! the stored bits, and a shard's size need not be a power of two. A shard
//! fills up to 7/8 and then grows by 1.25×, so it holds between
//! 6 / (7/8) ≈ 6.9 and 6 / (7/8 / 1.25) ≈ 8.6 bytes per fingerprint, plus
//! 1.5 MiB for the shard directory.
//!
//! Why shards: a single table must hold its old and its new array while it
//! grows. At 20 million fingerprints a single table of `u64`s grew from
//! 137 MB to 206 MB, and needed 343 MB while it did. A shard grows alone, so
//! the set never needs more than one shard's worth (a few KiB) on top.
//!
//! All-zero bytes mark an empty slot; a fingerprint whose low 48 bits are 0
//! is stored as if they were 1 (one more collision chance in 2^48, for that
//! fingerprint only).
//!
//! Why not shards from the start: the shards are 65,536 small blocks, each
//! reallocated as it grows, so a set of a few hundred thousand fingerprints
//! is that many blocks of 24–100 bytes spread over the whole heap, among the
//! crawl's short-lived blocks. Each keeps its page from going back to the
//! system: after a 100,000-host broad crawl, 5 MB in use kept 88 MB of heap
//! resident. So the set starts as one flat table of whole fingerprints (one
//! block, 9–18 bytes each) and is split into shards, each sized once for its
//! share, when it reaches [`FLAT_MAX`].

/// A set of fingerprints; see the module documentation.
#[derive(Default)]
pub struct FingerprintSet {
    /// The first phase: whole fingerprints, 0 for an empty slot (the
    /// fingerprint 0 itself is `has_zero`), a power of two long.
    flat: Box<[u64]>,
    has_zero: bool,
    /// The second phase: empty until the flat table is split, then `SHARDS` long.
    shards: Box<[Shard]>,
    len: usize,
    /// Bytes of all the shards' slots.
    slot_bytes: usize,
}

/// The flat table is split into shards when it holds this many: 7/8 of
/// 2^20 slots, so it never takes more than 8 MiB.
const FLAT_MAX: usize = (1 << 20) / 8 * 7;

#[derive(Default)]
struct Shard {
    slots: Box<[[u8; 6]]>,
    len: u32,
}

const SHARD_BITS: u32 = 16;
const SHARDS: usize = 1 << SHARD_BITS;
/// A shard's first size, in slots.
const MIN_CAPACITY: usize = 4;

/// The shard and the stored 48 bits of a fingerprint.
#[inline]
fn split(fp: u64) -> (usize, u64) {
    let low = (fp & ((1 << 48) - 1)).max(1);
    ((fp >> 48) as usize, low)
}

#[inline]
fn encode(low: u64) -> [u8; 6] {
    let b = low.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// The slot a fingerprint starts probing from: its stored bits scaled to `n`.
#[inline]
fn home(low: u64, n: usize) -> usize {
    ((u128::from(low << 16) * n as u128) >> 64) as usize
}

impl FingerprintSet {
    /// Inserts the fingerprint; true when it was not there before.
    pub fn insert(&mut self, fp: u64) -> bool {
        if self.shards.is_empty() {
            if self.len < FLAT_MAX {
                return self.insert_flat(fp);
            }
            if self.contains(fp) {
                return false;
            }
            self.split_flat();
        }
        let (s, low) = split(fp);
        let shard = &mut self.shards[s];
        if (shard.len as usize + 1) * 8 > shard.slots.len() * 7 {
            let before = shard.slots.len();
            shard.grow();
            self.slot_bytes += (shard.slots.len() - before) * 6;
        }
        if place(&mut shard.slots, low) {
            shard.len += 1;
            self.len += 1;
            true
        } else {
            false
        }
    }

    fn insert_flat(&mut self, fp: u64) -> bool {
        if fp == 0 {
            let new = !self.has_zero;
            self.has_zero = true;
            self.len += usize::from(new);
            return new;
        }
        if (self.len + 1) * 8 > self.flat.len() * 7 {
            let cap = (self.flat.len() * 2).max(64);
            let old = std::mem::replace(&mut self.flat, vec![0; cap].into_boxed_slice());
            for x in old.iter().filter(|x| **x != 0) {
                place_flat(&mut self.flat, *x);
            }
        }
        let new = place_flat(&mut self.flat, fp);
        self.len += usize::from(new);
        new
    }

    /// Moves the flat table's fingerprints into shards, each allocated once
    /// with room for its share, and frees the table.
    fn split_flat(&mut self) {
        let flat = std::mem::take(&mut self.flat);
        let all = || {
            flat.iter()
                .copied()
                .filter(|x| *x != 0)
                .chain(self.has_zero.then_some(0))
        };
        let mut counts = vec![0u32; SHARDS];
        for fp in all() {
            counts[split(fp).0] += 1;
        }
        let mut shards: Box<[Shard]> = counts
            .iter()
            .map(|&n| {
                let mut cap = MIN_CAPACITY;
                while (n as usize + 1) * 8 > cap * 7 {
                    cap += cap.div_ceil(4);
                }
                Shard {
                    slots: vec![[0u8; 6]; cap].into_boxed_slice(),
                    len: 0,
                }
            })
            .collect();
        for fp in all() {
            let (s, low) = split(fp);
            place(&mut shards[s].slots, low);
            shards[s].len += 1;
        }
        self.slot_bytes = shards.iter().map(|s| s.slots.len() * 6).sum();
        self.shards = shards;
    }

    /// Whether the fingerprint is in the set.
    pub fn contains(&self, fp: u64) -> bool {
        if self.shards.is_empty() {
            if fp == 0 {
                return self.has_zero;
            }
            return contains_flat(&self.flat, fp);
        }
        let (s, low) = split(fp);
        let slots = &self.shards[s].slots;
        let n = slots.len();
        if n == 0 {
            return false;
        }
        let key = encode(low);
        let mut i = home(low, n);
        loop {
            match slots[i] {
                [0, 0, 0, 0, 0, 0] => return false,
                x if x == key => return true,
                _ => i = if i + 1 == n { 0 } else { i + 1 },
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the set holds on the heap: the flat table, or the shards' slots and the directory.
    pub fn heap_bytes(&self) -> usize {
        self.flat.len() * 8 + self.slot_bytes + self.shards.len() * std::mem::size_of::<Shard>()
    }
}

impl Shard {
    fn grow(&mut self) {
        let n = self.slots.len();
        let cap = (n + n.div_ceil(4)).max(MIN_CAPACITY);
        let mut slots = vec![[0u8; 6]; cap].into_boxed_slice();
        for x in self.slots.iter().filter(|x| **x != [0; 6]) {
            let mut b = [0u8; 8];
            b[..6].copy_from_slice(x);
            place(&mut slots, u64::from_le_bytes(b));
        }
        self.slots = slots;
    }
}

/// The flat table's slot for a (non-zero) fingerprint to start probing from.
#[inline]
fn home_flat(fp: u64, n: usize) -> usize {
    // Fingerprints are uniform: the top bits pick the slot (n is a power of two).
    (fp >> (64 - n.trailing_zeros())) as usize
}

/// Puts a non-zero fingerprint in the flat table; false when it was already there.
#[inline]
fn place_flat(slots: &mut [u64], fp: u64) -> bool {
    let mask = slots.len() - 1;
    let mut i = home_flat(fp, slots.len());
    loop {
        match slots[i] {
            0 => {
                slots[i] = fp;
                return true;
            }
            x if x == fp => return false,
            _ => i = (i + 1) & mask,
        }
    }
}

fn contains_flat(slots: &[u64], fp: u64) -> bool {
    if slots.is_empty() {
        return false;
    }
    let mask = slots.len() - 1;
    let mut i = home_flat(fp, slots.len());
    loop {
        match slots[i] {
            0 => return false,
            x if x == fp => return true,
            _ => i = (i + 1) & mask,
        }
    }
}

/// Puts `low` (non-zero, 48 bits) in the table; false when it was already there.
#[inline]
fn place(slots: &mut [[u8; 6]], low: u64) -> bool {
    let n = slots.len();
    let key = encode(low);
    let mut i = home(low, n);
    loop {
        match slots[i] {
            [0, 0, 0, 0, 0, 0] => {
                slots[i] = key;
                return true;
            }
            x if x == key => return false,
            _ => i = if i + 1 == n { 0 } else { i + 1 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: uniform like xxh3 output.
    fn uniform(n: usize) -> Vec<u64> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            })
            .collect()
    }

    #[test]
    fn inserts_once_and_finds() {
        let mut s = FingerprintSet::default();
        assert!(!s.contains(42));
        assert!(s.insert(42));
        assert!(!s.insert(42));
        assert!(s.contains(42));
        assert!(s.insert(0));
        assert!(!s.insert(0));
        assert!(s.contains(0));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn exact_on_all_64_bits() {
        let mut s = FingerprintSet::default();
        // Same low 48 bits, other shards; same shard, other low bits.
        let a = 0x0001_1234_5678_9ABC_u64;
        assert!(s.insert(a));
        assert!(!s.contains(a ^ (1 << 63)));
        assert!(s.insert(a ^ (1 << 63)));
        assert!(!s.contains(a ^ 1));
        assert!(s.insert(a ^ 1));
        assert!(s.insert(u64::MAX));
        assert!(s.contains(u64::MAX) && s.contains(a) && s.contains(a ^ 1));
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn the_flat_table_splits_into_shards_and_keeps_every_fingerprint() {
        let mut s = FingerprintSet::default();
        let all = uniform(FLAT_MAX + 1000);
        assert!(s.insert(0));
        for &fp in &all[..FLAT_MAX - 1] {
            assert!(s.insert(fp));
        }
        assert!(s.shards.is_empty(), "still flat at {}", s.len());
        assert!(s.heap_bytes() <= 8 << 20, "{} bytes flat", s.heap_bytes());
        assert!(!s.insert(all[7]) && !s.insert(0));
        for &fp in &all[FLAT_MAX - 1..] {
            assert!(s.insert(fp));
        }
        assert!(!s.shards.is_empty() && s.flat.is_empty());
        assert_eq!(s.len(), all.len() + 1);
        assert!(s.contains(0) && !s.insert(0));
        assert!(all.iter().all(|&fp| s.contains(fp) && !s.insert(fp)));
        assert!(uniform(FLAT_MAX + 2000)[FLAT_MAX + 1000..]
            .iter()
            .all(|&fp| !s.contains(fp)));
        // Each shard was sized once for its share: 6.9–8.6 bytes each.
        let per = s.slot_bytes as f64 / s.len() as f64;
        assert!(
            (6.8..=9.0).contains(&per),
            "{per:.2} bytes each after the split"
        );
    }

    #[test]
    fn many_fingerprints_at_most_9_bytes_each() {
        let mut s = FingerprintSet::default();
        let all = uniform(2_000_000);
        for (i, &fp) in all.iter().enumerate() {
            assert!(s.insert(fp));
            let n = i + 1;
            // Past a few entries per shard, the slots cost 6.9–8.6 bytes each.
            if n >= 16 * SHARDS && n % 4096 == 0 {
                let per = s.slot_bytes as f64 / n as f64;
                assert!((6.8..=9.0).contains(&per), "{per:.2} bytes each at {n}");
            }
        }
        assert_eq!(s.len(), all.len());
        assert!(all.iter().all(|&fp| s.contains(fp) && !s.insert(fp)));
        assert!(uniform(2_100_000)[2_000_000..]
            .iter()
            .all(|&fp| !s.contains(fp)));
        assert_eq!(s.len(), all.len());
    }
}
