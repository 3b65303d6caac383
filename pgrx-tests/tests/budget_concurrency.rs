//! Budgets, reservations, alerts and rate limits of the usage ledger under real concurrency:
//! separate sessions (one `postgres::Client` per thread, started together on a `Barrier`) racing
//! on the BEFORE INSERT trigger of `aicost.usage`, `ai_budget_reserve` and `ai_budget_release`.
//!
//! Every connection has a `statement_timeout` and every wait in the test is bounded, so a lost
//! wake-up or a lock cycle fails the test instead of hanging it.
//!
//! The last three tests (`reprice_concurrent_with_insert_no_deadlock`,
//! `reservations_repeatable_read_never_overbook`, `lowered_budget_applies_to_queued_writers`)
//! force specific interleavings that sql/ledger.sql does not handle yet: they fail until it is
//! fixed (lock order of ai_reprice_unpriced, reservations invisible to REPEATABLE READ snapshots,
//! budget row read before waiting for the spend lock).

mod common;

use common::*;
use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// What a session got from running one statement over and over until its first error.
#[derive(Debug)]
struct Run {
    ok: usize,
    /// (SQLSTATE, description) of the error that stopped it; None if it hit the cap.
    stopped_by: Option<(String, String)>,
}

/// Runs `sql` in autocommit as fast as possible until it fails (at most `cap` times).
fn until_error(c: &mut Client, sql: &str, params: &[&(dyn ToSql + Sync)], cap: usize) -> Run {
    let stmt = c
        .prepare(sql)
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    let mut ok = 0;
    while ok < cap {
        match c.execute(&stmt, params) {
            Ok(_) => ok += 1,
            Err(e) => {
                return Run {
                    ok,
                    stopped_by: Some((code_of(&e), describe(&e))),
                };
            }
        }
    }
    Run {
        ok,
        stopped_by: None,
    }
}

/// Every session stopped on SQLSTATE `code` (and nothing else: no deadlock, no serialization
/// failure, no timeout); returns the total number of successes.
#[track_caller]
fn all_stopped_by(runs: &[Run], code: &str) -> usize {
    for (i, r) in runs.iter().enumerate() {
        match &r.stopped_by {
            Some((c, _)) if c == code => {}
            Some((_, d)) => panic!("session {i} failed with something else than {code}: {d}"),
            None => panic!("session {i} never got {code} (after {} successes)", r.ok),
        }
    }
    runs.iter().map(|r| r.ok).sum()
}

/// Sleeps past the next UTC midnight if it is less than 30 s away, so that rows stamped with
/// now() and the current period of budget_status (day, week and month, in UTC) stay in one
/// period for the rest of the test.
fn avoid_utc_day_boundary(c: &mut Client) {
    let left: f64 = one_row(
        c,
        "SELECT extract(epoch FROM date_trunc('day', now(), 'UTC') + interval '1 day' - now())::float8",
        &[],
    )
    .get(0);
    if left < 30.0 {
        eprintln!("{left:.1} s to UTC midnight: waiting for the next day");
        thread::sleep(Duration::from_secs_f64(left + 1.0));
    }
}

/// A fresh database for one budget test and a first session on it, away from a UTC day boundary.
fn budget_db(name: &str) -> (TestDb, Client) {
    let db = TestDb::new(name);
    let mut c = session(&db);
    avoid_utc_day_boundary(&mut c);
    (db, c)
}

fn budget_set(c: &mut Client, call: &str) -> i64 {
    one_row(c, &format!("SELECT {call}"), &[]).get(0)
}

fn count(c: &mut Client, sql: &str) -> i64 {
    one_row(c, sql, &[]).get(0)
}

/// Whether usage row `u` is covered by budget `b` (recomputed from the scopes, not budget_ids).
const COVERS: &str = "((b.scope = 'org' AND b.scope_id = u.org_id) OR (b.scope = 'team' AND b.scope_id = u.team_id)
     OR (b.scope = 'user' AND b.scope_id = u.user_id) OR (b.scope = 'api_key' AND b.scope_id = u.api_key_id))";

/// Per budget: `scope:scope_id` => (spent this period per budget_status, committed ledger cost of
/// the rows it covers, hard limit). Only for tests whose rows all fall in the current period.
fn spend_vs_ledger(c: &mut Client) -> BTreeMap<String, (Decimal, Decimal, Decimal)> {
    c.query(
        &format!(
            "SELECT b.scope || ':' || b.scope_id, s.spent,
                    (SELECT coalesce(sum(u.cost), 0) FROM aicost.usage u WHERE {COVERS}),
                    s.limit_usd
               FROM aicost.budgets b JOIN aicost.budget_status s USING (budget_id)"
        ),
        &[],
    )
    .expect("budget_status")
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
    .collect()
}

/// One 0.0025 USD row (gpt-4o, 1000 input tokens at 2.50 USD per million).
const ROW_COST: &str = "0.0025";

#[track_caller]
fn assert_row_cost(c: &mut Client) {
    assert_eq!(
        num(c, "SELECT ai_cost('gpt-4o', 1000, 0)", &[]),
        Some(dec(ROW_COST)),
        "the test assumes 1000 gpt-4o input tokens cost exactly 0.0025 USD"
    );
}

const INSERT_USER_U: &str = "INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('u', 'gpt-4o', 1000, 0)";

const INSERT_SCOPED: &str =
    "INSERT INTO aicost.usage (org_id, team_id, user_id, model, in_tokens, out_tokens)
     VALUES ($1, $2, $3, 'gpt-4o', 1000, 0)";

/// 16 sessions racing to spend a 1.00 USD budget 0.0025 at a time: exactly 400 rows commit, the
/// budget ends exactly full, every refusal is AC001.
#[test]
fn no_overspend_under_concurrency() {
    let (db, mut c) = budget_db("budget_no_overspend");
    assert_row_cost(&mut c);
    budget_set(&mut c, "ai_budget_set('user', 'u', 1.00)");

    let t = Instant::now();
    let runs = concurrently(&db, 16, |_, s| until_error(s, INSERT_USER_U, &[], 1000));
    let ok = all_stopped_by(&runs, "AC001");
    eprintln!(
        "no_overspend: {ok} rows in {:?}, per session {:?}",
        t.elapsed(),
        runs.iter().map(|r| r.ok).collect::<Vec<_>>()
    );

    assert_eq!(ok, 400, "successful inserts");
    assert_eq!(count(&mut c, "SELECT count(*) FROM aicost.usage"), 400);
    assert_eq!(
        num(&mut c, "SELECT sum(cost) FROM aicost.usage", &[]),
        Some(dec("1.00"))
    );
    let status = one_row(
        &mut c,
        "SELECT spent, reserved, remaining, state FROM aicost.budget_status WHERE scope_id = 'u'",
        &[],
    );
    assert_eq!(status.get::<_, Decimal>(0), dec("1.00"), "spent");
    assert_eq!(status.get::<_, Decimal>(1), dec("0"), "reserved");
    assert_eq!(status.get::<_, Decimal>(2), dec("0"), "remaining");
    assert_eq!(status.get::<_, String>(3), "deny", "state");
    assert_audit_empty(&mut c);
    // Still full: the next row is refused as well.
    expect_error(&mut c, INSERT_USER_U, &[], "AC001");
}

