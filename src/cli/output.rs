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
