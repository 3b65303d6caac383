//! Price versions: scheduled future prices, closed ranges, no retroactive changes, the per-million
//! check and the (deferred) no-overlap exclusion constraint.

mod common;

use common::*;
use postgres::Client;

/// (lower, upper, price) of gpt-4o's standard input versions, oldest first; NULL bounds as "-inf"/"inf".
fn input_versions(c: &mut Client) -> Vec<(String, String, String)> {
    c.query(
        "SELECT coalesce(lower(valid)::text, '-inf'), coalesce(upper(valid)::text, 'inf'), usd_per_mtok::text
           FROM aicost.prices
          WHERE model = 'gpt-4o' AND usage_type = 'input' AND service_tier = 'standard' AND threshold_tokens = 0
          ORDER BY lower(valid) NULLS FIRST",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn cost_at(c: &mut Client, at_sql: &str) -> rust_decimal::Decimal {
    num(
        c,
        &format!("SELECT ai_cost('gpt-4o', 1000000, 0, at => {at_sql})"),
        &[],
    )
    .expect("priced")
}

#[test]
fn price_history() {
    let db = TestDb::new("price_history");
    let mut a = db.connect();
    let mut b = db.connect();
    assert_eq!(gpt4o_input_price(&mut b), dec("2.5"));

    // Schedule a price one hour ahead; T is the exact switch instant.
    let t: String = one_row(
        &mut a,
        "SELECT (now() + interval '1 hour')::text, ai_price_set('gpt-4o', 'input', 5.00,
                effective_from => now() + interval '1 hour')",
        &[],
    )
    .get(0);
    for (s, who) in [(&mut a, "A"), (&mut b, "B")] {
        assert_eq!(
            cost_at(s, "now()"),
            dec("2.5"),
            "{who}: now uses the old price"
        );
        assert_eq!(
            cost_at(s, "now() + interval '2 hours'"),
            dec("5"),
            "{who}: in two hours the new one"
        );
    }
    let at_t = num(
        &mut a,
        "SELECT ai_cost('gpt-4o', 1000000, 0, at => $1::text::timestamptz)",
        &[&t],
    );
    let before_t = num(
        &mut a,
        "SELECT ai_cost('gpt-4o', 1000000, 0, at => $1::text::timestamptz - interval '1 microsecond')",
        &[&t],
    );
    assert_eq!(
        (before_t, at_t),
        (Some(dec("2.5")), Some(dec("5"))),
        "ranges are [from, to)"
    );
    let t_norm: String = one_row(&mut a, "SELECT $1::text::timestamptz::text", &[&t]).get(0);
    assert_eq!(
        input_versions(&mut a),
        vec![
            ("-inf".to_string(), t_norm.clone(), "2.5".to_string()),
            (t_norm.clone(), "inf".to_string(), "5.00".to_string())
        ],
        "aicost.prices shows the closed range and the scheduled version"
    );
    let current: i64 = one_row(
        &mut a,
        "SELECT count(*) FROM aicost.current_prices
          WHERE model = 'gpt-4o' AND usage_type = 'input' AND service_tier = 'standard' AND usd_per_mtok = 2.5
            AND valid_to = $1::text::timestamptz",
        &[&t],
    )
    .get(0);
    assert_eq!(
        current, 1,
        "current_prices shows the version valid now, with its end"
    );

    // A change effective now, while a future version is scheduled: three versions.
    exec(&mut a, "SELECT ai_price_set('gpt-4o', 'input', 3.00)");
    assert_eq!(cost_at(&mut b, "now()"), dec("3"));
    assert_eq!(
        cost_at(&mut b, "now() + interval '2 hours'"),
        dec("5"),
        "the scheduled price stays"
    );
    let v = input_versions(&mut a);
    assert_eq!(v.len(), 3, "{v:?}");
    assert_eq!(
        (v[1].1.as_str(), v[1].2.as_str(), v[2].0.as_str()),
        (t_norm.as_str(), "3.00", t_norm.as_str()),
        "{v:?}"
    );

    // Never retroactive: a past effective_from is refused and writes nothing.
    let digest = catalog_digest(&mut a);
    let e = expect_error(
        &mut a,
        "SELECT ai_price_set('gpt-4o', 'input', 4.00, effective_from => now() - interval '1 minute')",
        &[],
        "22023",
    );
    assert!(e.message().contains("past"), "{}", e.message());
    // Per-token price instead of per-million: refused.
    let e = expect_error(
        &mut a,
        "SELECT ai_price_set('gpt-4o', 'input', 0.0000025)",
        &[],
        "23514",
    );
    assert!(
        e.hint().unwrap_or_default().contains("per million"),
        "{:?}",
        e.hint()
    );
    // The table's own CHECK catches it too when written by hand.
    expect_error(
        &mut a,
        "INSERT INTO aicost.prices (model, usage_type, usd_per_mtok) VALUES ('gpt-4o', 'output', 0.00001)",
        &[],
        "23514",
    );
    assert_eq!(catalog_digest(&mut a), digest, "refused changes wrote rows");

    // Overlapping versions written by hand: the deferred exclusion constraint fails at COMMIT.
    exec(&mut a, "BEGIN");
    exec(
        &mut a,
        "INSERT INTO aicost.prices (model, usage_type, usd_per_mtok, valid)
         VALUES ('gpt-4o', 'output', 11, tstzrange(now(), NULL))",
    );
    let n: i64 = one_row(
        &mut a,
        "SELECT count(*) FROM aicost.prices WHERE model = 'gpt-4o' AND usd_per_mtok = 11",
        &[],
    )
    .get(0);
    assert_eq!(
        n, 1,
        "the INSERT itself succeeds: the constraint is deferred"
    );
    let e = expect_sqlstate(
        a.batch_execute("COMMIT"),
        "23P01",
        "COMMIT of overlapping versions",
    );
    assert_eq!(e.constraint(), Some("prices_no_overlap"));
    assert_eq!(
        catalog_digest(&mut a),
        digest,
        "the failed COMMIT wrote rows"
    );
    assert_eq!(
        num(&mut a, "SELECT ai_cost('gpt-4o', 0, 1000000)", &[]),
        Some(dec("10"))
    );
    // Checked immediately when asked to.
    exec(&mut a, "BEGIN");
    exec(&mut a, "SET CONSTRAINTS aicost.prices_no_overlap IMMEDIATE");
    expect_sqlstate(
        a.batch_execute(
            "INSERT INTO aicost.prices (model, usage_type, usd_per_mtok, valid)
             VALUES ('gpt-4o', 'input', 7, tstzrange(now() + interval '30 minutes', now() + interval '90 minutes'))",
        ),
        "23P01",
        "immediate overlap check",
    );
    exec(&mut a, "ROLLBACK");
    assert_eq!(catalog_digest(&mut a), digest);
    assert_eq!(cost_at(&mut b, "now()"), dec("3"));
}

