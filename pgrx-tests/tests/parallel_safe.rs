//! ai_cost is PARALLEL SAFE and gives the same exact results in parallel workers (each with its
//! own catalog cache) as in the leader alone, and as an independent SQL computation from
//! aicost.current_prices.

mod common;

use common::*;
use postgres::Client;

/// Default-catalog models covering plain, long-context (incl. xAI's inclusive thresholds) and
/// cache-write prices.
const MODELS: [&str; 8] = [
    "gpt-4o",
    "gpt-5.4",
    "gpt-6-sol",
    "gemini/gemini-2.5-pro",
    "claude-haiku-5-5",
    "claude-sonnet-4-5-20250929",
    "xai/grok-4.3",
    "deepseek-v4-pro",
];
const ROWS: i64 = 200_000;

const SUM_SQL: &str =
    "SELECT sum(ai_cost(model, in_t, out_t, cached, cw5, 'standard', now(), cw1))::text FROM calls";

const PARALLEL: &str = "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
    SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2";

fn explain(c: &mut Client, sql: &str) -> String {
    c.query(
        &format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {sql}"),
        &[],
    )
    .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {}", describe(&e)))
    .iter()
    .map(|r| r.get::<_, String>(0))
    .collect::<Vec<_>>()
    .join("\n")
}

fn count_after(plan: &str, key: &str) -> i64 {
    plan.lines()
        .filter_map(|l| l.trim().strip_prefix(key))
        .map(|v| v.trim().parse::<i64>().unwrap())
        .sum()
}

fn text(c: &mut Client, sql: &str) -> String {
    let v: Option<String> = one_row(c, sql, &[]).get(0);
    v.unwrap_or_else(|| panic!("{sql} is NULL"))
}

fn numeric_eq(c: &mut Client, a: &str, b: &str) -> bool {
    one_row(c, "SELECT $1::text::numeric = $2::text::numeric", &[&a, &b]).get(0)
}

/// Runs the comparisons in the current state of the catalog; returns the parallel sum.
fn check(c: &mut Client, label: &str) -> String {
    exec(c, PARALLEL);
    let plan = explain(c, SUM_SQL);
    assert!(
        plan.contains("Gather"),
        "{label}: no Gather in the parallel plan:\n{plan}"
    );
    let planned = count_after(&plan, "Workers Planned:");
    let launched = count_after(&plan, "Workers Launched:");
    assert!(planned >= 1, "{label}: no workers planned:\n{plan}");
    assert!(
        launched >= 1,
        "{label}: no worker launched (the comparison would prove nothing):\n{plan}"
    );
    let parallel_sum = text(c, SUM_SQL);

    // Per-row comparison with the independent computation, also in a parallel plan.
    let bad = one_row(
        c,
        "SELECT count(*), min(c.id) FROM calls c JOIN expected e USING (id)
          WHERE ai_cost(c.model, c.in_t, c.out_t, c.cached, c.cw5, 'standard', now(), c.cw1) IS DISTINCT FROM e.cost",
        &[],
    );
    let (n_bad, first_bad): (i64, Option<i64>) = (bad.get(0), bad.get(1));
    if let Some(id) = first_bad {
        let r = one_row(
            c,
            "SELECT c.model || ' ' || c.in_t || '/' || c.out_t || '/' || c.cached || '/' || c.cw5 || '/' || c.cw1
                    || ': ai_cost=' || coalesce(ai_cost(c.model, c.in_t, c.out_t, c.cached, c.cw5, 'standard', now(), c.cw1)::text, 'NULL')
                    || ' expected=' || coalesce(e.cost::text, 'NULL')
               FROM calls c JOIN expected e USING (id) WHERE c.id = $1",
            &[&id],
        );
        panic!(
            "{label}: {n_bad} rows differ from the independent computation, e.g. {}",
            r.get::<_, String>(0)
        );
    }

    exec(c, "SET max_parallel_workers_per_gather = 0");
    let plan = explain(c, SUM_SQL);
    assert!(
        !plan.contains("Gather"),
        "{label}: serial plan has a Gather:\n{plan}"
    );
    let serial_sum = text(c, SUM_SQL);
    let expected_sum = text(c, "SELECT sum(cost)::text FROM expected");
    eprintln!(
        "parallel_safe [{label}]: workers planned {planned}, launched {launched}; \
         parallel {parallel_sum}, serial {serial_sum}, independent {expected_sum}"
    );
    assert!(
        numeric_eq(c, &parallel_sum, &serial_sum),
        "{label}: parallel {parallel_sum} != serial {serial_sum}"
    );
    assert!(
        numeric_eq(c, &parallel_sum, &expected_sum),
        "{label}: ai_cost {parallel_sum} != independent {expected_sum}"
    );
    exec(c, "RESET max_parallel_workers_per_gather");
    parallel_sum
}

