//! The response cache under real concurrency: separate sessions (one `postgres::Client` per
//! thread) racing on `ai_cache_get_or_lock`, `ai_cache_get`, `ai_cache_put` and `ai_cache_sweep`.
//!
//! Every connection has a `statement_timeout` and every wait in the test is bounded, so a lost
//! wake-up or a deadlock fails the test instead of hanging it.

mod common;

use common::*;
use postgres::Client;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The crash-recovery test restarts the whole cluster: it runs alone (write lock), every other
/// test of this file shares the cluster (read lock).
static CLUSTER: RwLock<()> = RwLock::new(());

fn cluster_shared() -> RwLockReadGuard<'static, ()> {
    CLUSTER.read().unwrap_or_else(|e| e.into_inner())
}

fn parse(text: Option<String>) -> Option<Value> {
    text.map(|t| serde_json::from_str(&t).expect("jsonb text is JSON"))
}

/// `ai_cache_get_or_lock('gpt-4o', request, ns, wait)`: (status, response).
fn get_or_lock(
    c: &mut Client,
    ns: &str,
    request: &Value,
    wait: &str,
) -> Result<(String, Option<Value>), postgres::Error> {
    let row = c.query_one(
        "SELECT status, response::text
           FROM ai_cache_get_or_lock('gpt-4o', $1::text::jsonb, $2, $3::text::interval)",
        &[&request.to_string(), &ns, &wait],
    )?;
    Ok((row.get(0), parse(row.get(1))))
}

#[track_caller]
fn put(c: &mut Client, ns: &str, request: &Value, response: &Value, cost: &str) {
    c.query_one(
        "SELECT ai_cache_put('gpt-4o', $1::text::jsonb, $2::text::jsonb,
                             namespace => $3, cost => $4::text::numeric)",
        &[&request.to_string(), &response.to_string(), &ns, &cost],
    )
    .unwrap_or_else(|e| panic!("ai_cache_put in {ns}: {}", describe(&e)));
}

/// Advisory locks of this database: (held, waited for).
fn advisory_locks(c: &mut Client) -> (i64, i64) {
    let r = one_row(
        c,
        "SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted)
           FROM pg_locks
          WHERE locktype = 'advisory'
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        &[],
    );
    (r.get(0), r.get(1))
}

/// Waits (bounded) until `n` sessions wait for an advisory lock of this database.
fn wait_for_waiters(c: &mut Client, n: i64) {
    wait_until(
        &format!("{n} sessions waiting for the advisory lock"),
        Duration::from_secs(10),
        || advisory_locks(c).1 == n,
    );
}

struct Stats {
    entries: i64,
    bytes: i64,
    hits: i64,
    misses: i64,
    saved_usd: Decimal,
    puts: i64,
    evictions: i64,
}

#[track_caller]
fn stats(c: &mut Client, ns: &str) -> Stats {
    let r = one_row(
        c,
        "SELECT entries, bytes, hits, misses, saved_usd, puts, evictions
           FROM aicost.cache_stats WHERE namespace = $1",
        &[&ns],
    );
    Stats {
        entries: r.get(0),
        bytes: r.get(1),
        hits: r.get(2),
        misses: r.get(3),
        saved_usd: r.get(4),
        puts: r.get(5),
        evictions: r.get(6),
    }
}

fn stampede_request() -> Value {
    json!({"messages": [{"role": "user", "content": "What is a cache stampede?"}], "temperature": 0})
}

/// What one racing session saw.
struct Outcome {
    id: usize,
    status: String,
    response: Option<Value>,
    /// When its `ai_cache_get_or_lock` returned.
    returned: Instant,
    client: Client,
}

