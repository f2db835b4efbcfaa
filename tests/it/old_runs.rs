//! Runs written by an older dinoscope (fewer columns) always read, and resuming one keeps its
//! history: every row before the checkpoint stays in `metrics.csv`, also a line today's row
//! type cannot parse (issue 29's latent data loss).

use dinoscope::store::rows::{read_rows, EvalRow, MetricsRow};
use dinoscope::store::run::{read_step_metrics, RunWriter, EVAL_FILE, METRICS_FILE};

/// A `metrics.csv` of an old version: no `local_crops` (a non-`Option` column), none of the
/// geometry, regime or KoLeo columns; step 1's loss is damaged.
const OLD_METRICS: &str = "step,epoch,loss,teacher_entropy,kl,batch_mean_entropy,lr,weight_decay,teacher_momentum,teacher_temp,images_per_sec,step_secs,data_wait_secs,centering,sharpening,ln_k\n\
0,0,4.100000,3.000000,1.100000,3.400000,5.000000e-4,0.040000,0.996000,0.04000,100.00,0.30000,0.00000,1,1,3.465736\n\
1,0,garbage,2.900000,1.100000,3.400000,5.000000e-4,0.040000,0.996000,0.04000,100.00,0.30000,0.00000,1,1,3.465736\n\
2,0,3.900000,2.800000,1.100000,3.400000,5.000000e-4,0.040000,0.996000,0.04000,100.00,0.30000,0.00000,1,1,3.465736\n\
3,0,3.800000,2.700000,1.100000,3.400000,5.000000e-4,0.040000,0.996000,0.04000,100.00,0.30000,0.00000,1,1,3.465736\n\
4,1,3.700000,2.600000,1.100000,3.400000,5.000000e-4,0.040000,0.996000,0.04000,100.00,0.30000,0.00000,1,1,3.465736\n\
5,1,3.6";

#[test]
fn an_old_metrics_csv_missing_a_column_reads_and_resumes_with_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(METRICS_FILE);
    std::fs::write(&path, OLD_METRICS).unwrap();
    // Reading: every complete row that parses, the missing columns at their defaults.
    let rows = read_step_metrics(&path).unwrap();
    let steps: Vec<usize> = rows.iter().map(|r| r.step).collect();
    assert_eq!(steps, [0, 2, 3, 4]);
    assert_eq!((rows[0].local_crops, rows[0].teacher_mi), (0, None));
    assert!((rows[0].teacher_mi() - 0.4).abs() < 1e-9);

    // Resuming at step 4: steps 0-3 are history, the damaged step 1 included; step 4 and the
    // torn line go.
    let (mut writer, kept) = RunWriter::resume(dir.path(), 4).unwrap();
    let kept_steps: Vec<usize> = kept.iter().map(|r| r.step).collect();
    assert_eq!(kept_steps, [0, 2, 3]);
    writer
        .append(&MetricsRow {
            step: 4,
            epoch: 1,
            local_crops: 6,
            ..MetricsRow::default()
        })
        .unwrap();
    drop(writer);
    let text = std::fs::read_to_string(&path).unwrap();
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("step,epoch,loss,") && header.contains("local_crops"),
        "today's header: {header}"
    );
    let damaged = text
        .lines()
        .find(|line| line.starts_with("1,"))
        .unwrap_or_else(|| panic!("step 1 was dropped:\n{text}"));
    assert!(
        damaged.contains("garbage") && damaged.contains("2.900000"),
        "{damaged}"
    );
    // Its cells sit under today's columns of the same name.
    let cells: Vec<&str> = damaged.split(',').collect();
    let column = |name: &str| header.split(',').position(|c| c == name).unwrap();
    assert_eq!(cells.len(), header.split(',').count());
    assert_eq!(cells[column("teacher_entropy")], "2.900000");
    assert_eq!(cells[column("local_crops")], "");
    let rows = read_step_metrics(&path).unwrap();
    let steps: Vec<usize> = rows.iter().map(|r| r.step).collect();
    assert_eq!(steps, [0, 2, 3, 4]);
    assert_eq!(rows[3].local_crops, 6);
    assert!(
        (rows[1].loss - 3.9).abs() < 1e-9,
        "values kept: {:?}",
        rows[1]
    );
}

#[test]
fn an_old_knn_csv_is_cut_back_without_losing_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(METRICS_FILE), "step,epoch\n").unwrap();
    std::fs::write(
        dir.path().join(EVAL_FILE),
        "step,epoch,top1,top5\n0,0,10.0,50.0\n4,1,bad,60.0\n8,2,30.0,70.0\n",
    )
    .unwrap();
    let (writer, _) = RunWriter::resume(dir.path(), 5).unwrap();
    let kept = writer.truncate_evals(4).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let text = std::fs::read_to_string(dir.path().join(EVAL_FILE)).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("4,1,bad,60.0")),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("8,")), "{text}");
    let rows: Vec<EvalRow> = read_rows(text.as_bytes());
    assert_eq!((rows[0].top1, rows[0].student_top1), (Some(10.0), None));
}

/// End to end: a run trained here whose `metrics.csv` is rewritten in an old layout (a column
/// missing, one row damaged) resumes from its step-3 checkpoint with every earlier line kept.
#[test]
fn train_resume_keeps_an_old_runs_history() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    run_ok(crate::cli::train_micro(&run, 6).args(["--checkpoint-every", "3"]));
    let path = run.join(METRICS_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let drop_at = header.iter().position(|c| *c == "local_crops").unwrap();
    let loss_at = header.iter().position(|c| *c == "loss").unwrap();
    let old: Vec<String> = text
        .lines()
        .map(|line| {
            let mut cells: Vec<&str> = line.split(',').collect();
            if cells[0] == "1" {
                cells[loss_at] = "damaged";
            }
            cells.remove(drop_at);
            cells.join(",")
        })
        .collect();
    let before: Vec<String> = old[1..4].to_vec();
    std::fs::write(&path, old.join("\n") + "\n").unwrap();
    run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
            .args(["train", "--log-every", "0", "--resume"])
            .arg(run.join("checkpoint-00000003")),
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 6, "{text}");
    assert!(
        lines[2].starts_with("1,") && lines[2].contains("damaged"),
        "{text}"
    );
    // Steps 0 and 2 as they were, in today's layout (their local_crops at its default).
    for (line, old) in [(lines[1], &before[0]), (lines[3], &before[2])] {
        let cells: Vec<&str> = line.split(',').collect();
        let mut today: Vec<&str> = old.split(',').collect();
        today.insert(drop_at, "0");
        assert_eq!(cells, today);
    }
    let steps: Vec<usize> = read_step_metrics(&path)
        .unwrap()
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, [0, 2, 3, 4, 5]);
}

/// Runs the command; its stderr is the failure message.
fn run_ok(command: &mut std::process::Command) {
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
}