/// Rows covering an org, a team and a user budget (created in an order that is not the scope
/// order): the smallest budget (the user's) ends exactly full, all three recorded the same spend.
#[test]
fn no_overspend_three_covering_budgets() {
    let (db, mut c) = budget_db("budget_three_covering");
    assert_row_cost(&mut c);
    budget_set(&mut c, "ai_budget_set('team', 't', 2.00)");
    budget_set(&mut c, "ai_budget_set('user', 'u', 1.00)");
    budget_set(&mut c, "ai_budget_set('org', 'o', 3.00)");

    let runs = concurrently(&db, 16, |_, s| {
        until_error(s, INSERT_SCOPED, &[&"o", &"t", &"u"], 1000)
    });
    assert_eq!(all_stopped_by(&runs, "AC001"), 400, "successful inserts");

    let got = spend_vs_ledger(&mut c);
    for (name, (spent, ledger, limit)) in &got {
        assert_eq!(spent, ledger, "{name}: recorded spend vs ledger");
        assert!(
            spent <= limit,
            "{name}: spent {spent} over its limit {limit}"
        );
        assert_eq!(*spent, dec("1.00"), "{name}: every row covers all three");
    }
    assert_eq!(got["user:u"].0, got["user:u"].2, "the user budget is full");
    assert_audit_empty(&mut c);
}

/// Four groups of sessions whose rows cover overlapping budget sets {org o, team ta|tb, user
/// ua|ub|uc|ud}, budgets created in shuffled order so that the budget_id lock order differs from
/// the scope order and between groups. No deadlock; each budget's spend equals its ledger sum;
/// the shared org budget ends exactly full (the team and user amounts make any other outcome
/// impossible, see below); teams and the org recorded exactly the sums of their members.
#[test]
fn no_overspend_overlapping_budgets_lock_order() {
    let (db, mut c) = budget_db("budget_overlapping");
    assert_row_cost(&mut c);
    // ua + ub = 0.90 > ta = 0.70 and uc + ud = 0.65 > tb = 0.50: each team fills up unless the
    // org does first, and ta + tb = 1.20 > o = 1.00: so the org must end exactly full.
    for call in [
        "ai_budget_set('user', 'ub', 0.40)",
        "ai_budget_set('org', 'o', 1.00)",
        "ai_budget_set('team', 'ta', 0.70)",
        "ai_budget_set('user', 'uc', 0.30)",
        "ai_budget_set('team', 'tb', 0.50)",
        "ai_budget_set('user', 'ua', 0.50)",
        "ai_budget_set('user', 'ud', 0.35)",
    ] {
        budget_set(&mut c, call);
    }
    const GROUPS: [(&str, &str); 4] = [("ta", "ua"), ("ta", "ub"), ("tb", "uc"), ("tb", "ud")];

    let runs = concurrently(&db, 16, |i, s| {
        let (team, user) = GROUPS[i % 4];
        until_error(s, INSERT_SCOPED, &[&"o", &team, &user], 1000)
    });
    let ok = all_stopped_by(&runs, "AC001");
    assert_eq!(ok, 400, "the org budget admits exactly 400 rows");

    let got = spend_vs_ledger(&mut c);
    for (name, (spent, ledger, limit)) in &got {
        assert_eq!(spent, ledger, "{name}: recorded spend vs ledger");
        assert!(
            spent <= limit,
            "{name}: spent {spent} over its limit {limit}"
        );
    }
    assert_eq!(
        got["org:o"].0, got["org:o"].2,
        "org o must end full: {got:?}"
    );
    assert_eq!(
        got["team:ta"].0,
        got["user:ua"].0 + got["user:ub"].0,
        "team ta = sum of its users"
    );
    assert_eq!(
        got["team:tb"].0,
        got["user:uc"].0 + got["user:ud"].0,
        "team tb = sum of its users"
    );
    assert_eq!(
        got["org:o"].0,
        got["team:ta"].0 + got["team:tb"].0,
        "org = sum of its teams"
    );
    assert_audit_empty(&mut c);
}

/// 16 sessions crossing 80 %, 95 % and 100 % of a 1.00 USD budget concurrently: exactly one
/// budget_alerts row and exactly one NOTIFY aicost_budget per threshold, each recording the spend
/// right after the crossing (exact, since every row costs 0.0025).
#[test]
fn alert_fires_once() {
    let (db, mut c) = budget_db("budget_alert_once");
    assert_row_cost(&mut c);
    let b = budget_set(&mut c, "ai_budget_set('user', 'u', 1.00)");
    let mut listener = session(&db);
    exec(&mut listener, "LISTEN aicost_budget");

    let runs = concurrently(&db, 16, |_, s| {
        let pid = backend_pid(s);
        (pid, until_error(s, INSERT_USER_U, &[], 1000))
    });
    let writer_pids: Vec<i32> = runs.iter().map(|(p, _)| *p).collect();
    let runs: Vec<Run> = runs.into_iter().map(|(_, r)| r).collect();
    assert_eq!(all_stopped_by(&runs, "AC001"), 400);

    let alerts: Vec<(String, Decimal, Decimal)> = c
        .query(
            "SELECT threshold, spent, limit_usd FROM aicost.budget_alerts
              WHERE budget_id = $1 ORDER BY spent",
            &[&b],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = [("alert", "0.80"), ("throttle", "0.95"), ("hard", "1.00")];
    assert_eq!(
        alerts,
        expected
            .iter()
            .map(|(t, s)| (t.to_string(), dec(s), dec("1.00")))
            .collect::<Vec<_>>(),
        "one budget_alerts row per threshold"
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM aicost.budget_alerts"),
        3
    );

    exec(&mut listener, "SELECT 1");
    let got = drain(
        &mut listener,
        Duration::from_secs(5),
        Duration::from_millis(500),
    );
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for n in &got {
        assert_eq!(n.channel(), "aicost_budget");
        assert!(
            writer_pids.contains(&n.process_id()),
            "sent by a writer's backend: {}",
            n.process_id()
        );
        let p: Value = serde_json::from_str(n.payload())
            .unwrap_or_else(|e| panic!("payload {:?} is not JSON: {e}", n.payload()));
        let threshold = p["threshold"]
            .as_str()
            .unwrap_or_else(|| panic!("payload without threshold: {p}"))
            .to_string();
        assert!(
            expected.iter().any(|(t, _)| *t == threshold),
            "unknown threshold in {p}"
        );
        assert_eq!(p["budget_id"].as_i64(), Some(b), "budget_id in {p}");
        // Any role may LISTEN: the payload names the alert only (its spend is in budget_alerts,
        // checked above).
        assert_eq!(
            p.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec![
                "budget_id".into(),
                "period_start".into(),
                "threshold".into()
            ]),
            "payload keys in {p}"
        );
        *seen.entry(threshold).or_default() += 1;
    }
    assert_eq!(
        seen,
        BTreeMap::from([
            ("alert".to_string(), 1),
            ("hard".to_string(), 1),
            ("throttle".to_string(), 1)
        ]),
        "exactly one NOTIFY per threshold: {:?}",
        got.iter().map(|n| n.payload()).collect::<Vec<_>>()
    );
}

