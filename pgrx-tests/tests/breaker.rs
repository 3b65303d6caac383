//! Circuit breakers shared by every session, as an application role (`aicost_app`) uses them:
//! failures reported by several sessions open a breaker for all of them, half-open admits exactly
//! the configured probes under concurrent callers, settings follow commit and rollback, routing
//! falls back past open breakers and degrades to the cheapest model under a throttled budget, and
//! what a restart or a rollback does in each mode (tests `shmem_*` / `perbackend_*`).

mod common;

use common::*;
use postgres::Client;
use serde_json::Value;
use std::time::Duration;

const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

fn state(c: &mut Client, kind: &str, name: &str) -> Option<String> {
    c.query_opt(
        "SELECT state FROM aicost.stat_breaker WHERE kind = $1 AND name = $2",
        &[&kind, &name],
    )
    .unwrap_or_else(|e| panic!("stat_breaker: {}", describe(&e)))
    .map(|r| r.get(0))
}

fn allowed(c: &mut Client, model: &str) -> (bool, String) {
    let r = one_row(
        c,
        "SELECT allowed, state FROM ai_call_allowed($1)",
        &[&model],
    );
    (r.get(0), r.get(1))
}

fn report(c: &mut Client, model: &str, ok: bool) -> String {
    one_row(
        c,
        "SELECT ai_call_report($1, $2, error_class => CASE WHEN $2 THEN NULL ELSE 'server' END)",
        &[&model, &ok],
    )
    .get(0)
}

/// A database with a login role in aicost_app and one in aicost_reader.
fn setup(test: &str) -> (TestDb, LoginRole, LoginRole) {
    let db = TestDb::new(test);
    let app = LoginRole::new(&format!("{test}_app"), Some("aicost_app"));
    let reader = LoginRole::new(&format!("{test}_rd"), Some("aicost_reader"));
    (db, app, reader)
}

#[test]
fn failures_from_several_sessions_open_the_breaker_for_all() {
    let (db, app, reader) = setup("brk_open");
    let mut su = session(&db);
    exec(
        &mut su,
        "INSERT INTO aicost.breaker_config (kind, name, failure_threshold, cooldown)
         VALUES ('model', 'openai/gpt-4o', 3, '1 hour')",
    );
    let mut sessions: Vec<Client> = (0..3).map(|_| connect_as(&db, &app.name)).collect();
    let mut watcher = connect_as(&db, &app.name);
    assert_eq!(allowed(&mut watcher, "gpt-4o"), (true, "closed".into()));
    for (i, s) in sessions.iter_mut().enumerate() {
        let st = report(s, "gpt-4o", false);
        assert_eq!(st, if i < 2 { "closed" } else { "open" }, "report {i}");
    }
    // Another session, which reported nothing, is refused too (by alias as well).
    assert_eq!(
        allowed(&mut watcher, "openai/gpt-4o"),
        (false, "open".into())
    );
    let retry: bool = one_row(
        &mut watcher,
        "SELECT retry_after > interval '59 minutes' FROM ai_call_allowed('gpt-4o')",
        &[],
    )
    .get(0);
    assert!(retry, "retry_after is the rest of the cooldown");
    // Other models and the provider (3 failures of its default 20) are not affected.
    assert_eq!(
        allowed(&mut watcher, "gpt-4o-mini"),
        (true, "closed".into())
    );
    let mut rd = connect_as(&db, &reader.name);
    let r = one_row(
        &mut rd,
        "SELECT state, failures, successes, trips, opened_at IS NOT NULL, time_open >= interval '0'
           FROM aicost.stat_breaker WHERE kind = 'model' AND name = 'gpt-4o'",
        &[],
    );
    assert_eq!(r.get::<_, String>(0), "open");
    assert_eq!(
        (r.get::<_, i64>(1), r.get::<_, i64>(2), r.get::<_, i64>(3)),
        (3, 0, 1)
    );
    assert!(r.get::<_, bool>(4) && r.get::<_, bool>(5));
    assert_eq!(
        state(&mut rd, "provider", "openai").as_deref(),
        Some("closed")
    );
    let pf: i64 = one_row(
        &mut rd,
        "SELECT failures FROM aicost.stat_breaker WHERE kind = 'provider' AND name = 'openai'",
        &[],
    )
    .get(0);
    assert_eq!(pf, 3);
    // Only an admin resets it.
    expect_sqlstate(
        watcher.query("SELECT ai_breaker_reset()", &[]),
        "42501",
        "aicost_app resets breakers",
    );
    let n: i64 = one_row(
        &mut su,
        "SELECT ai_breaker_reset('model', 'openai/gpt-4o')",
        &[],
    )
    .get(0);
    assert_eq!(n, 1);
    assert_eq!(allowed(&mut watcher, "gpt-4o"), (true, "closed".into()));
}