/// Eight sessions miss the same key at the same instant: exactly one computes (for ~300 ms, then
/// puts and commits); the seven others wait for that commit and get its response as a hit.
#[test]
fn stampede_one_computes() {
    let _cluster = cluster_shared();
    let db = TestDb::new("cache_stampede");
    const N: usize = 8;
    let ns = "stampede";
    let clients: Vec<Client> = (0..N).map(|_| session(&db)).collect();
    let barrier = Arc::new(Barrier::new(N));
    let commit_sent: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));

    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(id, mut c)| {
            let (barrier, commit_sent) = (barrier.clone(), commit_sent.clone());
            thread::spawn(move || {
                barrier.wait();
                exec(&mut c, "BEGIN");
                let (status, response) = get_or_lock(&mut c, ns, &stampede_request(), "20 seconds")
                    .unwrap_or_else(|e| panic!("session {id}: {}", describe(&e)));
                let returned = Instant::now();
                if status == "compute" {
                    // The "LLM call": at least 300 ms, and until all others wait for this caller.
                    thread::sleep(Duration::from_millis(300));
                    wait_for_waiters(&mut c, N as i64 - 1);
                    let answer =
                        json!({"choices": [{"message": {"content": "computed once"}}], "by": id});
                    put(&mut c, ns, &stampede_request(), &answer, "0.002");
                    *commit_sent.lock().unwrap() = Some(Instant::now());
                }
                exec(&mut c, "COMMIT");
                Outcome {
                    id,
                    status,
                    response,
                    returned,
                    client: c,
                }
            })
        })
        .collect();
    let outcomes: Vec<Outcome> = threads
        .into_iter()
        .map(|t| t.join().expect("session thread"))
        .collect();

    let computing: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == "compute").collect();
    let hits: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == "hit").collect();
    let statuses: Vec<&str> = outcomes.iter().map(|o| o.status.as_str()).collect();
    assert_eq!(computing.len(), 1, "exactly one computes: {statuses:?}");
    assert_eq!(hits.len(), N - 1, "all others hit: {statuses:?}");
    let computer = computing[0];
    assert_eq!(computer.response, None, "compute comes without a response");
    let expected =
        json!({"choices": [{"message": {"content": "computed once"}}], "by": computer.id});
    let commit_sent = commit_sent.lock().unwrap().expect("the computer committed");
    for h in &hits {
        assert_eq!(
            h.response.as_ref(),
            Some(&expected),
            "session {} got another response",
            h.id
        );
        assert!(
            h.returned >= commit_sent,
            "session {} returned its hit {:?} before the computing caller committed",
            h.id,
            commit_sent.duration_since(h.returned)
        );
        assert!(
            h.returned.duration_since(computer.returned) >= Duration::from_millis(300),
            "session {} did not wait for the computation",
            h.id
        );
    }

    // The eight sessions are still connected (`outcomes` owns them): none holds an advisory lock.
    let mut c = session(&db);
    assert_eq!(advisory_locks(&mut c), (0, 0), "no advisory lock left");
    let s = stats(&mut c, ns);
    assert_eq!(s.entries, 1);
    assert_eq!(s.puts, 1);
    assert_eq!(s.hits, N as i64 - 1, "one hit per waiter");
    assert_eq!(s.saved_usd, dec("0.002") * Decimal::from(N - 1));
    eprintln!(
        "stampede_one_computes: misses counted for {N} callers of one missing key: {}",
        s.misses
    );
    drop(outcomes);
}

