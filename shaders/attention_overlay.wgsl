// Attention overlay: the image as the network saw it, the per-patch heat map through a
// viridis table, the mask tint and its outline. Same formulas as `attention::composite`
// (the CPU path used for export and renderers without wgpu); keep the two in step.

struct Style {
    // heat opacity, tint opacity, contour on (0/1), contour width in image pixels (may be < 1)
    params: vec4<f32>,
    // mask colour, 0..1
    colour: vec4<f32>,
    // grid cols, grid rows, image width, image height (pixels)
    dims: vec4<f32>,
    // x: 1 when the target is an sRGB format (egui blends in gamma space otherwise)
    output: vec4<f32>,
};

@group(0) @binding(0) var<uniform> style: Style;
@group(0) @binding(1) var image_tex: texture_2d<f32>;
// r: heat scaled to 0..1 per map, g: mask 0/1; one texel per patch.
@group(0) @binding(2) var grid_tex: texture_2d<f32>;
// 256 × 1 viridis colour table.
@group(0) @binding(3) var lut_tex: texture_2d<f32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

// One triangle covering the callback's viewport.
@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    let uv = vec2<f32>(f32((index << 1u) & 2u), f32(index & 2u));
    var out: VertexOut;
    out.position = vec4<f32>(uv.x * 2.0 - 1.0, 1.0 - uv.y * 2.0, 0.0, 1.0);
    out.uv = uv;
    return out;
}

fn mask_at(row: i32, col: i32) -> f32 {
    let rows = i32(style.dims.y);
    let cols = i32(style.dims.x);
    // Outside the grid counts as unmasked (the official zero-padded contour).
    if (row < 0 || col < 0 || row >= rows || col >= cols) {
        return 0.0;
    }
    return textureLoad(grid_tex, vec2<i32>(col, row), 0).g;
}

fn to_linear(c: vec3<f32>) -> vec3<f32> {
    let low = c / 12.92;
    let high = pow((c + 0.055) / 1.055, vec3<f32>(2.4));
    return select(high, low, c <= vec3<f32>(0.04045));
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let cols = style.dims.x;
    let rows = style.dims.y;
    let size = style.dims.zw;
    let pixel = min(floor(in.uv * size), size - 1.0);
    var colour = textureLoad(image_tex, vec2<i32>(pixel), 0).rgb;

    // Nearest patch, as the official nearest-neighbour upsampling.
    let col = min(i32(floor(pixel.x * cols / size.x)), i32(cols) - 1);
    let row = min(i32(floor(pixel.y * rows / size.y)), i32(rows) - 1);
    let cell = textureLoad(grid_tex, vec2<i32>(col, row), 0);
    let heat_index = i32(round(cell.r * 255.0));
    let heat = textureLoad(lut_tex, vec2<i32>(heat_index, 0), 0).rgb;
    colour = colour * (1.0 - style.params.x) + heat * style.params.x;

    if (cell.g > 0.5) {
        colour = colour * (1.0 - style.params.y) + style.colour.rgb * style.params.y;
        if (style.params.z > 0.5) {
            let cell_w = size.x / cols;
            let cell_h = size.y / rows;
            // Unquantised position, so a magnified view gets a thin outline.
            let position = in.uv * size;
            let local_x = position.x - f32(col) * cell_w;
            let local_y = position.y - f32(row) * cell_h;
            let w = style.params.w;
            let edge = (local_x < w && mask_at(row, col - 1) < 0.5)
                || (local_x > cell_w - w && mask_at(row, col + 1) < 0.5)
                || (local_y < w && mask_at(row - 1, col) < 0.5)
                || (local_y > cell_h - w && mask_at(row + 1, col) < 0.5);
            if (edge) {
                colour = style.colour.rgb;
            }
        }
    }
    if (style.output.x > 0.5) {
        colour = to_linear(colour);
    }
    return vec4<f32>(colour, 1.0);
}
