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