/// The computing caller aborts: exactly one waiter becomes the new computing caller, the others
/// get its response; no advisory lock survives any of the transactions.
#[test]
fn computing_caller_aborts() {
    let _cluster = cluster_shared();
    let db = TestDb::new("cache_compute_aborts");
    const N: usize = 8;
    let ns = "aborts";
    let clients: Vec<Client> = (0..N).map(|_| session(&db)).collect();
    let barrier = Arc::new(Barrier::new(N));
    let first_done = Arc::new(AtomicBool::new(false));
    let rollback_sent: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let first_id: Arc<Mutex<Option<usize>>> = Arc::new(Mutex::new(None));

    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(id, mut c)| {
            let (barrier, first_done, rollback_sent, first_id) = (
                barrier.clone(),
                first_done.clone(),
                rollback_sent.clone(),
                first_id.clone(),
            );
            thread::spawn(move || {
                barrier.wait();
                exec(&mut c, "BEGIN");
                let (status, response) = get_or_lock(&mut c, ns, &stampede_request(), "20 seconds")
                    .unwrap_or_else(|e| panic!("session {id}: {}", describe(&e)));
                let returned = Instant::now();
                if status == "compute" {
                    if !first_done.swap(true, Ordering::SeqCst) {
                        // The first computing caller fails (its LLM call errors): ROLLBACK.
                        *first_id.lock().unwrap() = Some(id);
                        thread::sleep(Duration::from_millis(200));
                        wait_for_waiters(&mut c, N as i64 - 1);
                        *rollback_sent.lock().unwrap() = Some(Instant::now());
                        exec(&mut c, "ROLLBACK");
                        return Outcome {
                            id,
                            status,
                            response,
                            returned,
                            client: c,
                        };
                    }
                    // A waiter took over: it computes and puts.
                    thread::sleep(Duration::from_millis(100));
                    put(&mut c, ns, &stampede_request(), &json!({"by": id}), "0.002");
                }
                exec(&mut c, "COMMIT");
                Outcome {
                    id,
                    status,
                    response,
                    returned,
                    client: c,
                }
            })
        })
        .collect();
    let mut outcomes: Vec<Outcome> = threads
        .into_iter()
        .map(|t| t.join().expect("session thread"))
        .collect();

    let first = first_id.lock().unwrap().expect("someone computed first");
    let rollback_sent = rollback_sent.lock().unwrap().expect("rolled back");
    let statuses: Vec<(usize, &str)> = outcomes.iter().map(|o| (o.id, o.status.as_str())).collect();
    let second: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status == "compute" && o.id != first)
        .collect();
    assert_eq!(
        second.len(),
        1,
        "exactly one waiter takes over after the abort: {statuses:?}"
    );
    let second = second[0];
    assert!(
        second.returned >= rollback_sent,
        "the new computing caller got 'compute' before the first one rolled back"
    );
    let hits: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == "hit").collect();
    assert_eq!(hits.len(), N - 2, "the rest hit: {statuses:?}");
    for h in &hits {
        assert_eq!(
            h.response,
            Some(json!({"by": second.id})),
            "session {} got another response",
            h.id
        );
        assert!(h.returned >= rollback_sent);
    }

    // All eight sessions are still connected: none holds or waits for an advisory lock (a
    // session-level lock leaked by a waiter would show here).
    let mut c = session(&db);
    assert_eq!(
        advisory_locks(&mut c),
        (0, 0),
        "advisory locks after all transactions ended"
    );
    assert_eq!(
        get_or_lock(&mut c, ns, &stampede_request(), "1 second").map_err(|e| describe(&e)),
        Ok(("hit".to_string(), Some(json!({"by": second.id})))),
        "a new caller hits"
    );
    // Every old session (the aborted one too) can compute a new key at once: nothing is held.
    for (i, o) in outcomes.iter_mut().enumerate() {
        let req = json!({"fresh": i});
        exec(&mut o.client, "BEGIN");
        let (status, _) = get_or_lock(&mut o.client, ns, &req, "0 seconds")
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
        assert_eq!(status, "compute", "session {} on a new key", o.id);
        exec(&mut o.client, "ROLLBACK");
    }
    assert_eq!(advisory_locks(&mut c), (0, 0));
}

/// A waiter gives up after its wait_timeout, not after the computing caller, and its session
/// keeps working with its own lock_timeout.
#[test]
fn waiter_times_out() {
    let _cluster = cluster_shared();
    let db = TestDb::new("cache_waiter_timeout");
    let ns = "timeout";
    let (mut computer, mut waiter, mut watch) = (session(&db), session(&db), session(&db));
    let req = stampede_request();

    exec(&mut computer, "BEGIN");
    let held_since = Instant::now();
    assert_eq!(
        get_or_lock(&mut computer, ns, &req, "1 second").map_err(|e| describe(&e)),
        Ok(("compute".to_string(), None))
    );
    exec(&mut waiter, "SET lock_timeout = '7s'");
    let waiter_pid = backend_pid(&mut waiter);

    // In a transaction (the documented use).
    exec(&mut waiter, "BEGIN");
    let t = Instant::now();
    let r = get_or_lock(&mut waiter, ns, &req, "200 milliseconds").map_err(|e| describe(&e));
    let took = t.elapsed();
    assert_eq!(r, Ok(("timeout".to_string(), None)));
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
        "timed out after {took:?}, expected about 200 ms"
    );
    let shown: String = one_row(&mut waiter, "SHOW lock_timeout", &[]).get(0);
    assert_eq!(
        shown, "7s",
        "lock_timeout inside the transaction after the timeout"
    );
    let one: i32 = one_row(&mut waiter, "SELECT 1", &[]).get(0);
    assert_eq!(one, 1, "the waiter's transaction is still usable");
    let n: i64 = one_row(
        &mut watch,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1",
        &[&waiter_pid],
    )
    .get(0);
    assert_eq!(n, 0, "the waiter holds no advisory lock after its timeout");
    exec(&mut waiter, "COMMIT");
    let shown: String = one_row(&mut waiter, "SHOW lock_timeout", &[]).get(0);
    assert_eq!(shown, "7s", "lock_timeout after the transaction");

    // In autocommit mode.
    let t = Instant::now();
    let r = get_or_lock(&mut waiter, ns, &req, "200 milliseconds").map_err(|e| describe(&e));
    let took = t.elapsed();
    assert_eq!(r, Ok(("timeout".to_string(), None)));
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
        "autocommit: timed out after {took:?}"
    );
    let shown: String = one_row(&mut waiter, "SHOW lock_timeout", &[]).get(0);
    assert_eq!(shown, "7s", "lock_timeout after an autocommit timeout");

    // The computing caller still holds the lock (2 s in all), then gives up without a put.
    assert_eq!(advisory_locks(&mut watch), (1, 0));
    thread::sleep(Duration::from_secs(2).saturating_sub(held_since.elapsed()));
    exec(&mut computer, "ROLLBACK");
    assert_eq!(advisory_locks(&mut watch), (0, 0));
    exec(&mut waiter, "BEGIN");
    assert_eq!(
        get_or_lock(&mut waiter, ns, &req, "200 milliseconds").map_err(|e| describe(&e)),
        Ok(("compute".to_string(), None)),
        "once the lock is free the waiter's session computes"
    );
    exec(&mut waiter, "ROLLBACK");
    let shown: String = one_row(&mut waiter, "SHOW lock_timeout", &[]).get(0);
    assert_eq!(shown, "7s");
}