/// (spent, reserved) of user u's budget in its current period.
fn spent_reserved(c: &mut Client) -> (Decimal, Decimal) {
    let r = one_row(
        c,
        "SELECT spent, reserved FROM aicost.budget_status WHERE scope = 'user' AND scope_id = 'u'",
        &[],
    );
    (r.get(0), r.get(1))
}

/// Waits (bounded) until the backend `pid` waits for a heavyweight lock.
fn wait_for_lock_wait(watch: &mut Client, pid: i32, what: &str) {
    wait_until(what, Duration::from_secs(10), || {
        count(
            watch,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND wait_event_type = 'Lock'"
            ),
        ) == 1
    });
}

/// Reservations: 16 concurrent holds of 0.30 on 1.00 => exactly 3 fit; a hold in a transaction
/// counts (and blocks a concurrent reservation) until ROLLBACK frees it; a usage row with the
/// reservation's request_id settles it; an expired reservation stops counting.
#[test]
fn perbackend_reservations_under_concurrency() {
    let (db, mut c) = budget_db("budget_reservations");
    assert_row_cost(&mut c);
    budget_set(&mut c, "ai_budget_set('user', 'u', 1.00)");

    let results = concurrently(&db, 16, |_, s| {
        s.query_one("SELECT ai_budget_reserve('user', 'u', 0.30)", &[])
            .map(|r| r.get::<_, i64>(0))
            .map_err(|e| (code_of(&e), describe(&e)))
    });
    let held: Vec<i64> = results.iter().filter_map(|r| r.clone().ok()).collect();
    for r in &results {
        if let Err((code, d)) = r {
            assert_eq!(code, "AC001", "refused reservation: {d}");
        }
    }
    assert_eq!(held.len(), 3, "exactly 3 reservations of 0.30 fit in 1.00");
    assert_eq!(spent_reserved(&mut c), (dec("0"), dec("0.90")));

    // A holds 0.10 in an open transaction: B's reservation of 0.10 waits for A's lock.
    let (mut a, mut b, mut watch) = (session(&db), session(&db), session(&db));
    let b_pid = backend_pid(&mut b);
    exec(&mut a, "BEGIN");
    exec(&mut a, "SELECT ai_budget_reserve('user', 'u', 0.10)");
    thread::scope(|s| {
        let waiter = s.spawn(|| {
            b.query_one("SELECT ai_budget_reserve('user', 'u', 0.10)", &[])
                .map(|r| r.get::<_, i64>(0))
        });
        wait_for_lock_wait(&mut watch, b_pid, "B's reservation to wait for A's hold");
        // A's uncommitted hold is invisible to the others.
        assert_eq!(spent_reserved(&mut watch), (dec("0"), dec("0.90")));
        exec(&mut a, "ROLLBACK");
        let r_b = waiter
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("B's reservation after A's rollback: {}", describe(&e)));
        assert_eq!(spent_reserved(&mut c), (dec("0"), dec("1.00")));
        // Released: 0.90 again.
        let released: Option<bool> =
            one_row(&mut c, "SELECT ai_budget_release($1)", &[&r_b]).get(0);
        assert_eq!(released, Some(true));
    });
    assert_eq!(spent_reserved(&mut c), (dec("0"), dec("0.90")));

    // The COMMIT path: A's committed hold fills the budget, B is refused after waiting for it.
    exec(&mut a, "BEGIN");
    let r_a: i64 = one_row(&mut a, "SELECT ai_budget_reserve('user', 'u', 0.10)", &[]).get(0);
    thread::scope(|s| {
        let waiter = s.spawn(|| b.query_one("SELECT ai_budget_reserve('user', 'u', 0.0025)", &[]));
        wait_for_lock_wait(&mut watch, b_pid, "B's reservation to wait for A's hold");
        exec(&mut a, "COMMIT");
        expect_sqlstate(
            waiter.join().unwrap(),
            "AC001",
            "B after A's committed hold",
        );
    });
    assert_eq!(spent_reserved(&mut c), (dec("0"), dec("1.00")));
    expect_error(&mut c, INSERT_USER_U, &[], "AC001");
    let released: Option<bool> = one_row(&mut c, "SELECT ai_budget_release($1)", &[&r_a]).get(0);
    assert_eq!(released, Some(true));

    // Settled by the usage row with its request_id: the hold of 0.10 is replaced by the actual
    // cost. The row fits only because its own reservation no longer counts.
    let r_s: i64 = one_row(
        &mut c,
        "SELECT ai_budget_reserve('user', 'u', 0.10, request_id => 'req-settle')",
        &[],
    )
    .get(0);
    assert_eq!(spent_reserved(&mut c), (dec("0"), dec("1.00")));
    let usage_id: i64 = one_row(
        &mut b,
        "INSERT INTO aicost.usage (request_id, user_id, model, in_tokens, out_tokens)
         VALUES ('req-settle', 'u', 'gpt-4o', 1000, 0) RETURNING usage_id",
        &[],
    )
    .get(0);
    assert_eq!(spent_reserved(&mut c), (dec(ROW_COST), dec("0.90")));
    let settled = one_row(
        &mut c,
        "SELECT settled_at IS NOT NULL, usage_id FROM aicost.budget_reservations WHERE reservation_id = $1",
        &[&r_s],
    );
    assert!(settled.get::<_, bool>(0), "settled");
    assert_eq!(settled.get::<_, Option<i64>>(1), Some(usage_id));
    let again: Option<bool> = one_row(&mut c, "SELECT ai_budget_release($1)", &[&r_s]).get(0);
    assert_eq!(again, None, "a settled reservation cannot be released");

    // Expiry: a 200 ms hold counts, then no longer does. (The checks while it counts are only
    // asserted if they ran within its lifetime.)
    let t0 = Instant::now();
    exec(
        &mut c,
        "SELECT ai_budget_reserve('user', 'u', 0.05, ttl => '200 milliseconds')",
    );
    let during = spent_reserved(&mut c);
    let state: String = one_row(
        &mut b,
        "SELECT state FROM ai_budget_check('user', 'u', 0.06)",
        &[],
    )
    .get(0);
    if t0.elapsed() < Duration::from_millis(180) {
        assert_eq!(
            during,
            (dec(ROW_COST), dec("0.95")),
            "while the hold counts"
        );
        assert_eq!(
            state, "deny",
            "0.06 more does not fit while the hold counts"
        );
    } else {
        eprintln!(
            "reservations_under_concurrency: too slow to check the 200 ms hold while it counts"
        );
    }
    thread::sleep(Duration::from_millis(300));
    assert_eq!(spent_reserved(&mut c), (dec(ROW_COST), dec("0.90")));
    exec(&mut b, "SELECT ai_budget_reserve('user', 'u', 0.0975)");
    assert_eq!(spent_reserved(&mut c), (dec(ROW_COST), dec("0.9975")));
    assert_audit_empty(&mut c);
}

