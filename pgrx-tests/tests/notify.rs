//! Committed catalog changes are announced on channel aicost_pricing (once per transaction and
//! payload, naming the changed models); uncommitted and rolled-back ones never are.

mod common;

use common::*;
use postgres::Notification;
use std::time::Duration;

fn show(ns: &[Notification]) -> Vec<String> {
    ns.iter()
        .map(|n| format!("{}:{}:{}", n.process_id(), n.channel(), n.payload()))
        .collect()
}

#[test]
fn notify() {
    let db = TestDb::new("notify");
    let (mut a, mut b) = (db.connect(), db.connect());
    exec(&mut b, "LISTEN aicost_pricing");
    let a_pid = backend_pid(&mut a);
    let quiet = Duration::from_millis(300);
    assert!(
        drain(&mut b, quiet, quiet).is_empty(),
        "nothing before any change"
    );

    // Committed change: exactly one notification from A's backend naming gpt-4o.
    exec(&mut a, "BEGIN");
    exec(&mut a, "SELECT ai_price_set('gpt-4o', 'input', 3.00)");
    // Not yet committed: nothing may arrive.
    exec(&mut b, "SELECT 1");
    let early = drain(&mut b, quiet, quiet);
    assert!(
        early.is_empty(),
        "notification before COMMIT: {:?}",
        show(&early)
    );
    exec(&mut a, "COMMIT");
    exec(&mut b, "SELECT 1"); // pumps the connection (timeout_iter polls it as well)
    let got = drain(&mut b, Duration::from_secs(5), quiet);
    assert_eq!(
        got.len(),
        1,
        "exactly one notification per committed change: {:?}",
        show(&got)
    );
    let n = &got[0];
    assert_eq!(n.channel(), "aicost_pricing");
    assert!(
        n.payload().split(',').any(|m| m == "gpt-4o"),
        "payload {:?} should name gpt-4o",
        n.payload()
    );
    assert_eq!(n.process_id(), a_pid, "sent by A's backend");

    // Rolled-back change: nothing.
    exec(&mut a, "BEGIN");
    exec(&mut a, "SELECT ai_price_set('gpt-4o', 'input', 4.00)");
    exec(&mut a, "ROLLBACK");
    exec(&mut b, "SELECT 1");
    let none = drain(&mut b, quiet, quiet);
    assert!(
        none.is_empty(),
        "a rolled-back change must not notify: {:?}",
        show(&none)
    );

    // A change rolled back to a savepoint inside a committed transaction: only the kept change.
    exec(&mut a, "BEGIN");
    exec(&mut a, "SAVEPOINT s");
    exec(&mut a, "SELECT ai_price_set('gpt-4o-mini', 'input', 0.2)");
    exec(&mut a, "ROLLBACK TO SAVEPOINT s");
    exec(
        &mut a,
        "INSERT INTO aicost.model_aliases (alias, model) VALUES ('my-4o', 'gpt-4o')",
    );
    exec(&mut a, "COMMIT");
    let got = drain(&mut b, Duration::from_secs(5), quiet);
    assert_eq!(got.len(), 1, "{:?}", show(&got));
    assert!(
        got[0].payload().split(',').any(|m| m == "gpt-4o"),
        "{:?}",
        show(&got)
    );
    assert!(
        !got[0].payload().contains("gpt-4o-mini"),
        "rolled-back savepoint change announced: {:?}",
        show(&got)
    );
}