/// 16 sessions hit and miss while roll-ups run concurrently: the statistics are exact at every
/// moment and at the end (no event lost or counted twice), and so are the per-entry hit counts.
#[test]
fn stats_exact_under_concurrent_hits() {
    let _cluster = cluster_shared();
    let db = TestDb::new("cache_stats_exact");
    const THREADS: usize = 16;
    const CALLS: usize = 500;
    const KEYS: usize = 10;
    let ns = "stats";
    let mut c = session(&db);
    for k in 0..KEYS {
        put(&mut c, ns, &json!({"q": k}), &json!({"answer": k}), "0.001");
    }
    // Call i of thread t: a miss on an unknown key when i % 5 == 4, else a hit on key (i + t) % 10.
    let is_miss = |i: usize| i % 5 == 4;
    let mut per_key = [0i64; KEYS];
    let (mut exp_hits, mut exp_misses) = (0i64, 0i64);
    for t in 0..THREADS {
        for i in 0..CALLS {
            if is_miss(i) {
                exp_misses += 1;
            } else {
                exp_hits += 1;
                per_key[(i + t) % KEYS] += 1;
            }
        }
    }
    let total = exp_hits + exp_misses;

    let clients: Vec<Client> = (0..THREADS).map(|_| session(&db)).collect();
    let mut sweeper = session(&db);
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let running = Arc::new(AtomicUsize::new(THREADS));
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(t, mut c)| {
            let (barrier, running) = (barrier.clone(), running.clone());
            thread::spawn(move || {
                let get = c
                    .prepare("SELECT ai_cache_get('gpt-4o', $1::text::jsonb, 'stats')::text")
                    .expect("prepare");
                barrier.wait();
                for i in 0..CALLS {
                    let req = if is_miss(i) {
                        json!({"unknown": t, "i": i})
                    } else {
                        json!({"q": (i + t) % KEYS})
                    };
                    let got: Option<String> = c
                        .query_one(&get, &[&req.to_string()])
                        .unwrap_or_else(|e| panic!("thread {t} call {i}: {}", describe(&e)))
                        .get(0);
                    let expected = (!is_miss(i)).then(|| json!({"answer": (i + t) % KEYS}));
                    assert_eq!(parse(got), expected, "thread {t} call {i}");
                }
                running.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    let sweeps = {
        let (barrier, running) = (barrier.clone(), running.clone());
        thread::spawn(move || {
            barrier.wait();
            let (mut sweeps, mut rolled_mid_run, mut last_seen) = (0, 0, 0i64);
            while running.load(Ordering::SeqCst) > 0 {
                sweeper
                    .query_one("SELECT ai_cache_sweep()", &[])
                    .unwrap_or_else(|e| panic!("ai_cache_sweep: {}", describe(&e)));
                sweeps += 1;
                // The view is exact at any moment: never decreasing, never above what was done.
                let r = one_row(
                    &mut sweeper,
                    "SELECT s.hits + s.misses, n.hits + n.misses
                       FROM aicost.cache_stats s JOIN aicost.cache_namespaces n USING (namespace)
                      WHERE namespace = 'stats'",
                    &[],
                );
                let (seen, rolled): (i64, i64) = (r.get(0), r.get(1));
                assert!(
                    seen >= last_seen && seen <= total,
                    "cache_stats went from {last_seen} to {seen} calls (of {total})"
                );
                last_seen = seen;
                if rolled > 0 && rolled < total {
                    rolled_mid_run += 1;
                }
            }
            (sweeps, rolled_mid_run)
        })
    };
    for w in workers {
        w.join().expect("worker thread");
    }
    let (sweeps, rolled_mid_run) = sweeps.join().expect("sweeper thread");
    eprintln!(
        "stats_exact_under_concurrent_hits: {sweeps} sweeps ran during the gets, {rolled_mid_run} of them saw a partial roll-up"
    );
    assert!(
        rolled_mid_run > 0,
        "no roll-up raced with the gets ({sweeps} sweeps)"
    );

    let check = |c: &mut Client, when: &str| {
        let s = stats(c, ns);
        assert_eq!(s.hits, exp_hits, "hits {when}");
        assert_eq!(s.misses, exp_misses, "misses {when}");
        assert_eq!(
            s.saved_usd,
            Decimal::from(exp_hits) * dec("0.001"),
            "saved_usd {when}"
        );
        let exact: bool = one_row(
            c,
            "SELECT saved_usd = $1::text::numeric FROM aicost.cache_stats WHERE namespace = $2",
            &[&format!("{}", Decimal::from(exp_hits) * dec("0.001")), &ns],
        )
        .get(0);
        assert!(exact, "saved_usd {when} is exactly hits x 0.001 in numeric");
        assert_eq!(s.entries, KEYS as i64);
    };
    check(&mut c, "before the final sweep");
    exec(&mut c, "SELECT ai_cache_sweep()");
    check(&mut c, "after the final sweep");
    let pending: i64 = one_row(&mut c, "SELECT count(*) FROM aicost.cache_events", &[]).get(0);
    assert_eq!(pending, 0, "the final sweep rolled everything up");
    let mut got = BTreeMap::new();
    for r in c
        .query(
            "SELECT (request ->> 'q')::int, hits FROM aicost.cache_entries WHERE namespace = $1",
            &[&ns],
        )
        .unwrap()
    {
        got.insert(r.get::<_, i32>(0) as usize, r.get::<_, i64>(1));
    }
    let want: BTreeMap<usize, i64> = per_key.iter().copied().enumerate().collect();
    assert_eq!(got, want, "per-entry hit counts");
    assert_eq!(got.values().sum::<i64>(), exp_hits);
}

/// 8 sessions put 100 distinct entries each into a namespace limited to 50: exactly 50 remain,
/// and the counters agree with the table.
#[test]
fn concurrent_puts_respect_limit() {
    let _cluster = cluster_shared();
    let db = TestDb::new("cache_puts_limit");
    const THREADS: usize = 8;
    const PUTS: usize = 100;
    const LIMIT: i64 = 50;
    let ns = "limited";
    let mut c = session(&db);
    exec(
        &mut c,
        "SELECT ai_cache_namespace_set('limited', max_entries => 50)",
    );
    let clients: Vec<Client> = (0..THREADS).map(|_| session(&db)).collect();
    let barrier = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(t, mut c)| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut errors = Vec::new();
                for i in 0..PUTS {
                    let r = c.query_one(
                        "SELECT ai_cache_put('gpt-4o', $1::text::jsonb, $2::text::jsonb,
                                             namespace => 'limited', cost => 0.001)",
                        &[
                            &json!({"t": t, "i": i}).to_string(),
                            &json!({"answer": format!("{t}/{i}"), "pad": "x".repeat(i)})
                                .to_string(),
                        ],
                    );
                    if let Err(e) = r {
                        errors.push(format!("thread {t} put {i}: {}", describe(&e)));
                    }
                }
                errors
            })
        })
        .collect();
    let errors: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("put thread"))
        .collect();
    let deadlocks = errors.iter().filter(|e| e.contains(" 40P01:")).count();
    assert!(
        errors.is_empty(),
        "{} puts failed ({deadlocks} deadlocks, an extension bug): {errors:#?}",
        errors.len()
    );

    let r = one_row(
        &mut c,
        "SELECT count(*), coalesce(sum(bytes), 0)::bigint FROM aicost.cache_entries WHERE namespace = $1",
        &[&ns],
    );
    let (n, bytes): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(n, LIMIT, "entries left in the namespace");
    let s = stats(&mut c, ns);
    assert_eq!(s.entries, LIMIT, "cache_stats.entries");
    assert_eq!(s.bytes, bytes, "cache_stats.bytes = sum(bytes)");
    assert_eq!(s.puts, (THREADS * PUTS) as i64, "cache_stats.puts");
    assert_eq!(
        s.evictions,
        (THREADS * PUTS) as i64 - LIMIT,
        "cache_stats.evictions"
    );
}

