//! The networks: the Vision Transformer backbone (`vit`), the DINO head and the
//! backbone + head pair (`head`), and the GELU kernel they share (`activation`), as in
//! facebookresearch/dino's `vision_transformer.py` (reference §1–§2); `fused`: attention and
//! LayerNorm as single CPU ops with their own backward. `init`: the seeded
//! host-side initialisers; `interpolate`: the position table's bicubic resize (plain and
//! antialiased); `family`: what DINOv2/v3 change (LayerScale, registers, ε, positions);
//! `rope`: DINOv3's rotary position embedding.

pub mod activation;
mod family;
pub mod fused;
pub mod head;
mod init;
mod interpolate;
pub mod layers;
mod rope;
pub mod vit;

pub use head::*;
pub use vit::*;
