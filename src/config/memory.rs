//! What a training step of a config holds in memory at its peak, estimated from the config
//! alone, so a run that cannot fit is refused before anything is allocated (a batch of 4096
//! with K = 262144 otherwise grows past tens of GB before the first step fails).
//!
//! It counts the buffers a step cannot do without, in f32: parameters of student and teacher,
//! the student's gradients and AdamW's two moments; the activations autograd keeps for the
//! student's backward (every block, 2 global + n local crops) and one teacher block in flight;
//! the head's logits with their softmax and gradient; the prefetched crop batches. Allocator
//! slack and the dataset itself are left out, so it is an underestimate: a config it refuses
//! does not fit.

use super::Config;

const F32_BYTES: f64 = 4.0;
/// Floats autograd keeps per token and block, in units of the width D: the block input, LN1,
/// qkv (3), attention output, the residual sum, LN2, fc1 (4) and GELU (4) = 16.
const KEPT_PER_TOKEN_D: f64 = 16.0;

/// One part of the estimate and the keys that shrink it, with their current values.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPart {
    pub name: &'static str,
    pub bytes: u64,
    pub keys: Vec<(&'static str, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// Largest first.
    pub parts: Vec<MemoryPart>,
}

impl MemoryEstimate {
    pub fn total_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }

    /// "about 41.2 GiB (head logits … 34.4 GiB, …)", largest part first.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|p| format!("{} {}", p.name, format_bytes(p.bytes)))
            .collect();
        format!(
            "about {} ({})",
            format_bytes(self.total_bytes()),
            parts.join(", ")
        )
    }

    /// "lower dino.out_dim (262144), optim.batch_size_per_gpu (4096) or …": the keys of the
    /// largest part.
    pub fn advice(&self) -> String {
        let Some(largest) = self.parts.first() else {
            return String::new();
        };
        let keys: Vec<String> = largest
            .keys
            .iter()
            .map(|(key, value)| format!("{key} ({value})"))
            .collect();
        match keys.split_last() {
            Some((last, [])) => format!("lower {last}"),
            Some((last, rest)) => format!("lower {} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// "16.5 GiB", or "180 MiB" below one GiB.
pub fn format_bytes(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    let mib = bytes as f64 / MIB;
    if mib < 1024.0 {
        format!("{mib:.0} MiB")
    } else {
        format!("{:.1} GiB", mib / 1024.0)
    }
}

impl Config {
    /// The peak memory of one training step of this config (see the module docs).
    ///
    /// Long: one term per part of a step (module docs), summed in the order they are named.
    pub fn memory_estimate(&self) -> MemoryEstimate {
        let arch = self.vit_arch();
        let (d, depth, heads) = (
            arch.embed_dim as f64,
            arch.depth as f64,
            arch.num_heads as f64,
        );
        let p = self.model.patch_size.max(1) as f64;
        let dino = &self.dino;
        let (k, hidden, bottleneck) = (
            dino.out_dim as f64,
            dino.hidden_dim as f64,
            dino.bottleneck_dim as f64,
        );
        let batch = self.optim.batch_size_per_gpu as f64;
        let locals = dino.local_crops_number as f64;
        let (global_px, local_px) = (
            self.data.global_crop_size as f64,
            self.data.local_crop_size as f64,
        );
        let tokens = |side_px: f64| (side_px / p).floor().powi(2) + 1.0;
        let (t_global, t_local) = (tokens(global_px), tokens(local_px));

        // Per crop and block: the kept floats of every token plus the attention matrix.
        let block_floats = |t: f64| t * (KEPT_PER_TOKEN_D * d + heads * t);
        let student =
            batch * depth * (2.0 * block_floats(t_global) + locals * block_floats(t_local));
        let teacher = batch * 2.0 * block_floats(t_global);
        let head_hidden = (2.0 + locals) * batch * (4.0 * hidden + bottleneck);

        // Student logits, their log-softmax and gradient; teacher logits and softmax.
        let logits = (2.0 + locals) * batch * k * 3.0 + 2.0 * batch * k * 2.0;

        let backbone_params = 3.0 * p * p * d + d // patch embedding
            + d + t_global * d // CLS and position table
            + depth * (12.0 * d * d + 13.0 * d)
            + 2.0 * d;
        let linear = |inputs: f64, outputs: f64| inputs * outputs + outputs;
        // Three MLP layers, then the weight-normed last layer (v and g).
        let head_params = linear(d, hidden)
            + linear(hidden, hidden)
            + linear(hidden, bottleneck)
            + k * bottleneck
            + k;
        // Student + teacher + gradients + AdamW's two moments.
        let model = 5.0 * (backbone_params + head_params);

        let crop_floats = 3.0 * (2.0 * global_px * global_px + locals * local_px * local_px);
        // The prefetch queue, the batch being uploaded and its device copy.
        let crops = (self.data.prefetch_batches as f64 + 2.0) * batch * crop_floats;

        let value = |v: usize| v.to_string();
        let mut parts = vec![
            MemoryPart {
                name: "head logits and loss",
                bytes: bytes(logits + head_hidden),
                keys: vec![
                    ("dino.out_dim", value(dino.out_dim)),
                    (
                        "optim.batch_size_per_gpu",
                        value(self.optim.batch_size_per_gpu),
                    ),
                    ("dino.local_crops_number", value(dino.local_crops_number)),
                ],
            },
            MemoryPart {
                name: "backbone activations",
                bytes: bytes(student + teacher),
                keys: vec![
                    (
                        "optim.batch_size_per_gpu",
                        value(self.optim.batch_size_per_gpu),
                    ),
                    ("dino.local_crops_number", value(dino.local_crops_number)),
                    (
                        "data.global_crop_size",
                        self.data.global_crop_size.to_string(),
                    ),
                    ("model.depth", value(arch.depth)),
                ],
            },
            MemoryPart {
                name: "parameters, gradients and AdamW state",
                bytes: bytes(model),
                keys: vec![
                    ("model.embed_dim", value(arch.embed_dim)),
                    ("model.depth", value(arch.depth)),
                    ("dino.out_dim", value(dino.out_dim)),
                    ("dino.hidden_dim", value(dino.hidden_dim)),
                ],
            },
            MemoryPart {
                name: "prefetched crops",
                bytes: bytes(crops),
                keys: vec![
                    ("data.prefetch_batches", value(self.data.prefetch_batches)),
                    (
                        "optim.batch_size_per_gpu",
                        value(self.optim.batch_size_per_gpu),
                    ),
                ],
            },
        ];
        parts.sort_by_key(|part| std::cmp::Reverse(part.bytes));
        MemoryEstimate { parts }
    }
}

impl Config {
    /// The peak of one forward pass of student and teacher with no gradients (the probe of
    /// `watch`): the parts of [`Config::memory_estimate`] without what only training holds
    /// (gradients and AdamW's moments, the activations autograd keeps of every block but the
    /// one in flight, the logits' gradient, the prefetch queue). Still an underestimate.
    pub fn forward_memory_estimate(&self) -> MemoryEstimate {
        let mut probe = self.clone();
        probe.data.prefetch_batches = 0;
        let depth = self.vit_arch().depth.max(1) as u64;
        let mut estimate = probe.memory_estimate();
        for part in &mut estimate.parts {
            part.bytes = match part.name {
                "parameters, gradients and AdamW state" => part.bytes / 5 * 2,
                "backbone activations" => part.bytes / depth,
                "head logits and loss" => part.bytes / 3 * 2,
                _ => part.bytes,
            };
        }
        estimate
            .parts
            .sort_by_key(|part| std::cmp::Reverse(part.bytes));
        estimate
    }
}

fn bytes(floats: f64) -> u64 {
    // `as` saturates: an absurd config reads as u64::MAX rather than wrapping.
    (floats * F32_BYTES) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_modest_and_the_issue_config_is_not() {
        let tiny = Config::preset("tiny").unwrap().memory_estimate();
        assert!(tiny.total_bytes() < 1 << 30, "{}", tiny.describe());
        let big = Config::preset("tiny")
            .unwrap()
            .with_overrides(&[
                "optim.batch_size_per_gpu=4096".into(),
                "data.num_images=4096".into(),
                "dino.out_dim=262144".into(),
            ])
            .unwrap()
            .memory_estimate();
        assert!(big.total_bytes() > 8 << 30, "{}", big.describe());
        assert_eq!(big.parts[0].name, "head logits and loss");
        assert!(
            big.advice()
                .starts_with("lower dino.out_dim (262144), optim.batch_size_per_gpu (4096)"),
            "{}",
            big.advice()
        );
    }

    #[test]
    fn the_parameter_count_matches_vit_small() {
        // ViT-S/16 at 224 px: 21.7 M backbone parameters (the paper's 21 M).
        let config = Config::preset("vit-s16-paper").unwrap();
        let estimate = config.memory_estimate();
        let model = estimate
            .parts
            .iter()
            .find(|p| p.name == "parameters, gradients and AdamW state")
            .unwrap();
        let head = 384 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 256 + 256 + 65536 * 256 + 65536;
        let backbone = model.bytes / 20 - head;
        assert!((21_500_000..22_000_000).contains(&backbone), "{backbone}");
    }
}