/// 8 sessions insert the same request_id at once: one commits, the others get 23505 and none of
/// their budget charges or rate-limit counts survive. Three rounds: user u with a budget and a
/// rate limit in autocommit (the writers queue on the budget's spend row), user v with only a
/// rate limit (they queue on its counter row) and user w with neither (they queue on the unique
/// index), the last two in explicit transactions that stay open a moment after the insert.
#[test]
fn duplicate_request_ids_not_double_charged() {
    let (db, mut c) = budget_db("budget_duplicates");
    assert_row_cost(&mut c);
    let b = budget_set(&mut c, "ai_budget_set('user', 'u', 1.00)");
    exec(
        &mut c,
        "SELECT ai_rate_limit_set('user', 'u', '1 day', max_requests => 1000);
         SELECT ai_rate_limit_set('user', 'v', '1 day', max_requests => 1000)",
    );

    for (user, rid, in_txn) in [
        ("u", "dup-1", false),
        ("v", "dup-2", true),
        ("w", "dup-3", true),
    ] {
        let results = concurrently(&db, 8, |_, s| {
            let sql = format!(
                "INSERT INTO aicost.usage (request_id, user_id, model, in_tokens, out_tokens)
                 VALUES ('{rid}', '{user}', 'gpt-4o', 1000, 0)"
            );
            if in_txn {
                exec(s, "BEGIN");
                match s.execute(&sql, &[]) {
                    Ok(_) => {
                        exec(s, "SELECT pg_sleep(0.1)");
                        s.batch_execute("COMMIT").map_err(|e| code_of(&e))
                    }
                    Err(e) => {
                        exec(s, "ROLLBACK");
                        Err(code_of(&e))
                    }
                }
            } else {
                s.execute(&sql, &[]).map(|_| ()).map_err(|e| code_of(&e))
            }
        });
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{rid}: exactly one insert commits: {results:?}");
        for r in &results {
            if let Err(code) = r {
                assert_eq!(code, "23505", "{rid}: the others get unique_violation");
            }
        }
        assert_eq!(
            count(
                &mut c,
                &format!("SELECT count(*) FROM aicost.usage WHERE request_id = '{rid}'")
            ),
            1
        );
        if user != "w" {
            assert_eq!(
                count(
                    &mut c,
                    &format!(
                        "SELECT c.requests FROM aicost.rate_counters c JOIN aicost.rate_limits l USING (limit_id)
                          WHERE l.scope_id = '{user}'"
                    )
                ),
                1,
                "{rid}: counted once against the rate limit"
            );
        }
    }
    assert_eq!(
        num(
            &mut c,
            "SELECT spent FROM aicost.budget_status WHERE budget_id = $1",
            &[&b]
        ),
        Some(dec(ROW_COST)),
        "charged once"
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM aicost.usage"), 3);
    assert_audit_empty(&mut c);
}

/// 16 sessions against a limit of 50 requests per hour: exactly 50 rows in the window, every
/// other attempt AC002. Rows carry an explicit created_at (a fixed instant well inside one
/// window), so the test cannot straddle a window boundary; then the same in the next window.
#[test]
fn rate_limit_exact_under_concurrency() {
    let db = TestDb::new("budget_rate_limit");
    let mut c = session(&db);
    exec(
        &mut c,
        "SELECT ai_rate_limit_set('user', 'u', '1 hour', max_requests => 50)",
    );
    for (at, window) in [
        ("2026-01-15 10:30:00+00", "2026-01-15 10:00:00+00"),
        ("2026-01-15 11:00:00+00", "2026-01-15 11:00:00+00"),
    ] {
        let sql = format!(
            "INSERT INTO aicost.usage (created_at, user_id, model, in_tokens, out_tokens)
             VALUES ('{at}', 'u', 'gpt-4o', 1000, 0)"
        );
        let runs = concurrently(&db, 16, |_, s| until_error(s, &sql, &[], 1000));
        assert_eq!(all_stopped_by(&runs, "AC002"), 50, "window of {at}");
        assert_eq!(
            count(
                &mut c,
                &format!(
                    "SELECT count(*) FROM aicost.usage WHERE user_id = 'u'
                      AND created_at >= '{window}' AND created_at < timestamptz '{window}' + interval '1 hour'"
                )
            ),
            50,
            "rows in the window of {at}"
        );
        assert_eq!(
            count(
                &mut c,
                &format!(
                    "SELECT requests FROM aicost.rate_counters WHERE window_start = '{window}'"
                )
            ),
            50,
            "counter of the window of {at}"
        );
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM aicost.usage"), 100);
}

/// scope, scope_id, amount, period, time zone, alert, throttle and hard percent.
type BudgetSpec = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    u32,
    u32,
    u32,
);

/// Budgets of the randomized workload: scope, scope_id, amount, period, time zone, alert,
/// throttle and hard percent. Listed in a shuffled scope order (budget ids follow it).
const RANDOM_BUDGETS: [BudgetSpec; 10] = [
    ("user", "u5", "0.18", "day", "UTC", 80, 95, 100),
    ("org", "o1", "20", "month", "UTC", 80, 95, 100),
    ("team", "t3", "0.35", "day", "Asia/Tokyo", 50, 75, 100),
    ("user", "u2", "15", "lifetime", "UTC", 80, 100, 120),
    ("api_key", "k1", "0.5", "day", "UTC", 80, 95, 100),
    ("team", "t1", "2.5", "week", "UTC", 80, 95, 100),
    ("user", "u1", "6", "month", "America/New_York", 50, 80, 90),
    ("org", "o2", "60", "lifetime", "UTC", 80, 95, 100),
    ("user", "u6", "1.3", "week", "Europe/Berlin", 80, 95, 100),
    ("user", "u7", "5", "month", "UTC", 80, 95, 100),
];

/// Instants on calendar boundaries (UTC month ends and firsts, and local midnights of the budget
/// time zones).
const BOUNDARY_INSTANTS: [&str; 12] = [
    "2025-12-31 23:59:59.999999+00",
    "2026-01-31 23:59:59.999999+00",
    "2026-02-28 23:59:59.999999+00",
    "2025-12-01 00:00:00+00",
    "2026-01-01 00:00:00+00",
    "2026-02-01 00:00:00+00",
    "2026-01-31 23:59:59.999999-05",
    "2026-02-01 00:00:00-05",
    "2026-01-01 00:00:00+09",
    "2025-12-31 23:59:59.999999+09",
    "2026-01-04 23:59:59.999999+01",
    "2026-01-05 00:00:00+01",
];

/// A usage row of the randomized workload.
struct GenRow {
    created_at: String,
    request_id: Option<String>,
    org: String,
    team: Option<String>,
    user: Option<String>,
    api_key: Option<String>,
    tier: &'static str,
    in_tokens: i64,
    out_tokens: i64,
}

/// Users u1..u8; u(2k-1) and u(2k) are in team tk; t1, t2 in org o1, t3, t4 in org o2.
fn team_of(user: u64) -> u64 {
    user.div_ceil(2)
}
fn org_of(team: u64) -> u64 {
    if team <= 2 { 1 } else { 2 }
}

/// A random row, covering the budget (scope, id) if given.
fn gen_row(rng: &mut Rng, covering: Option<(&str, &str)>) -> GenRow {
    let mut user = rng.below(8) + 1;
    let mut api_key = rng.chance(10).then(|| "k1".to_string());
    let mut org_only = rng.chance(4);
    match covering {
        Some(("user", u)) => {
            user = u[1..].parse().unwrap();
            org_only = false;
        }
        Some(("team", t)) => {
            let t: u64 = t[1..].parse().unwrap();
            user = 2 * t - rng.below(2);
            org_only = false;
        }
        Some(("org", o)) => {
            let o: u64 = o[1..].parse().unwrap();
            user = 4 * o - rng.below(4);
        }
        Some(("api_key", k)) => api_key = Some(k.to_string()),
        _ => {}
    }
    let team = team_of(user);
    let created_at = if rng.chance(8) {
        rng.pick(&BOUNDARY_INSTANTS).to_string()
    } else {
        // Uniform over 2025-12-01 .. 2026-02-28 (90 days), to the microsecond.
        let d = rng.below(90);
        let (y, m, day) = match d {
            0..=30 => (2025, 12, d + 1),
            31..=61 => (2026, 1, d - 30),
            _ => (2026, 2, d - 61),
        };
        format!(
            "{y}-{m:02}-{day:02} {:02}:{:02}:{:02}.{:06}+00",
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1_000_000)
        )
    };
    GenRow {
        created_at,
        request_id: None,
        org: format!("o{}", org_of(team)),
        team: (!org_only).then(|| format!("t{team}")),
        user: (!org_only).then(|| format!("u{user}")),
        api_key,
        tier: if rng.chance(15) { "batch" } else { "standard" },
        in_tokens: 200 + rng.below(11_800) as i64,
        out_tokens: rng.below(3_000) as i64,
    }
}

