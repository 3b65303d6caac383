//! The trust boundary (README "Roles and privileges"), proven with real, separate connections as
//! non-superuser login roles: who may call what (`role_matrix`, the grants of sql/finalize.sql
//! being the spec), what an application role cannot do to recorded spend
//! (`application_role_cannot_change_spend`), budget alerts recorded at commit without the
//! committing role's privileges (`alert_crossed_by_transactions_committing_together`), tenants
//! confined to their org (`tenants_are_isolated`), also after SET ROLE
//! (`tenant_cannot_escape_with_set_role`), hostile input refused with a clear SQLSTATE
//! (`hostile_input_is_refused_cleanly`), and a deterministic fuzz of every function granted to
//! aicost_app (`fuzz_every_function_with_hostile_arguments`). Every test expects the same behaviour
//! with and without pg_aicost in shared_preload_libraries.
//!
//! Login roles are cluster-wide: each test creates its own (`trust_<test>_<kind>`), dropping any
//! left over from an earlier run first, and drops them when it ends.
//!
//! Fuzzing: the number of iterations comes from `AICOST_FUZZ_ITERATIONS` (default 300, a few
//! seconds) and the seed from `AICOST_FUZZ_SEED` (default fixed); no `#[ignore]`d variant. A long
//! run: `AICOST_FUZZ_ITERATIONS=20000 cargo test -p pg_aicost_it --test trust fuzz`.

mod common;

use common::*;
use postgres::error::DbError;
use postgres::{Client, NoTls};
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Why an error's text is not clean (Rust internals leaking to the client), if it is not.
fn leak(e: &DbError) -> Option<String> {
    for (field, text) in [
        ("message", Some(e.message())),
        ("detail", e.detail()),
        ("hint", e.hint()),
    ] {
        let Some(text) = text else { continue };
        let lower = text.to_lowercase();
        for word in ["pgrx", "panic", "backtrace", "rust_begin_unwind", ".rs:"] {
            if lower.contains(word) {
                return Some(format!("{field} contains {word:?}: {}", clip(text)));
            }
        }
        if has_rust_path(text) {
            return Some(format!("{field} contains a Rust path: {}", clip(text)));
        }
    }
    None
}

/// `ident::ident`, as in `core::panicking` or `pg_aicost::budget` (a SQL cast `'x'::text` has a
/// quote or parenthesis before the colons).
fn has_rust_path(s: &str) -> bool {
    let b = s.as_bytes();
    (1..b.len().saturating_sub(2)).any(|i| {
        b[i] == b':'
            && b[i + 1] == b':'
            && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
            && (b[i + 2].is_ascii_alphabetic() || b[i + 2] == b'_')
    })
}

