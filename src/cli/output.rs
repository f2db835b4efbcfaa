//! Printing that survives a closed pipe: `dinoscope train … | head -1` must keep training and
//! saving after `head` exits, and `attention … | head` must end quietly. `println!` and
//! `eprintln!` panic on a broken pipe; these stop printing instead.

use std::io::Write;

/// Standard output; after the first failed write (the reader went away) lines are dropped.
#[derive(Default)]
pub struct Printer {
    closed: bool,
}

impl Printer {
    pub fn line(&mut self, text: &str) {
        if self.closed {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            self.closed = true;
        }
    }
}

/// A line on standard error (progress notes, warnings); a closed stderr is ignored.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// `err` and its causes as one line, each cause only when the text so far does not already
/// say it: most error types quote their source in their own message, and anyhow's `{:#}`
/// would print the OS error twice.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

/// Exit status of a failed command: 3 when training stopped on a non-finite loss or gradient
/// (a checkpoint of the last good step was kept; `train --resume` continues), else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    use dinoscope::train::TrainError;
    match err.downcast_ref::<TrainError>() {
        Some(TrainError::NonFinite { .. }) => NON_FINITE_EXIT,
        _ => 1,
    }
}

/// The exit status of a run stopped by the non-finite guard.
pub const NON_FINITE_EXIT: i32 = 3;
