//! The native window: eframe's options (a wgpu device that burn can share) and sharing
//! eframe's GPU with the training worker.

use super::{AppOptions, DinoscopeApp};
use crate::device::SelectedDevice;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// A request to close the window from outside the UI thread (the binary's SIGINT/SIGTERM/SIGHUP
/// handler): the next frame closes the window as its close button does, so the worker
/// finishes the step in flight and writes its checkpoint before the process ends.
#[derive(Clone, Default)]
pub struct CloseRequest(Arc<CloseInner>);

#[derive(Default)]
struct CloseInner {
    requested: AtomicBool,
    /// The window's context, to wake an idle event loop; set when the window opens.
    ctx: OnceLock<egui::Context>,
}

impl std::fmt::Debug for CloseRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CloseRequest({})", self.is_requested())
    }
}

impl CloseRequest {
    /// Asks for the window to close (callable from any thread, any number of times).
    pub fn request(&self) {
        self.0.requested.store(true, Ordering::SeqCst);
        if let Some(ctx) = self.0.ctx.get() {
            ctx.request_repaint();
        }
    }

    pub fn is_requested(&self) -> bool {
        self.0.requested.load(Ordering::SeqCst)
    }

    /// The window's context: a request made before the window opened is acted on by its
    /// first frame, one made later wakes it.
    pub(super) fn attach(&self, ctx: &egui::Context) {
        let _ = self.0.ctx.set(ctx.clone());
        if self.is_requested() {
            ctx.request_repaint();
        }
    }
}

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
