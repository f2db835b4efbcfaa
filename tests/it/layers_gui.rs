//! The attention view beyond the last block in the real app: the layer picker recomputes the
//! loaded weights' maps for an earlier block (with every head's distance charted) and for
//! rollout; snapshot of the block view.

use crate::attention::fixture;
use crate::gui_support::{frames_until, harness_with};
use dinoscope::analysis::layers::MapLayer;
use egui_kittest::kittest::Queryable;

#[test]
fn layer_picker_shows_earlier_blocks_their_distances_and_rollout() {
    let mut harness = harness_with(None);
    {
        let app = harness.state_mut();
        app.panels.attention.short_side_px = Some(48);
        app.panels.attention.heads_override = Some(3);
        app.load_weights(fixture("checkpoint.pth"));
    }
    frames_until(&mut harness, "the loaded weights' maps", 60, |app| {
        app.panels
            .attention
            .loaded
            .as_ref()
            .is_some_and(|l| l.maps.len() == app.panels.attention.images.len())
    });
    harness.run_steps(2);
    // The picker, as a user opens it: the last of the fixture's 2 blocks is selected.
    harness
        .get_by_role_and_label(egui::accesskit::Role::ComboBox, "layer")
        .click();
    harness.run_steps(2);
    harness.get_by_label("block 1 of 2").click();
    harness.run_steps(1);
    assert_eq!(harness.state().panels.attention.layer, MapLayer::Block(0));
    frames_until(&mut harness, "block 1's maps", 60, |app| {
        app.panels.attention.loaded.as_ref().is_some_and(|l| {
            l.maps.len() == app.panels.attention.images.len()
                && l.maps.iter().all(|(_, m)| m.layer == MapLayer::Block(0))
        })
    });
    let loaded = harness.state().panels.attention.loaded.as_ref().unwrap();
    let (_, cat) = &loaded.maps[0];
    assert_eq!(cat.heads.len(), 3);
    assert_eq!(cat.distance_px.len(), 2, "every block's distances");
    assert!(cat
        .distance_px
        .iter()
        .flatten()
        .all(|d| d.is_finite() && *d >= 0.0));
    if let Some(loaded) = &mut harness.state_mut().panels.attention.loaded {
        loaded.elapsed_secs = None;
    }
    // The status line's load time is not part of the picture (a loaded machine reads 0.1 s).
    for message in &mut harness.state_mut().state.messages {
        if let Some((what, _)) = message.text.rsplit_once(" in ") {
            message.text = format!("{what} in 0.0 s");
        }
    }
    harness.run_steps(3);
    harness.get_by_label("Per head of block 1 of 2 (click to show large)");
    harness.get_by_label("Mean attention distance per head");
    harness.snapshot("attention_view_block");

    // Rollout: one map per image, shown as such.
    harness
        .get_by_role_and_label(egui::accesskit::Role::ComboBox, "layer")
        .click();
    harness.run_steps(2);
    harness.get_by_label("rollout (all blocks)").click();
    harness.run_steps(1);
    frames_until(&mut harness, "the rollout maps", 60, |app| {
        app.panels.attention.loaded.as_ref().is_some_and(|l| {
            l.maps.len() == app.panels.attention.images.len()
                && l.maps
                    .iter()
                    .all(|(_, m)| matches!(m.layer, MapLayer::Rollout(_)) && m.heads.len() == 1)
        })
    });
    harness.run_steps(3);
    harness.get_by_label("Rollout over all blocks (one map)");
    // Its settings, as vit_rollout.py takes them: another head fusion recomputes the maps.
    harness.get_by_role_and_label(egui::accesskit::Role::Slider, "discard");
    harness
        .get_by_role_and_label(egui::accesskit::Role::ComboBox, "head fusion")
        .click();
    harness.run_steps(2);
    harness.get_by_label("max").click();
    harness.run_steps(1);
    frames_until(&mut harness, "the max-fused rollout", 60, |app| {
        app.panels.attention.loaded.as_ref().is_some_and(|l| {
            l.maps.len() == app.panels.attention.images.len()
                && l.maps.iter().all(|(_, m)| {
                    matches!(m.layer, MapLayer::Rollout(s) if s.fusion == dinoscope::analysis::attention::HeadFusion::Max)
                })
        })
    });
}

/// The history scrubber's snapshots as an animated GIF, one frame per snapshot.
#[test]
fn the_attention_history_exports_as_a_timelapse() {
    use dinoscope::analysis::attention::AttentionMaps;
    use dinoscope::worker::Event;
    use image::AnimationDecoder;
    let mut harness = crate::gui_support::harness_built(|app| {
        let run = app.state.begin_run("run".into(), None);
        let name = app.panels.attention.images[0].name.clone();
        for (i, step) in [9usize, 19, 29].into_iter().enumerate() {
            let maps = AttentionMaps {
                grid_rows: 4,
                grid_cols: 4,
                patch_size: 8,
                resized_px: (32, 32),
                heads: vec![(0..16)
                    .map(|p| if p == 5 * i { 1.0 } else { 0.01 })
                    .collect()],
                pca_rgb: Vec::new(),
                pca_foreground_rgb: Vec::new(),
                layer: MapLayer::Last,
                distance_px: Vec::new(),
                token_norms: Vec::new(),
                registers: Default::default(),
            };
            app.state.apply(Event::Attention {
                run_id: run,
                step,
                network: dinoscope::store::weights::Network::Teacher,
                maps: vec![(name.clone(), maps)],
            });
        }
        app.panels.central_tab = dinoscope::app::CentralTab::Attention;
    });
    harness.run_steps(3);
    harness.get_by_label("Export time-lapse GIF...");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lapse.gif");
    let app = harness.state_mut();
    assert_eq!(
        app.panels
            .attention
            .export_timelapse(&app.state, &path, false)
            .unwrap(),
        3
    );
    let gif = std::fs::File::open(&path).unwrap();
    let frames = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(gif))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 3);
    assert_ne!(
        frames[0].buffer(),
        frames[2].buffer(),
        "the mask moves between frames"
    );
    // The head grid's time-lapse: the grid (one head and the mean here) in every frame.
    let grid_path = dir.path().join("grid.gif");
    assert_eq!(
        app.panels
            .attention
            .export_timelapse(&app.state, &grid_path, true)
            .unwrap(),
        3
    );
    let gif = std::fs::File::open(&grid_path).unwrap();
    let grid_frames = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(gif))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(grid_frames.len(), 3);
    // Two tiles side by side: a wider picture than the one map.
    let aspect = |b: &image::RgbaImage| b.width() as f32 / b.height() as f32;
    assert!(aspect(grid_frames[0].buffer()) > 1.5 * aspect(frames[0].buffer()));
}

