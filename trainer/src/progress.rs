//! Progress bars for long work; hidden when asked to be quiet or when stderr is no terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` units named `unit`, with `prefix` before it; hidden unless `visible`.
pub fn bar(len: usize, prefix: &str, unit: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let template = format!(
        "{{prefix:>12}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}} ({{elapsed}} so far, ETA {{eta}})"
    );
    let style = ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::new(len as u64)
        .with_style(style)
        .with_prefix(prefix.to_string())
}

/// A counter for work of unknown length (rows streamed from a file).
pub fn spinner(prefix: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let style =
        ProgressStyle::with_template("{prefix:>12} {spinner} {pos} rows ({per_sec}, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
    ProgressBar::new_spinner()
        .with_style(style)
        .with_prefix(prefix.to_string())
}

/// A spinner with `message` and the time elapsed, for one long wait (an upload); hidden unless
/// `visible`. It ticks by itself until finished.
pub fn waiting(prefix: &str, message: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{prefix:>12} {spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let spinner = ProgressBar::new_spinner()
        .with_style(style)
        .with_prefix(prefix.to_string())
        .with_message(message.to_string());
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner
}
