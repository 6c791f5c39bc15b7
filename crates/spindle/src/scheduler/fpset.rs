//! A compact set of 64-bit fingerprints: the dupefilter's seen-set.
//!
//! An open-addressing table of bare `u64`s with linear probing. Fingerprints are
//! already uniform hashes, so the slot is picked by a multiply-shift ("fastrange")
//! on the fingerprint itself, and the table size need not be a power of two. That
//! lets it grow by 1.5× instead of 2× and fill up to 7/8, so it costs between
//! 8 / (7/8) ≈ 9.1 and 8 / (7/8 / 1.5) ≈ 13.7 bytes per fingerprint, never more
//! than 16. A `std` `HashSet<u64>` costs 9 bytes per bucket at load 7/16–7/8,
//! i.e. 10.3–20.6 bytes per entry. 0 marks an empty slot; the fingerprint 0 is
//! stored as 1 (one more collision chance in 2^64).

/// A set of fingerprints; see the module documentation.
#[derive(Default)]
pub struct FingerprintSet {
    slots: Box<[u64]>,
    len: usize,
}

const MIN_CAPACITY: usize = 1024;

impl FingerprintSet {
    /// Inserts the fingerprint; true when it was not there before.
    pub fn insert(&mut self, fp: u64) -> bool {
        let fp = fp.max(1);
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.grow();
        }
        if place(&mut self.slots, fp) {
            self.len += 1;
            true
        } else {
            false
        }
    }

    /// Whether the fingerprint is in the set.
    pub fn contains(&self, fp: u64) -> bool {
        let fp = fp.max(1);
        if self.slots.is_empty() {
            return false;
        }
        let n = self.slots.len();
        let mut i = home(fp, n);
        loop {
            match self.slots[i] {
                0 => return false,
                x if x == fp => return true,
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

    /// Bytes the table itself holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<u64>()
    }

    fn grow(&mut self) {
        let cap = (self.slots.len() + self.slots.len() / 2).max(MIN_CAPACITY);
        let mut slots = vec![0u64; cap].into_boxed_slice();
        for &fp in self.slots.iter().filter(|&&x| x != 0) {
            place(&mut slots, fp);
        }
        self.slots = slots;
    }
}

/// The slot a fingerprint starts probing from: its high bits scaled to `n`.
#[inline]
fn home(fp: u64, n: usize) -> usize {
    ((u128::from(fp) * n as u128) >> 64) as usize
}

/// Puts `fp` (non-zero) in the table; false when it was already there.
#[inline]
fn place(slots: &mut [u64], fp: u64) -> bool {
    let n = slots.len();
    let mut i = home(fp, n);
    loop {
        match slots[i] {
            0 => {
                slots[i] = fp;
                return true;
            }
            x if x == fp => return false,
            _ => i = if i + 1 == n { 0 } else { i + 1 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn many_fingerprints_at_most_16_bytes_each() {
        let mut s = FingerprintSet::default();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut all = Vec::new();
        for i in 0..200_000u64 {
            // splitmix64: uniform like xxh3 output.
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            assert!(s.insert(z));
            all.push(z);
            let n = i as usize + 1;
            if n >= MIN_CAPACITY {
                assert!(s.heap_bytes() <= 16 * n, "{} bytes for {n}", s.heap_bytes());
            }
        }
        assert_eq!(s.len(), all.len());
        assert!(all.iter().all(|&fp| s.contains(fp) && !s.insert(fp)));
        assert!(!s.contains(12345));
    }
}
