//! Card-memory allocator: a bounded first-fit free list of 4 KiB-aligned
//! extents (heapless, no heap). Freed extents merge with their neighbours,
//! so fragments never outnumber live allocations + 1.

use heapless::Vec;

/// Allocation granule and alignment.
pub const GRANULE: u32 = 4096;
/// Most free extents tracked; live allocations are bounded by the request
/// table (2 per request at most), so this never overflows in practice.
pub const MAX_EXTENTS: usize = 160;

/// Free list over `[base, base + size)`.
#[derive(Clone, Debug)]
pub struct CardAlloc {
    base: u32,
    size: u32,
    free: Vec<(u32, u32), MAX_EXTENTS>,
}

/// Rounds `len` up to the granule; `None` past u32.
pub fn round(len: u64) -> Option<u32> {
    let r = len.checked_add(GRANULE as u64 - 1)? & !(GRANULE as u64 - 1);
    u32::try_from(r).ok()
}

impl CardAlloc {
    pub fn new(base: u32, size: u32) -> CardAlloc {
        let base_r = round(base as u64).unwrap_or(base);
        let size = (size.saturating_sub(base_r - base)) & !(GRANULE - 1);
        let mut free = Vec::new();
        if size > 0 {
            let _ = free.push((base_r, size));
        }
        CardAlloc {
            base: base_r,
            size,
            free,
        }
    }

    /// Total bytes managed: the most one allocation can ever get.
    pub fn capacity(&self) -> u32 {
        self.size
    }

    /// Whether `len` bytes could be allocated once everything is free.
    pub fn fits_ever(&self, len: u64) -> bool {
        round(len).is_some_and(|r| r <= self.size)
    }

    /// Bytes free now.
    pub fn free_bytes(&self) -> u32 {
        self.free.iter().map(|e| e.1).sum()
    }

    /// First fit; returns the base of `round(len)` bytes.
    pub fn alloc(&mut self, len: u64) -> Option<u32> {
        let need = round(len.max(1))?;
        let i = self.free.iter().position(|e| e.1 >= need)?;
        let (at, sz) = self.free[i];
        if sz == need {
            self.free.remove(i);
        } else {
            self.free[i] = (at + need, sz - need);
        }
        Some(at)
    }

    /// Returns an extent from [`alloc`](Self::alloc) with the same `len`.
    pub fn free(&mut self, at: u32, len: u64) {
        let Some(sz) = round(len.max(1)) else {
            return;
        };
        if at < self.base || sz == 0 {
            return;
        }
        let i = self
            .free
            .iter()
            .position(|e| e.0 > at)
            .unwrap_or(self.free.len());
        // Merge with the previous and the next extent where they touch.
        let prev = i.checked_sub(1).filter(|&j| {
            let (pa, ps) = self.free[j];
            pa + ps == at
        });
        let next = (i < self.free.len() && at + sz == self.free[i].0).then_some(i);
        match (prev, next) {
            (Some(j), Some(k)) => {
                self.free[j].1 += sz + self.free[k].1;
                self.free.remove(k);
            }
            (Some(j), None) => self.free[j].1 += sz,
            (None, Some(k)) => self.free[k] = (at, sz + self.free[k].1),
            (None, None) => {
                // Cannot overflow while fragments <= live allocations + 1.
                let _ = self.free.insert(i, (at, sz));
            }
        }
    }

    /// Frees everything (controller reset).
    pub fn reset(&mut self) {
        self.free.clear();
        if self.size > 0 {
            let _ = self.free.push((self.base, self.size));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_merges() {
        let mut a = CardAlloc::new(0xA000_0000, 64 * GRANULE);
        let x = a.alloc(1).unwrap();
        let y = a.alloc(5000).unwrap();
        let z = a.alloc(GRANULE as u64).unwrap();
        assert_eq!(y, x + GRANULE);
        assert_eq!(z, y + 2 * GRANULE);
        a.free(y, 5000);
        assert_eq!(a.alloc(2 * GRANULE as u64), Some(y));
        a.free(x, 1);
        a.free(y, 2 * GRANULE as u64);
        a.free(z, GRANULE as u64);
        assert_eq!(a.free_bytes(), 64 * GRANULE);
        assert_eq!(a.free.len(), 1);
        assert!(a.alloc(65 * GRANULE as u64).is_none());
        assert!(!a.fits_ever(65 * GRANULE as u64));
    }

    extern crate std;
    use proptest::prelude::*;
    use std::vec::Vec as StdVec;

    proptest! {
        /// Against a reference: live extents never overlap, stay inside the
        /// heap, free + live bytes = capacity, and freeing everything merges
        /// back into one extent.
        #[test]
        fn alloc_matches_reference(ops in proptest::collection::vec((any::<bool>(), 1u64..40_000, any::<u8>()), 1..200)) {
            let mut a = CardAlloc::new(0xA008_0000, 64 * GRANULE);
            let mut live: StdVec<(u32, u64)> = StdVec::new();
            for (alloc, len, pick) in ops {
                if alloc || live.is_empty() {
                    if let Some(at) = a.alloc(len) {
                        let r = round(len).unwrap();
                        prop_assert!(at >= 0xA008_0000 && at + r <= 0xA008_0000 + 64 * GRANULE);
                        for &(b, l) in &live {
                            let lr = round(l).unwrap();
                            prop_assert!(at + r <= b || b + lr <= at, "overlap");
                        }
                        live.push((at, len));
                    } else {
                        // First fit fails only when no single extent is large enough.
                        prop_assert!(a.free.iter().all(|e| e.1 < round(len).unwrap()));
                    }
                } else {
                    let (at, len) = live.swap_remove(pick as usize % live.len());
                    a.free(at, len);
                }
                let used: u32 = live.iter().map(|&(_, l)| round(l).unwrap()).sum();
                prop_assert_eq!(a.free_bytes() + used, a.capacity());
            }
            for (at, len) in live.drain(..) {
                a.free(at, len);
            }
            prop_assert_eq!(a.free.len(), 1);
            prop_assert_eq!(a.free_bytes(), a.capacity());
        }
    }
}
