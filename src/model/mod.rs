//! The networks: the Vision Transformer backbone (`vit`), the DINO head and the
//! backbone + head pair (`head`), and the GELU kernel they share (`activation`), as in
//! facebookresearch/dino's `vision_transformer.py` (reference §1–§2).

pub mod activation;
pub mod head;
pub mod vit;

pub use head::*;
pub use vit::*;
