//! A rolled-back price change is never seen again: not by other sessions, and not by the session
//! that made it, whose cache was built from the rolled-back rows. Same for subtransactions.

mod common;

use common::*;

fn output_price(c: &mut postgres::Client) -> rust_decimal::Decimal {
    num(c, "SELECT ai_cost('gpt-4o', 0, 1000000)", &[]).expect("gpt-4o output is priced")
}

#[test]
fn rollback_invisible() {
    let db = TestDb::new("rollback_invisible");
    let (mut a, mut b) = (db.connect(), db.connect());
    let before = catalog_digest(&mut a);
    assert_eq!(gpt4o_input_price(&mut a), dec("2.5"));
    assert_eq!(gpt4o_input_price(&mut b), dec("2.5"));

    // Plain ROLLBACK.
    exec(&mut a, "BEGIN");
    exec(&mut a, "SELECT ai_price_set('gpt-4o', 'input', 3.00)");
    assert_eq!(
        gpt4o_input_price(&mut a),
        dec("3"),
        "A sees its uncommitted change"
    );
    assert_eq!(gpt4o_input_price(&mut b), dec("2.5"), "B never sees it");
    exec(&mut a, "ROLLBACK");
    assert_eq!(
        gpt4o_input_price(&mut a),
        dec("2.5"),
        "A after ROLLBACK (its cache must drop the rolled-back price)"
    );
    assert_eq!(
        gpt4o_input_price(&mut b),
        dec("2.5"),
        "B after A's ROLLBACK"
    );
    assert_eq!(
        catalog_digest(&mut a),
        before,
        "ROLLBACK left catalog rows behind"
    );

    // A ROLLBACK of a transaction that failed after the change (error, not an explicit rollback
    // of a healthy transaction).
    exec(&mut a, "BEGIN");
    exec(&mut a, "SELECT ai_price_set('gpt-4o', 'input', 3.25)");
    assert_eq!(gpt4o_input_price(&mut a), dec("3.25"));
    expect_sqlstate(a.batch_execute("SELECT 1/0"), "22012", "division by zero");
    exec(&mut a, "ROLLBACK");
    assert_eq!(
        gpt4o_input_price(&mut a),
        dec("2.5"),
        "A after its failed transaction"
    );

    // ROLLBACK TO SAVEPOINT, within a transaction that keeps an earlier change.
    exec(&mut a, "BEGIN");
    exec(&mut a, "SELECT ai_price_set('gpt-4o', 'input', 3.00)");
    assert_eq!(gpt4o_input_price(&mut a), dec("3"));
    exec(&mut a, "SAVEPOINT s1");
    exec(&mut a, "SELECT ai_price_set('gpt-4o', 'input', 4.00)");
    assert_eq!(
        gpt4o_input_price(&mut a),
        dec("4"),
        "A sees the change made in the savepoint"
    );
    exec(&mut a, "ROLLBACK TO SAVEPOINT s1");
    assert_eq!(
        gpt4o_input_price(&mut a),
        dec("3"),
        "after ROLLBACK TO SAVEPOINT A sees the price before the savepoint, still in the transaction"
    );
    // A savepoint whose change was followed by an error.
    exec(&mut a, "SAVEPOINT s2");
    exec(&mut a, "SELECT ai_price_set('gpt-4o', 'output', 20)");
    assert_eq!(output_price(&mut a), dec("20"));
    expect_sqlstate(a.batch_execute("SELECT 1/0"), "22012", "division by zero");
    exec(&mut a, "ROLLBACK TO SAVEPOINT s2");
    assert_eq!(
        output_price(&mut a),
        dec("10"),
        "output after ROLLBACK TO SAVEPOINT s2"
    );
    assert_eq!(
        gpt4o_input_price(&mut a),
        dec("3"),
        "input after ROLLBACK TO SAVEPOINT s2"
    );
    // A released savepoint's change stays.
    exec(&mut a, "SAVEPOINT s3");
    exec(&mut a, "SELECT ai_price_set('gpt-4o', 'cache_read', 1.5)");
    exec(&mut a, "RELEASE SAVEPOINT s3");
    assert_eq!(
        gpt4o_input_price(&mut b),
        dec("2.5"),
        "B during A's transaction"
    );
    exec(&mut a, "ROLLBACK");
    assert_eq!(
        gpt4o_input_price(&mut a),
        dec("2.5"),
        "A after rolling back the whole transaction"
    );
    assert_eq!(output_price(&mut a), dec("10"));
    assert_eq!(gpt4o_input_price(&mut b), dec("2.5"));
    assert_eq!(
        catalog_digest(&mut a),
        before,
        "rolled-back savepoints left catalog rows behind"
    );

    // Savepoint rolled back, outer transaction committed: only the outer change is kept.
    exec(&mut a, "BEGIN");
    exec(&mut a, "SELECT ai_price_set('gpt-4o', 'input', 3.00)");
    exec(&mut a, "SAVEPOINT s1");
    exec(&mut a, "SELECT ai_price_set('gpt-4o', 'input', 4.00)");
    exec(&mut a, "SELECT ai_price_set('gpt-4o', 'output', 20)");
    exec(&mut a, "ROLLBACK TO SAVEPOINT s1");
    exec(&mut a, "COMMIT");
    for (s, name) in [(&mut a, "A"), (&mut b, "B")] {
        assert_eq!(
            gpt4o_input_price(s),
            dec("3"),
            "{name}: committed outer change"
        );
        assert_eq!(
            output_price(s),
            dec("10"),
            "{name}: rolled-back savepoint change"
        );
    }
    let versions: Vec<(String, String)> = a
        .query(
            "SELECT usage_type, usd_per_mtok::text FROM aicost.prices
              WHERE model = 'gpt-4o' AND service_tier = 'standard' AND usage_type IN ('input', 'output')
              ORDER BY usage_type, lower(valid) NULLS FIRST",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, String)> = [("input", "2.5"), ("input", "3.00"), ("output", "10")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(versions, expected, "price versions after the commit");
}