/// Waits (bounded) until the backend `pid` waits for a heavyweight lock.
fn wait_for_lock_wait(watch: &mut Client, pid: i32, what: &str) {
    wait_until(what, Duration::from_secs(10), || {
        let n: i64 = one_row(
            watch,
            "SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted",
            &[&pid],
        )
        .get(0);
        n > 0
    });
}

/// A put that starts while another transaction changes the namespace's durability must write
/// where the committed policy says: the policy has to be read after the namespace is locked.
#[test]
fn put_racing_durability_change() {
    let _cluster = cluster_shared();
    let db = TestDb::new("cache_put_durability_race");
    let (mut admin, mut writer, mut watch) = (session(&db), session(&db), session(&db));
    put(
        &mut admin,
        "flip",
        &json!({"q": 0}),
        &json!({"a": 0}),
        "0.001",
    );
    let writer_pid = backend_pid(&mut writer);

    exec(&mut admin, "BEGIN");
    exec(
        &mut admin,
        "SELECT ai_cache_namespace_set('flip', durability => 'unlogged')",
    );
    let put_thread = thread::spawn(move || {
        put(
            &mut writer,
            "flip",
            &json!({"q": 1}),
            &json!({"a": 1}),
            "0.001",
        );
        writer
    });
    wait_for_lock_wait(
        &mut watch,
        writer_pid,
        "the put to wait for the namespace being changed",
    );
    exec(&mut admin, "COMMIT");
    let _writer = put_thread.join().expect("put thread");

    let r = one_row(
        &mut watch,
        "SELECT (SELECT count(*) FROM aicost.cache_entries WHERE namespace = 'flip'),
                (SELECT count(*) FROM aicost.cache_entries_unlogged WHERE namespace = 'flip'),
                (SELECT count(*) FROM aicost.cache_stats WHERE namespace = 'flip')",
        &[],
    );
    let (logged, unlogged, stats_rows): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(
        (logged, unlogged, stats_rows),
        (0, 2, 1),
        "(logged entries, unlogged entries, cache_stats rows) of the now unlogged namespace: the \
         racing put used the policy it read before it waited for the namespace row"
    );
    assert_eq!(stats(&mut watch, "flip").entries, 2);
}

