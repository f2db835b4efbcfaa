//! Picking where training runs: wgpu on a hardware GPU, else burn's CPU backend (flex).
//! `Device::default()` would pick a *software* wgpu adapter (llvmpipe) on a machine without a
//! GPU, which is far slower than flex, so the choice is always explicit.

use burn::prelude::*;
use burn::tensor::wgpu::wgpu;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum DeviceChoice {
    /// A hardware GPU through wgpu if there is one, else the CPU.
    Auto,
    Cpu,
    Gpu,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("--device gpu was asked for, but no hardware GPU adapter was found ({adapters}); use --device cpu or auto")]
    NoGpu { adapters: String },
}

/// The chosen device and a one-line description for logs and the UI ("CPU (flex) · 2 threads").
#[derive(Clone, Debug)]
pub struct SelectedDevice {
    pub device: Device,
    pub description: String,
    pub is_gpu: bool,
}

/// Names of the hardware (non-CPU) wgpu adapters. Opens no burn device.
pub fn hardware_gpu_adapters() -> Vec<String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::all(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|adapter| adapter.get_info())
        .filter(|info| info.device_type != wgpu::DeviceType::Cpu)
        .map(|info| format!("{} ({:?})", info.name, info.backend))
        .collect()
}

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

/// Runs `work` on a worker of rayon's global pool (directly when already on one).
///
/// The CPU backend splits most ops over that pool. Called from any other thread, each op is
/// injected into the pool and the caller sleeps until a worker wakes it: two context switches
/// per op, several hundred ops per train step (~13 % of a `tiny` step). On a worker the ops
/// split by work stealing instead. Blocking inside (a channel receive) is fine: the other
/// workers keep stealing.
pub fn on_compute_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return work();
    }
    let (result, ()) = rayon::join(work, || ());
    result
}

pub fn cpu_description() -> String {
    format!("CPU (flex) · {} threads", rayon::current_num_threads())
}

/// The host CPU as a speed claim needs it: model, the widest vector extensions, logical CPUs and
/// the threads burn uses, e.g. "AMD EPYC 7B13 · avx512f avx2 fma · 2 logical CPUs, 2 threads".
/// Read from /proc/cpuinfo (Linux); elsewhere the architecture only.
pub fn host_cpu_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut text = describe_cpu(&info, rayon::current_num_threads());
    if let Some(caches) =
        cache_description(std::path::Path::new("/sys/devices/system/cpu/cpu0/cache"))
    {
        text.push_str(" · ");
        text.push_str(&caches);
    }
    text
}

/// "L2 2 MiB per core, L3 480 MiB shared" from the sysfs cache folders of one CPU.
fn cache_description(dir: &std::path::Path) -> Option<String> {
    let read = |index: &std::path::Path, name: &str| {
        std::fs::read_to_string(index.join(name))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut parts = Vec::new();
    for level in ["2", "3"] {
        let index = (0..8)
            .map(|i| dir.join(format!("index{i}")))
            .find(|index| read(index, "level").as_deref() == Some(level))?;
        let kib: u64 = read(&index, "size")?.trim_end_matches('K').parse().ok()?;
        let size = if kib >= 1024 {
            format!("{} MiB", kib / 1024)
        } else {
            format!("{kib} KiB")
        };
        let shared = read(&index, "shared_cpu_list").unwrap_or_default();
        let scope = if shared.contains('-') || shared.contains(',') {
            "shared"
        } else {
            "per core"
        };
        parts.push(format!("L{level} {size} {scope}"));
    }
    Some(parts.join(", "))
}

fn describe_cpu(cpuinfo: &str, threads: usize) -> String {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_string())
        })
    };
    let model = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let flags = field("flags").unwrap_or_default();
    let have: Vec<&str> = flags.split_whitespace().collect();
    let vector: Vec<&str> = ["avx512f", "avx512_bf16", "amx_tile", "avx2", "fma", "neon"]
        .into_iter()
        .filter(|flag| have.contains(flag))
        .collect();
    let logical = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let mut parts = vec![model];
    if !vector.is_empty() {
        parts.push(vector.join(" "));
    }
    if logical > 0 {
        parts.push(format!("{logical} logical CPUs, {threads} threads"));
    } else {
        parts.push(format!("{threads} threads"));
    }
    parts.join(" · ")
}

