//! Usage-ledger glue: pricing a ledger row (cost and the price versions used) for the insert
//! trigger in `sql/ledger.sql`, and reading token counts out of a provider usage object.

use crate::cost::{parse_usage, with_cost};
use crate::json::JsonArg;
use crate::numeric::NumericDatum;
use aicost_core::TokenCounts;
use pgrx::prelude::*;

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
