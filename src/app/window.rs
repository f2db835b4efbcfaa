//! The native window: eframe's options (a wgpu device that burn can share) and sharing
//! eframe's GPU with the training worker.

use super::{AppOptions, DinoscopeApp};
use crate::device::SelectedDevice;
use std::sync::Arc;

/// A burn device on eframe's own wgpu device, when that device is a hardware GPU.
pub(super) fn shared_gpu_device(cc: &eframe::CreationContext<'_>) -> Option<SelectedDevice> {
    use burn::tensor::wgpu::{wgpu, WgpuSetup};
    let render_state = cc.wgpu_render_state.as_ref()?;
    let info = render_state.adapter.get_info();
    if info.device_type == wgpu::DeviceType::Cpu {
        return None;
    }
    let device = burn::prelude::Device::wgpu_options()
        .setup(WgpuSetup {
            instance: render_state.instance.clone(),
            adapter: render_state.adapter.clone(),
            device: render_state.device.clone(),
            queue: render_state.queue.clone(),
            backend: info.backend,
        })
        .init()
        .map_err(|err| tracing::warn!("cannot share eframe's GPU with burn: {err}"))
        .ok()?;
    Some(SelectedDevice {
        device,
        description: format!("GPU (wgpu, shared with the UI) · {}", info.name),
        is_gpu: true,
    })
}

/// eframe options: wgpu renderer, and a device that requests the adapter's own features and
/// limits so burn's kernels can run on it (stack-notes §5).
pub fn native_options() -> eframe::NativeOptions {
    use eframe::egui_wgpu::{WgpuConfiguration, WgpuSetup, WgpuSetupCreateNew};
    use eframe::wgpu;
    let mut create = WgpuSetupCreateNew::without_display_handle();
    create.device_descriptor = Arc::new(|adapter: &wgpu::Adapter| wgpu::DeviceDescriptor {
        required_features: adapter
            .features()
            .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
        required_limits: adapter.limits(),
        ..Default::default()
    });
    eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("dinoscope")
            .with_inner_size([1360.0, 860.0])
            .with_min_inner_size([800.0, 500.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: WgpuConfiguration {
            wgpu_setup: WgpuSetup::CreateNew(create),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Opens the window and runs until it is closed.
pub fn run(options: AppOptions) -> Result<(), String> {
    eframe::run_native(
        "dinoscope",
        native_options(),
        Box::new(move |cc| Ok(Box::new(DinoscopeApp::new(cc, options)))),
    )
    .map_err(|err| err.to_string())
}
