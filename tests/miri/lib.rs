//! `src/kernels/` as a crate of its own, for Miri (`scripts/miri`): its unit tests run here
//! on the scalar path (Miri reports no AVX2/AVX-512, so pulp and gemm run their baseline code),
//! with every pointer the kernels hand to gemm and every buffer they fill without zeroing
//! checked for bounds, aliasing and initialisation.

#[path = "../../src/kernels/mod.rs"]
pub mod kernels;