#[derive(Debug, Default)]
struct Stats {
    committed: u64,
    rolled_back: u64,
    ac001: u64,
    reserved: u64,
    reserve_refused: u64,
    released: u64,
    settled: u64,
    expiring: u64,
    other_errors: Vec<String>,
}

const RANDOM_INSERT: &str =
    "INSERT INTO aicost.usage (created_at, request_id, org_id, team_id, user_id, api_key_id,
                           model, service_tier, in_tokens, out_tokens)
     VALUES ($1::text::timestamptz, $2, $3, $4, $5, $6, 'gpt-4o', $7, $8, $9)";

/// Inserts `row`: autocommit, or BEGIN ... COMMIT, or BEGIN ... ROLLBACK. Returns whether it
/// committed.
fn random_insert(c: &mut Client, rng: &mut Rng, row: &GenRow, st: &mut Stats) -> bool {
    let params: [&(dyn ToSql + Sync); 9] = [
        &row.created_at,
        &row.request_id,
        &row.org,
        &row.team,
        &row.user,
        &row.api_key,
        &row.tier,
        &row.in_tokens,
        &row.out_tokens,
    ];
    let kind = rng.below(100);
    let explicit = kind < 20;
    if explicit {
        exec(c, "BEGIN");
    }
    let r = c.execute(RANDOM_INSERT, &params);
    match r {
        Ok(_) if kind < 15 => {
            exec(c, "ROLLBACK");
            st.rolled_back += 1;
            false
        }
        Ok(_) => {
            if explicit {
                exec(c, "COMMIT");
            }
            st.committed += 1;
            true
        }
        Err(e) => {
            if explicit {
                exec(c, "ROLLBACK");
            }
            if code_of(&e) == "AC001" {
                st.ac001 += 1;
            } else {
                st.other_errors.push(describe(&e));
            }
            false
        }
    }
}

/// One session of the randomized workload: `ops` operations from seed `seed`.
fn random_session(c: &mut Client, seed: u64, ops: usize) -> Stats {
    let mut rng = Rng::new(seed);
    let mut st = Stats::default();
    let reserve = c
        .prepare(
            "SELECT ai_budget_reserve($1, $2, $3, request_id => $4, ttl => $5::text::interval)",
        )
        .unwrap();
    let release = c.prepare("SELECT ai_budget_release($1)").unwrap();
    for n in 0..ops {
        if !rng.chance(8) {
            let mut row = gen_row(&mut rng, None);
            if rng.chance(30) {
                row.request_id = Some(format!("s{seed}-{n}"));
            }
            random_insert(c, &mut rng, &row, &mut st);
            continue;
        }
        // A reservation on a random budget: released, settled by a usage row, or left to expire.
        let (scope, scope_id, ..) = *rng.pick(&RANDOM_BUDGETS);
        let amount = Decimal::new(1 + rng.below(60) as i64, 2);
        let request_id = format!("r{seed}-{n}");
        let plan = rng.below(4);
        let ttl = if plan == 3 {
            "150 milliseconds"
        } else {
            "5 minutes"
        };
        let id: i64 = match c.query_one(&reserve, &[&scope, &scope_id, &amount, &request_id, &ttl])
        {
            Ok(r) => r.get(0),
            Err(e) if code_of(&e) == "AC001" => {
                st.reserve_refused += 1;
                continue;
            }
            Err(e) => {
                st.other_errors.push(describe(&e));
                continue;
            }
        };
        st.reserved += 1;
        match plan {
            0 | 1 => {
                let r: Option<bool> = c.query_one(&release, &[&id]).unwrap().get(0);
                assert_eq!(r, Some(true), "releasing an active reservation");
                st.released += 1;
            }
            2 => {
                let mut row = gen_row(&mut rng, Some((scope, scope_id)));
                row.request_id = Some(request_id);
                let committed = random_insert(c, &mut rng, &row, &mut st);
                let r: Option<bool> = c.query_one(&release, &[&id]).unwrap().get(0);
                if committed {
                    assert_eq!(r, None, "the committed usage row settled reservation {id}");
                    st.settled += 1;
                } else {
                    assert_eq!(r, Some(true), "reservation {id} is still active");
                    st.released += 1;
                }
            }
            _ => st.expiring += 1,
        }
    }
    st
}

/// The invariant-violations query of the randomized workload: each row is one violation.
const RANDOM_VIOLATIONS: &str = "
WITH covering AS (
    SELECT b.budget_id,
           CASE b.period WHEN 'lifetime' THEN '-infinity'::timestamptz
                ELSE date_trunc(b.period, u.created_at, b.time_zone) END AS period_start,
           u.cost
      FROM aicost.usage u JOIN aicost.budgets b ON COVERS_PLACEHOLDER
     WHERE u.cost IS NOT NULL
), expected AS (
    SELECT budget_id, period_start, sum(cost) AS spent FROM covering GROUP BY 1, 2
), reached AS (
    SELECT s.budget_id, s.period_start, t.name, b.amount * t.pct / 100 AS at_usd, s.spent
      FROM (SELECT budget_id, period_start, sum(spent) AS spent FROM aicost.budget_spend GROUP BY 1, 2) s JOIN aicost.budgets b USING (budget_id)
     CROSS JOIN LATERAL (VALUES ('alert', b.alert_pct), ('throttle', b.throttle_pct), ('hard', b.hard_pct)) t(name, pct)
)
SELECT format('spend of budget %s period %s: recorded %s, recomputed from the ledger %s',
              coalesce(e.budget_id, s.budget_id), coalesce(e.period_start, s.period_start), s.spent, e.spent)
  FROM expected e FULL JOIN (SELECT budget_id, period_start, sum(spent) AS spent FROM aicost.budget_spend GROUP BY 1, 2) s USING (budget_id, period_start)
 WHERE coalesce(e.spent, 0) <> coalesce(s.spent, 0)