/// Mesa's Vulkan device-select layer connects to the Wayland or X server to rank GPUs, and
/// without a display session libwayland prints "XDG_RUNTIME_DIR is invalid or not set" on
/// every adapter probe of a headless command (`train --resume`, `knn`, `bench`). With no
/// session there is nothing to rank by, so the layer is turned off (`NODEVICE_SELECT=1`, the
/// layer's own switch) unless the user set it. Call first thing in `main`, before any thread.
pub fn quiet_headless_gpu_probe() {
    let headless =
        std::env::var_os("WAYLAND_DISPLAY").is_none() && std::env::var_os("DISPLAY").is_none();
    if headless && std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

pub fn select_device(choice: DeviceChoice) -> Result<SelectedDevice, DeviceError> {
    let cpu = || SelectedDevice {
        device: Device::flex(),
        description: cpu_description(),
        is_gpu: false,
    };
    if choice == DeviceChoice::Cpu {
        return Ok(cpu());
    }
    let adapters = hardware_gpu_adapters();
    match (adapters.first(), choice) {
        (Some(name), _) => Ok(SelectedDevice {
            device: Device::wgpu(DeviceKind::DefaultDevice),
            description: format!("GPU (wgpu) · {name}"),
            is_gpu: true,
        }),
        (None, DeviceChoice::Gpu) => Err(DeviceError::NoGpu {
            adapters: "only software adapters".into(),
        }),
        (None, _) => Ok(cpu()),
    }
}

/// Whether tensors on `device` live in host memory (burn's CPU backend), so the memory
/// estimate of a run can be held against [`available_host_memory_bytes`].
pub fn uses_host_memory(device: &Device) -> bool {
    *device == Device::flex()
}

/// `MemAvailable` of /proc/meminfo: what can be allocated without swapping. None where it
/// is unknown (not Linux, an unreadable file), and the memory check is then skipped.
pub fn available_host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text =
            "MemTotal:       24683584 kB\nMemFree:         1000 kB\nMemAvailable:   23553032 kB\n";
        assert_eq!(parse_mem_available(text), Some(23_553_032 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
        assert!(uses_host_memory(&Device::flex()));
    }
}

#[cfg(test)]
mod cpu_tests {
    use super::*;

    #[test]
    fn cpu_description_names_model_vectors_and_threads() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma avx512f\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(
            describe_cpu(info, 2),
            "AMD EPYC 7B13 · avx512f avx2 fma · 2 logical CPUs, 2 threads"
        );
        assert!(describe_cpu("", 1).ends_with("1 threads"));
        assert!(!host_cpu_description().is_empty());
    }

    #[test]
    fn caches_are_read_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        for (i, level, size, shared) in [(2, "2", "2048K", "0"), (3, "3", "491520K", "0-1")] {
            let index = dir.path().join(format!("index{i}"));
            std::fs::create_dir(&index).unwrap();
            std::fs::write(index.join("level"), level).unwrap();
            std::fs::write(index.join("size"), size).unwrap();
            std::fs::write(index.join("shared_cpu_list"), shared).unwrap();
        }
        assert_eq!(
            cache_description(dir.path()).as_deref(),
            Some("L2 2 MiB per core, L3 480 MiB shared")
        );
        assert_eq!(cache_description(&dir.path().join("none")), None);
    }
}

#[cfg(test)]
mod large_block_cache_tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout};

    #[test]
    fn a_freed_large_block_is_reused_for_the_same_layout_and_zeroed_on_request() {
        let cache = LargeBlockCache::new();
        let layout = Layout::from_size_align(LARGE_BLOCK_BYTES, 64).unwrap();
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