#[test]
fn half_open_admits_exactly_the_probes_among_16_concurrent_callers() {
    let (db, app, _reader) = setup("brk_probe");
    let mut su = session(&db);
    exec(
        &mut su,
        "INSERT INTO aicost.breaker_config (kind, name, failure_threshold, cooldown, probes, close_after)
         VALUES ('model', 'gpt-4o-mini', 1, '300 milliseconds', 3, 2)",
    );
    let mut c = connect_as(&db, &app.name);
    assert_eq!(report(&mut c, "gpt-4o-mini", false), "open");
    wait_until("the cooldown to end", Duration::from_secs(10), || {
        one_row(
                &mut su,
                "SELECT retry_after IS NULL FROM aicost.stat_breaker WHERE kind = 'model' AND name = 'gpt-4o-mini'",
                &[],
            )
            .get(0)
    });
    for round in 0..2 {
        let got = concurrently(&db, 16, |_, s| {
            exec(s, &format!("SET ROLE {}", app.name));
            allowed(s, "gpt-4o-mini")
        });
        let admitted = got.iter().filter(|(a, _)| *a).count();
        assert_eq!(admitted, 3, "round {round}: {got:?}");
        assert!(got.iter().all(|(_, s)| s == "half_open"), "{got:?}");
        // A client error frees one probe slot and changes nothing else; the next round admits
        // one more after the other two are reported below.
        if round == 0 {
            for _ in 0..3 {
                one_row(
                    &mut c,
                    "SELECT ai_call_report('gpt-4o-mini', false, error_class => 'client')",
                    &[],
                );
            }
        }
    }
    // Two successful probes close it.
    assert_eq!(report(&mut c, "gpt-4o-mini", true), "half_open");
    assert_eq!(report(&mut c, "gpt-4o-mini", true), "closed");
    let got = concurrently(&db, 16, |_, s| {
        exec(s, &format!("SET ROLE {}", app.name));
        allowed(s, "gpt-4o-mini").0
    });
    assert!(got.iter().all(|&a| a), "closed admits everyone");
}

#[test]
fn a_failed_probe_reopens_with_a_doubled_cooldown() {
    let (db, app, _reader) = setup("brk_backoff");
    let mut su = session(&db);
    exec(
        &mut su,
        "INSERT INTO aicost.breaker_config (kind, name, failure_threshold, cooldown, max_cooldown)
         VALUES ('model', 'gpt-4o', 1, '200 milliseconds', '1 hour')",
    );
    let mut c = connect_as(&db, &app.name);
    let cooldown = |c: &mut Client| -> f64 {
        one_row(
            c,
            "SELECT extract(epoch FROM retry_after)::float8 FROM ai_call_allowed('gpt-4o')",
            &[],
        )
        .get(0)
    };
    report(&mut c, "gpt-4o", false);
    let first = cooldown(&mut c);
    assert!(first > 0.1 && first <= 0.2, "first cooldown {first}");
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(allowed(&mut c, "gpt-4o"), (true, "half_open".into()));
    assert_eq!(report(&mut c, "gpt-4o", false), "open");
    let second = cooldown(&mut c);
    assert!(second > 0.3 && second <= 0.4, "second cooldown {second}");
}

#[test]
fn settings_follow_commit_and_rollback() {
    let (db, app, _reader) = setup("brk_config");
    let mut su = session(&db);
    let mut c = connect_as(&db, &app.name);
    // An alias is stored as its canonical name; an unknown model is refused.
    exec(
        &mut su,
        "INSERT INTO aicost.breaker_config (kind, name, failure_threshold) VALUES ('model', 'openai/gpt-4o', 1)",
    );
    let name: String = one_row(&mut su, "SELECT name FROM aicost.breaker_config", &[]).get(0);
    assert_eq!(name, "gpt-4o");
    expect_sqlstate(
        su.query(
            "INSERT INTO aicost.breaker_config (kind, name) VALUES ('model', 'no-such-model')",
            &[],
        ),
        "42704",
        "config of an unknown model",
    );
    expect_sqlstate(
        su.query(
            "INSERT INTO aicost.breaker_config (kind, name, failure_rate) VALUES ('provider', '*', 101)",
            &[],
        ),
        "23514",
        "a failure rate above 100%",
    );
    // Uncommitted: the other session still uses the committed threshold of 1.
    exec(
        &mut su,
        "BEGIN; UPDATE aicost.breaker_config SET failure_threshold = 2",
    );
    assert_eq!(report(&mut c, "gpt-4o", false), "open");
    exec(&mut su, "ROLLBACK");
    exec(&mut su, "SELECT ai_breaker_reset()");
    // Committed: 2 failures needed from now on, in a session that had the old settings cached.
    exec(
        &mut su,
        "UPDATE aicost.breaker_config SET failure_threshold = 2",
    );
    assert_eq!(report(&mut c, "gpt-4o", false), "closed");
    assert_eq!(report(&mut c, "gpt-4o", false), "open");
    // A provider default ('*') applies to every provider.
    exec(
        &mut su,
        "INSERT INTO aicost.breaker_config (kind, name, failure_threshold) VALUES ('provider', '*', 1)",
    );
    report(&mut c, "claude-sonnet-4-6", false);
    assert_eq!(
        state(&mut su, "provider", "anthropic").as_deref(),
        Some("open")
    );
    // An open provider refuses every model of it, closed ones included.
    assert!(!allowed(&mut c, "claude-opus-5").0);
}

