//! The process's host allocator: glibc's, tuned (`tune_host_allocator`) and with freed large
//! blocks kept for reuse (`LargeBlockCache`, the binary's `#[global_allocator]`). With
//! `crate::kernels`, the only module where `unsafe` is allowed.

#![allow(unsafe_code)]

/// Keeps freed tensor buffers in the process instead of handing them back to the kernel.
///
/// The CPU backend allocates a fresh buffer for nearly every op, many of them above glibc's
/// mmap threshold, so by default each step maps, page-faults, zeroes and unmaps the same
/// megabytes again (the kernel's page clearing was ~6 % of a `tiny` step's samples). Serving
/// them from the heap and never trimming it costs no more peak memory than the step needs, and
/// made the `tiny` step ~10 % faster (505 → 455 ms). Both settings go together: setting either
/// one turns off glibc's adaptive threshold, and the trim setting alone doubles the step time.
/// Call once, first thing in `main`, before threads start.
pub fn tune_host_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's ceiling for the threshold (HEAP_MAX_SIZE / 2 on 64-bit); larger is rejected.
        const MMAP_THRESHOLD_BYTES: libc::c_int = 32 << 20;
        // SAFETY: mallopt only changes allocator tunables; it is called before any other
        // thread exists, and a rejected setting (return value 0) leaves the default in place.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        }
    }
}

/// Host buffers at or above glibc's mmap ceiling (32 MiB), which no `mallopt` setting keeps on
/// its heap.
const LARGE_BLOCK_BYTES: usize = 32 << 20;
/// Freed large blocks kept at most, by count and by bytes.
const CACHED_BLOCKS: usize = 32;
const CACHED_BYTES: usize = 2 << 30;

/// The process's allocator (`main.rs`): glibc's, except that freed blocks of 32 MiB and more
/// are kept and handed out again for the same size and alignment.
///
/// glibc maps such a block fresh on every allocation and unmaps it on every free, so each
/// step of ViT-S/16 with the paper's head (K = 65 536: its 64 MiB weight, gradient, moments)
/// faulted in and had the kernel clear the same gigabyte again: 12 % of that step's samples
/// in `clear_page_erms`. A train step asks for the same sizes every time, so exact-size reuse
/// finds them; a zeroed request is cleared with one `memset` instead of page by page. At most
/// 32 blocks and 2 GiB are kept, the oldest going back to the system first (measured on that
/// step: peak RSS 2905 → 2929 MiB).
pub struct LargeBlockCache {
    blocks: std::sync::Mutex<[CachedBlock; CACHED_BLOCKS]>,
}

/// One kept block; `size == 0` marks a free slot.
#[derive(Clone, Copy)]
struct CachedBlock {
    address: usize,
    size: usize,
    align: usize,
    /// When it was kept: the smallest is evicted first.
    stamp: u64,
}

impl CachedBlock {
    const EMPTY: Self = Self {
        address: 0,
        size: 0,
        align: 0,
        stamp: 0,
    };
}

impl Default for LargeBlockCache {
    fn default() -> Self {
        Self::new()
    }
}

