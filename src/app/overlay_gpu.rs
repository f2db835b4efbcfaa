//! The attention overlay drawn on the GPU: `shaders/attention_overlay.wgsl` through an
//! egui_wgpu paint callback. Each on-screen view is a named slot owning its textures; the image
//! texture is re-uploaded only when the image changes, the per-patch grid (a few KiB) every
//! frame it is drawn.

use super::attention_view::ViewSlot;
use crate::analysis::attention::{MapLayers, OverlayStyle};
use eframe::egui_wgpu::{self, wgpu};
use image::RgbImage;
use std::collections::HashMap;
use std::sync::Arc;

/// Pipeline and per-slot textures, kept in egui_wgpu's callback resources.
pub struct OverlayPipeline {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    lut_view: wgpu::TextureView,
    srgb_target: bool,
    slots: HashMap<ViewSlot, Slot>,
}

struct Slot {
    image_key: u64,
    image_size: (u32, u32),
    image_texture: wgpu::Texture,
    grid_size: (u32, u32),
    grid_texture: wgpu::Texture,
    uniforms: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
}

const UNIFORM_BYTES: u64 = std::mem::size_of::<StyleUniforms>() as u64;

/// Registers the pipeline with eframe's renderer; false when there is no wgpu renderer.
pub fn install(render_state: Option<&egui_wgpu::RenderState>) -> bool {
    let Some(render_state) = render_state else {
        return false;
    };
    // A shader the driver rejects must not take the app down: capture validation errors and
    // fall back to the CPU composite.
    let scope = render_state
        .device
        .push_error_scope(wgpu::ErrorFilter::Validation);
    let pipeline = OverlayPipeline::new(
        &render_state.device,
        &render_state.queue,
        render_state.target_format,
    );
    if let Some(error) = pollster::block_on(scope.pop()) {
        tracing::warn!("attention overlay shader unavailable, drawing on the CPU: {error}");
        return false;
    }
    render_state
        .renderer
        .write()
        .callback_resources
        .insert(pipeline);
    true
}

fn texture_entry(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::FRAGMENT,
        ty: wgpu::BindingType::Texture {
            sample_type: wgpu::TextureSampleType::Float { filterable: false },
            view_dimension: wgpu::TextureViewDimension::D2,
            multisampled: false,
        },
        count: None,
    }
}

fn rgba_texture(device: &wgpu::Device, label: &str, size: (u32, u32)) -> wgpu::Texture {
    device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size: wgpu::Extent3d {
            width: size.0.max(1),
            height: size.1.max(1),
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        // Not sRGB: the shader blends the stored values exactly as the CPU composite does.
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    })
}

fn upload(queue: &wgpu::Queue, texture: &wgpu::Texture, size: (u32, u32), rgba: &[u8]) {
    if rgba.len() != (size.0 * size.1 * 4) as usize || size.0 == 0 || size.1 == 0 {
        return;
    }
    queue.write_texture(
        wgpu::TexelCopyTextureInfo {
            texture,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        rgba,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(size.0 * 4),
            rows_per_image: Some(size.1),
        },
        wgpu::Extent3d {
            width: size.0,
            height: size.1,
            depth_or_array_layers: 1,
        },
    );
}

impl OverlayPipeline {
    fn new(device: &wgpu::Device, queue: &wgpu::Queue, target: wgpu::TextureFormat) -> Self {
        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("attention_overlay"),
            source: wgpu::ShaderSource::Wgsl(
                include_str!("../../shaders/attention_overlay.wgsl").into(),
            ),
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("attention_overlay"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: wgpu::BufferSize::new(UNIFORM_BYTES),
                    },
                    count: None,
                },
                texture_entry(1),
                texture_entry(2),
                texture_entry(3),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("attention_overlay"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("attention_overlay"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                compilation_options: Default::default(),
                targets: &[Some(wgpu::ColorTargetState {
                    format: target,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
            }),
            multiview_mask: None,
            cache: None,
        });
        let lut: Vec<u8> = (0..256)
            .flat_map(|i| {
                let [r, g, b] = crate::analysis::colormap::viridis(i as f32 / 255.0);
                [r, g, b, 255]
            })
            .collect();
        let lut_texture = rgba_texture(device, "viridis", (256, 1));
        upload(queue, &lut_texture, (256, 1), &lut);
        Self {
            pipeline,
            layout,
            lut_view: lut_texture.create_view(&Default::default()),
            srgb_target: target.is_srgb(),
            slots: HashMap::new(),
        }
    }

