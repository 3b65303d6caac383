//! Bad input gives the documented SQLSTATEs (never a silent 0 or a wrong number); after each
//! error the session is still usable and no catalog row was written.

mod common;

use common::*;

#[test]
fn errors() {
    let db = TestDb::new("errors");
    let mut c = db.connect();
    let digest = catalog_digest(&mut c);

    // Positive controls, so that the errors below are about the input only.
    assert_eq!(
        num(&mut c, "SELECT ai_cost('gpt-4o', 1000000, 1000000)", &[]),
        Some(dec("12.5"))
    );
    assert_eq!(
        num(
            &mut c,
            "SELECT ai_cost('gpt-4o', '{\"prompt_tokens\": 1000000, \"completion_tokens\": 0}'::jsonb)",
            &[]
        ),
        Some(dec("2.5"))
    );

    // Unknown model: 42704 naming the model, with close names as a hint.
    let e = expect_error(&mut c, "SELECT ai_cost('gpt4o', 1000, 10)", &[], "42704");
    assert!(
        e.message().contains("\"gpt4o\""),
        "message should name the model: {}",
        e.message()
    );
    let hint = e.hint().unwrap_or_default().to_string();
    assert!(
        hint.contains("\"gpt-4o\""),
        "hint should suggest gpt-4o: {hint:?}"
    );
    let e = expect_error(
        &mut c,
        "SELECT ai_cost('claude-sonet-4-6', 1000, 10)",
        &[],
        "42704",
    );
    assert!(
        e.hint().unwrap_or_default().contains("claude-sonnet-4-6"),
        "{:?}",
        e.hint()
    );
    let e = expect_error(
        &mut c,
        "SELECT ai_cost('no-such-model-xyz', '{\"prompt_tokens\": 1}'::jsonb)",
        &[],
        "42704",
    );
    assert!(e.message().contains("no-such-model-xyz"));
    expect_error(&mut c, "SELECT ai_model_resolve('gpt4o')", &[], "42704");
    expect_error(
        &mut c,
        "SELECT ai_cost_explain('gpt4o', 1, 1)",
        &[],
        "42704",
    );
    // Same with the cache bypassed (the hint then comes from a full catalog read).
    exec(&mut c, "SET aicost.pricing_cache = off");
    let e = expect_error(&mut c, "SELECT ai_cost('gpt4o', 1000, 10)", &[], "42704");
    assert!(
        e.hint().unwrap_or_default().contains("\"gpt-4o\""),
        "{:?}",
        e.hint()
    );
    exec(&mut c, "RESET aicost.pricing_cache");

    // aicost.unknown_model = null: NULL, never 0.
    exec(&mut c, "SET aicost.unknown_model = 'null'");
    for sql in [
        "SELECT ai_cost('gpt4o', 1000, 10)",
        "SELECT ai_cost('no-such-model-xyz', '{\"prompt_tokens\": 5, \"completion_tokens\": 5}'::jsonb)",
    ] {
        assert_eq!(
            num(&mut c, sql, &[]),
            None,
            "{sql} must be NULL with unknown_model = null"
        );
    }
    let zero_rows: i64 = one_row(
        &mut c,
        "SELECT count(*) FROM (VALUES ('gpt4o'), ('x-y-z'), ('gpt-4o')) v(m) WHERE ai_cost(m, 10, 10) = 0",
        &[],
    )
    .get(0);
    assert_eq!(zero_rows, 0, "an unknown model is never priced 0");
    // Bad input stays an error under unknown_model = null.
    expect_error(&mut c, "SELECT ai_cost('gpt4o', -1, 0)", &[], "22023");
    expect_error(&mut c, "SET aicost.unknown_model = 'zero'", &[], "22023");
    exec(&mut c, "RESET aicost.unknown_model");
    expect_error(&mut c, "SELECT ai_cost('gpt4o', 1000, 10)", &[], "42704");

    // Ambiguous bare names (42P09) and no price valid at `at` (42704), on models made in a
    // transaction that is rolled back; each error inside a savepoint.
    exec(
        &mut c,
        "BEGIN;
         INSERT INTO aicost.models (model, provider) VALUES ('p1/foo-x', 'p1'), ('p2/foo-x', 'p2');
         INSERT INTO aicost.prices (model, usage_type, usd_per_mtok, valid) VALUES
             ('p1/foo-x', 'input', 1, tstzrange(now(), NULL)), ('p1/foo-x', 'output', 2, tstzrange(now(), NULL)),
             ('p2/foo-x', 'input', 1, tstzrange(now(), NULL))",
    );
    let in_savepoint = |c: &mut postgres::Client, sql: &str, code: &str| {
        exec(c, "SAVEPOINT e");
        let e = expect_sqlstate(c.query(sql, &[]).map(|r| r.len()), code, sql);
        exec(c, "ROLLBACK TO SAVEPOINT e");
        e
    };
    let e = in_savepoint(&mut c, "SELECT ai_cost('foo-x', 10, 10)", "42P09");
    assert!(
        e.detail().unwrap_or_default().contains("p1/foo-x"),
        "{:?}",
        e.detail()
    );
    assert_eq!(
        num(&mut c, "SELECT ai_cost('p1/foo-x', 1000000, 1000000)", &[]),
        Some(dec("3"))
    );
    in_savepoint(
        &mut c,
        "SELECT ai_cost('p1/foo-x', 1000000, 0, at => now() - interval '1 day')",
        "42704",
    );
    in_savepoint(&mut c, "SELECT ai_cost('p2/foo-x', 10, 10)", "42704");
    assert_eq!(
        num(&mut c, "SELECT ai_cost('p2/foo-x', 10, 0)", &[]),
        Some(dec("0.00001")),
        "no output tokens, no output price needed"
    );
    exec(&mut c, "SET LOCAL aicost.unknown_model = 'null'");
    assert_eq!(
        num(&mut c, "SELECT ai_cost('p2/foo-x', 10, 10)", &[]),
        None,
        "missing price with unknown_model = null"
    );
    assert_eq!(
        num(
            &mut c,
            "SELECT ai_cost('p1/foo-x', 10, 0, at => now() - interval '1 day')",
            &[]
        ),
        None
    );
    in_savepoint(&mut c, "SELECT ai_cost('foo-x', 10, 10)", "42P09");
    exec(&mut c, "ROLLBACK");
    assert_eq!(catalog_digest(&mut c), digest);

    // Negative counts.
    for sql in [
        "SELECT ai_cost('gpt-4o', -1, 0)",
        "SELECT ai_cost('gpt-4o', 10, -1)",
        "SELECT ai_cost('gpt-4o', 10, 0, cached_tokens => -1)",
        "SELECT ai_cost('gpt-4o', 10, 0, cache_write_tokens => -2)",
        "SELECT ai_cost('gpt-4o', 10, 0, cache_write_1h_tokens => -3)",
    ] {
        let e = expect_error(&mut c, sql, &[], "22023");
        assert!(e.message().contains("negative"), "{sql}: {}", e.message());
    }
    // Cached (and cache-write) tokens are part of in_tokens.
    for sql in [
        "SELECT ai_cost('gpt-4o', 10, 0, cached_tokens => 11)",
        "SELECT ai_cost('gpt-4o', 10, 0, cached_tokens => 6, cache_write_tokens => 5)",
        "SELECT ai_cost('gpt-4o', 10, 0, cache_write_1h_tokens => 11)",
        "SELECT ai_cost('gpt-4o', '{\"prompt_tokens\": 10, \"completion_tokens\": 1, \"prompt_tokens_details\": {\"cached_tokens\": 11}}'::jsonb)",
    ] {
        expect_error(&mut c, sql, &[], "22023");
    }
    assert_eq!(
        num(
            &mut c,
            "SELECT ai_cost('gpt-4o', 10, 0, cached_tokens => 10)",
            &[]
        ),
        Some(dec("0.0000125"))
    );

    // Unknown service tier, and a tier the model has no prices for.
    let e = expect_error(
        &mut c,
        "SELECT ai_cost('gpt-4o', 10, 10, service_tier => 'turbo')",
        &[],
        "22023",
    );
    assert!(e.message().contains("turbo"));
    expect_error(
        &mut c,
        "SELECT ai_cost('gpt-4o', 10, 10, service_tier => 'flex')",
        &[],
        "22023",
    );
    expect_error(
        &mut c,
        "SELECT ai_cost('gpt-4o', '{\"prompt_tokens\": 1}'::jsonb, 'turbo')",
        &[],
        "22023",
    );

    // Malformed usage objects.
    for usage in [
        "[]",
        "[{\"prompt_tokens\": 10}]",
        "\"prompt_tokens\"",
        "42",
        "null",
        "{}",
        "{\"tokens\": 10}",
        "{\"usage\": {\"total_tokens\": 10}}",
        "{\"prompt_tokens\": -5, \"completion_tokens\": 1}",
        "{\"prompt_tokens\": 5, \"completion_tokens\": -1}",
        "{\"input_tokens\": 5, \"output_tokens\": 1, \"cache_read_input_tokens\": -1}",
        "{\"prompt_tokens\": \"10\", \"completion_tokens\": 1}",
        "{\"prompt_tokens\": 10, \"completion_tokens\": \"1\"}",
        "{\"promptTokenCount\": \"10\", \"candidatesTokenCount\": 1}",
        "{\"prompt_tokens\": 10.5, \"completion_tokens\": 1}",
        "{\"prompt_tokens\": 1e30, \"completion_tokens\": 1}",
        "{\"prompt_tokens\": true, \"completion_tokens\": 1}",
        "{\"prompt_tokens\": 10, \"completion_tokens\": 1, \"prompt_tokens_details\": 3}",
    ] {
        let e = expect_error(
            &mut c,
            "SELECT ai_cost('gpt-4o', $1::text::jsonb)",
            &[&usage],
            "22023",
        );
        assert!(!e.message().is_empty(), "{usage}");
        expect_error(
            &mut c,
            "SELECT ai_cost_explain('gpt-4o', $1::text::jsonb)",
            &[&usage],
            "22023",
        );
    }

    // Overflow: the exact result does not fit; an error, never a rounded number. Done in a
    // transaction that is rolled back, so the huge price is not kept.
    exec(&mut c, "BEGIN");
    exec(
        &mut c,
        "SELECT ai_price_set('gpt-4o', 'input', 99999.999999999999)",
    );
    exec(&mut c, "SAVEPOINT s");
    let e = expect_sqlstate(
        c.query("SELECT ai_cost('gpt-4o', 9223372036854775807, 0)", &[]),
        "22003",
        "overflow",
    );
    assert!(e.message().contains("out of range"), "{}", e.message());
    exec(&mut c, "ROLLBACK TO SAVEPOINT s");
    expect_sqlstate(
        c.query(
            "SELECT ai_cost('gpt-4o', 9223372036854775807, 9223372036854775807)",
            &[],
        ),
        "22003",
        "overflow of the sum",
    );
    exec(&mut c, "ROLLBACK TO SAVEPOINT s");
    // Large but representable: exact to the last digit.
    let big: String = one_row(
        &mut c,
        "SELECT ai_cost('gpt-4o', 100000000000, 0)::text",
        &[],
    )
    .get(0);
    assert_eq!(
        big, "9999999999.9999999",
        "1e11 tokens × 99999.999999999999 per million"
    );
    exec(&mut c, "ROLLBACK");
    assert_eq!(gpt4o_input_price(&mut c), dec("2.5"));

    // Price documents.
    for (doc, format) in [
        ("[]", "litellm"),
        ("42", "litellm"),
        ("{\"m\": [1]}", "litellm"),
        (
            "{\"m\": {\"litellm_provider\": \"x\", \"input_cost_per_token\": -1}}",
            "litellm",
        ),
        (
            "{\"m\": {\"litellm_provider\": \"x\", \"input_cost_per_token\": \"1e-6\"}}",
            "litellm",
        ),
        (
            "{\"m\": {\"litellm_provider\": \"x\", \"input_cost_per_token\": 1e-6, \"aliases\": \"a\"}}",
            "litellm",
        ),
        ("{}", "openrouter"),
    ] {
        expect_error(
            &mut c,
            "SELECT ai_pricing_import($1::text::jsonb, $2)",
            &[&doc, &format],
            "22023",
        );
    }

    // ai_price_set input checks.
    expect_error(
        &mut c,
        "SELECT ai_price_set('gpt4o', 'input', 1)",
        &[],
        "42704",
    );
    expect_error(
        &mut c,
        "SELECT ai_price_set('gpt-4o', 'prompt', 1)",
        &[],
        "22023",
    );
    expect_error(
        &mut c,
        "SELECT ai_price_set('gpt-4o', 'input', 1, 'turbo')",
        &[],
        "22023",
    );
    expect_error(
        &mut c,
        "SELECT ai_price_set('gpt-4o', 'input', -1)",
        &[],
        "22023",
    );
    expect_error(
        &mut c,
        "SELECT ai_price_set('gpt-4o', 'input', 1, threshold_tokens => -1)",
        &[],
        "22023",
    );
    expect_error(
        &mut c,
        "SELECT ai_price_set('gpt-4o', 'input', NULL)",
        &[],
        "22004",
    );
    expect_error(
        &mut c,
        "SELECT ai_price_set('gpt-4o', 'input', 1000000)",
        &[],
        "23514",
    );

    assert_eq!(
        catalog_digest(&mut c),
        digest,
        "an error wrote catalog rows"
    );
    // And the session still prices.
    assert_eq!(
        num(&mut c, "SELECT ai_cost('gpt-4o', 1000000, 1000000)", &[]),
        Some(dec("12.5"))
    );
}
