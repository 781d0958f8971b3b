//! Log set-up (`[log]`): text or JSON lines, and phone numbers masked by default.
//!
//! Every line about a call carries `call=<uuid>`; numbers go through [`num`], which masks all
//! but the first four and last two digits unless `[log] mask_numbers = false`.

use std::sync::atomic::{AtomicBool, Ordering};

static MASK: AtomicBool = AtomicBool::new(true);

/// Mask numbers in logs and live events (the default) or not.
pub fn set_mask(on: bool) {
    MASK.store(on, Ordering::Relaxed);
}

/// Are numbers masked?
pub fn masking() -> bool {
    MASK.load(Ordering::Relaxed)
}

/// A number as logs show it: `1310*****34` when masking.
pub fn num(n: &str) -> String {
    if !masking() {
        return n.to_owned();
    }
    mask(n)
}

/// Mask every character but the first four and the last two (short numbers: all but the last
/// two).
pub fn mask(n: &str) -> String {
    let chars: Vec<char> = n.chars().collect();
    let len = chars.len();
    let keep_head = if len > 8 { 4 } else { 0 };
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keep_head || i + 2 >= len {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

/// Install the global subscriber: `json` for one JSON object per line; the filter comes from
/// `RUST_LOG` or `default_filter`.
pub fn init(json: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        b.json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        b.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_middle_of_numbers() {
        assert_eq!(mask("13105551234"), "1310*****34");
        assert_eq!(mask("+13105551234"), "+131******34");
        assert_eq!(mask("5551"), "**51");
        assert_eq!(mask(""), "");
    }
}
