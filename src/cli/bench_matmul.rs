//! `dinoscope bench --workload matmul`: the throughput of the train steps' matrix products on
//! their own, so the matrix multiply can be compared with another library's for the same
//! shapes (`scripts/bench_torch.py --workload matmul` times PyTorch's `F.linear` on them).

use super::output::Printer;
use anyhow::Result;
use burn::nn::LinearConfig;
use burn::prelude::*;
use dinoscope::model::fused::linear::linear;
use std::time::Instant;

/// One product: `[rows, d_in] · [d_in, d_out] + bias`.
struct Shape {
    name: &'static str,
    rows: usize,
    d_in: usize,
    d_out: usize,
}

/// The token linears of both presets' blocks (every global and local crop of a step as rows)
/// and the ViT-S/16 head's layers, as `scripts/bench_torch.py` lists them.
fn shapes() -> Vec<Shape> {
    let shape = |name, rows, d_in, d_out| Shape {
        name,
        rows,
        d_in,
        d_out,
    };
    vec![
        // tiny: 64 global crops of 65 tokens, 192 local crops of 17, D = 96.
        shape("tiny qkv (globals)", 64 * 65, 96, 288),
        shape("tiny fc1 (globals)", 64 * 65, 96, 384),
        shape("tiny fc2 (globals)", 64 * 65, 384, 96),
        shape("tiny qkv (locals)", 192 * 17, 96, 288),
        // ViT-S/16: 16 global crops of 197 tokens, 64 local crops of 37, D = 384.
        shape("vits qkv (globals)", 16 * 197, 384, 1152),
        shape("vits proj (globals)", 16 * 197, 384, 384),
        shape("vits fc1 (globals)", 16 * 197, 384, 1536),
        shape("vits fc2 (globals)", 16 * 197, 1536, 384),
        shape("vits fc1 (locals)", 64 * 37, 384, 1536),
        // The ViT-S/16 head on 80 crops.
        shape("vits head 2048", 80, 2048, 2048),
        shape("vits head last (K 65536)", 80, 256, 65536),
    ]
}

/// The median as Python's `statistics.median` takes it (the mean of the middle two for an even
/// count), so both sides of `bench-compare` mean the same thing; 0 for no samples.
pub(super) fn median_secs(mut secs: Vec<f64>) -> f64 {
    secs.sort_by(f64::total_cmp);
    let middle = secs.len() / 2;
    match secs.len() {
        0 => 0.0,
        n if n % 2 == 1 => secs[middle],
        _ => (secs[middle - 1] + secs[middle]) / 2.0,
    }
}

/// Per shape: the forward product alone (no autodiff) and forward + backward (the three
/// products of a trained layer), medians of `steps` after `warmup`, as GFLOP/s.
pub fn run(steps: usize, warmup: usize, out: &mut Printer) -> Result<()> {
    out.line(&format!(
        "cpu: {}",
        dinoscope::device::host_cpu_description()
    ));
    out.line(&format!(
        "bench matmul: the CPU backend's fused Linear on {} thread(s)",
        rayon::current_num_threads()
    ));
    for shape in shapes() {
        let plain = Device::flex();
        let tracked = Device::flex().autodiff();
        let x = Tensor::<2>::random(
            [shape.rows, shape.d_in],
            burn::tensor::Distribution::Default,
            &plain,
        );
        let layer = LinearConfig::new(shape.d_in, shape.d_out).init(&plain);
        let tracked_layer = LinearConfig::new(shape.d_in, shape.d_out).init(&tracked);
        let tracked_x = Tensor::<2>::from_data(x.to_data(), &tracked).require_grad();
        let mut forward = Vec::with_capacity(steps);
        let mut both = Vec::with_capacity(steps);
        for i in 0..warmup + steps {
            let started = Instant::now();
            let y = linear(&layer, x.clone());
            let forward_secs = started.elapsed().as_secs_f64();
            drop(y);
            let started = Instant::now();
            let y = linear(&tracked_layer, tracked_x.clone());
            let grads = y.sum().backward();
            let both_secs = started.elapsed().as_secs_f64();
            drop(grads);
            if i >= warmup {
                forward.push(forward_secs);
                both.push(both_secs);
            }
        }
        let flop = 2.0 * (shape.rows * shape.d_in * shape.d_out) as f64;
        let (forward, both) = (median_secs(forward), median_secs(both));
        out.line(&format!(
            "RESULT matmul name=\"{}\" rows={} d_in={} d_out={} forward_ms={:.3} forward_gflops={:.1} train_ms={:.3} train_gflops={:.1}",
            shape.name,
            shape.rows,
            shape.d_in,
            shape.d_out,
            forward * 1e3,
            flop / forward.max(1e-12) / 1e9,
            both * 1e3,
            3.0 * flop / both.max(1e-12) / 1e9,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median_secs;

    #[test]
    fn median_is_pythons_statistics_median() {
        // Two timed steps: their mean, not the slower one.
        assert_eq!(median_secs(vec![3.0, 1.0]), 2.0);
        assert_eq!(median_secs(vec![5.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_secs(vec![4.0, 1.0, 2.0, 8.0]), 3.0);
        assert_eq!(median_secs(Vec::new()), 0.0);
    }
}
