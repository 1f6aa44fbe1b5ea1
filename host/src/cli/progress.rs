//! Progress for slow work (compiling a component takes seconds): a spinner
//! on a terminal; elsewhere (logs, pipes) one line after a slow compile.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::runtime::CompileProgress;

/// Compiles faster than this are not worth a line in a log.
const SLOW_COMPILE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct CompileSpinner {
    bar: RefCell<Option<(ProgressBar, String)>>,
    label: RefCell<String>,
}

impl CompileProgress for CompileSpinner {
    fn started(&self, what: &str, bytes: usize) {
        let label = format!("compiling {what} ({:.1} MiB)", bytes as f64 / (1024.0 * 1024.0));
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"));
            bar.set_message(label.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            *self.bar.borrow_mut() = Some((bar, label));
        } else {
            *self.label.borrow_mut() = label;
        }
    }

    fn finished(&self, took: Duration) {
        let done = format!("compiled in {:.1}s (cached for next time)", took.as_secs_f64());
        match self.bar.borrow_mut().take() {
            Some((bar, label)) => bar.finish_with_message(format!("{label}: {done}")),
            None if took >= SLOW_COMPILE => eprintln!("{}: {done}", self.label.borrow()),
            None => {}
        }
    }
}
