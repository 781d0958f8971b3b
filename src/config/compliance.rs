//! `[compliance]`: DNC lists, calling hours, frequency cap, failure policy.

use super::walk::{Table, Walk};
use dce_compliance::Window;
use std::collections::HashMap;
use std::path::PathBuf;
use toml::de::DeValue;

/// What to do when a lookup source (Redis) errors or times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLookupError {
    /// Refuse the call.
    Reject,
    /// Route it and flag the CDR for review.
    AllowAndFlag,
}

/// `[compliance]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceConfig {
    /// File built by `dce dnc build`.
    pub national_dnc: Option<PathBuf>,
    /// Text file, one number per line; edited at run time.
    pub internal_dnc: Option<PathBuf>,
    /// Consumer-local window (default 08:00–21:00, the federal TCPA window).
    pub calling_hours: Window,
    /// Stricter windows by state.
    pub state_hours: HashMap<String, Window>,
    /// Calls per consumer number per campaign per rolling 24 h; 0 = off.
    pub max_calls_per_day: u32,
    /// Failure policy.
    pub on_lookup_error: OnLookupError,
}

impl Default for ComplianceConfig {
    fn default() -> Self {
        ComplianceConfig {
            national_dnc: None,
            internal_dnc: None,
            calling_hours: Window {
                start: 8 * 60,
                end: 21 * 60,
            },
            state_hours: HashMap::new(),
            max_calls_per_day: 0,
            on_lookup_error: OnLookupError::Reject,
        }
    }
}

fn window(w: &mut Walk<'_>, t: Table<'_, '_>, what: &str) -> Option<Window> {
    w.unknown_keys(t, &["start", "end"]);
    let (start, span) = w.string(t, "start", true)?;
    let (end, _) = w.string(t, "end", true)?;
    let win = Window::parse(&start, &end);
    if win.is_none() {
        w.error(
            span,
            format!("{what}: `{start}`–`{end}` is not a window (HH:MM, start before end)"),
        );
    }
    win
}

/// Read `[compliance]` (absent: defaults).
pub fn read(w: &mut Walk<'_>, root: Table<'_, '_>) -> ComplianceConfig {
    let mut c = ComplianceConfig::default();
    let Some(t) = w.table(root, "compliance", "compliance", false) else {
        return c;
    };
    w.unknown_keys(
        t,
        &[
            "national_dnc",
            "internal_dnc",
            "calling_hours",
            "state_hours",
            "max_calls_per_day",
            "on_lookup_error",
        ],
    );
    c.national_dnc = w.string(t, "national_dnc", false).map(|(p, _)| p.into());
    c.internal_dnc = w.string(t, "internal_dnc", false).map(|(p, _)| p.into());
    if let Some(h) = w.table(t, "calling_hours", "compliance.calling_hours", false) {
        if let Some(win) = window(w, h, "compliance.calling_hours") {
            c.calling_hours = win;
        }
    }
    if let Some(states) = w.table(t, "state_hours", "compliance.state_hours", false) {
        for (k, v) in states.table.iter() {
            let code = k.get_ref().to_string();
            if dce_routing::State::parse(&code).is_none() {
                w.error(
                    k.span(),
                    format!("`{code}` in compliance.state_hours is not a US state code"),
                );
                continue;
            }
            match v.get_ref() {
                DeValue::Table(tab) => {
                    let sub = Table {
                        table: tab,
                        span: (v.span().start, v.span().end),
                        path: "compliance.state_hours",
                    };
                    if let Some(win) = window(w, sub, &format!("compliance.state_hours.{code}")) {
                        c.state_hours.insert(code.to_ascii_uppercase(), win);
                    }
                }
                _ => w.error(
                    v.span(),
                    format!("compliance.state_hours.{code} must be {{ start, end }}"),
                ),
            }
        }
    }
    c.max_calls_per_day = w
        .int(t, "max_calls_per_day", 0, 1_000_000)
        .map(|(v, _)| v as u32)
        .unwrap_or(0);
    if let Some((v, span)) = w.string(t, "on_lookup_error", false) {
        c.on_lookup_error = match v.as_str() {
            "reject" => OnLookupError::Reject,
            "allow_and_flag" => OnLookupError::AllowAndFlag,
            _ => {
                w.error(
                    span,
                    "`compliance.on_lookup_error` must be \"reject\" or \"allow_and_flag\"",
                );
                OnLookupError::Reject
            }
        };
    }
    c
}
