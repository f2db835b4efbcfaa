//! What a user drops on the window (issue 14's app inputs): a folder of images, a folder with
//! none, a 1 GB file that is not an image, fifty images at once. Each is said in the status
//! line, nothing panics, the frame never waits for a decode and at most 16 images are
//! followed.

use crate::gui_support::{frames_until, harness_with};
use dinoscope::app::DinoscopeApp;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

/// Drops `paths` on the window and runs that frame; returns how long the frame took.
fn drop_on(harness: &mut Harness<'static, DinoscopeApp>, paths: &[PathBuf]) -> Duration {
    for path in paths {
        harness
            .input_mut()
            .dropped_files
            .push(Arc::new(Dropped(path.clone())));
    }
    let started = Instant::now();
    harness.run_steps(1);
    started.elapsed()
}

fn said(app: &DinoscopeApp, text: &str) -> bool {
    app.state.messages.iter().any(|m| m.text.contains(text))
}

fn write_pngs(dir: &Path, count: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..count)
        .map(|i| {
            let path = dir.join(format!("image{i:02}.png"));
            image::RgbImage::from_fn(24, 20, |x, y| {
                image::Rgb([(x * 9) as u8, (y * 11) as u8, i as u8])
            })
            .save(&path)
            .unwrap();
            path
        })
        .collect()
}

#[test]
fn dropped_folders_huge_files_and_fifty_images_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = harness_with(None);
    harness.run_steps(6);
    let followed = |app: &DinoscopeApp| app.panels.attention.images.len();
    let at_start = followed(harness.state());

    // A folder of images: the images in it are followed.
    write_pngs(&dir.path().join("photos"), 3);
    std::fs::write(dir.path().join("photos/notes.txt"), "not an image").unwrap();
    drop_on(&mut harness, &[dir.path().join("photos")]);
    frames_until(&mut harness, "the folder's images", 30, |app| {
        followed(app) == at_start + 3
    });

    // A folder without images: said, nothing added.
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    drop_on(&mut harness, &[dir.path().join("empty")]);
    assert!(said(harness.state(), "is a folder without images in it"));

    // A 1 GB file that is not an image (sparse: no disk used): refused by its header, named,
    // without the frame waiting for it.
    let huge = dir.path().join("huge.jpg");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let frame = drop_on(&mut harness, std::slice::from_ref(&huge));
    assert!(
        frame < Duration::from_secs(1),
        "the drop frame took {frame:?}"
    );
    frames_until(&mut harness, "the huge file's message", 30, |app| {
        said(app, "huge.jpg")
    });
    assert_eq!(followed(harness.state()), at_start + 3);

    // Fifty images at once: the first that fit are followed, the rest said.
    let fifty = write_pngs(&dir.path().join("fifty"), 50);
    let frame = drop_on(&mut harness, &fifty);
    assert!(
        frame < Duration::from_secs(1),
        "the drop frame took {frame:?}"
    );
    assert!(said(harness.state(), "follows at most 16 images"));
    frames_until(&mut harness, "16 images followed", 30, |app| {
        followed(app) == 16
    });
    harness.run_steps(3);
    assert_eq!(followed(harness.state()), 16);
    // The app still trains with them.
    harness.get_by_label("Start").click();
    frames_until(&mut harness, "maps of every followed image", 120, |app| {
        app.state
            .attention_history
            .back()
            .is_some_and(|s| s.maps.len() == 16)
    });
}

/// A runs folder that cannot be written, even by root (sysfs refuses new entries; a chmod'ed
/// folder would not stop root, who runs these tests): the run is kept in memory, paused, the
/// status line names the folder and **Save run to…** offers another one (what it then does is
/// `worker::a_lost_run_directory_pauses_and_the_run_continues_in_another`).
#[test]
fn an_unwritable_runs_folder_keeps_the_run_in_memory_paused() {
    use dinoscope::worker::WorkerStatus;
    let root = PathBuf::from("/sys/dinoscope-runs");
    if std::fs::create_dir_all(&root).is_ok() {
        eprintln!("skipped: {} is writable on this machine", root.display());
        return;
    }
    let mut harness = harness_with(Some(root));
    harness.run_steps(6);
    harness.get_by_label("Start").click();
    frames_until(&mut harness, "the run held without a folder", 60, |app| {
        app.state.worker_status == WorkerStatus::Paused
            && app.state.current_run().is_some_and(|r| r.storage_lost)
    });
    let app = harness.state();
    assert!(app.state.messages.iter().any(|m| m
        .text
        .contains("cannot create run directory /sys/dinoscope-runs/")
        && m.text.contains("kept in memory")));
    harness.run_steps(2);
    harness.get_by_label("Save run to…");
}
