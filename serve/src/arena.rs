//! The shared arena as the server uses it: the card's DMA arena (or a memfd
//! of our own for `--card cpu`), regions reserved in it, and the batch slots
//! of each image model.
//!
//! Slots are handed out in a ring from a cursor, so requests admitted one
//! after another get neighbouring slots and a batch is usually one
//! contiguous `[N, ...]` range the worker reads in place.
#![forbid(unsafe_code)]

use preba_host::backend::Backend;
use preba_host::dma::DmaMem;
use std::sync::{Arc, Mutex};

/// Bytes of a server-owned arena (sparse memfd: only touched pages cost).
pub const OWN_ARENA_BYTES: usize = 2 << 30;

pub struct Arena {
    backend: Arc<dyn Backend + Send + Sync>,
    own: Option<DmaMem>,
    bump: Mutex<usize>,
}

impl Arena {
    /// The backend's card arena, or a fresh memfd when it has none.
    pub fn new(backend: Arc<dyn Backend + Send + Sync>) -> std::io::Result<Arena> {
        let own = match backend.arena() {
            Some(_) => None,
            None => Some(DmaMem::new(OWN_ARENA_BYTES, 0)?),
        };
        Ok(Arena {
            backend,
            own,
            bump: Mutex::new(0),
        })
    }

    pub fn mem(&self) -> &DmaMem {
        match &self.own {
            Some(m) => m,
            None => self
                .backend
                .arena()
                .expect("a backend without an arena gets one of ours"),
        }
    }

    /// Where a worker (another process of this user) maps the same memory.
    pub fn proc_path(&self) -> std::path::PathBuf {
        format!("/proc/{}/fd/{}", std::process::id(), self.mem().fd()).into()
    }

    /// Reserves `bytes` (4 KiB aligned) and returns the offset.
    pub fn reserve(&self, bytes: usize) -> Result<usize, String> {
        if self.own.is_none() {
            return self.backend.reserve(bytes).map_err(|e| e.to_string());
        }
        let bytes = bytes.max(1).div_ceil(4096) * 4096;
        let mut b = self.bump.lock().unwrap_or_else(|e| e.into_inner());
        let base = *b;
        if base + bytes > self.mem().len() {
            return Err(format!(
                "arena exhausted: {bytes} bytes wanted, {} left",
                self.mem().len() - base
            ));
        }
        *b = base + bytes;
        Ok(base)
    }
}

/// Fixed-size slots of one model in the arena.
pub struct SlotPool {
    base: usize,
    stride: usize,
    len: usize,
    state: Mutex<Ring>,
}

struct Ring {
    free: Vec<bool>,
    cursor: usize,
    in_use: usize,
}

/// A held slot; returned to its pool when the last holder drops it (the
/// request, and the card driver while the card may still write it).
pub struct SlotLease {
    pool: Arc<SlotPool>,
    idx: usize,
}

impl SlotPool {
    /// `n` slots of `len` bytes each at `base` (stride rounded up to 64).
    pub fn new(base: usize, len: usize, n: usize) -> Arc<SlotPool> {
        Arc::new(SlotPool {
            base,
            stride: len.div_ceil(64) * 64,
            len,
            state: Mutex::new(Ring {
                free: vec![true; n],
                cursor: 0,
                in_use: 0,
            }),
        })
    }

    /// Bytes a pool of `n` slots of `len` bytes needs.
    pub fn bytes(len: usize, n: usize) -> usize {
        len.div_ceil(64) * 64 * n
    }

    /// The next free slot at or after the cursor, if any.
    pub fn take(self: &Arc<Self>) -> Option<Arc<SlotLease>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let n = s.free.len();
        let start = s.cursor;
        let idx = (0..n).map(|i| (start + i) % n).find(|&i| s.free[i])?;
        s.free[idx] = false;
        s.cursor = (idx + 1) % n;
        s.in_use += 1;
        Some(Arc::new(SlotLease {
            pool: self.clone(),
            idx,
        }))
    }

    /// `n` slots for one client batch, neighbours when there is such a run
    /// (the batch then reaches the worker as one range); `None` when fewer
    /// than `n` are free.
    pub fn take_many(self: &Arc<Self>, n: usize) -> Option<Vec<Arc<SlotLease>>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let cap = s.free.len();
        if cap - s.in_use < n {
            return None;
        }
        // A run of n free slots that does not wrap, searched from the cursor.
        let run_start = (0..cap)
            .map(|i| (s.cursor + i) % cap)
            .find(|&st| st + n <= cap && s.free[st..st + n].iter().all(|&f| f));
        let mut picked = Vec::with_capacity(n);
        match run_start {
            Some(st) => picked.extend(st..st + n),
            None => {
                let start = s.cursor;
                picked.extend(
                    (0..cap)
                        .map(|i| (start + i) % cap)
                        .filter(|&i| s.free[i])
                        .take(n),
                );
            }
        }
        for &i in &picked {
            s.free[i] = false;
        }
        s.in_use += n;
        if let Some(&last) = picked.last() {
            s.cursor = (last + 1) % cap;
        }
        drop(s);
        Some(
            picked
                .into_iter()
                .map(|idx| {
                    Arc::new(SlotLease {
                        pool: self.clone(),
                        idx,
                    })
                })
                .collect(),
        )
    }

    pub fn in_use(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).in_use
    }
    pub fn capacity(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .len()
    }
}

impl SlotLease {
    /// (offset, length) of the slot's tensor in the arena.
    pub fn region(&self) -> (usize, usize) {
        (self.pool.base + self.idx * self.pool.stride, self.pool.len)
    }
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        let mut s = self.pool.state.lock().unwrap_or_else(|e| e.into_inner());
        s.free[self.idx] = true;
        s.in_use -= 1;
    }
}

/// Merges regions into maximal contiguous runs, in order.
pub fn runs(regions: impl IntoIterator<Item = (usize, usize)>) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = Vec::new();
    for (off, len) in regions {
        match v.last_mut() {
            Some((o, l)) if *o + *l == off as u64 => *l += len as u64,
            _ => v.push((off as u64, len as u64)),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_hands_out_neighbours_and_reuses_after_drop() {
        let p = SlotPool::new(4096, 100, 3);
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        assert_eq!(a.region(), (4096, 100));
        assert_eq!(b.region(), (4096 + 128, 100));
        let c = p.take().unwrap();
        assert!(p.take().is_none());
        assert_eq!(p.in_use(), 3);
        drop(b);
        let d = p.take().unwrap();
        assert_eq!(d.region().0, 4096 + 128);
        let held = d.clone();
        drop(d);
        assert!(p.take().is_none(), "a clone still holds the slot");
        drop((a, c, held));
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn take_many_prefers_a_run() {
        let p = SlotPool::new(0, 64, 6);
        let a = p.take().unwrap();
        let _b = p.take_many(3).unwrap();
        drop(a);
        // Slots 0 and 4,5 are free: no run of 3 -> None is wrong, scattered is right.
        let c = p.take_many(3).unwrap();
        let offs: Vec<usize> = c.iter().map(|l| l.region().0 / 64).collect();
        assert_eq!(offs, [4, 5, 0]);
        assert!(p.take_many(1).is_none());
        drop(c);
        let d = p.take_many(2).unwrap();
        assert_eq!(d[1].region().0 - d[0].region().0, 64);
    }

    #[test]
    fn runs_merge_only_neighbours() {
        assert_eq!(
            runs([(0, 8), (8, 8), (32, 8), (40, 8), (16, 8)]),
            [(0, 16), (32, 16), (16, 8)]
        );
        assert!(runs([]).is_empty());
    }
}