/// A transaction that writes the cache twice (like ai_cache_warm) while ai_cache_sweep() rolls up
/// the statistics of the same namespace: both must finish, neither may deadlock.
#[test]
fn second_put_racing_sweep_no_deadlock() {
    let _cluster = cluster_shared();
    let db = TestDb::new("cache_put_sweep_deadlock");
    let (mut a, mut sweeper, mut watch) = (session(&db), session(&db), session(&db));
    exec(
        &mut a,
        "SELECT ai_cache_namespace_set('busy', max_entries => 2)",
    );
    put(&mut a, "busy", &json!({"q": 0}), &json!({"a": 0}), "0.001");
    let sweeper_pid = backend_pid(&mut sweeper);

    exec(&mut a, "BEGIN");
    // First put: room left, no eviction; the transaction now holds the namespace's row.
    put(&mut a, "busy", &json!({"q": 1}), &json!({"a": 1}), "0.001");
    // A hit, logged for the roll-up.
    let hit: Option<String> = one_row(
        &mut watch,
        "SELECT ai_cache_get('gpt-4o', '{\"q\": 0}', 'busy')::text",
        &[],
    )
    .get(0);
    assert!(hit.is_some());
    // The sweep takes the event log, then waits for the namespace row.
    let sweep = thread::spawn(move || {
        let r = sweeper
            .query_one("SELECT ai_cache_sweep()", &[])
            .map(|_| ())
            .map_err(|e| describe(&e));
        (sweeper, r)
    });
    wait_for_lock_wait(
        &mut watch,
        sweeper_pid,
        "ai_cache_sweep() to wait for the namespace row",
    );
    // Second put: over the limit, so it evicts, and eviction rolls the event log up.
    let second = a
        .query_one(
            "SELECT ai_cache_put('gpt-4o', '{\"q\": 2}', '{\"a\": 2}', namespace => 'busy', cost => 0.001)",
            &[],
        )
        .map(|_| ())
        .map_err(|e| describe(&e));
    let commit = if second.is_ok() {
        a.batch_execute("COMMIT").map_err(|e| describe(&e))
    } else {
        exec(&mut a, "ROLLBACK");
        Ok(())
    };
    let (_sweeper, swept) = sweep.join().expect("sweep thread");
    assert_eq!(
        (second, commit, swept),
        (Ok(()), Ok(()), Ok(())),
        "(second put, its commit, the concurrent sweep): a 40P01 here is a lock-order bug in \
         sql/cache.sql (the put locks the namespace row, then the event log; the roll-up the \
         other way round)"
    );
    let s = stats(&mut watch, "busy");
    assert_eq!((s.entries, s.hits, s.puts), (2, 1, 3));
}

