//! What a network has learned: CLS attention maps, masks and patch PCA (`attention`), the
//! k-NN monitor and the attention Jaccard (`knn`).

pub mod attention;
pub mod colormap;
pub mod knn;
