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

/// A mistake in what the user gave (an argument, a file, a config): exit status 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// `Err(usage(…))`: a bad argument or input, named in the message.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// Exit status of a failed command: 2 for bad input (arguments, configs, data, weights,
/// checkpoints: what the user can fix, as clap's own usage errors), 3 when training stopped
/// on a non-finite loss or gradient (a checkpoint of the last good step was kept), else 1
/// (a write that failed, an internal error).
pub fn exit_code(err: &anyhow::Error) -> i32 {
    use dinoscope::config::ConfigError;
    use dinoscope::data::DataError;
    use dinoscope::device::DeviceError;
    use dinoscope::store::checkpoint::CheckpointError;
    use dinoscope::store::figure::FigureError;
    use dinoscope::store::weights::WeightsError;
    use dinoscope::train::TrainError;
    let bad_checkpoint = |err: &CheckpointError| !matches!(err, CheckpointError::Write { .. });
    for cause in err.chain() {
        if let Some(train) = cause.downcast_ref::<TrainError>() {
            return match train {
                TrainError::NonFinite { .. } => NON_FINITE_EXIT,
                TrainError::Data(_) | TrainError::Setting(_) | TrainError::OutOfMemory { .. } => {
                    USAGE_EXIT
                }
                TrainError::Checkpoint(inner) if bad_checkpoint(inner) => USAGE_EXIT,
                _ => 1,
            };
        }
        let bad_input = cause.is::<Usage>()
            || cause.is::<ConfigError>()
            || cause.is::<DataError>()
            || cause.is::<WeightsError>()
            || cause.is::<DeviceError>()
            || cause
                .downcast_ref::<CheckpointError>()
                .is_some_and(bad_checkpoint)
            || cause
                .downcast_ref::<FigureError>()
                .is_some_and(|e| !matches!(e, FigureError::Draw { .. }));
        if bad_input {
            return USAGE_EXIT;
        }
    }
    1
}

/// The exit status of bad input (clap's own, for its usage errors).
pub const USAGE_EXIT: i32 = 2;

/// The exit status of a run stopped by the non-finite guard.
pub const NON_FINITE_EXIT: i32 = 3;