impl LargeBlockCache {
    pub const fn new() -> Self {
        Self {
            blocks: std::sync::Mutex::new([CachedBlock::EMPTY; CACHED_BLOCKS]),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, [CachedBlock; CACHED_BLOCKS]> {
        // Nothing panics while the lock is held; a poisoned lock still holds valid slots.
        self.blocks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A kept block of exactly this layout, removed from the cache.
    fn take(&self, layout: std::alloc::Layout) -> Option<*mut u8> {
        let mut slots = self.slots();
        let slot = slots
            .iter_mut()
            .find(|b| b.size == layout.size() && b.align == layout.align())?;
        let address = slot.address;
        *slot = CachedBlock::EMPTY;
        Some(address as *mut u8)
    }

    /// Keeps `ptr` (evicting the oldest blocks to make room); `false` when it does not fit
    /// and the caller frees it.
    fn keep(&self, ptr: *mut u8, layout: std::alloc::Layout) -> bool {
        use std::alloc::GlobalAlloc;
        if layout.size() > CACHED_BYTES {
            return false;
        }
        let mut evicted = [CachedBlock::EMPTY; CACHED_BLOCKS];
        let kept = {
            let mut slots = self.slots();
            let stamp = slots.iter().map(|b| b.stamp).max().unwrap_or(0) + 1;
            let mut evictions = 0;
            loop {
                let cached: usize = slots.iter().map(|b| b.size).sum();
                let free_slot = slots.iter().position(|b| b.size == 0);
                if let (Some(i), true) = (free_slot, cached + layout.size() <= CACHED_BYTES) {
                    slots[i] = CachedBlock {
                        address: ptr as usize,
                        size: layout.size(),
                        align: layout.align(),
                        stamp,
                    };
                    break true;
                }
                let oldest = slots
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.size > 0)
                    .min_by_key(|(_, b)| b.stamp)
                    .map(|(i, _)| i);
                let Some(oldest) = oldest else { break false };
                evicted[evictions] = slots[oldest];
                evictions += 1;
                slots[oldest] = CachedBlock::EMPTY;
            }
        };
        // Freed outside the lock (glibc may take its own).
        for block in evicted.iter().filter(|b| b.size > 0) {
            if let Ok(old) = std::alloc::Layout::from_size_align(block.size, block.align) {
                // SAFETY: the block came from `System` with this layout and left the cache.
                unsafe { std::alloc::System.dealloc(block.address as *mut u8, old) };
            }
        }
        kept
    }
}

impl Drop for LargeBlockCache {
    fn drop(&mut self) {
        use std::alloc::GlobalAlloc;
        for block in self.slots().iter().filter(|b| b.size > 0) {
            if let Ok(layout) = std::alloc::Layout::from_size_align(block.size, block.align) {
                // SAFETY: the block came from `System` with this layout and only the cache
                // holds it.
                unsafe { std::alloc::System.dealloc(block.address as *mut u8, layout) };
            }
        }
    }
}

// SAFETY: every block handed out comes from `System` with the same layout it is requested
// with, and is owned by exactly one of: the caller, the cache.
unsafe impl std::alloc::GlobalAlloc for LargeBlockCache {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() >= LARGE_BLOCK_BYTES {
            if let Some(ptr) = self.take(layout) {
                return ptr;
            }
        }
        // SAFETY: the caller's layout, passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() >= LARGE_BLOCK_BYTES {
            if let Some(ptr) = self.take(layout) {
                // SAFETY: a block of `layout.size()` bytes that nobody else holds.
                unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
                return ptr;
            }
        }
        // SAFETY: the caller's layout, passed on.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if layout.size() >= LARGE_BLOCK_BYTES && self.keep(ptr, layout) {
            return;
        }
        // SAFETY: `ptr` came from `System` (directly or through the cache) with `layout`.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout};

    #[test]
    fn a_freed_large_block_is_reused_for_the_same_layout_and_zeroed_on_request() {
        let cache = LargeBlockCache::new();
        let layout = Layout::from_size_align(LARGE_BLOCK_BYTES, 64).unwrap();
        // SAFETY: every block is used within its layout's size while held and freed once
        // with the layout it was allocated with.
        unsafe {
            let first = cache.alloc(layout);
            assert!(!first.is_null());
            first.write_bytes(7, layout.size());
            cache.dealloc(first, layout);
            // Same layout: the same block, cleared when zeroes are asked for.
            let again = cache.alloc_zeroed(layout);
            assert_eq!(again, first);
            assert!(std::slice::from_raw_parts(again, layout.size())
                .iter()
                .all(|&b| b == 0));
            // Another size is not served from it.
            cache.dealloc(again, layout);
            let other = Layout::from_size_align(LARGE_BLOCK_BYTES + 4096, 64).unwrap();
            let different = cache.alloc(other);
            assert_ne!(different, first);
            cache.dealloc(different, other);
            // Small blocks never enter the cache.
            let small = Layout::from_size_align(4096, 8).unwrap();
            let p = cache.alloc(small);
            cache.dealloc(p, small);
            let kept: Vec<usize> = cache
                .slots()
                .iter()
                .map(|b| b.size)
                .filter(|&s| s > 0)
                .collect();
            assert_eq!(kept.len(), 2);
            assert!(kept.iter().all(|&s| s >= LARGE_BLOCK_BYTES));
        }
    }

    #[test]
    fn the_cache_stays_within_its_bytes_evicting_the_oldest() {
        let cache = LargeBlockCache::new();
        // 512 MiB blocks: four fit in 2 GiB; a fifth evicts the first kept.
        let layout = Layout::from_size_align(512 << 20, 64).unwrap();
        // SAFETY: the blocks are never touched, and each is freed once with its layout.
        unsafe {
            let blocks: Vec<*mut u8> = (0..5).map(|_| cache.alloc(layout)).collect();
            for &b in &blocks {
                cache.dealloc(b, layout);
            }
            let slots = cache.slots();
            let kept: Vec<usize> = slots
                .iter()
                .filter(|b| b.size > 0)
                .map(|b| b.address)
                .collect();
            assert_eq!(kept.len(), 4);
            assert!(
                !kept.contains(&(blocks[0] as usize)),
                "the oldest was evicted"
            );
            assert!(slots.iter().map(|b| b.size).sum::<usize>() <= CACHED_BYTES);
        }
    }
}
