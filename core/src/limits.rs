//! Bounds on caller input and the interrupt hook that keeps long loops cancellable.
//!
//! The core has no PostgreSQL; the extension installs [`set_interrupt_hook`] (PostgreSQL's
//! `CHECK_FOR_INTERRUPTS`) at load, and every loop whose length depends on input or catalog size
//! calls [`check_interrupts`] so `statement_timeout` and `pg_cancel_backend` stop it. The hook
//! may unwind (a PostgreSQL ERROR): loops hold no state that needs cleaning up.

use std::sync::OnceLock;

/// Longest model name accepted (bytes). The longest real ones (Bedrock ARNs) are under 200.
pub const MAX_MODEL_NAME_BYTES: usize = 512;
/// Longest response-cache namespace accepted (bytes).
pub const MAX_NAMESPACE_BYTES: usize = 256;
/// "Did you mean" suggestions are computed only for names up to this many characters: the edit
/// distance is quadratic, and a longer name is no typo of a model name.
pub const MAX_SUGGEST_CHARS: usize = 128;

static HOOK: OnceLock<fn()> = OnceLock::new();

/// Installs the interrupt check (once per process).
pub fn set_interrupt_hook(f: fn()) {
    let _ = HOOK.set(f);
}

/// Runs the interrupt check, if one is installed.
#[inline]
pub fn check_interrupts() {
    if let Some(f) = HOOK.get() {
        f();
    }
}

/// Characters of a caller-given value that an error message quotes: a hostile 1 MB value must
/// not become a 1 MB error message (and log line).
pub const MAX_QUOTED_CHARS: usize = 64;

/// `s` as quoted in an error message: at most [`MAX_QUOTED_CHARS`] characters, `…` marking a cut.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A name that is too long, for a clear error.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong {
    pub what: &'static str,
    pub bytes: usize,
    pub max: usize,
}

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} bytes is longer than the limit of {} bytes",
            self.what, self.bytes, self.max
        )
    }
}

/// Checks a caller-given name against its limit.
pub fn check_len(what: &'static str, s: &str, max: usize) -> Result<(), TooLong> {
    if s.len() > max {
        return Err(TooLong {
            what,
            bytes: s.len(),
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_clipped() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(1000);
        let c = clip(&long);
        assert_eq!(c.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(c.ends_with('…'));
    }

    #[test]
    fn lengths_are_checked_in_bytes() {
        assert!(
            check_len(
                "model name",
                &"x".repeat(MAX_MODEL_NAME_BYTES),
                MAX_MODEL_NAME_BYTES
            )
            .is_ok()
        );
        let e = check_len("model name", &"é".repeat(300), MAX_MODEL_NAME_BYTES).unwrap_err();
        assert_eq!(e.bytes, 600);
        assert_eq!(
            e.to_string(),
            "model name of 600 bytes is longer than the limit of 512 bytes"
        );
    }
}
