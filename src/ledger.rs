//! Usage-ledger glue: pricing a ledger row (cost and the price versions used) for the insert
//! trigger in `sql/ledger.sql`, reading token counts out of a provider usage object, and telling
//! the AFTER INSERT trigger which row arrived already accounted (a restore).

use crate::cost::{parse_usage, with_cost};
use crate::json::JsonArg;
use crate::numeric::NumericDatum;
use aicost_core::TokenCounts;
use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    /// The row the BEFORE INSERT trigger is storing as recorded, until the AFTER trigger's WHEN
    /// clause (evaluated right after that row is written) takes it: (xid, command id, usage_id).
    /// Keyed by the statement so that a mark left by a row that was never written (ON CONFLICT DO
    /// NOTHING, an error) cannot match a later row.
    static RECORDED: Cell<Option<(u32, u32, i64)>> = const { Cell::new(None) };
}

fn recorded_key(usage_id: i64) -> (u32, u32, i64) {
    // SAFETY: plain reads of transaction state; the xid is assigned (the row is being inserted).
    unsafe {
        (
            pg_sys::GetCurrentTransactionId().into_inner(),
            pg_sys::GetCurrentCommandId(false),
            usage_id,
        )
    }
}

#[pg_schema]
mod aicost {
    use super::*;

    /// Cost of a ledger row and the ids of the price versions used. With `unpriced_ok`, an unknown
    /// model (or one without a price valid at `at`) gives NULLs instead of an error.
    #[allow(clippy::too_many_arguments)]
    #[pg_extern(stable, parallel_safe, strict)]
    fn _ledger_price(
        model: &str,
        in_tokens: i64,
        out_tokens: i64,
        cached_tokens: i64,
        cache_write_tokens: i64,
        cache_write_1h_tokens: i64,
        service_tier: &str,
        at: TimestampWithTimeZone,
        unpriced_ok: bool,
    ) -> TableIterator<
        'static,
        (
            name!(cost, Option<NumericDatum>),
            name!(price_ids, Option<Vec<i64>>),
        ),
    > {
        let counts = TokenCounts::new(
            in_tokens,
            out_tokens,
            cached_tokens,
            cache_write_tokens,
            cache_write_1h_tokens,
        );
        let priced = with_cost(model, &counts, service_tier, at, unpriced_ok, |_, _, c| {
            let mut ids: Vec<i64> = c.terms.iter().flatten().map(|t| t.price.price_id).collect();
            ids.sort_unstable();
            ids.dedup();
            (NumericDatum::from_decimal(c.total), ids)
        });
        let row = match priced {
            Some((cost, ids)) => (Some(cost), Some(ids)),
            None => (None, None),
        };
        TableIterator::once(row)
    }

    /// Marks the ledger row being inserted as recorded: it came with its budget_ids (a pg_dump
    /// restore, a copy of another ledger) and was accounted where it was first written.
    #[pg_extern(volatile, parallel_unsafe, strict)]
    fn _ledger_mark_recorded(usage_id: i64) {
        RECORDED.set(Some(recorded_key(usage_id)));
    }

    /// Whether the row just written was marked recorded (and forgets the mark): the AFTER INSERT
    /// trigger's WHEN clause, so nothing is charged, counted or settled for it.
    #[pg_extern(volatile, parallel_unsafe, strict)]
    fn _ledger_take_recorded(usage_id: i64) -> bool {
        match RECORDED.get() {
            None => false,
            Some(mark) => {
                RECORDED.set(None);
                mark == recorded_key(usage_id)
            }
        }
    }

    /// Token counts of a provider usage object: {in, out, cached, cache_write, cache_write_1h}.
    #[pg_extern(immutable, parallel_safe, strict)]
    fn _usage_counts(usage: JsonArg) -> Vec<i64> {
        let t = parse_usage(&usage.0);
        vec![
            t.input,
            t.output,
            t.cached,
            t.cache_write_5m,
            t.cache_write_1h,
        ]
    }
}
