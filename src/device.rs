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

pub fn cpu_description() -> String {
    format!("CPU (flex) · {} threads", rayon::current_num_threads())
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