    /// Long: the wgpu resources of one overlay created and filled in the order the pipeline binds
    /// them.
    fn prepare(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, call: &OverlayCallback) {
        let image_size = call.image.dimensions();
        let grid_size = (call.layers.cols as u32, call.layers.rows as u32);
        let stale = self
            .slots
            .get(&call.slot)
            .is_none_or(|slot| slot.image_size != image_size || slot.grid_size != grid_size);
        if stale {
            let image_texture = rgba_texture(device, "attention_image", image_size);
            let grid_texture = rgba_texture(device, "attention_grid", grid_size);
            let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("attention_overlay_style"),
                size: UNIFORM_BYTES,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let image_view = image_texture.create_view(&Default::default());
            let grid_view = grid_texture.create_view(&Default::default());
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("attention_overlay"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: uniforms.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::TextureView(&image_view),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::TextureView(&grid_view),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: wgpu::BindingResource::TextureView(&self.lut_view),
                    },
                ],
            });
            self.slots.insert(
                call.slot,
                Slot {
                    // 0 is never a key: forces the first upload.
                    image_key: 0,
                    image_size,
                    image_texture,
                    grid_size,
                    grid_texture,
                    uniforms,
                    bind_group,
                },
            );
        }
        let Some(slot) = self.slots.get_mut(&call.slot) else {
            return;
        };
        if slot.image_key != call.image_key {
            let rgba: Vec<u8> = call
                .image
                .pixels()
                .flat_map(|p| [p.0[0], p.0[1], p.0[2], 255])
                .collect();
            upload(queue, &slot.image_texture, image_size, &rgba);
            slot.image_key = call.image_key;
        }
        upload(
            queue,
            &slot.grid_texture,
            grid_size,
            &call.layers.grid_texels(),
        );
        let style = &call.style;
        let colour = style.colour.map(|c| c as f32 / 255.0);
        let uniforms = StyleUniforms {
            params: [
                style.heat_opacity,
                style.tint_opacity,
                if style.contour { 1.0 } else { 0.0 },
                call.contour_px,
            ],
            colour: [colour[0], colour[1], colour[2], 1.0],
            dims: [
                grid_size.0 as f32,
                grid_size.1 as f32,
                image_size.0 as f32,
                image_size.1 as f32,
            ],
            output: [if self.srgb_target { 1.0 } else { 0.0 }, 0.0, 0.0, 0.0],
        };
        queue.write_buffer(&slot.uniforms, 0, bytemuck::bytes_of(&uniforms));
    }
}

/// The shader's `Style` uniform, field for field (`shaders/attention_overlay.wgsl`): four
/// `vec4<f32>`, so the layout has no padding to get wrong.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StyleUniforms {
    /// Heat opacity, tint opacity, contour on (0/1), contour width in image pixels.
    params: [f32; 4],
    /// Mask colour, 0..1.
    colour: [f32; 4],
    /// Grid cols, grid rows, image width, image height (pixels).
    dims: [f32; 4],
    /// x: 1 when the target is an sRGB format.
    output: [f32; 4],
}

/// One overlay to draw in a rectangle of the UI.
pub struct OverlayCallback {
    /// Which view this is ("large", "head-3", ...): each keeps its own textures.
    pub slot: ViewSlot,
    /// Changes whenever the image content changes (texture re-upload).
    pub image_key: u64,
    pub image: Arc<RgbImage>,
    pub layers: MapLayers,
    pub style: OverlayStyle,
    /// Outline width in image pixels (fractional when the view magnifies).
    pub contour_px: f32,
}

impl egui_wgpu::CallbackTrait for OverlayCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen_descriptor: &egui_wgpu::ScreenDescriptor,
        _egui_encoder: &mut wgpu::CommandEncoder,
        callback_resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(pipeline) = callback_resources.get_mut::<OverlayPipeline>() {
            pipeline.prepare(device, queue, self);
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        callback_resources: &egui_wgpu::CallbackResources,
    ) {
        let Some(pipeline) = callback_resources.get::<OverlayPipeline>() else {
            return;
        };
        let Some(slot) = pipeline.slots.get(&self.slot) else {
            return;
        };
        render_pass.set_pipeline(&pipeline.pipeline);
        render_pass.set_bind_group(0, &slot.bind_group, &[]);
        render_pass.draw(0..3, 0..1);
    }
}
