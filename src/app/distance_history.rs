//! The attention distance over training: each snapshot's mean distance per head and block
//! (averaged over the followed images), kept for the whole run and thinned past a cap, for the
//! chart of heads moving from local to global.

use super::state::AttentionSnapshot;

/// The mean attention distance of every head of every block after one step, averaged over
/// the followed images.
#[derive(Clone, Debug, PartialEq)]
pub struct DistanceSnapshot {
    pub step: usize,
    pub network: crate::store::weights::Network,
    /// `[block][head]` pixels.
    pub distance_px: Vec<Vec<f32>>,
}

impl DistanceSnapshot {
    /// The images' mean; `None` when no map carries distances or their shapes differ.
    pub(super) fn of(snapshot: &AttentionSnapshot) -> Option<Self> {
        let mut maps = snapshot.maps.iter().map(|(_, m)| &m.distance_px);
        let first = maps.next().filter(|d| !d.is_empty())?;
        let shape: Vec<usize> = first.iter().map(Vec::len).collect();
        let mut sum: Vec<Vec<f32>> = first.clone();
        let mut count = 1.0;
        for distance in maps {
            if distance.iter().map(Vec::len).collect::<Vec<_>>() != shape {
                return None;
            }
            for (block, heads) in sum.iter_mut().zip(distance) {
                for (total, d) in block.iter_mut().zip(heads) {
                    *total += d;
                }
            }
            count += 1.0;
        }
        for value in sum.iter_mut().flatten() {
            *value /= count;
        }
        Some(Self {
            step: snapshot.step,
            network: snapshot.network,
            distance_px: sum,
        })
    }
}

/// Distance points kept per run before they are thinned.
pub const MAX_DISTANCE_POINTS: usize = 4096;

/// Adds a point; past [`MAX_DISTANCE_POINTS`] every other point goes, so a session of any
/// length stays bounded and the whole run stays on the chart, at half the density.
pub(super) fn push_thinned(history: &mut Vec<DistanceSnapshot>, point: DistanceSnapshot) {
    history.push(point);
    if history.len() > MAX_DISTANCE_POINTS {
        let mut keep = false;
        history.retain(|_| {
            keep = !keep;
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshots_distance_is_the_mean_over_images() {
        use crate::analysis::attention::AttentionMaps;
        let maps = |distance_px: Vec<Vec<f32>>| AttentionMaps {
            grid_rows: 1,
            grid_cols: 1,
            patch_size: 8,
            resized_px: (8, 8),
            heads: vec![vec![1.0]],
            pca_rgb: Vec::new(),
            pca_foreground_rgb: Vec::new(),
            layer: crate::analysis::layers::MapLayer::Last,
            distance_px,
            token_norms: Vec::new(),
            registers: Default::default(),
        };
        let snapshot = |distances: Vec<Vec<Vec<f32>>>| AttentionSnapshot {
            step: 9,
            generation: 1,
            network: crate::store::weights::Network::Teacher,
            maps: distances
                .into_iter()
                .enumerate()
                .map(|(i, d)| (format!("image {i}"), maps(d)))
                .collect(),
        };
        let two = snapshot(vec![
            vec![vec![2.0, 4.0], vec![10.0, 20.0]],
            vec![vec![4.0, 8.0], vec![30.0, 40.0]],
        ]);
        assert_eq!(
            DistanceSnapshot::of(&two).map(|d| d.distance_px),
            Some(vec![vec![3.0, 6.0], vec![20.0, 30.0]])
        );
        // Without distances, or with shapes that do not agree: no point.
        assert_eq!(DistanceSnapshot::of(&snapshot(vec![Vec::new()])), None);
        let mixed = snapshot(vec![vec![vec![1.0]], vec![vec![1.0, 2.0]]]);
        assert_eq!(DistanceSnapshot::of(&mixed), None);
    }
}
