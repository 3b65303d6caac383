//! Raising PostgreSQL errors with proper SQLSTATEs. Rust panics inside `#[pg_extern]` functions are
//! caught by pgrx's guard and become ERRORs too; these helpers make the expected ones precise.

use aicost_core::CostError;
use aicost_core::usage::UsageError;
use pgrx::PgLogLevel;
use pgrx::PgSqlErrorCode::{self, *};
use pgrx::pg_sys::panic::ErrorReport;

pub fn raise_full(
    code: PgSqlErrorCode,
    msg: String,
    detail: Option<String>,
    hint: Option<String>,
) -> ! {
    let mut e = ErrorReport::new(code, msg, "pg_aicost");
    if let Some(d) = detail {
        e = e.set_detail(d);
    }
    if let Some(h) = hint {
        e = e.set_hint(h);
    }
    e.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub fn raise(code: PgSqlErrorCode, msg: String) -> ! {
    raise_full(code, msg, None, None)
}

pub fn raise_cost(e: &CostError) -> ! {
    let code = match e {
        CostError::Negative(..)
        | CostError::CachedExceedInput { .. }
        | CostError::TierUnavailable { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
        CostError::NoPrice { .. } => ERRCODE_UNDEFINED_OBJECT,
        CostError::Overflow => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
    };
    let hint = match e {
        CostError::TierUnavailable { .. } => Some(
            "Use service_tier => 'standard', or add the tier's prices with ai_price_set().".into(),
        ),
        CostError::NoPrice { .. } => Some(
            "Prices have validity ranges: check aicost.prices for this model and instant.".into(),
        ),
        _ => None,
    };
    raise_full(code, e.to_string(), None, hint)
}

pub fn raise_usage(e: &UsageError) -> ! {
    raise(ERRCODE_INVALID_PARAMETER_VALUE, e.to_string())
}

/// SPI failures are internal errors with context (the SPI error itself has been reported already
/// when it came from PostgreSQL; this covers pgrx-side conversion failures).
pub trait ErrorExt<T> {
    fn or_internal(self, context: &str) -> T;
}

impl<T> ErrorExt<T> for Result<T, pgrx::spi::Error> {
    fn or_internal(self, context: &str) -> T {
        self.unwrap_or_else(|e| raise(ERRCODE_INTERNAL_ERROR, format!("pg_aicost: {context}: {e}")))
    }
}