/// A price the model had no version of yet (here gpt-4o's 5-minute cache-write price, billed at the
/// input price until now), scheduled with ai_price_set for a future instant, applies from that
/// instant on: not now, and not retroactively.
#[test]
fn scheduled_new_price() {
    let db = TestDb::new("scheduled_new_price");
    let mut c = db.connect();
    let sql_at = |at: &str| {
        format!("SELECT ai_cost('gpt-4o', 1000000, 0, cache_write_tokens => 1000000, at => {at})")
    };
    assert_eq!(
        num(&mut c, &sql_at("now()"), &[]),
        Some(dec("2.5")),
        "cache writes billed at the input price"
    );
    let id: i64 = one_row(
        &mut c,
        "SELECT ai_price_set('gpt-4o', 'cache_write_5m', 3.125, effective_from => now() + interval '1 day')",
        &[],
    )
    .get(0);
    let valid: String = one_row(
        &mut c,
        "SELECT valid::text FROM aicost.prices WHERE price_id = $1",
        &[&id],
    )
    .get(0);
    assert_eq!(
        num(&mut c, &sql_at("now() + interval '2 days'"), &[]),
        Some(dec("3.125")),
        "from tomorrow on"
    );
    assert_eq!(
        num(&mut c, &sql_at("now()"), &[]),
        Some(dec("2.5")),
        "a price scheduled for tomorrow must not apply today (the new version's range is {valid})"
    );
}