fn clip(s: &str) -> String {
    if s.len() <= 300 {
        return s.to_string();
    }
    let mut end = 300;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

#[track_caller]
fn assert_clean(e: &DbError, what: &str) {
    if let Some(why) = leak(e) {
        panic!("{what}: error text leaks internals: {why}");
    }
}

/// Runs `sql` expecting SQLSTATE `code` with a clean error text; the session stays usable.
#[track_caller]
fn expect_code(c: &mut Client, sql: &str, code: &str) -> DbError {
    let e = expect_error(c, sql, &[], code);
    assert_clean(&e, sql);
    e
}

/// Runs `sql` (one statement) expecting it to work.
#[track_caller]
fn works(c: &mut Client, sql: &str) -> Vec<postgres::Row> {
    c.query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: expected to work: {}", describe(&e)))
}

#[track_caller]
fn count(c: &mut Client, sql: &str) -> i64 {
    one_row(c, sql, &[]).get(0)
}

// ---------------------------------------------------------------------------------------------
// 1. Who may call what

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ex {
    /// works
    W,
    /// SQLSTATE 42501
    D,
    /// another SQLSTATE
    E(&'static str),
    /// not checked for this role
    S,
}
use Ex::{D, E, S, W};

const MATRIX_ROLES: [&str; 5] = ["superuser", "admin", "app", "reader", "none"];

#[test]
fn role_matrix() {
    let db = TestDb::new("trust_role_matrix");
    let admin = LoginRole::new("trust_rm_admin", Some("aicost_admin"));
    let app = LoginRole::new("trust_rm_app", Some("aicost_app"));
    let reader = LoginRole::new("trust_rm_reader", Some("aicost_reader"));
    let none = LoginRole::new("trust_rm_none", None);
    let mut su = session(&db);
    exec(
        &mut su,
        "SELECT ai_budget_set('org', 'acme', 100);
         SELECT ai_rate_limit_set('org', 'acme', '1 hour', 1000000);
         INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens) VALUES ('acme', 'gpt-4o', 1000, 500)",
    );

    // (statement, expected for [superuser, admin, app, reader, none]). The README's role table is
    // the spec: pricing, cache keys and budget/rate-limit checks are for aicost_app and
    // aicost_reader; what writes per request (cache gets and puts, reservations) for aicost_app
    // only; aicost_admin is a member of both.
    const PRICE: [Ex; 5] = [W, W, W, W, D];
    const READ_FN: [Ex; 5] = [W, W, W, W, D];
    const APP_FN: [Ex; 5] = [W, W, W, D, D];
    const USAGE_FACTS: [Ex; 5] = [W, W, W, D, D];
    const ADMIN_ONLY: [Ex; 5] = [W, W, D, D, D];
    const PROTECTED: [Ex; 5] = [S, D, D, D, D];
    const NOBODY: [Ex; 5] = [D, D, D, D, D];
    const VIEW: [Ex; 5] = [W, W, W, W, D];
    const READER_ONLY: [Ex; 5] = [W, W, D, W, D];
    const SUPER_ONLY: [Ex; 5] = [W, D, D, D, D];
    let cases: Vec<(&str, [Ex; 5])> = vec![
        // Pricing.
        ("SELECT ai_cost('gpt-4o', 1000, 500)", PRICE),
        (
            r#"SELECT ai_cost('gpt-4o', '{"prompt_tokens": 10, "completion_tokens": 5}'::jsonb)"#,
            PRICE,
        ),
        ("SELECT ai_model_resolve('openai/gpt-4o')", PRICE),
        ("SELECT ai_cost_explain('gpt-4o', 10, 5)", PRICE),
        (
            r#"SELECT ai_cost_explain('gpt-4o', '{"prompt_tokens": 10, "completion_tokens": 5}'::jsonb)"#,
            PRICE,
        ),
        // Response cache.
        (r#"SELECT ai_cache_put('gpt-4o', '{"q":1}', '{"a":1}')"#, APP_FN),
        (r#"SELECT ai_cache_get('gpt-4o', '{"q":1}')"#, APP_FN),
        (
            r#"SELECT * FROM ai_cache_get_or_lock('gpt-4o', '{"q":2}')"#,
            APP_FN,
        ),
        (r#"SELECT ai_cache_key('gpt-4o', '{"q":1}')"#, READ_FN),
        // Usage facts; the extension's columns; dating rows.
        (
            "INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('u', 'gpt-4o', 10, 5)",
            USAGE_FACTS,
        ),
        (
            r#"INSERT INTO aicost.usage (request_id, org_id, model, usage, metadata)
               VALUES ('rm-1', 'acme', 'gpt-4o', '{"prompt_tokens": 10, "completion_tokens": 5}', '{"k": 1}')"#,
            USAGE_FACTS,
        ),
        (
            "INSERT INTO aicost.usage (model, in_tokens, out_tokens, cost) VALUES ('gpt-4o', 10, 5, 0)",
            ADMIN_ONLY,
        ),
        (
            "INSERT INTO aicost.usage (model, in_tokens, out_tokens, cache_hit) VALUES ('gpt-4o', 10, 5, true)",
            ADMIN_ONLY,
        ),
        (
            "INSERT INTO aicost.usage (model, in_tokens, out_tokens, price_ids) VALUES ('gpt-4o', 10, 5, ARRAY[1]::bigint[])",
            ADMIN_ONLY,
        ),
        (
            // A recorded row (as a restore writes it): stored as already accounted.
            "INSERT INTO aicost.usage (model, in_tokens, out_tokens, cost, budget_ids) VALUES ('gpt-4o', 10, 5, 0.000075, '{}'::bigint[])",
            ADMIN_ONLY,
        ),
        (
            "INSERT INTO aicost.usage (usage_id, model, in_tokens, out_tokens) VALUES (900000001, 'gpt-4o', 10, 5)",
            ADMIN_ONLY,
        ),
        (
            "INSERT INTO aicost.usage (model, in_tokens, out_tokens, created_at) VALUES ('gpt-4o', 10, 5, now() - interval '40 days')",
            [W, W, E("22023"), D, D],
        ),
        // Budget checks and reservations.
        ("SELECT ai_budget_check('org', 'acme')", READ_FN),
        ("SELECT ai_budget_reserve('org', 'acme', 0.01)", APP_FN),
        ("SELECT ai_budget_release(1)", APP_FN),
        ("SELECT ai_rate_limit_check('org', 'acme')", READ_FN),
        // Circuit breakers and routing.
        ("SELECT * FROM ai_call_allowed('gpt-4o')", APP_FN),
        (
            "SELECT ai_call_report('gpt-4o', false, '1 second', 'timeout')",
            APP_FN,
        ),
        (
            "SELECT * FROM ai_route(ARRAY['gpt-4o', 'gpt-4o-mini'], 'org', 'acme', 1000)",
            APP_FN,
        ),
        // Administration.
        ("SELECT ai_breaker_reset()", ADMIN_ONLY),
        ("SELECT ai_budget_reservations_purge()", ADMIN_ONLY),
        (
            "INSERT INTO aicost.breaker_config (kind, name, probes) VALUES ('model', 'gpt-4o', 3)",
            ADMIN_ONLY,
        ),
        (
            "SELECT ai_price_set('gpt-4o', 'output', 12, effective_from => now() + interval '1 day')",
            ADMIN_ONLY,
        ),
        ("SELECT ai_budget_set('org', 'x', 5)", ADMIN_ONLY),
        ("SELECT ai_budget_drop('org', 'x')", ADMIN_ONLY),
        (
            "SELECT ai_rate_limit_set('org', 'acme', '1 hour', 100)",
            ADMIN_ONLY,
        ),
        ("SELECT ai_reprice_unpriced()", ADMIN_ONLY),
        ("SELECT ai_cache_sweep()", ADMIN_ONLY),
        (
            "SELECT ai_cache_invalidate(namespace => 'default')",
            ADMIN_ONLY,
        ),
        (
            "SELECT ai_cache_namespace_set('ns1', max_entries => 10)",
            ADMIN_ONLY,
        ),
        ("SELECT ai_cache_warm('default', '[]'::jsonb)", ADMIN_ONLY),
        ("SELECT ai_cache_stats_reset()", ADMIN_ONLY),
        ("SELECT aicost.stat_reset()", ADMIN_ONLY),
        (
            "SELECT ai_tenant_set('postgres', 'z'), ai_tenant_drop('postgres')",
            ADMIN_ONLY,
        ),
        ("SELECT ai_pricing_load_default()", ADMIN_ONLY),
        (
            "INSERT INTO aicost.model_aliases (alias, model) VALUES ('m-alias', 'gpt-4o')",
            ADMIN_ONLY,
        ),
        (
            "DELETE FROM aicost.model_aliases WHERE alias = 'no-such-alias'",
            ADMIN_ONLY,
        ),
        // Direct writes of protected tables.
        ("UPDATE aicost.budget_spend SET spent = 0", PROTECTED),
        ("DELETE FROM aicost.budgets", PROTECTED),
        (
            "INSERT INTO aicost.budget_alerts (budget_id, period_start, threshold, spent, limit_usd)
             VALUES (1, now(), 'alert', 0, 0)",
            PROTECTED,
        ),
        (
            "UPDATE aicost.budget_reservations SET settled_at = now()",
            PROTECTED,
        ),
        (
            "INSERT INTO aicost.rate_counters (limit_id, window_start) VALUES (1, now())",
            PROTECTED,
        ),
        ("UPDATE aicost.rate_limits SET max_requests = NULL", PROTECTED),
        ("UPDATE aicost.prices SET usd_per_mtok = 0", PROTECTED),
        (
            "INSERT INTO aicost.tenants (role, org_id) VALUES ('postgres', 'evil')",
            PROTECTED,
        ),
        ("DELETE FROM aicost.cache_entries", PROTECTED),
        ("DELETE FROM aicost.breaker_state", PROTECTED),
        // The ledger is insert-only, for superusers too.
        ("UPDATE aicost.usage SET cost = 0", NOBODY),
        ("DELETE FROM aicost.usage", NOBODY),
        ("TRUNCATE aicost.usage", NOBODY),
        // Internal functions.
        (
            "SELECT * FROM aicost._charge_shared(ARRAY[1]::bigint[], -1000000, now(), NULL, NULL)",
            PROTECTED,
        ),
        ("SELECT aicost._stat_budget(1, 'charge')", PROTECTED),
        ("SELECT aicost._invalidate_pricing_cache(0)", PROTECTED),
        (
            "SELECT * FROM aicost._admit_shared(1, now(), 1, true)",
            PROTECTED,
        ),
        ("SELECT aicost._lock_spend(1, now())", PROTECTED),
        ("SELECT aicost._invalidate_tenants()", PROTECTED),
        ("SELECT aicost._stat_reset()", PROTECTED),
        ("SELECT aicost._invalidate_breaker_config()", PROTECTED),
        // Reads.
        ("SELECT count(*) FROM aicost.budget_status", VIEW),
        ("SELECT count(*) FROM aicost.spend_daily", VIEW),
        ("SELECT count(*) FROM aicost.my_usage", VIEW),
        ("SELECT count(*) FROM aicost.current_prices", VIEW),
        ("SELECT count(*) FROM aicost.models", VIEW),
        ("SELECT count(*) FROM aicost.usage", READER_ONLY),
        ("SELECT count(*) FROM aicost.budget_spend", READER_ONLY),
        ("SELECT count(*) FROM aicost.tenants", READER_ONLY),
        ("SELECT count(*) FROM aicost.cache_entries", SUPER_ONLY),
        ("SELECT count(*) FROM aicost.cache_events", SUPER_ONLY),
        ("SELECT * FROM aicost.stat_cost", READER_ONLY),
        ("SELECT * FROM aicost.stat_breaker", READER_ONLY),
        ("SELECT count(*) FROM aicost.breaker_config", READER_ONLY),
        ("SELECT * FROM ai_budget_audit()", READER_ONLY),
    ];

    let mut clients: Vec<Client> = vec![
        session(&db),
        connect_as(&db, &admin.name),
        connect_as(&db, &app.name),
        connect_as(&db, &reader.name),
        connect_as(&db, &none.name),
    ];
    let mut mismatches = Vec::new();
    for (sql, expected) in &cases {
        for (i, c) in clients.iter_mut().enumerate() {
            let want = expected[i];
            if want == S {
                continue;
            }
            // Each call in its own transaction, rolled back: the matrix does not depend on order.
            exec(c, "BEGIN");
            let got = c.query(*sql, &[]);
            exec(c, "ROLLBACK");
            let role = MATRIX_ROLES[i];
            let sql1 = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            match (want, got) {
                (W, Ok(_)) => {}
                (W, Err(e)) => mismatches.push(format!(
                    "{role}: {sql1}\n    expected to work, got {}",
                    describe(&e)
                )),
                (D | E(_), Ok(_)) => mismatches.push(format!(
                    "{role}: {sql1}\n    expected {want:?}, but it WORKED"
                )),
                (D | E(_), Err(e)) => {
                    let code = if let E(c) = want { c } else { "42501" };
                    if code_of(&e) != code {
                        mismatches.push(format!(
                            "{role}: {sql1}\n    expected SQLSTATE {code}, got {}",
                            describe(&e)
                        ));
                    }
                    if let Some(why) = e.as_db_error().and_then(leak) {
                        mismatches.push(format!("{role}: {sql1}\n    {why}"));
                    }
                }
                (S, _) => unreachable!(),
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} role/statement pairs differ from the privilege matrix:\n{}",
        mismatches.len(),
        cases.len() * MATRIX_ROLES.len(),
        mismatches.join("\n")
    );
    assert_audit_empty(&mut su);
}

// ---------------------------------------------------------------------------------------------
// 2. An application role cannot change recorded spend

#[test]
fn application_role_cannot_change_spend() {
    let db = TestDb::new("trust_attack");
    let app = LoginRole::new("trust_atk_app", Some("aicost_app"));
    let admin = LoginRole::new("trust_atk_admin", Some("aicost_admin"));
    let mut su = session(&db);
    exec(
        &mut su,
        "SELECT ai_budget_set('org', 'acme', 100);
         SELECT ai_budget_set('org', 'alerty', 0.009)",
    );
    let mut a = connect_as(&db, &app.name);
    for i in 0..3 {
        works(
            &mut a,
            &format!(
                "INSERT INTO aicost.usage (request_id, org_id, model, in_tokens, out_tokens)
                 VALUES ('atk-{i}', 'acme', 'gpt-4o', 1000, 500)"
            ),
        );
    }
    let rows_before = count(&mut su, "SELECT count(*) FROM aicost.usage");
    let ledger_sum = "SELECT coalesce(sum(cost), 0) FROM aicost.usage";
    let sum_before = num(&mut su, ledger_sum, &[]);

    // Spend rows, the extension's columns, internal functions.
    expect_code(&mut a, "UPDATE aicost.budget_spend SET spent = 0", "42501");
    expect_code(
        &mut a,
        "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens, cost)
         VALUES ('acme', 'gpt-4o', 10000000, 0, 0)",
        "42501",
    );
    expect_code(
        &mut a,
        "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens, cache_hit)
         VALUES ('acme', 'gpt-4o', 10000000, 0, true)",
        "42501",
    );
    expect_code(
        &mut a,
        "SELECT * FROM aicost._charge_shared(ARRAY[1]::bigint[], -1000000, now(), NULL, NULL)",
        "42501",
    );
    expect_code(&mut a, "UPDATE aicost.usage SET cost = 0", "42501");

    // aicost.ledger_maintenance as the first statement of a session (library not loaded yet:
    // the SET may create a placeholder), by SET and by set_config().
    for set in [
        "SET aicost.ledger_maintenance = on",
        "SELECT set_config('aicost.ledger_maintenance', 'on', false)",
    ] {
        let mut fresh = raw_connect_as(&db, &app.name);
        let _ = fresh.batch_execute(set); // may work (placeholder) or be refused
        for sql in [
            "DELETE FROM aicost.usage",
            "UPDATE aicost.usage SET cost = 0",
        ] {
            expect_code(&mut fresh, sql, "42501");
        }
        // The library loaded now: the setting must not open the ledger either.
        let _ = fresh.batch_execute(set);
        expect_code(&mut fresh, "DELETE FROM aicost.usage", "42501");
        assert_eq!(
            count(&mut su, "SELECT count(*) FROM aicost.usage"),
            rows_before,
            "no ledger row may disappear ({set})"
        );
    }

    // Settings that weaken enforcement are superuser-only once the library is loaded.
    works(&mut a, "SELECT ai_cost('gpt-4o', 1, 1)");
    expect_code(
        &mut a,
        "SET aicost.ledger_unknown_model = 'unpriced'",
        "42501",
    );
    expect_code(
        &mut a,
        "SET aicost.cache_max_response_bytes = 1000000000",
        "42501",
    );
    expect_code(
        &mut a,
        "SET aicost.ledger_max_backdate = 100000000",
        "42501",
    );
    expect_code(&mut a, "SET aicost.bogus = 1", "42602");
    // ... and a placeholder set before it loaded is not trusted: the row is not stored unpriced.
    let mut fresh = raw_connect_as(&db, &app.name);
    let _ = fresh.batch_execute("SET aicost.ledger_unknown_model = 'unpriced'");
    expect_code(
        &mut fresh,
        "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens)
         VALUES ('acme', 'trust-no-such-model', 1000, 1000)",
        "42704",
    );
    // Nor one given at connection start, or stored for the role (refused, or not trusted).
    let unknown = "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens)
                   VALUES ('acme', 'trust-no-such-model', 1000, 1000)";
    let mut cfg = db.config();
    cfg.user(&app.name)
        .options("-c aicost.ledger_unknown_model=unpriced -c aicost.ledger_maintenance=on");
    match cfg.connect(NoTls) {
        // Preloaded library: the settings are refused at connection start.
        Err(e) => assert_eq!(code_of(&e), "42501", "{}", describe(&e)),
        Ok(mut started) => {
            expect_code(&mut started, unknown, "42704");
            expect_code(&mut started, "DELETE FROM aicost.usage", "42501");
        }
    }
    for alter in [
        "ALTER ROLE CURRENT_USER SET aicost.ledger_unknown_model = 'unpriced'",
        "ALTER ROLE CURRENT_USER SET aicost.ledger_maintenance = on",
    ] {
        let _ = raw_connect_as(&db, &app.name).batch_execute(alter);
        let _ = a.batch_execute(alter);
    }
    let mut next = raw_connect_as(&db, &app.name);
    expect_code(&mut next, unknown, "42704");
    expect_code(&mut next, "DELETE FROM aicost.usage", "42501");
    exec(&mut su, &format!("ALTER ROLE {} RESET ALL", app.name));
    assert_eq!(
        count(
            &mut su,
            "SELECT count(*) FROM aicost.usage WHERE model = 'trust-no-such-model' OR cost IS NULL"
        ),
        0,
        "no unpriced row may be stored by an application role"
    );
    // Same for the response size limit.
    let mut fresh = raw_connect_as(&db, &app.name);
    let _ = fresh.batch_execute("SET aicost.cache_max_response_bytes = 1000000000");
    expect_code(
        &mut fresh,
        r#"SELECT ai_cache_put('gpt-4o', '{"q": "big"}',
                  (SELECT jsonb_agg(md5(g::text)) FROM generate_series(1, 60000) g))"#,
        "54000",
    );

    // Dating rows: an application role only near the present, an admin anywhen.
    for when in ["now() - interval '40 days'", "now() + interval '40 days'"] {
        expect_code(
            &mut a,
            &format!(
                "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens, created_at)
                 VALUES ('acme', 'gpt-4o', 10, 5, {when})"
            ),
            "22023",
        );
    }
    let mut ad = connect_as(&db, &admin.name);
    works(
        &mut ad,
        "INSERT INTO aicost.usage (model, in_tokens, out_tokens, created_at)
         VALUES ('gpt-4o', 10, 5, now() - interval '40 days')",
    );

    // Budget alerts: an application role may LISTEN, and learns no amounts.
    let mut listener = connect_as(&db, &app.name);
    exec(&mut listener, "LISTEN aicost_budget");
    works(
        &mut a,
        "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens)
         VALUES ('alerty', 'gpt-4o', 1000, 500)",
    );
    exec(&mut listener, "SELECT 1");
    let got = drain(
        &mut listener,
        Duration::from_secs(5),
        Duration::from_millis(300),
    );
    assert!(
        !got.is_empty(),
        "no aicost_budget notification after crossing the alert threshold"
    );
    for n in &got {
        let p: Value = serde_json::from_str(n.payload())
            .unwrap_or_else(|e| panic!("payload {:?} is not JSON: {e}", n.payload()));
        let keys: BTreeSet<&str> = p
            .as_object()
            .unwrap_or_else(|| panic!("payload {:?} is not an object", n.payload()))
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["budget_id", "period_start", "threshold"]),
            "payload {:?} must name the alert only (no spend, limit, scope or scope_id)",
            n.payload()
        );
    }

    // Nothing changed but by the rows inserted above; spend matches the ledger.
    assert_eq!(
        count(
            &mut su,
            "SELECT count(*) FROM aicost.usage WHERE usage_id <= (SELECT max(usage_id) FROM aicost.usage WHERE request_id = 'atk-2')"
        ),
        rows_before
    );
    assert!(num(&mut su, ledger_sum, &[]) >= sum_before);
    assert_audit_empty(&mut su);
    let row = one_row(
        &mut su,
        "SELECT s.spent,
                (SELECT sum(u.cost) FROM aicost.usage u
                  WHERE s.budget_id = ANY (u.budget_ids) AND u.created_at >= s.period_start)
           FROM aicost.budget_status s WHERE s.scope = 'org' AND s.scope_id = 'acme'",
        &[],
    );
    let (spent, ledger): (Decimal, Option<Decimal>) = (row.get(0), row.get(1));
    assert!(spent > Decimal::ZERO, "acme has spend");
    assert_eq!(
        Some(spent),
        ledger,
        "acme's spent equals its ledger rows' cost"
    );
}

/// Two application transactions whose charges cross a budget's alert threshold only together both
/// commit, and the alert is recorded and announced once. In shared-memory mode such a crossing is
/// found at pre-commit, outside every SECURITY DEFINER function: recording it must not need any
/// privilege of the committing (application) role.
/// A column privilege is not checked for a value that comes from a default: a role that may read
/// the ledger (here also an aicost_reader) could give a view over it defaults for the extension's
/// columns. The trigger refuses those values from a role that may not write them.
#[test]
fn a_view_default_cannot_set_the_extensions_columns() {
    let db = TestDb::new("trust_view_default");
    let app = LoginRole::new("trust_vd_app", Some("aicost_app, aicost_reader"));
    let mut su = session(&db);
    exec(&mut su, "SELECT ai_budget_set('org', 'acme', 100)");
    let mut a = connect_as(&db, &app.name);
    for (col, default) in [
        ("budget_ids", "'{}'::bigint[]"),
        ("cost", "0"),
        ("cache_hit", "true"),
        ("price_ids", "'{1}'::bigint[]"),
    ] {
        exec(
            &mut a,
            &format!(
                "DROP VIEW IF EXISTS pg_temp.v; CREATE TEMP VIEW v AS SELECT * FROM aicost.usage;
                 ALTER VIEW v ALTER COLUMN {col} SET DEFAULT {default}"
            ),
        );
        let e = expect_code(
            &mut a,
            "INSERT INTO v (org_id, model, in_tokens, out_tokens) VALUES ('acme', 'gpt-4o', 1000000, 1000000)",
            "42501",
        );
        assert_clean(&e, col);
    }
    assert_eq!(count(&mut su, "SELECT count(*) FROM aicost.usage"), 0);
    // The same insert without the defaults is charged.
    works(
        &mut a,
        "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens) VALUES ('acme', 'gpt-4o', 1000000, 1000000)",
    );
    assert_eq!(
        num(
            &mut su,
            "SELECT spent FROM aicost.budget_status WHERE scope_id = 'acme'",
            &[]
        ),
        Some(dec("12.5"))
    );
}

#[test]
fn alert_crossed_by_transactions_committing_together() {
    let db = TestDb::new("trust_alert_commit");
    let app = LoginRole::new("trust_alc_app", Some("aicost_app"));
    let mut su = session(&db);
    // Each row costs 0.005 (gpt-4o: 1000 input, 250 output tokens): alone under the alert
    // threshold (80 % of 0.011 = 0.0088), together over it, and under the hard limit.
    exec(&mut su, "SELECT ai_budget_set('org', 'pair', 0.011)");
    let mut listener = connect_as(&db, &app.name);
    exec(&mut listener, "LISTEN aicost_budget");
    let mut t1 = connect_as(&db, &app.name);
    let mut t2 = connect_as(&db, &app.name);
    let t2_pid = backend_pid(&mut t2);
    let ins = "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens) VALUES ('pair', 'gpt-4o', 1000, 250)";
    exec(&mut t1, "BEGIN");
    exec(&mut t1, ins);
    let (r1, r2) = std::thread::scope(|s| {
        let h = s.spawn(|| t2.batch_execute(&format!("BEGIN; {ins}; COMMIT")));
        // Per-backend mode: the second insert waits for the first one's spend-row lock;
        // shared-memory mode: it does not wait, and commits first.
        wait_until(
            "the second transaction to commit or wait for the first",
            Duration::from_secs(10),
            || {
                h.is_finished()
                    || one_row(
                        &mut su,
                        "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1",
                        &[&t2_pid],
                    )
                    .get::<_, bool>(0)
            },
        );
        let r1 = t1.batch_execute("COMMIT");
        (r1, h.join().expect("second transaction thread"))
    });
    let mut problems = Vec::new();
    for (name, r) in [("first", r1), ("second", r2)] {
        if let Err(e) = r {
            problems.push(format!("the {name} transaction failed: {}", describe(&e)));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(
        num(
            &mut su,
            "SELECT spent FROM aicost.budget_status WHERE scope_id = 'pair'",
            &[]
        ),
        Some(dec("0.01"))
    );
    assert_eq!(
        count(
            &mut su,
            "SELECT count(*) FROM aicost.budget_alerts a JOIN aicost.budgets b USING (budget_id)
              WHERE b.scope_id = 'pair' AND a.threshold = 'alert'"
        ),
        1,
        "one alert row"
    );
    exec(&mut listener, "SELECT 1");
    let got = drain(
        &mut listener,
        Duration::from_secs(5),
        Duration::from_millis(300),
    );
    let thresholds: Vec<String> = got
        .iter()
        .map(|n| {
            let p: Value = serde_json::from_str(n.payload()).expect("JSON payload");
            p["threshold"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(thresholds, vec!["alert".to_string()], "one alert NOTIFY");
    assert_audit_empty(&mut su);
}

// ---------------------------------------------------------------------------------------------
// 3. Tenants

#[test]
fn tenants_are_isolated() {
    let db = TestDb::new("trust_tenants");
    let acme_role = LoginRole::new("trust_ten_acme", Some("aicost_app"));
    let beta_role = LoginRole::new("trust_ten_beta", Some("aicost_app"));
    let mut su = session(&db);
    exec(
        &mut su,
        &format!(
            "SELECT ai_tenant_set('{}', 'acme');
             SELECT ai_tenant_set('{}', 'beta');
             SELECT ai_budget_set('org', 'acme', 10);
             SELECT ai_budget_set('org', 'beta', 10);
             SELECT ai_budget_set('team', 't-beta', 10, org_id => 'beta')",
            acme_role.name, beta_role.name
        ),
    );
    let t_beta: i64 = one_row(
        &mut su,
        "SELECT budget_id FROM aicost.budgets WHERE scope = 'team' AND scope_id = 't-beta'",
        &[],
    )
    .get(0);
    let mut acme = connect_as(&db, &acme_role.name);
    let mut beta = connect_as(&db, &beta_role.name);

    // Rows are recorded for the role's org.
    let ins =
        "INSERT INTO aicost.usage (model, in_tokens, out_tokens) VALUES ('gpt-4o', 1000, 500)";
    works(&mut acme, ins);
    works(&mut beta, ins);
    works(&mut beta, ins);
    let orgs: Vec<Option<String>> = works(&mut acme, "SELECT DISTINCT org_id FROM aicost.my_usage")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(orgs, vec![Some("acme".to_string())]);
    expect_code(
        &mut acme,
        "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens) VALUES ('beta', 'gpt-4o', 10, 5)",
        "42501",
    );
    // Another org's team budget is not charged by acme's rows.
    works(
        &mut acme,
        "INSERT INTO aicost.usage (request_id, team_id, model, in_tokens, out_tokens)
         VALUES ('acme-team', 't-beta', 'gpt-4o', 1000, 500)",
    );
    let row = one_row(
        &mut acme,
        "SELECT org_id, budget_ids FROM aicost.my_usage WHERE request_id = 'acme-team'",
        &[],
    );
    let (org, ids): (Option<String>, Option<Vec<i64>>) = (row.get(0), row.get(1));
    assert_eq!(org.as_deref(), Some("acme"));
    assert!(
        !ids.unwrap_or_default().contains(&t_beta),
        "acme's row charged beta's team budget"
    );
    assert_eq!(
        num(
            &mut su,
            "SELECT spent FROM aicost.budget_status WHERE scope = 'team' AND scope_id = 't-beta'",
            &[]
        ),
        Some(Decimal::ZERO),
        "beta's team budget must not be charged by acme"
    );

    // Views show the role's org only.
    for (c, org, rows) in [(&mut acme, "acme", 2_i64), (&mut beta, "beta", 2)] {
        assert_eq!(
            count(c, "SELECT count(*) FROM aicost.my_usage"),
            rows,
            "{org}: my_usage"
        );
        assert_eq!(
            count(
                c,
                &format!(
                    "SELECT count(*) FROM aicost.my_usage WHERE org_id IS DISTINCT FROM '{org}'"
                )
            ),
            0,
            "{org}: my_usage shows another org's rows"
        );
        let budgets: Vec<(String, String)> = works(
            c,
            "SELECT scope, scope_id FROM aicost.budget_status ORDER BY 1, 2",
        )
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        let mut want = vec![("org".to_string(), org.to_string())];
        if org == "beta" {
            want.push(("team".to_string(), "t-beta".to_string()));
        }
        assert_eq!(budgets, want, "{org}: budget_status");
        assert_eq!(
            count(
                c,
                &format!(
                    "SELECT count(*) FROM aicost.spend_daily WHERE scope = 'org' AND scope_id <> '{org}'"
                )
            ),
            0,
            "{org}: spend_daily shows another org"
        );
        assert_eq!(
            count(
                c,
                "SELECT coalesce(sum(requests), 0)::bigint FROM aicost.spend_daily WHERE scope = 'org'"
            ),
            rows,
            "{org}: spend_daily requests"
        );
    }
    assert_eq!(
        count(
            &mut acme,
            "SELECT coalesce(sum(requests), 0)::bigint FROM aicost.spend_daily WHERE scope = 'team' AND scope_id = 't-beta'"
        ),
        1,
        "acme sees its own t-beta row only"
    );

    // Another org's budget is invisible.
    let row = one_row(
        &mut acme,
        "SELECT state, spent FROM ai_budget_check('org', 'beta')",
        &[],
    );
    let (state, spent): (String, Option<Decimal>) = (row.get(0), row.get(1));
    assert_eq!(
        (state.as_str(), spent),
        ("ok", None),
        "beta's budget visible to acme"
    );
    expect_code(
        &mut acme,
        "SELECT ai_budget_reserve('org', 'beta', 1)",
        "42704",
    );
    let rid: i64 = one_row(&mut beta, "SELECT ai_budget_reserve('org', 'beta', 1)", &[]).get(0);
    let released: Option<bool> =
        one_row(&mut acme, &format!("SELECT ai_budget_release({rid})"), &[]).get(0);
    assert_eq!(released, None, "acme released beta's reservation");
    let active = format!(
        "SELECT count(*) FROM aicost.budget_reservations WHERE reservation_id = {rid} AND settled_at IS NULL"
    );
    assert_eq!(
        count(&mut su, &active),
        1,
        "beta's reservation stays active"
    );
    let released: Option<bool> =
        one_row(&mut beta, &format!("SELECT ai_budget_release({rid})"), &[]).get(0);
    assert_eq!(released, Some(true), "beta releases its own reservation");

    // Request ids are per org.
    let same = "INSERT INTO aicost.usage (request_id, model, in_tokens, out_tokens) VALUES ('same', 'gpt-4o', 10, 5)";
    works(&mut acme, same);
    works(&mut beta, same);
    expect_code(&mut acme, same, "23505");

    // The response cache.
    works(
        &mut acme,
        r#"SELECT ai_cache_put('gpt-4o', '{"q": "tenant"}', '{"a": "acme"}')"#,
    );
    let get = r#"SELECT ai_cache_get('gpt-4o', '{"q": "tenant"}')::text"#;
    let hit: Option<String> = one_row(&mut acme, get, &[]).get(0);
    assert_eq!(
        hit.map(|h| serde_json::from_str::<Value>(&h).expect("JSON")),
        Some(serde_json::json!({"a": "acme"})),
        "acme's own hit"
    );
    let miss: Option<String> = one_row(&mut beta, get, &[]).get(0);
    assert_eq!(miss, None, "beta read acme's cache entry");
    let key = r#"SELECT ai_cache_key('gpt-4o', '{"q": "tenant"}')"#;
    let (ka, kb): (String, String) = (
        one_row(&mut acme, key, &[]).get(0),
        one_row(&mut beta, key, &[]).get(0),
    );
    assert_ne!(ka, kb, "ai_cache_key is the same for acme and beta");
    let via_prefix: Option<String> = one_row(
        &mut beta,
        r#"SELECT ai_cache_get('gpt-4o', '{"q": "tenant"}', '"acme"/default')::text"#,
        &[],
    )
    .get(0);
    assert_eq!(via_prefix, None, "beta reached acme's namespace by name");

    // A reservation of beta is not settled by acme's row with the same request id.
    let r9: i64 = one_row(
        &mut beta,
        "SELECT ai_budget_reserve('org', 'beta', 1, request_id => 'r9')",
        &[],
    )
    .get(0);
    works(
        &mut acme,
        "INSERT INTO aicost.usage (request_id, model, in_tokens, out_tokens) VALUES ('r9', 'gpt-4o', 10, 5)",
    );
    assert_eq!(
        count(
            &mut su,
            &format!(
                "SELECT count(*) FROM aicost.budget_reservations WHERE reservation_id = {r9} AND settled_at IS NULL"
            )
        ),
        1,
        "acme's row settled beta's reservation r9"
    );

    assert_audit_empty(&mut su);
}

/// The tenant of a session cannot be shed by SET ROLE: a login role confined to an org that
/// switches to a group role it belongs to (aicost_app, which aicost.tenants does not list) still
/// acts for its org only. (A pooler's unconfined login switching to a tenant's role is confined.)
#[test]
fn tenant_cannot_escape_with_set_role() {
    let db = TestDb::new("trust_set_role");
    let acme_role = LoginRole::new("trust_esc_acme", Some("aicost_app"));
    let pooler = LoginRole::new("trust_esc_pool", Some("aicost_app"));
    let mut su = session(&db);
    exec(
        &mut su,
        &format!(
            "GRANT {acme} TO {pool};
             SELECT ai_tenant_set('{acme}', 'acme');
             SELECT ai_budget_set('org', 'acme', 10);
             SELECT ai_budget_set('org', 'beta', 10);
             INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens) VALUES ('beta', 'gpt-4o', 1000, 500)",
            acme = acme_role.name,
            pool = pooler.name
        ),
    );
    let beta_reservation: i64 =
        one_row(&mut su, "SELECT ai_budget_reserve('org', 'beta', 1)", &[]).get(0);

    // The pooler acting as acme is confined to acme.
    let mut pool = connect_as(&db, &pooler.name);
    exec(&mut pool, &format!("SET ROLE {}", acme_role.name));
    works(
        &mut pool,
        "INSERT INTO aicost.usage (request_id, model, in_tokens, out_tokens) VALUES ('via-pool', 'gpt-4o', 10, 5)",
    );
    let org: Option<String> = one_row(
        &mut pool,
        "SELECT org_id FROM aicost.my_usage WHERE request_id = 'via-pool'",
        &[],
    )
    .get(0);
    assert_eq!(org.as_deref(), Some("acme"));
    expect_code(
        &mut pool,
        "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens) VALUES ('beta', 'gpt-4o', 10, 5)",
        "42501",
    );

    // acme's own login, after SET ROLE to its group role: every check below must still see acme.
    let mut acme = connect_as(&db, &acme_role.name);
    exec(&mut acme, "SET ROLE aicost_app");
    let mut escapes = Vec::new();
    match acme.query(
        "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens) VALUES ('beta', 'gpt-4o', 10, 5)",
        &[],
    ) {
        Ok(_) => escapes.push("recorded a usage row for org beta".to_string()),
        Err(e) if code_of(&e) == "42501" => {}
        Err(e) => escapes.push(format!(
            "insert for org beta: expected 42501, got {}",
            describe(&e)
        )),
    }
    let spent: Option<Decimal> = one_row(
        &mut acme,
        "SELECT spent FROM ai_budget_check('org', 'beta')",
        &[],
    )
    .get(0);
    if spent.is_some() {
        escapes.push(format!(
            "ai_budget_check('org', 'beta') shows beta's spend {spent:?}"
        ));
    }
    let foreign = count(
        &mut acme,
        "SELECT count(*) FROM aicost.my_usage WHERE org_id IS DISTINCT FROM 'acme'",
    );
    if foreign > 0 {
        escapes.push(format!(
            "aicost.my_usage shows {foreign} rows of other orgs"
        ));
    }
    let budgets = count(
        &mut acme,
        "SELECT count(*) FROM aicost.budget_status WHERE scope_id <> 'acme'",
    );
    if budgets > 0 {
        escapes.push(format!(
            "aicost.budget_status shows {budgets} budgets of other orgs"
        ));
    }
    let released: Option<bool> = one_row(
        &mut acme,
        &format!("SELECT ai_budget_release({beta_reservation})"),
        &[],
    )
    .get(0);
    if released.is_some() {
        escapes.push("released beta's reservation".to_string());
    }
    assert!(
        escapes.is_empty(),
        "a login role confined to org acme escaped its org with SET ROLE aicost_app:\n{}",
        escapes.join("\n")
    );
    assert_audit_empty(&mut su);
}

// ---------------------------------------------------------------------------------------------
// 4. Hostile input

#[test]
fn hostile_input_is_refused_cleanly() {
    let db = TestDb::new("trust_hostile");
    let app = LoginRole::new("trust_hos_app", Some("aicost_app"));
    let admin = LoginRole::new("trust_hos_admin", Some("aicost_admin"));
    let mut su = session(&db);
    exec(&mut su, "SELECT ai_budget_set('org', 'acme', 100)");
    let mut a = connect_as(&db, &app.name);

    let timed = |c: &mut Client, sql: &str, code: &str| {
        let t = Instant::now();
        let e = expect_code(c, sql, code);
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "{sql}: took {took:?} to fail"
        );
        e
    };
    timed(&mut a, "SELECT ai_cost(repeat('x', 100000), 1, 1)", "22023");
    let e = timed(&mut a, "SELECT ai_cost(repeat('x', 500), 1, 1)", "42704");
    assert!(
        !e.hint().unwrap_or_default().contains("Did you mean"),
        "suggestions computed for a 500-character name: {:?}",
        e.hint()
    );
    timed(
        &mut a,
        "SELECT ai_cache_get('gpt-4o', '{}', repeat('n', 1000))",
        "22023",
    );
    timed(
        &mut a,
        "SELECT ai_budget_check('org', repeat('o', 1000))",
        "22023",
    );

    // Deeply nested JSON: a clear 22023, not an internal error.
    let deep = r#"(repeat('{"a":', 5000) || '1' || repeat('}', 5000))::jsonb"#;
    timed(
        &mut a,
        &format!("SELECT ai_cost('gpt-4o', {deep})"),
        "22023",
    );
    timed(
        &mut a,
        &format!("SELECT ai_cache_key('gpt-4o', {deep})"),
        "22023",
    );
    timed(
        &mut a,
        &format!("SELECT ai_cost_explain('gpt-4o', {deep})"),
        "22023",
    );

    // NaN and infinite money.
    for sql in [
        "SELECT ai_budget_reserve('org', 'acme', 'NaN')",
        "SELECT ai_budget_reserve('org', 'acme', 'Infinity')",
        "SELECT ai_budget_reserve('org', 'acme', '-Infinity')",
        "SELECT ai_budget_check('org', 'acme', 'NaN')",
        "SELECT ai_budget_check('org', 'acme', 'Infinity')",
        r#"SELECT ai_cache_put('gpt-4o', '{"q":3}', '{"a":1}', cost => 'NaN')"#,
        r#"SELECT ai_cache_put('gpt-4o', '{"q":3}', '{"a":1}', cost => 'Infinity')"#,
    ] {
        timed(&mut a, sql, "22023");
    }
    let mut ad = connect_as(&db, &admin.name);
    for sql in [
        "SELECT ai_budget_set('org', 'acme', 'NaN')",
        "SELECT ai_budget_set('org', 'acme', 'Infinity')",
    ] {
        expect_code(&mut ad, sql, "22023");
    }
    assert_eq!(
        num(
            &mut su,
            "SELECT amount FROM aicost.budgets WHERE scope = 'org' AND scope_id = 'acme'",
            &[]
        ),
        Some(Decimal::from(100))
    );
    assert_audit_empty(&mut su);
}

// ---------------------------------------------------------------------------------------------
// 5. Fuzz

/// A random index below `n` (the fuzz's pools and argument counts are small).
fn index(rng: &mut Rng, n: usize) -> usize {
    rng.below(n as u64) as usize
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Big,
    Num,
    Ts,
    Ival,
    Json,
    Bool,
    Names,
}

const TEXTS: &[&str] = &[
    "NULL",
    "''",
    "' '",
    "repeat('x', 1048576)",
    "repeat('é', 300)",
    "repeat('a', 257)",
    "'gpt-4o'",
    "'openai/gpt-4o'",
    "'GPT-4O '",
    "'claude-sonnet-4-6'",
    "'gemini-2.0-flash'",
    "'org'",
    "'team'",
    "'user'",
    "'api_key'",
    "'acme'",
    "'tiny'",
    "'default'",
    "'standard'",
    "'batch'",
    "'priority'",
    "'unpriced'",
    "'Ω≈ç√∫ 中文 🙂 \u{202e}evil'",
    r#"'it''s "quoted" \ back\\slash'"#,
    r#"'"acme"/default'"#,
    "'%'",
    "'.*'",
    "chr(1)",
    "'  gpt-4o  '",
];
const BIGS: &[&str] = &[
    "NULL",
    "0",
    "1",
    "10",
    "1000",
    "-1",
    "2147483648",
    "1000000000000",
    "9223372036854775807",
    "-9223372036854775808",
];
const NUMS: &[&str] = &[
    "NULL",
    "0",
    "0.01",
    "1",
    "'NaN'",
    "'Infinity'",
    "'-Infinity'",
    "1e100",
    "-0.0000001",
    "1e-100",
    "99999999999999999999999999999999999999",
];
const TSS: &[&str] = &[
    "NULL",
    "now()",
    "'infinity'",
    "'-infinity'",
    "'4713-01-01 BC'",
    "'294276-12-31'",
    "now() - interval '40 days'",
    "now() + interval '40 days'",
    "'2000-01-01'",
];
const IVALS: &[&str] = &[
    "NULL",
    "'-1 day'",
    "'0'",
    "'1 microsecond'",
    "'1 second'",
    "'5 minutes'",
    "'1000000 years'",
    "'178000000 years'",
    "'1 mon'",
];
const JSONS: &[&str] = &[
    "NULL",
    "'{}'",
    r#"'{"q": 1}'"#,
    r#"'{"q": "x", "messages": [{"role": "user", "content": "hi"}]}'"#,
    "'[]'",
    "'null'",
    r#"'"str"'"#,
    "'123'",
    "'true'",
    r#"(repeat('{"a":', 5000) || '1' || repeat('}', 5000))"#,
    "(repeat('[', 100000) || repeat(']', 100000))",
    "(SELECT jsonb_agg(g) FROM generate_series(1, 100000) g)",
    "(SELECT jsonb_object_agg(g::text, g) FROM generate_series(1, 20000) g)",
    "jsonb_build_object('q', repeat('x', 1048576))",
    r#"'{"prompt_tokens": 10, "completion_tokens": 5}'"#,
    r#"'{"prompt_tokens": -5, "completion_tokens": 5}'"#,
    r#"'{"prompt_tokens": 1e300, "completion_tokens": 1}'"#,
    r#"'{"prompt_tokens": "10", "completion_tokens": null}'"#,
    r#"'{"prompt_tokens": 1.5, "completion_tokens": 0.5}'"#,
    r#"'{"input_tokens": 9223372036854775807, "output_tokens": 9223372036854775807}'"#,
    r#"'{"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100}'"#,
    r#"'{"promptTokenCount": 10, "candidatesTokenCount": 2}'"#,
    r#"'{"usage": {"prompt_tokens": 1}}'"#,
    r#"'{"prompt_tokens_details": {"cached_tokens": 99}, "prompt_tokens": 10, "completion_tokens": 1}'"#,
];

const BOOLS: &[&str] = &["NULL", "true", "false"];
const NAME_ARRAYS: &[&str] = &[
    "NULL",
    "'{}'",
    "ARRAY[NULL]",
    "ARRAY['gpt-4o', NULL]",
    "array_fill('gpt-4o'::text, ARRAY[33])",
    "ARRAY[repeat('x', 1048576)]",
    "ARRAY['no-such-model']",
    "(SELECT array_agg(g::text) FROM generate_series(1, 100000) g)",
];

/// Well-formed values, so that calls get past their first check (one argument in two).
const SANE_TEXTS: &[&str] = &["'gpt-4o'", "'org'", "'acme'", "'default'", "'standard'"];
const SANE_BIGS: &[&str] = &["0", "10", "1000"];
const SANE_NUMS: &[&str] = &["0", "0.01", "1"];
const SANE_TSS: &[&str] = &["now()"];
const SANE_IVALS: &[&str] = &["'5 minutes'", "'1 second'"];
const SANE_BOOLS: &[&str] = &["true", "false"];
const SANE_NAME_ARRAYS: &[&str] = &[
    "ARRAY['gpt-4o', 'gpt-4o-mini']",
    "ARRAY['claude-sonnet-4-6']",
];
const SANE_JSONS: &[&str] = &[
    r#"'{"q": 1}'"#,
    r#"'{"prompt_tokens": 10, "completion_tokens": 5}'"#,
];

fn arg(rng: &mut Rng, kind: Kind) -> String {
    let (hostile, sane, ty) = match kind {
        Kind::Text => (TEXTS, SANE_TEXTS, "text"),
        Kind::Big => (BIGS, SANE_BIGS, "bigint"),
        Kind::Num => (NUMS, SANE_NUMS, "numeric"),
        Kind::Ts => (TSS, SANE_TSS, "timestamptz"),
        Kind::Ival => (IVALS, SANE_IVALS, "interval"),
        Kind::Json => (JSONS, SANE_JSONS, "jsonb"),
        Kind::Bool => (BOOLS, SANE_BOOLS, "boolean"),
        Kind::Names => (NAME_ARRAYS, SANE_NAME_ARRAYS, "text[]"),
    };
    let pool = if rng.chance(50) { sane } else { hostile };
    format!("({})::{ty}", rng.pick(pool))
}

/// (call prefix, argument kinds, arguments without a default).
const FUNCTIONS: &[(&str, &[Kind], usize)] = {
    use Kind::*;
    &[
        (
            "SELECT ai_cost",
            &[Text, Big, Big, Big, Big, Text, Ts, Big],
            3,
        ),
        ("SELECT ai_cost", &[Text, Json, Text, Ts], 2),
        (
            "SELECT ai_cost_explain",
            &[Text, Big, Big, Big, Big, Text, Ts, Big],
            3,
        ),
        ("SELECT ai_cost_explain", &[Text, Json, Text, Ts], 2),
        ("SELECT ai_model_resolve", &[Text], 1),
        ("SELECT ai_cache_key", &[Text, Json, Text], 2),
        ("SELECT ai_cache_get", &[Text, Json, Text], 2),
        (
            "SELECT ai_cache_put",
            &[Text, Json, Json, Ival, Text, Num],
            3,
        ),
        (
            "SELECT * FROM ai_cache_get_or_lock",
            &[Text, Json, Text, Ival],
            2,
        ),
        ("SELECT * FROM ai_budget_check", &[Text, Text, Num], 2),
        (
            "SELECT ai_budget_reserve",
            &[Text, Text, Num, Text, Ival],
            3,
        ),
        ("SELECT ai_budget_release", &[Big], 1),
        ("SELECT * FROM ai_rate_limit_check", &[Text, Text, Big], 2),
        ("SELECT * FROM ai_call_allowed", &[Text], 1),
        ("SELECT ai_call_report", &[Text, Bool, Ival, Text], 2),
        ("SELECT * FROM ai_route", &[Names, Text, Text, Big], 1),
    ]
};

/// The columns of aicost.usage granted to aicost_app.
const USAGE_COLUMNS: &[(&str, Kind)] = {
    use Kind::*;
    &[
        ("request_id", Text),
        ("org_id", Text),
        ("team_id", Text),
        ("user_id", Text),
        ("api_key_id", Text),
        ("model", Text),
        ("in_tokens", Big),
        ("out_tokens", Big),
        ("cached_tokens", Big),
        ("cache_write_tokens", Big),
        ("cache_write_1h_tokens", Big),
        ("service_tier", Text),
        ("usage", Json),
        ("status", Text),
        ("metadata", Json),
        ("created_at", Ts),
    ]
};

fn fuzz_statement(rng: &mut Rng) -> String {
    if rng.chance(25) {
        let mut cols = Vec::new();
        let mut vals = Vec::new();
        for &(col, kind) in USAGE_COLUMNS {
            let likely = matches!(col, "model" | "in_tokens" | "out_tokens" | "org_id");
            if !rng.chance(if likely { 85 } else { 30 }) {
                continue;
            }
            cols.push(col);
            vals.push(match col {
                "model" if rng.chance(60) => "'gpt-4o'".to_string(),
                "org_id" if rng.chance(60) => "'acme'".to_string(),
                "request_id" if rng.chance(60) => format!("'fz-{}'", rng.next() % 1_000_000),
                _ => arg(rng, kind),
            });
        }
        return format!(
            "INSERT INTO aicost.usage ({}) VALUES ({})",
            cols.join(", "),
            vals.join(", ")
        );
    }
    let (call, kinds, required) = FUNCTIONS[index(rng, FUNCTIONS.len())];
    let n = required + index(rng, kinds.len() - required + 1);
    let args: Vec<String> = kinds[..n].iter().map(|&k| arg(rng, k)).collect();
    format!("{call}({})", args.join(", "))
}

#[test]
fn fuzz_every_function_with_hostile_arguments() {
    let iterations: usize = std::env::var("AICOST_FUZZ_ITERATIONS")
        .ok()
        .map_or(300, |s| s.parse().expect("AICOST_FUZZ_ITERATIONS"));
    let seed: u64 = std::env::var("AICOST_FUZZ_SEED")
        .ok()
        .map_or(0x9E37_79B9_7F4A_7C15, |s| {
            s.parse().expect("AICOST_FUZZ_SEED")
        })
        .max(1);
    let db = TestDb::new("trust_fuzz");
    let app = LoginRole::new("trust_fuzz_app", Some("aicost_app"));
    let mut su = session(&db);
    exec(
        &mut su,
        "SELECT ai_budget_set('org', 'acme', 1000);
         SELECT ai_budget_set('org', 'tiny', 0.0001);
         SELECT ai_budget_set('team', 'team', 1);
         SELECT ai_rate_limit_set('org', 'acme', '1 minute', 1000000, 9000000000000000000)",
    );
    let rows_before = count(&mut su, "SELECT count(*) FROM aicost.usage");
    let spent_before = num(
        &mut su,
        "SELECT coalesce(sum(spent), 0) FROM aicost.budget_spend",
        &[],
    );

    let open = || {
        let mut c = raw_connect_as(&db, &app.name);
        exec(&mut c, "SET statement_timeout = '1s'");
        c
    };
    let mut c = open();
    let mut rng = Rng::new(seed);
    let mut failures: Vec<String> = Vec::new();
    let (mut ok, mut errors, mut timeouts) = (0_usize, 0_usize, 0_usize);
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    let mut largest = (0_usize, String::new());
    let started = Instant::now();
    for i in 0..iterations {
        let sql = fuzz_statement(&mut rng);
        let t = Instant::now();
        let r = c.simple_query(&sql);
        let took = t.elapsed();
        let what = format!("iteration {i} (seed {seed}): {sql}");
        if took > Duration::from_secs(3) {
            failures.push(format!("{what}\n    took {took:?}"));
        }
        match r {
            Ok(_) => ok += 1,
            Err(e) => {
                errors += 1;
                match e.as_db_error() {
                    None => failures.push(format!("{what}\n    client error: {e}")),
                    Some(d) => {
                        let text = d.message().len()
                            + d.detail().map_or(0, str::len)
                            + d.hint().map_or(0, str::len);
                        if text > largest.0 {
                            largest = (text, sql.clone());
                        }
                        // Hostile values are quoted clipped, never whole.
                        if text > 4096 {
                            failures.push(format!("{what}\n    error text of {text} bytes"));
                        }
                        let code = d.code().code();
                        *codes.entry(code.to_string()).or_default() += 1;
                        if code == "57014" {
                            timeouts += 1;
                        }
                        if code == "XX000" || code.starts_with("58") || code == "57P01" {
                            failures.push(format!("{what}\n    internal error: {}", describe(&e)));
                        }
                        if let Some(why) = leak(d) {
                            failures.push(format!("{what}\n    {why}"));
                        }
                    }
                }
                // The session must stay usable.
                if let Err(e2) = c.simple_query("SELECT 1") {
                    failures.push(format!(
                        "{what}\n    session unusable after the error ({}): {}",
                        describe(&e),
                        describe(&e2)
                    ));
                    c = open();
                }
            }
        }
        if failures.len() >= 30 {
            break;
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "fuzz: {iterations} iterations (seed {seed}) in {elapsed:?}: {ok} worked, {errors} errors \
         ({timeouts} statement timeouts); SQLSTATEs {codes:?}; largest error text {} bytes, from {}",
        largest.0, largest.1
    );
    assert!(
        failures.is_empty(),
        "{} fuzz failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The ledger only grew, every row is priced, and spend equals the ledger.
    assert!(count(&mut su, "SELECT count(*) FROM aicost.usage") >= rows_before);
    assert!(
        num(
            &mut su,
            "SELECT coalesce(sum(spent), 0) FROM aicost.budget_spend",
            &[]
        ) >= spent_before
    );
    assert_eq!(
        count(
            &mut su,
            "SELECT count(*) FROM aicost.usage WHERE cost IS NULL OR status = 'unpriced' OR cache_hit"
        ),
        0,
        "the application role stored unpriced or cache-hit rows"
    );
    assert_audit_empty(&mut su);
}