/// Bounded namespaces at their limit (every put evicts) in two namespaces, with gets in both: the
/// puts of one namespace must not deadlock with those of the other (autocommit, one call each).
#[test]
fn evicting_puts_in_two_namespaces_no_deadlock() {
    let _cluster = cluster_shared();
    let db = TestDb::new("cache_two_ns_deadlock");
    let mut c = session(&db);
    for ns in ["left", "right"] {
        exec(
            &mut c,
            &format!("SELECT ai_cache_namespace_set('{ns}', max_entries => 20)"),
        );
        for q in 0..20 {
            put(&mut c, ns, &json!({"q": q}), &json!({"a": q}), "0.001");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    // Three putters per namespace, two sessions getting from both.
    let roles = [
        "left", "right", "left", "right", "left", "right", "get", "get",
    ];
    let clients: Vec<Client> = roles.iter().map(|_| session(&db)).collect();
    let barrier = Arc::new(Barrier::new(roles.len()));
    let threads: Vec<_> = roles
        .into_iter()
        .zip(clients)
        .enumerate()
        .map(|(t, (role, mut c))| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let (mut done, mut i) = (0usize, 0usize);
                while Instant::now() < deadline {
                    i += 1;
                    let r = if role == "get" {
                        c.query_one(
                            "SELECT ai_cache_get('gpt-4o', jsonb_build_object('q', $1::int % 20), 'left'),
                                    ai_cache_get('gpt-4o', jsonb_build_object('q', $1::int % 20), 'right')",
                            &[&(i as i32)],
                        )
                    } else {
                        c.query_one(
                            "SELECT ai_cache_put('gpt-4o', jsonb_build_object('t', $1::int, 'i', $2::int),
                                                 '{\"a\": 1}', namespace => $3, cost => 0.001)",
                            &[&(t as i32), &(i as i32), &role],
                        )
                    };
                    match r {
                        Ok(_) => done += 1,
                        Err(e) => return (role, done, Some(describe(&e))),
                    }
                }
                (role, done, None)
            })
        })
        .collect();
    let results: Vec<(&str, usize, Option<String>)> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.2.as_ref()).collect();
    let puts: usize = results.iter().filter(|r| r.0 != "get").map(|r| r.1).sum();
    eprintln!("evicting_puts_in_two_namespaces_no_deadlock: {puts} puts in 3 s");
    assert!(
        errors.is_empty(),
        "{} sessions failed (40P01 = deadlock, an extension bug: an evicting put rolls up the \
         whole event log, i.e. also updates the other namespace's row, which a put there holds \
         while it waits for the event rows this one deleted): {errors:#?}",
        errors.len()
    );
    for ns in ["left", "right"] {
        let s = stats(&mut c, ns);
        assert_eq!(s.entries, 20, "{ns} entries");
    }
}

/// The cluster's data directory (`AICOST_CLUSTER_DIR`/data, default: scripts/cluster.sh's) if it
/// belongs to the server the tests talk to (its postmaster.pid names the DSN's port); else why not.
fn own_cluster_data_dir() -> Result<(PathBuf, PathBuf, u16), String> {
    // scripts/cluster.sh's default: scripts/pg-dir.sh pgcluster (pgcluster-$PG for a PostgreSQL
    // other than 15), else target/pgcluster.
    let name = match std::env::var("PG") {
        Ok(v) if v != "15" && !v.is_empty() => format!("pgcluster-{v}"),
        _ => "pgcluster".to_string(),
    };
    let dir = match std::env::var_os("AICOST_CLUSTER_DIR") {
        Some(d) => PathBuf::from(d),
        None => Command::new("bash")
            .arg(repo_root().join("scripts/pg-dir.sh"))
            .arg(&name)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| repo_root().join("target/pgcluster")),
    };
    let data = dir.join("data");
    let pid_file = data.join("postmaster.pid");
    let text = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("cannot read {}: {e}", pid_file.display()))?;
    let port: u16 = text
        .lines()
        .nth(3)
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("no port in {}", pid_file.display()))?;
    let dsn_port = base_config().get_ports().first().copied().unwrap_or(5432);
    if port != dsn_port {
        return Err(format!(
            "{} runs on port {port}, the tests talk to port {dsn_port}",
            data.display()
        ));
    }
    Ok((dir, data, port))
}