UNION ALL
SELECT format('budget %s period %s: spent %s over its hard limit %s', s.budget_id, s.period_start, s.spent,
              b.amount * b.hard_pct / 100)
  FROM (SELECT budget_id, period_start, sum(spent) AS spent FROM aicost.budget_spend GROUP BY 1, 2) s JOIN aicost.budgets b USING (budget_id)
 WHERE s.spent > b.amount * b.hard_pct / 100
UNION ALL
SELECT format('usage %s: budget_ids %s, covering budgets %s', u.usage_id, u.budget_ids, c.ids)
  FROM aicost.usage u
 CROSS JOIN LATERAL (SELECT coalesce(array_agg(b.budget_id ORDER BY b.budget_id), '{}') AS ids
                       FROM aicost.budgets b WHERE COVERS_PLACEHOLDER) c
 WHERE u.cost IS NOT NULL AND coalesce(u.budget_ids, '{}') <> c.ids
UNION ALL
SELECT format('budget %s period %s reached %s (%s, spent %s) without an alert row', r.budget_id, r.period_start,
              r.name, r.at_usd, r.spent)
  FROM reached r
 WHERE r.spent >= r.at_usd
   AND NOT EXISTS (SELECT 1 FROM aicost.budget_alerts a WHERE (a.budget_id, a.period_start, a.threshold) = (r.budget_id, r.period_start, r.name))
UNION ALL
SELECT format('alert %s of budget %s period %s: spent %s at the crossing, threshold %s, spent now %s', a.threshold,
              a.budget_id, a.period_start, a.spent, r.at_usd, r.spent)
  FROM aicost.budget_alerts a
  LEFT JOIN reached r ON (r.budget_id, r.period_start, r.name) = (a.budget_id, a.period_start, a.threshold)
 WHERE r.spent IS NULL OR a.spent < r.at_usd OR a.spent > r.spent
UNION ALL
SELECT format('reservation %s (%s) settled by usage %s, which does not match', r.reservation_id, r.request_id, r.usage_id)
  FROM aicost.budget_reservations r
 WHERE r.usage_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM aicost.usage u WHERE u.usage_id = r.usage_id AND u.request_id = r.request_id
                     AND r.budget_id = ANY (u.budget_ids))
UNION ALL
SELECT format('reservation %s (%s) not settled by committed usage %s', r.reservation_id, r.request_id, u.usage_id)
  FROM aicost.budget_reservations r JOIN aicost.usage u ON u.request_id = r.request_id
 WHERE r.budget_id = ANY (u.budget_ids) AND (r.settled_at IS NULL OR r.usage_id IS DISTINCT FROM u.usage_id)";