/// The patch inspector: clicking the large view asks the network that made the maps for the
/// similarity of the clicked patch to every patch of every followed image.
#[test]
fn clicking_a_patch_shows_every_images_similarity_to_it() {
    let mut harness = harness_with(None);
    {
        let app = harness.state_mut();
        app.panels.attention.short_side_px = Some(48);
        app.panels.attention.heads_override = Some(3);
        app.load_weights(fixture("checkpoint.pth"));
    }
    frames_until(&mut harness, "the loaded weights' maps", 60, |app| {
        app.panels
            .attention
            .loaded
            .as_ref()
            .is_some_and(|l| l.maps.len() == app.panels.attention.images.len())
    });
    harness.run_steps(2);
    harness.get_by_label(
        "Click a patch of the large view: every image's similarity to it appears here.",
    );
    // The user clicks in the large view (here: the patch at pixel (20, 12) of cat.jpg, as the
    // click handler maps a position to a pixel).
    harness
        .state()
        .queue(dinoscope::app::UiCommand::InspectPatch {
            image: 0,
            at: (20, 12),
        });
    harness.run_steps(1);
    frames_until(&mut harness, "the similarity", 60, |app| {
        app.state.similarity.is_some()
    });
    let app = harness.state();
    let similarity = app.state.similarity.as_ref().unwrap();
    assert_eq!(similarity.source, app.panels.attention.images[0].name);
    assert_eq!(similarity.patch, (1, 2));
    assert_eq!(similarity.maps.len(), app.panels.attention.images.len());
    let own = &similarity.maps[0];
    let at = own.grid_cols + 2;
    assert!(
        (own.values[at] - 1.0).abs() < 1e-5,
        "a patch is its own most similar"
    );
    assert!(own.values.iter().all(|v| (-1.0001..=1.0001).contains(v)));
    if let Some(loaded) = &mut harness.state_mut().panels.attention.loaded {
        loaded.elapsed_secs = None;
    }
    harness.run_steps(3);
    harness.get_by_label(&format!(
        "Similarity to patch (1, 2) of {} (cosine of the last layer's tokens)",
        harness.state().panels.attention.images[0].name
    ));
    harness.snapshot("attention_view_similarity");
}

/// A training run's snapshots carry every head's distance (the chart over training grows
/// with them) and the last layer's token norms (the histogram and the outlined outliers).
#[test]
fn training_charts_distance_over_steps_and_shows_token_norms() {
    use egui::accesskit::Role;
    let mut harness = harness_with(None);
    {
        let app = harness.state_mut();
        app.panels.attention.every_steps = 2;
        app.queue(dinoscope::app::UiCommand::AttentionSettingsChanged);
    }
    harness.run_steps(6);
    harness.get_by_label("Start").click();
    frames_until(&mut harness, "three snapshots with distances", 90, |app| {
        app.state.distance_history.len() >= 3
    });
    harness.get_by_label("Pause").click();
    harness.run_steps(2);
    let app = harness.state();
    let config = crate::worker::micro_config();
    let (depth, heads) = (config.vit_arch().depth, config.vit_arch().num_heads);
    let history = &app.state.distance_history;
    for pair in history.windows(2) {
        assert!(
            pair[0].step < pair[1].step,
            "one point per snapshot, in order"
        );
    }
    for snapshot in history {
        assert_eq!(snapshot.distance_px.len(), depth);
        assert!(snapshot
            .distance_px
            .iter()
            .all(|block| block.len() == heads && block.iter().all(|d| d.is_finite() && *d >= 0.0)));
    }
    let latest = app.state.attention_history.back().unwrap();
    for (_, maps) in &latest.maps {
        assert_eq!(maps.token_norms.len(), maps.grid_rows * maps.grid_cols);
        assert!(maps.token_norms.iter().all(|n| n.is_finite() && *n > 0.0));
    }

    harness.state_mut().panels.central_tab = dinoscope::app::CentralTab::Attention;
    harness.run_steps(3);
    harness.get_by_label(&format!(
        "Attention distance over training (block {depth} of {depth})"
    ));
    harness
        .get_by_role_and_label(Role::ComboBox, "large map")
        .click();
    harness.run_steps(2);
    harness
        .get_by_label("token norms (outliers outlined)")
        .click();
    harness.run_steps(2);
    assert_eq!(
        harness.state().panels.attention.head,
        dinoscope::app::attention_view::HeadChoice::TokenNorms
    );
    harness.get_by_label_contains("Patch-token norms: ");
    harness.get_by_label_contains("tokens are outliers (outlined)");
}