/// A crash (immediate shutdown, then crash recovery) empties the unlogged namespace, counters
/// included, and keeps the logged one.
#[test]
fn unlogged_namespace_is_emptied_by_crash_recovery() {
    let (dir, data, port) = match own_cluster_data_dir() {
        Ok(x) => x,
        Err(why) => {
            eprintln!("unlogged_namespace_is_emptied_by_crash_recovery: SKIPPED: {why}");
            return;
        }
    };
    // Alone on the cluster: no other test of this file has a session while it crashes.
    let _cluster = CLUSTER.write().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new("cache_unlogged_crash");
    {
        let mut c = session(&db);
        exec(
            &mut c,
            "SELECT ai_cache_namespace_set('volatile', durability => 'unlogged');
             SELECT ai_cache_namespace_set('durable', durability => 'logged')",
        );
        put(
            &mut c,
            "volatile",
            &json!({"q": 1}),
            &json!({"a": 1}),
            "0.01",
        );
        put(
            &mut c,
            "durable",
            &json!({"q": 2}),
            &json!({"a": 2}),
            "0.01",
        );
        assert_eq!(stats(&mut c, "volatile").entries, 1);
        assert_eq!(stats(&mut c, "durable").entries, 1);
        let n: i64 = one_row(
            &mut c,
            "SELECT count(*) FROM aicost.cache_entries_unlogged WHERE namespace = 'volatile'",
            &[],
        )
        .get(0);
        assert_eq!(
            n, 1,
            "the unlogged namespace's entry is in the unlogged table"
        );
    }

    let out = as_postgres(&pg_bin("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .args(["-m", "immediate", "-w", "-t", "30", "stop"])
        .output()
        .expect("running pg_ctl stop");
    assert!(
        out.status.success(),
        "pg_ctl stop -m immediate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(repo_root().join("scripts/cluster.sh"))
        .arg("start")
        .env("AICOST_CLUSTER_DIR", &dir)
        .env("AICOST_PGPORT", port.to_string())
        .output()
        .expect("running scripts/cluster.sh start");
    assert!(
        out.status.success(),
        "scripts/cluster.sh start after the crash: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut c = session(&db);
    let n: i64 = one_row(
        &mut c,
        "SELECT count(*) FROM aicost.cache_entries_unlogged",
        &[],
    )
    .get(0);
    assert_eq!(n, 0, "crash recovery empties the unlogged entries");
    let get = |c: &mut Client, ns: &str, q: i32| -> Option<Value> {
        parse(
            one_row(
                c,
                "SELECT ai_cache_get('gpt-4o', jsonb_build_object('q', $1::int), $2)::text",
                &[&q, &ns],
            )
            .get(0),
        )
    };
    assert_eq!(
        get(&mut c, "volatile", 1),
        None,
        "the unlogged entry is gone"
    );
    assert_eq!(
        get(&mut c, "durable", 2),
        Some(json!({"a": 2})),
        "the logged entry survived"
    );
    let v = stats(&mut c, "volatile");
    assert_eq!(
        (v.entries, v.bytes),
        (0, 0),
        "unlogged namespace's counters"
    );
    let d = stats(&mut c, "durable");
    assert_eq!(d.entries, 1, "logged namespace's counters");
    let durability: String = one_row(
        &mut c,
        "SELECT durability FROM aicost.cache_stats WHERE namespace = 'volatile'",
        &[],
    )
    .get(0);
    assert_eq!(
        durability, "unlogged",
        "the policy itself is logged and kept"
    );
    // The namespace works again after the crash.
    put(
        &mut c,
        "volatile",
        &json!({"q": 1}),
        &json!({"a": 3}),
        "0.01",
    );
    assert_eq!(get(&mut c, "volatile", 1), Some(json!({"a": 3})));
    assert_eq!(stats(&mut c, "volatile").entries, 1);
}
