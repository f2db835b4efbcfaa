//! What a network has learned: CLS attention maps, masks and patch PCA (`attention`, with the
//! PCA picture in `pca` and the overlay drawing in `overlay`), the k-NN monitor and the
//! attention Jaccard (`knn`), the representation's geometry (`geometry`: effective rank,
//! spectrum, std of normalised embeddings) and the run's diagnosis (`health`); `registers`:
//! what DINOv2/v3's register (storage) tokens receive from CLS and how large they are.

pub mod attention;
pub mod colormap;
pub mod geometry;
pub mod health;
pub mod knn;
pub mod layers;
mod overlay;
mod pca;
pub mod registers;
pub mod tokens;