#[test]
fn parallel_safe() {
    let db = TestDb::new("parallel_safe");
    let mut c = db.connect();
    let models: Vec<String> = MODELS.iter().map(|s| s.to_string()).collect();
    let n: i64 = one_row(
        &mut c,
        "SELECT count(*) FROM aicost.models WHERE origin = 'default' AND model = ANY($1)",
        &[&models],
    )
    .get(0);
    assert_eq!(
        n,
        MODELS.len() as i64,
        "the test's models must be in the default catalog"
    );

    exec(
        &mut c,
        "CREATE TABLE calls (id bigint PRIMARY KEY, model text NOT NULL, in_t bigint NOT NULL,
                             out_t bigint NOT NULL, cached bigint NOT NULL, cw5 bigint NOT NULL, cw1 bigint NOT NULL)",
    );
    c.execute(
        "INSERT INTO calls
         SELECT g, ($1::text[])[1 + g % 8], t.in_t, (g * 104729) % 20000,
                CASE WHEN g % 3 = 0 THEN t.in_t / 3 ELSE 0 END,
                CASE WHEN g % 5 = 0 THEN t.in_t / 4 ELSE 0 END,
                CASE WHEN g % 7 = 0 THEN t.in_t / 5 ELSE 0 END
           FROM generate_series(1, $2::bigint) g, LATERAL (SELECT (g * 7919) % 400000 AS in_t) t",
        &[&models, &ROWS],
    )
    .unwrap();
    exec(&mut c, "ANALYZE calls");

    // The independent computation: standard prices valid now, the long-context version whose
    // threshold is the highest below the prompt tokens, cache prices falling back
    // (1h write -> 5m write -> input, read -> input). Multiplying by 0.000001 keeps it exact.
    exec(
        &mut c,
        "CREATE VIEW std_prices AS
         SELECT model, usage_type, threshold_tokens AS lo,
                lead(threshold_tokens) OVER (PARTITION BY model, usage_type ORDER BY threshold_tokens) AS hi,
                usd_per_mtok AS r
           FROM aicost.current_prices WHERE service_tier = 'standard';
         CREATE VIEW expected AS
         SELECT c.id,
                ( (c.in_t - c.cached - c.cw5 - c.cw1) * pi.r
                 + CASE WHEN c.out_t = 0 THEN 0 ELSE c.out_t * po.r END
                 + CASE WHEN c.cached = 0 THEN 0 ELSE c.cached * coalesce(pr.r, pi.r) END
                 + CASE WHEN c.cw5 = 0 THEN 0 ELSE c.cw5 * coalesce(p5.r, pi.r) END
                 + CASE WHEN c.cw1 = 0 THEN 0 ELSE c.cw1 * coalesce(p1.r, p5.r, pi.r) END
                ) * 0.000001 AS cost
           FROM calls c
           LEFT JOIN std_prices pi ON (pi.model, pi.usage_type) = (c.model, 'input')
                AND greatest(c.in_t, 1) > pi.lo AND (pi.hi IS NULL OR greatest(c.in_t, 1) <= pi.hi)
           LEFT JOIN std_prices po ON (po.model, po.usage_type) = (c.model, 'output')
                AND greatest(c.in_t, 1) > po.lo AND (po.hi IS NULL OR greatest(c.in_t, 1) <= po.hi)
           LEFT JOIN std_prices pr ON (pr.model, pr.usage_type) = (c.model, 'cache_read')
                AND greatest(c.in_t, 1) > pr.lo AND (pr.hi IS NULL OR greatest(c.in_t, 1) <= pr.hi)
           LEFT JOIN std_prices p5 ON (p5.model, p5.usage_type) = (c.model, 'cache_write_5m')
                AND greatest(c.in_t, 1) > p5.lo AND (p5.hi IS NULL OR greatest(c.in_t, 1) <= p5.hi)
           LEFT JOIN std_prices p1 ON (p1.model, p1.usage_type) = (c.model, 'cache_write_1h')
                AND greatest(c.in_t, 1) > p1.lo AND (p1.hi IS NULL OR greatest(c.in_t, 1) <= p1.hi)",
    );
    // Sanity of the data: every model and both sides of long-context thresholds occur.
    let r = one_row(
        &mut c,
        "SELECT count(DISTINCT model), count(*) FILTER (WHERE in_t > 272000), count(*) FILTER (WHERE cw1 > 0),
                count(*) FILTER (WHERE cost IS NULL)
           FROM calls JOIN expected USING (id)",
        &[],
    );
    let (models_used, long, one_hour, null_cost): (i64, i64, i64, i64) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!((models_used, null_cost), (8, 0));
    assert!(long > 10_000 && one_hour > 10_000, "{long} {one_hour}");

    let before = check(&mut c, "default prices");

    // An uncommitted price change in the leader's transaction is seen by the parallel workers.
    exec(&mut c, "BEGIN");
    exec(
        &mut c,
        "SELECT ai_price_set('gpt-4o', 'input', 3.00), ai_price_set('gemini/gemini-2.5-pro', 'output', 11)",
    );
    let changed = check(&mut c, "uncommitted change");
    assert!(
        !numeric_eq(&mut c, &before, &changed),
        "the change must alter the sum"
    );
    exec(&mut c, "ROLLBACK");
    let after = check(&mut c, "after rollback");
    assert!(numeric_eq(&mut c, &before, &after));
}
