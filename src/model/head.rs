//! DINO projection head and the backbone + head pair trained with multi-crop (reference §2).

use super::vit::{HostInit, VisionTransformer, VitConfig};
use crate::model::activation::gelu;
use crate::model::fused::linear::{linear, matmul_transposed};
use crate::model::fused::weight_norm::weight_norm;
use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use rand_chacha::ChaCha8Rng;

/// Weight-normalised `Linear(bottleneck → K)` without bias: row k = g_k · v_k / ‖v_k‖.
/// Tensors keep PyTorch's `[K, 1]` / `[K, in]` layout so `weight_g`/`weight_v` load as is.
#[derive(Module, Debug)]
pub struct WeightNormLinear {
    pub weight_g: Param<Tensor<2>>,
    pub weight_v: Param<Tensor<2>>,
}

impl WeightNormLinear {
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let weight = weight_norm(self.weight_v.val(), self.weight_g.val());
        matmul_transposed(x, weight)
    }
}

/// DINO head: 3-layer MLP with GELU → bottleneck → L2-normalise → weight-normed last layer.
#[derive(Module, Debug)]
pub struct DinoHead {
    pub mlp: Vec<Linear>,
    pub last_layer: WeightNormLinear,
}

impl DinoHead {
    pub fn new(
        init: &mut HostInit,
        in_dim: usize,
        hidden_dim: usize,
        bottleneck_dim: usize,
        out_dim: usize,
        device: &Device,
    ) -> Self {
        let mlp = vec![
            init.linear(in_dim, hidden_dim, device),
            init.linear(hidden_dim, hidden_dim, device),
            init.linear(hidden_dim, bottleneck_dim, device),
        ];
        // Created after the reference's init hook, so it keeps PyTorch's default Linear init.
        let weight_v = HostInit::tensor(
            init.kaiming_uniform(out_dim * bottleneck_dim, bottleneck_dim),
            [out_dim, bottleneck_dim],
            device,
        );
        let last_layer = WeightNormLinear {
            weight_g: Param::from_tensor(Tensor::ones([out_dim, 1], device)),
            weight_v: Param::from_tensor(weight_v),
        };
        Self { mlp, last_layer }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.last_layer.forward(self.bottleneck(x))
    }

    /// The MLP's output, ℓ2-normalised: what the weight-normed last layer sees (the
    /// representation-geometry readings measure its rank).
    pub fn bottleneck(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.mlp.len().saturating_sub(1);
        let mut x = x;
        for (i, layer) in self.mlp.iter().enumerate() {
            x = linear(layer, x);
            if i < last {
                x = gelu(x);
            }
        }
        // F.normalize(dim=-1, eps=1e-12)
        let norm = x
            .clone()
            .powf_scalar(2.0)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        x.div(norm)
    }
}

/// Backbone + head: the student, and (as an EMA copy) the teacher.
#[derive(Module, Debug)]
pub struct DinoModel {
    pub backbone: VisionTransformer,
    pub head: DinoHead,
}

/// Outputs of a multi-crop pass, crop-major: rows `[c·B, (c+1)·B)` belong to crop c.
pub struct MultiCropOutput {
    /// The backbone's CLS features `[rows, embed_dim]` (with `_with_features` only).
    pub features: Option<Tensor<2>>,
    /// The head's ℓ2-normalised bottleneck `[rows, bottleneck_dim]` (with `_with_features`).
    pub bottleneck: Option<Tensor<2>>,
    /// The head's output `[rows, K]`.
    pub logits: Tensor<2>,
}

impl DinoModel {
    pub fn new(
        vit: &VitConfig,
        hidden_dim: usize,
        bottleneck_dim: usize,
        out_dim: usize,
        seed: u64,
        device: &Device,
    ) -> Self {
        let mut init = HostInit::new(seed);
        let backbone = VisionTransformer::new(vit, &mut init, device);
        let head = DinoHead::new(
            &mut init,
            vit.arch.embed_dim,
            hidden_dim,
            bottleneck_dim,
            out_dim,
            device,
        );
        Self { backbone, head }
    }

    /// The reference `MultiCropWrapper`: one backbone pass per resolution group (globals,
    /// then locals), CLS features concatenated, one head pass on all rows. Only the logits
    /// are kept (the student: no extra handles on its autodiff graph).
    pub fn forward_multi_crop(
        &self,
        groups: Vec<Tensor<4>>,
        rng: Option<&mut ChaCha8Rng>,
    ) -> MultiCropOutput {
        MultiCropOutput {
            logits: self.head.forward(self.cls_features(groups, rng)),
            features: None,
            bottleneck: None,
        }
    }

    /// The CLS features of every group, concatenated (one backbone pass per resolution).
    fn cls_features(&self, groups: Vec<Tensor<4>>, mut rng: Option<&mut ChaCha8Rng>) -> Tensor<2> {
        let features: Vec<Tensor<2>> = groups
            .into_iter()
            .map(|images| self.backbone.forward_cls(images, rng.as_deref_mut()))
            .collect();
        Tensor::cat(features, 0)
    }

    /// As [`DinoModel::forward_multi_crop`], also returning the CLS features and the head's
    /// bottleneck (the teacher: the representation readings measure them).
    pub fn forward_multi_crop_with_features(
        &self,
        groups: Vec<Tensor<4>>,
        rng: Option<&mut ChaCha8Rng>,
    ) -> MultiCropOutput {
        let features = self.cls_features(groups, rng);
        let bottleneck = self.head.bottleneck(features.clone());
        MultiCropOutput {
            logits: self.head.last_layer.forward(bottleneck.clone()),
            bottleneck: Some(bottleneck),
            features: Some(features),
        }
    }
}

/// Number of float parameters in a module.
pub fn parameter_count<M: Module>(module: &M) -> usize {
    module.num_params()
}
