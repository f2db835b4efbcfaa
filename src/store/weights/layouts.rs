//! Which layout a weights file's keys are in: the official DINO, DINOv2 and DINOv3 layouts
//! load (the family read from the keys), the same weights saved by timm or Hugging Face
//! `transformers` are refused with one line naming the layout found and what to pass instead:
//! their tensors are split, renamed and partly folded together (timm's register models fold
//! the CLS position into `cls_token`), and a loader that guessed would draw a wrong picture.

use crate::model::Family;
use std::collections::BTreeMap;

/// The family of an official-layout file (after the prefixes are stripped and the storage
/// tokens named `register_tokens`): DINOv3 by its RoPE periods, DINOv2 by its registers or
/// LayerScale, else DINO.
pub(super) fn family_of(shapes: &BTreeMap<String, Vec<usize>>) -> Family {
    let registers = shapes
        .get("register_tokens")
        .and_then(|shape| shape.get(1).copied())
        .unwrap_or(0);
    if shapes.contains_key("rope_embed.periods") {
        Family::DinoV3 { storage: registers }
    } else if registers > 0 || shapes.keys().any(|k| k.ends_with(".ls1.gamma")) {
        Family::DinoV2 { registers }
    } else {
        Family::Dino
    }
}

/// A one-line refusal when the keys are another library's layout of DINO weights.
pub(super) fn foreign_layout(keys: &[String]) -> Option<String> {
    let any = |pattern: &str| keys.iter().any(|k| k.contains(pattern));
    let official = "dinoscope reads the official layout: pass the hub's file instead \
        (dinov2_vits14_pretrain.pth, dinov2_vits14_reg4_pretrain.pth or \
        dinov3_vits16_pretrain_lvd1689m-*.pth, as torch.hub.load(\"facebookresearch/dinov2\" \
        or \"facebookresearch/dinov3\", ...) downloads them)";
    if any("embeddings.patch_embeddings") || any("layer_scale1.lambda1") || any("encoder.layer.") {
        let what = if any(".attention.q_proj") {
            "Hugging Face transformers DINOv3 layout (`embeddings.*`, `layer.N.attention.q_proj`, `layer_scale1.lambda1`)"
        } else {
            "Hugging Face transformers DINOv2 layout (`embeddings.*`, `encoder.layer.N.attention.attention.query`, `layer_scale1.lambda1`)"
        };
        return Some(format!("{what}; {official}"));
    }
    if any("reg_token") || any(".gamma_1") || any(".attn.q_bias") {
        return Some(format!(
            "timm layout (`reg_token` with the CLS position folded into `cls_token`, or `gamma_1`/`q_bias`); {official}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn other_libraries_are_named() {
        let hf2 = keys(&[
            "embeddings.cls_token",
            "embeddings.patch_embeddings.projection.weight",
            "encoder.layer.0.attention.attention.query.weight",
            "encoder.layer.0.layer_scale1.lambda1",
        ]);
        let message = foreign_layout(&hf2).unwrap();
        assert!(
            message.contains("Hugging Face transformers DINOv2"),
            "{message}"
        );
        let hf3 = keys(&[
            "embeddings.cls_token",
            "embeddings.register_tokens",
            "layer.0.attention.q_proj.weight",
            "layer.0.layer_scale1.lambda1",
        ]);
        assert!(foreign_layout(&hf3).unwrap().contains("DINOv3"));
        let timm = keys(&["cls_token", "reg_token", "pos_embed", "blocks.0.ls1.gamma"]);
        assert!(foreign_layout(&timm).unwrap().starts_with("timm layout"));
        let official = keys(&["cls_token", "register_tokens", "blocks.0.ls1.gamma"]);
        assert_eq!(foreign_layout(&official), None);
    }
}