/// A deterministic random workload of 5,000 operations in 4 sessions over 2 orgs, 4 teams, 8
/// users and an API key, with day/week/month/lifetime budgets in several time zones, rows over
/// three calendar months (many on month and local-day boundaries), ~15 % of transactions rolled
/// back, AC001 refusals, and reservations that are released, settled or left to expire. At the
/// end every budget period's recorded spend equals the committed ledger cost recomputed here,
/// none passes its hard limit, every row names exactly its covering budgets, alerts exist exactly
/// for the thresholds reached, and ai_budget_audit() is empty.
#[test]
fn randomized_invariant() {
    let db = TestDb::new("budget_randomized");
    let mut c = session(&db);
    for (scope, id, amount, period, tz, alert, throttle, hard) in RANDOM_BUDGETS {
        budget_set(
            &mut c,
            &format!(
                "ai_budget_set('{scope}', '{id}', {amount}, '{period}', {alert}, {throttle}, {hard}, '{tz}')"
            ),
        );
    }
    const SESSIONS: usize = 4;
    const OPS: usize = 1250;
    let mut listener = session(&db);
    exec(&mut listener, "LISTEN aicost_budget");
    let t = Instant::now();
    let stop = AtomicBool::new(false);
    let (stats, elapsed, notified) = thread::scope(|s| {
        // Collects the NOTIFYs while the workload runs, until 500 ms of quiet after it ended.
        let collector = s.spawn(|| {
            let mut got = Vec::new();
            let mut last = Instant::now();
            let mut n = listener.notifications();
            loop {
                match n.timeout_iter(Duration::from_millis(100)).next() {
                    Ok(Some(x)) => {
                        got.push(x.payload().to_string());
                        last = Instant::now();
                    }
                    Ok(None)
                        if stop.load(Ordering::SeqCst)
                            && last.elapsed() > Duration::from_millis(500) =>
                    {
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => panic!("reading notifications: {e}"),
                }
            }
            got
        });
        let stats = concurrently(&db, SESSIONS, |i, s| {
            random_session(s, 0x5eed_0000 + i as u64, OPS)
        });
        let elapsed = t.elapsed();
        stop.store(true, Ordering::SeqCst);
        (
            stats,
            elapsed,
            collector.join().expect("notification collector"),
        )
    });
    let mut total = Stats::default();
    for (i, st) in stats.iter().enumerate() {
        assert!(
            st.other_errors.is_empty(),
            "session {i}: errors other than AC001: {:#?}",
            st.other_errors
        );
        total.committed += st.committed;
        total.rolled_back += st.rolled_back;
        total.ac001 += st.ac001;
        total.reserved += st.reserved;
        total.reserve_refused += st.reserve_refused;
        total.released += st.released;
        total.settled += st.settled;
        total.expiring += st.expiring;
    }
    eprintln!("randomized_invariant: {total:?} in {elapsed:?}");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM aicost.usage"),
        total.committed as i64,
        "ledger rows = committed inserts"
    );
    assert!(total.rolled_back > 300, "enough rollbacks: {total:?}");
    assert!(total.ac001 > 100, "enough budget refusals: {total:?}");
    assert!(
        total.reserved > 50 && total.reserve_refused > 0 && total.settled > 0,
        "reservations of every kind: {total:?}"
    );

    let violations: Vec<String> = c
        .query(
            &RANDOM_VIOLATIONS.replace("COVERS_PLACEHOLDER", COVERS),
            &[],
        )
        .unwrap_or_else(|e| panic!("invariant query: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        violations.is_empty(),
        "{} invariant violations: {violations:#?}",
        violations.len()
    );
    assert_audit_empty(&mut c);

    // Exactly one NOTIFY per committed alert row; rolled-back crossings sent none.
    let mut alerts: Vec<(i64, String, String)> = c
        .query(
            "SELECT budget_id, to_json(period_start) #>> '{}', threshold FROM aicost.budget_alerts",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut from_notify: Vec<(i64, String, String)> = notified
        .iter()
        .map(|payload| {
            let p: Value = serde_json::from_str(payload)
                .unwrap_or_else(|e| panic!("payload {payload:?} is not JSON: {e}"));
            (
                p["budget_id"].as_i64().expect("budget_id"),
                p["period_start"]
                    .as_str()
                    .expect("period_start")
                    .to_string(),
                p["threshold"].as_str().expect("threshold").to_string(),
            )
        })
        .collect();
    alerts.sort();
    from_notify.sort();
    eprintln!(
        "randomized_invariant: {} alert rows, {} notifications",
        alerts.len(),
        from_notify.len()
    );
    assert!(!alerts.is_empty());
    assert_eq!(from_notify, alerts, "NOTIFYs vs budget_alerts rows");

    // Every period of every budget saw spend; several were filled to the hard limit.
    let full = count(
        &mut c,
        "SELECT count(*) FROM (SELECT budget_id, sum(spent) AS spent FROM aicost.budget_spend GROUP BY budget_id, period_start) s
           JOIN aicost.budgets b USING (budget_id)
          WHERE s.spent > b.amount * b.hard_pct / 100 * 0.9",
    );
    eprintln!("randomized_invariant: {full} budget periods above 90 % of their hard limit");
    assert!(full > 0);
}

/// Rows on both sides of a month end (UTC) and of local midnights land in the right periods of a
/// monthly UTC budget, a daily Asia/Tokyo budget, a weekly America/New_York budget and a lifetime
/// budget.
#[test]
fn period_boundary_explicit_timestamps() {
    let db = TestDb::new("budget_period_boundary");
    let mut c = session(&db);
    exec(&mut c, "SET TimeZone = 'UTC'");
    assert_row_cost(&mut c);
    let month = budget_set(&mut c, "ai_budget_set('user', 'u', 100, 'month')");
    let tokyo = budget_set(
        &mut c,
        "ai_budget_set('team', 't', 100, 'day', time_zone => 'Asia/Tokyo')",
    );
    let ny = budget_set(
        &mut c,
        "ai_budget_set('org', 'o', 100, 'week', time_zone => 'America/New_York')",
    );
    let life = budget_set(&mut c, "ai_budget_set('api_key', 'k', 100, 'lifetime')");
    assert_eq!(
        one_row(
            &mut c,
            "SELECT time_zone FROM aicost.budgets WHERE budget_id = $1",
            &[&month]
        )
        .get::<_, String>(0),
        "UTC"
    );
    // (instant, in_tokens): 0.0025 USD per 1000 tokens, each row a distinct power of two.
    let rows = [
        ("2026-03-30 03:59:59.999999+00", 16000), // Sun 29 Mar 23:59:59.999999 in New York
        ("2026-03-31 14:59:59.999999+00", 1000),  // Tue 31 Mar 23:59:59.999999 in Tokyo
        ("2026-03-31 15:00:00+00", 2000),         // Wed 1 Apr 00:00 in Tokyo
        ("2026-03-31 23:59:59.999999+00", 4000),  // last instant of March (UTC)
        ("2026-04-01 00:00:00+00", 8000),         // first instant of April (UTC)
    ];
    for (at, tokens) in rows {
        let ids: Vec<i64> = one_row(
            &mut c,
            "INSERT INTO aicost.usage (created_at, org_id, team_id, user_id, api_key_id, model, in_tokens, out_tokens)
             VALUES ($1::text::timestamptz, 'o', 't', 'u', 'k', 'gpt-4o', $2, 0) RETURNING budget_ids",
            &[&at, &(tokens as i64)],
        )
        .get(0);
        assert_eq!(ids, {
            let mut v = vec![month, tokyo, ny, life];
            v.sort();
            v
        });
    }
    let spend = |c: &mut Client, b: i64| -> Vec<String> {
        c.query(
            "SELECT period_start::text || ' = ' || sum(spent) FROM aicost.budget_spend
              WHERE budget_id = $1 GROUP BY period_start ORDER BY period_start",
            &[&b],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    assert_eq!(
        spend(&mut c, month),
        [
            "2026-03-01 00:00:00+00 = 0.0575",
            "2026-04-01 00:00:00+00 = 0.02"
        ],
        "monthly UTC"
    );
    assert_eq!(
        spend(&mut c, tokyo),
        [
            "2026-03-29 15:00:00+00 = 0.04",
            "2026-03-30 15:00:00+00 = 0.0025",
            "2026-03-31 15:00:00+00 = 0.035"
        ],
        "daily Asia/Tokyo"
    );
    assert_eq!(
        spend(&mut c, ny),
        [
            "2026-03-23 04:00:00+00 = 0.04",
            "2026-03-30 04:00:00+00 = 0.0375"
        ],
        "weekly America/New_York (ISO weeks from Monday, local time)"
    );
    assert_eq!(spend(&mut c, life), ["-infinity = 0.0775"], "lifetime");
    // Period ends: a Tokyo day is 24 h; a New York day across the DST switch is 23 h.
    let ends: Vec<String> = one_row(
        &mut c,
        "SELECT ARRAY[aicost._period_end('day', 'Asia/Tokyo', '2026-03-31 15:00:00+00')::text,
                      aicost._period_end('month', 'UTC', '2026-03-01 00:00:00+00')::text,
                      aicost._period_end('day', 'America/New_York', '2026-03-08 05:00:00+00')::text,
                      aicost._period_end('week', 'America/New_York', '2026-03-23 04:00:00+00')::text]",
        &[],
    )
    .get(0);
    assert_eq!(
        ends,
        [
            "2026-04-01 15:00:00+00",
            "2026-04-01 00:00:00+00",
            "2026-03-09 04:00:00+00",
            "2026-03-30 04:00:00+00"
        ]
    );
    assert_audit_empty(&mut c);
}

/// ai_reprice_unpriced() charges the budgets of several unpriced rows in one transaction, row
/// after row (usage_id order); a concurrent insert covering the same budgets locks them in
/// budget_id order. Neither may deadlock: the interleaving is forced with a third session that
/// holds the first budget's spend row, so that the insert queues for it before the repricing.
#[test]
fn perbackend_reprice_concurrent_with_insert_no_deadlock() {
    let (db, mut c) = budget_db("budget_reprice_lock_order");
    let team = budget_set(&mut c, "ai_budget_set('team', 't', 100)");
    let user = budget_set(&mut c, "ai_budget_set('user', 'u', 100)");
    assert!(team < user);
    // Both spend rows exist (priced rows), then two unpriced rows: the first charged to the user
    // budget only, the second to the team budget only.
    exec(
        &mut c,
        "INSERT INTO aicost.usage (team_id, user_id, model, in_tokens, out_tokens)
              VALUES ('t', 'u', 'gpt-4o', 1000, 0);
         SET aicost.ledger_unknown_model = 'unpriced';
         INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('u', 'acme-1', 1000, 0);
         INSERT INTO aicost.usage (team_id, model, in_tokens, out_tokens) VALUES ('t', 'acme-1', 1000, 0);
         RESET aicost.ledger_unknown_model;
         INSERT INTO aicost.models (model, provider) VALUES ('acme-1', 'acme');
         SELECT ai_price_set('acme-1', 'input', 1), ai_price_set('acme-1', 'output', 2);",
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM aicost.usage WHERE status = 'unpriced'"
        ),
        2
    );

    let (mut holder, mut ins, mut rep, mut watch) =
        (session(&db), session(&db), session(&db), session(&db));
    let (ins_pid, rep_pid) = (backend_pid(&mut ins), backend_pid(&mut rep));
    exec(&mut holder, "BEGIN");
    exec(
        &mut holder,
        &format!("SELECT 1 FROM aicost.budget_spend WHERE budget_id = {team} FOR UPDATE"),
    );
    let (ins_r, rep_r) = thread::scope(|s| {
        let inserter = s.spawn(|| {
            ins.execute(
                "INSERT INTO aicost.usage (team_id, user_id, model, in_tokens, out_tokens)
                 VALUES ('t', 'u', 'gpt-4o', 1000, 0)",
                &[],
            )
            .map_err(|e| describe(&e))
        });
        wait_for_lock_wait(
            &mut watch,
            ins_pid,
            "the insert to queue for the team budget",
        );
        let repricer = s.spawn(|| {
            rep.query_one("SELECT ai_reprice_unpriced()", &[])
                .map(|r| r.get::<_, i64>(0))
                .map_err(|e| describe(&e))
        });
        // The repricing charged the user budget (first row) and waits for the team budget.
        wait_for_lock_wait(
            &mut watch,
            rep_pid,
            "the repricing to queue for the team budget",
        );
        exec(&mut holder, "COMMIT");
        (inserter.join().unwrap(), repricer.join().unwrap())
    });
    assert!(
        ins_r.is_ok() && rep_r.is_ok(),
        "insert: {ins_r:?}, ai_reprice_unpriced(): {rep_r:?}"
    );
    assert_eq!(rep_r, Ok(2));
    assert_audit_empty(&mut c);
}

/// The same race as `reservations_under_concurrency`, with every reservation made in a
/// REPEATABLE READ (then SERIALIZABLE) transaction: a refusal may be AC001 or a serialization
/// failure (40001), but the holds committed may never exceed the budget.
#[test]
fn reservations_repeatable_read_never_overbook() {
    let (db, mut c) = budget_db("budget_reservations_rr");
    let mut overbooked = Vec::new();
    for (user, isolation) in [("u", "REPEATABLE READ"), ("v", "SERIALIZABLE")] {
        budget_set(&mut c, &format!("ai_budget_set('user', '{user}', 1.00)"));
        // The spend row of the period exists already (else the racing inserts of it conflict).
        exec(
            &mut c,
            &format!("SELECT ai_budget_release(ai_budget_reserve('user', '{user}', 0.01))"),
        );
        let results = concurrently(&db, 16, |_, s| {
            exec(s, &format!("BEGIN ISOLATION LEVEL {isolation}"));
            match s.query_one(
                &format!("SELECT ai_budget_reserve('user', '{user}', 0.30)"),
                &[],
            ) {
                Ok(_) => s.batch_execute("COMMIT").map_err(|e| code_of(&e)),
                Err(e) => {
                    exec(s, "ROLLBACK");
                    Err(code_of(&e))
                }
            }
        });
        let ok = results.iter().filter(|r| r.is_ok()).count();
        eprintln!("reservations at {isolation}: {results:?}");
        for r in &results {
            if let Err(code) = r {
                assert!(
                    code == "AC001" || code == "40001",
                    "{isolation}: refusal {code}"
                );
            }
        }
        let reserved = num(
            &mut c,
            "SELECT reserved FROM aicost.budget_status WHERE scope = 'user' AND scope_id = $1",
            &[&user],
        )
        .unwrap();
        if reserved > dec("1.00") {
            overbooked.push(format!(
                "{isolation}: {ok} reservations of 0.30 committed, {reserved} USD held against a \
                 1.00 USD budget (outcomes {results:?})"
            ));
        }
    }
    // An insert in a REPEATABLE READ transaction whose snapshot predates a committed
    // reservation must not ignore it.
    budget_set(&mut c, "ai_budget_set('user', 'w', 1.00)");
    exec(
        &mut c,
        "SELECT ai_budget_release(ai_budget_reserve('user', 'w', 0.01))",
    );
    let mut t = session(&db);
    exec(&mut t, "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1");
    exec(&mut c, "SELECT ai_budget_reserve('user', 'w', 0.90)");
    let r = t.execute(
        "INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('w', 'gpt-4o', 200000, 0)",
        &[],
    );
    match r {
        Ok(_) => {
            exec(&mut t, "COMMIT");
            let (spent, reserved): (Decimal, Decimal) = {
                let row = one_row(
                    &mut c,
                    "SELECT spent, reserved FROM aicost.budget_status WHERE scope_id = 'w'",
                    &[],
                );
                (row.get(0), row.get(1))
            };
            overbooked.push(format!(
                "REPEATABLE READ insert of 0.50 committed past a reservation of 0.90 made after \
                 its snapshot: spent {spent} + reserved {reserved} > 1.00"
            ));
        }
        Err(e) => {
            exec(&mut t, "ROLLBACK");
            let code = code_of(&e);
            assert!(code == "AC001" || code == "40001", "{}", describe(&e));
        }
    }
    assert!(overbooked.is_empty(), "overbooked: {overbooked:#?}");
}

/// A budget lowered while writers queue for its spend row: the writers that get the row after
/// ai_budget_set() committed must be checked against the new amount, not the one they read before
/// waiting (the hard limit must hold for every charge made after the change).
#[test]
fn perbackend_lowered_budget_applies_to_queued_writers() {
    let (db, mut c) = budget_db("budget_lowered_queued");
    assert_row_cost(&mut c);
    budget_set(&mut c, "ai_budget_set('user', 'u', 1.00)");
    exec(
        &mut c,
        "INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('u', 'gpt-4o', 160000, 0)",
    ); // 0.40
    let mut holder = session(&db);
    exec(&mut holder, "BEGIN");
    exec(&mut holder, INSERT_USER_U); // holds the spend row
    let mut watch = session(&db);
    const WRITERS: usize = 8;
    let mut writers: Vec<Client> = (0..WRITERS).map(|_| session(&db)).collect();
    let pids: Vec<i32> = writers.iter_mut().map(backend_pid).collect();
    let results = thread::scope(|s| {
        let handles: Vec<_> = writers
            .iter_mut()
            .map(|w| {
                s.spawn(move || {
                    w.execute(
                        "INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('u', 'gpt-4o', 20000, 0)",
                        &[],
                    ) // 0.05 each
                    .map(|_| ())
                    .map_err(|e| code_of(&e))
                })
            })
            .collect();
        for pid in &pids {
            wait_for_lock_wait(&mut watch, *pid, "a writer to queue for the spend row");
        }
        // Lowered to 0.45 while they wait: 0.40 + 0.0025 spent, so not one more 0.05 row fits.
        exec(&mut c, "SELECT ai_budget_set('user', 'u', 0.45)");
        exec(&mut holder, "COMMIT");
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let row = one_row(
        &mut c,
        "SELECT spent, limit_usd FROM aicost.budget_status WHERE scope_id = 'u'",
        &[],
    );
    let (spent, limit): (Decimal, Decimal) = (row.get(0), row.get(1));
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().err().map(String::as_str) == Some("AC001")),
        "every queued 0.05 USD row must be refused by the lowered budget: outcomes {results:?}, \
         spent {spent} of the new limit {limit}"
    );
    assert_eq!(spent, dec("0.4025"));
    assert_audit_empty(&mut c);
}