#[test]
fn route_falls_back_and_degrades_to_the_cheapest_under_a_throttled_budget() {
    let (db, app, _reader) = setup("brk_route");
    let mut su = session(&db);
    exec(
        &mut su,
        "INSERT INTO aicost.breaker_config (kind, name, failure_threshold, cooldown)
         VALUES ('model', 'gpt-4o', 1, '1 hour');
         SELECT ai_budget_set('org', 'acme', 10);
         SELECT ai_budget_set('org', 'poor', 10)",
    );
    let mut c = connect_as(&db, &app.name);
    let route = |c: &mut Client, sql: &str| -> (Option<String>, Value) {
        let sql = sql.replace("SELECT * FROM", "SELECT model, reason::text FROM");
        let r = one_row(c, &sql, &[]);
        let why: String = r.get(1);
        (
            r.get(0),
            serde_json::from_str(&why).expect("reason is JSON"),
        )
    };
    let models = "ARRAY['gpt-4o', 'claude-sonnet-4-6', 'gpt-4o-mini']";
    // Nothing wrong: the first model.
    let (m, why) = route(
        &mut c,
        &format!("SELECT * FROM ai_route({models}, 'org', 'acme', 1000)"),
    );
    assert_eq!(m.as_deref(), Some("gpt-4o"), "{why}");
    assert_eq!(why["policy"], "first_available");
    assert_eq!(why["budget_state"], "ok");
    // An open breaker: the next one, and the reason says why.
    report(&mut c, "gpt-4o", false);
    let (m, why) = route(&mut c, &format!("SELECT * FROM ai_route({models})"));
    assert_eq!(m.as_deref(), Some("claude-sonnet-4-6"), "{why}");
    assert_eq!(why["skipped"][0]["model"], "gpt-4o");
    assert_eq!(why["skipped"][0]["why"], "breaker");
    assert_eq!(why["skipped"][0]["state"], "open");
    assert_eq!(why["position"], 2);
    exec(&mut su, "SELECT ai_breaker_reset()");
    // A budget at throttle (96% spent): the cheapest model by estimated cost.
    exec(
        &mut su,
        "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens) VALUES ('poor', 'gpt-4o', 0, 960000)",
    );
    let (m, why) = route(
        &mut c,
        &format!("SELECT * FROM ai_route({models}, 'org', 'poor', 1000)"),
    );
    assert_eq!(m.as_deref(), Some("gpt-4o-mini"), "{why}");
    assert_eq!(why["policy"], "cheapest");
    assert_eq!(why["budget_state"], "throttle");
    let est: f64 = why["estimated_cost"].as_f64().expect("estimated_cost");
    assert!(
        (est - 0.0006).abs() < 1e-12,
        "1000 tokens at gpt-4o-mini's output price: {why}"
    );
    // An estimate the budget would deny for the first choice but not for a cheaper one: 50,000
    // tokens cost at most 0.50 on gpt-4o (0.40 are left) and 0.03 on gpt-4o-mini.
    let (m, why) = route(
        &mut c,
        &format!("SELECT * FROM ai_route({models}, 'org', 'poor', 50000)"),
    );
    assert_eq!(m.as_deref(), Some("gpt-4o-mini"), "{why}");
    // Nothing fits: no model, and why.
    let (m, why) = route(
        &mut c,
        &format!("SELECT * FROM ai_route({models}, 'org', 'poor', 100000000)"),
    );
    assert_eq!(m, None, "{why}");
    assert_eq!(why["skipped"].as_array().map(Vec::len), Some(3), "{why}");
    assert!(
        why["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["why"] == "budget")
    );
    // Bad lists are refused.
    for (list, code) in [
        ("'{}'::text[]", "22023"),
        ("array_fill('gpt-4o'::text, ARRAY[33])", "22023"),
        ("ARRAY['no-such-model']", "42704"),
        ("NULL::text[]", "22004"),
    ] {
        expect_sqlstate(
            c.query(&format!("SELECT * FROM ai_route({list})"), &[]),
            code,
            list,
        );
    }
}

#[test]
fn bad_reports_are_refused() {
    let (db, app, _reader) = setup("brk_bad");
    let mut c = connect_as(&db, &app.name);
    for (sql, code) in [
        ("SELECT ai_call_report('no-such-model', true)", "42704"),
        ("SELECT ai_call_report('gpt-4o', NULL)", "22004"),
        ("SELECT ai_call_report(NULL, true)", "22004"),
        (
            "SELECT ai_call_report('gpt-4o', false, error_class => 'oops')",
            "22023",
        ),
        (
            "SELECT ai_call_report('gpt-4o', true, error_class => 'timeout')",
            "22023",
        ),
        (
            "SELECT ai_call_report('gpt-4o', true, interval '-1 second')",
            "22023",
        ),
        ("SELECT * FROM ai_call_allowed('no-such-model')", "42704"),
    ] {
        expect_sqlstate(c.query(sql, &[]), code, sql);
    }
    let mut su = session(&db);
    let n: i64 = one_row(&mut su, "SELECT count(*) FROM aicost.stat_breaker", &[]).get(0);
    assert_eq!(n, 0, "refused reports recorded nothing");
}

/// Shared memory is not transactional: a report counts at once, whatever its transaction does.
/// A restart starts every breaker closed.
#[test]
fn shmem_reports_count_at_once_and_a_restart_starts_closed() {
    assert_server_preloaded();
    let (db, app, _reader) = setup("brk_shm");
    let mut su = session(&db);
    exec(
        &mut su,
        "INSERT INTO aicost.breaker_config (kind, name, failure_threshold, cooldown) VALUES ('model', 'gpt-4o', 1, '1 hour')",
    );
    let mut c = connect_as(&db, &app.name);
    // Questions create no entry in shared memory: only reports do.
    for m in ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-6"] {
        assert_eq!(allowed(&mut c, m), (true, "closed".into()));
    }
    let n: i64 = one_row(&mut su, "SELECT count(*) FROM aicost.stat_breaker", &[]).get(0);
    assert_eq!(n, 0, "breakers created by questions");
    exec(&mut c, "BEGIN");
    report(&mut c, "gpt-4o", false);
    let mut other = connect_as(&db, &app.name);
    assert!(!allowed(&mut other, "gpt-4o").0, "seen before commit");
    exec(&mut c, "ROLLBACK");
    assert!(!allowed(&mut other, "gpt-4o").0, "kept after rollback");
    drop((c, other, su));
    cluster("restart", true).unwrap_or_else(|e| panic!("{e}"));
    wait_for_server(SERVER_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let mut c = connect_as(&db, &app.name);
    assert_eq!(allowed(&mut c, "gpt-4o"), (true, "closed".into()));
}

/// The table is transactional: a report in a transaction that rolls back is lost, and the state
/// survives a restart.
#[test]
fn perbackend_reports_are_transactional_and_survive_a_restart() {
    let (db, app, _reader) = setup("brk_tbl");
    let mut su = session(&db);
    assert!(!server_preloaded(&mut su));
    exec(
        &mut su,
        "INSERT INTO aicost.breaker_config (kind, name, failure_threshold, cooldown) VALUES ('model', 'gpt-4o', 1, '1 hour')",
    );
    let mut c = connect_as(&db, &app.name);
    exec(&mut c, "BEGIN");
    report(&mut c, "gpt-4o", false);
    exec(&mut c, "ROLLBACK");
    let mut other = connect_as(&db, &app.name);
    assert!(allowed(&mut other, "gpt-4o").0, "rolled back");
    report(&mut c, "gpt-4o", false);
    assert!(!allowed(&mut other, "gpt-4o").0, "committed");
    // Read-only (as on a standby): answered, not recorded. gpt-4o-mini's cooldown is over, so the
    // question would move it to half-open and take a probe slot.
    exec(
        &mut su,
        "INSERT INTO aicost.breaker_config (kind, name, failure_threshold, cooldown) VALUES ('model', 'gpt-4o-mini', 1, '1 millisecond')",
    );
    report(&mut c, "gpt-4o-mini", false);
    std::thread::sleep(Duration::from_millis(20));
    exec(&mut other, "BEGIN READ ONLY");
    assert_eq!(
        allowed(&mut other, "gpt-4o-mini"),
        (true, "half_open".into())
    );
    exec(&mut other, "COMMIT");
    assert_eq!(
        state(&mut su, "model", "gpt-4o-mini").as_deref(),
        Some("open")
    );
    // The application role cannot write the state table itself.
    expect_sqlstate(
        other.query("DELETE FROM aicost.breaker_state", &[]),
        "42501",
        "aicost_app deletes breaker states",
    );
    drop((c, other, su));
    cluster("restart", false).unwrap_or_else(|e| panic!("{e}"));
    wait_for_server(SERVER_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let mut c = connect_as(&db, &app.name);
    assert_eq!(allowed(&mut c, "gpt-4o"), (false, "open".into()));
}
