//! Parity with LiteLLM's own cost calculator: every chat model of LiteLLM's price file, imported
//! with ai_pricing_import(), priced by ai_cost() for the scenarios of litellm/gen_costs.py, must
//! give LiteLLM's cost (LiteLLM computes in floats: equal within 1e-12 + 1e-9 relative), except for
//! the deliberate differences listed in RULES, each with its reason.
//!
//! Inputs: the CSV written by `pgrx-tests/litellm/prepare.sh` (env AICOST_LITELLM_CSV, default
//! target/litellm-costs.csv) and the price file it was computed from (target/litellm-prices.json).

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

const BATCH: usize = 1000;
const MIN_COMPARED: usize = 15_000;

#[derive(Debug, Clone)]
struct CsvRow {
    line: usize,
    model: String,
    scenario: String,
    prompt: i64,
    completion: i64,
    cached: i64,
    cache_write: i64,
    cache_write_1h: i64,
    tier: String,
    litellm: f64,
}

/// What ai_cost returned for a row: the exact cost (text and as a float) or the error.
#[derive(Debug, Clone)]
enum Ours {
    Cost(String, f64),
    Error(String),
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 + 1e-9 * b.abs()
}

/// Everything a rule may look at.
struct Ctx<'a> {
    doc: &'a serde_json::Map<String, Value>,
    /// (model, scenario, tier) -> LiteLLM's cost
    litellm: HashMap<(&'a str, &'a str, &'a str), f64>,
}

impl Ctx<'_> {
    fn entry(&self, model: &str) -> &serde_json::Map<String, Value> {
        self.doc[model].as_object().expect("entry is an object")
    }
    fn provider(&self, model: &str) -> &str {
        self.entry(model)
            .get("litellm_provider")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    /// A per-token price of the entry, as a float.
    fn rate(&self, model: &str, key: &str) -> Option<f64> {
        self.entry(model).get(key).and_then(Value::as_f64)
    }
    fn has_key_with_suffix(&self, model: &str, suffix: &str) -> bool {
        self.entry(model)
            .iter()
            .any(|(k, v)| k.ends_with(suffix) && !v.is_null())
    }
}

struct Rule {
    name: &'static str,
    reason: &'static str,
    /// Whether this rule explains the difference between `ours` and LiteLLM's cost of `row`.
    explains: fn(&Ctx, &CsvRow, &Ours) -> bool,
}

/// Providers whose LiteLLM cost calculators (litellm/cost_calculator.py, cost_per_token) call a
/// provider-specific function that does not forward service_tier: LiteLLM bills them the standard
/// rate whatever the tier.
const TIER_BLIND_PROVIDERS: [&str; 8] = [
    "deepseek",
    "fireworks_ai",
    "xai",
    "tencent",
    "lemonade",
    "dashscope",
    "qwencloud",
    "qwen_ai_platform",
];

const RULES: &[Rule] = &[
    Rule {
        name: "tier-blind provider calculator",
        reason: "LiteLLM's calculators for deepseek, fireworks_ai, xai, tencent, lemonade, dashscope, qwencloud and \
                 qwen_ai_platform drop service_tier, so LiteLLM bills flex/priority requests at the standard rate \
                 (its cost equals its own standard-tier cost of the same scenario); pg_aicost bills the tier's prices",
        explains: |ctx, r, ours| {
            matches!(r.tier.as_str(), "flex" | "priority")
                && TIER_BLIND_PROVIDERS.contains(&ctx.provider(&r.model))
                && matches!(ours, Ours::Cost(..))
                && ctx
                    .litellm
                    .get(&(r.model.as_str(), r.scenario.as_str(), "standard"))
                    .is_some_and(|std| close(r.litellm, *std))
        },
    },
    Rule {
        name: "fireworks_ai default cache-read price",
        reason: "LiteLLM's fireworks_ai calculator bills cache reads of models without cache_read_input_token_cost at \
                 0.5 x input (llms/fireworks_ai/cache_pricing.py); pg_aicost bills tokens without a cache price at the \
                 input price, as the price file states no discount (difference = 0.5 x cached x input price)",
        explains: |ctx, r, ours| {
            let Ours::Cost(_, v) = ours else { return false };
            ctx.provider(&r.model) == "fireworks_ai"
                && r.cached > 0
                && ctx.rate(&r.model, "cache_read_input_token_cost").is_none()
                && ctx
                    .rate(&r.model, "input_cost_per_token")
                    .is_some_and(|inp| close(v - 0.5 * r.cached as f64 * inp, r.litellm))
        },
    },
    Rule {
        name: "perplexity calculator ignores cache prices",
        reason: "LiteLLM's perplexity calculator bills every prompt token at input_cost_per_token, cache reads and \
                 writes included (its cost = prompt x input + completion x output); pg_aicost uses the entry's cache prices",
        explains: |ctx, r, ours| {
            matches!(ours, Ours::Cost(..))
                && ctx.provider(&r.model) == "perplexity"
                && r.cached + r.cache_write + r.cache_write_1h > 0
                && match (
                    ctx.rate(&r.model, "input_cost_per_token"),
                    ctx.rate(&r.model, "output_cost_per_token"),
                ) {
                    (Some(i), Some(o)) => {
                        close(r.prompt as f64 * i + r.completion as f64 * o, r.litellm)
                    }
                    _ => false,
                }
        },
    },
    Rule {
        name: "batch price invented by LiteLLM",
        reason: "for a batch request LiteLLM bills a usage type without a *_batches price at half the standard price \
                 (batch_cost_calculator: output_cost_per_token / 2); pg_aicost never guesses a discount: it bills the \
                 standard price of a usage type missing from a partial batch price list (difference = completion x \
                 output price / 2), and raises 22023 for a model without any batch price",
        explains: |ctx, r, ours| {
            if r.tier != "batch" {
                return false;
            }
            match ours {
                Ours::Error(e) => {
                    e.starts_with("22023") && !ctx.has_key_with_suffix(&r.model, "_batches")
                }
                Ours::Cost(_, v) => {
                    ctx.has_key_with_suffix(&r.model, "input_cost_per_token_batches")
                        && !ctx.has_key_with_suffix(&r.model, "output_cost_per_token_batches")
                        && ctx
                            .rate(&r.model, "output_cost_per_token")
                            .is_some_and(|out| {
                                close(v - r.completion as f64 * out / 2.0, r.litellm)
                            })
                }
            }
        },
    },
];

fn csv_path() -> PathBuf {
    std::env::var_os("AICOST_LITELLM_CSV").map_or_else(
        || repo_root().join("target/litellm-costs.csv"),
        PathBuf::from,
    )
}

fn read_csv(path: &PathBuf) -> Vec<CsvRow> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read the LiteLLM reference costs {} ({e}); run `bash pgrx-tests/litellm/prepare.sh` first",
            path.display()
        )
    });
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().expect("CSV header");
    assert_eq!(
        header,
        "model,scenario,prompt_tokens,completion_tokens,cached_tokens,cache_write_tokens,cache_write_1h_tokens,service_tier,litellm_cost",
        "unexpected CSV header"
    );
    lines
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            // gen_costs.py writes no quoted fields (asserted here): model names hold no commas.
            assert!(
                !l.contains('"'),
                "line {}: quoted CSV fields are not supported: {l}",
                i + 1
            );
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 9, "line {}: {l}", i + 1);
            let int = |s: &str| {
                s.parse::<i64>()
                    .unwrap_or_else(|e| panic!("line {}: {s:?}: {e}", i + 1))
            };
            CsvRow {
                line: i + 1,
                model: f[0].to_string(),
                scenario: f[1].to_string(),
                prompt: int(f[2]),
                completion: int(f[3]),
                cached: int(f[4]),
                cache_write: int(f[5]),
                cache_write_1h: int(f[6]),
                tier: f[7].to_string(),
                litellm: f[8]
                    .parse::<f64>()
                    .unwrap_or_else(|e| panic!("line {}: {:?}: {e}", i + 1, f[8])),
            }
        })
        .collect()
}

/// A PL/pgSQL wrapper that turns an error of one row into a value, so one bad row does not abort
/// its batch.
const TRY_COST_SQL: &str = "
CREATE FUNCTION it_try_cost(m text, p bigint, c bigint, r bigint, w bigint, t text, w1 bigint)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN 'OK ' || ai_cost(m, p, c, r, w, t, now(), w1)::text;
EXCEPTION WHEN OTHERS THEN
    RETURN 'ERR ' || SQLSTATE || ' ' || SQLERRM;
END $$";

#[test]
fn litellm_parity() {
    let t0 = Instant::now();
    let rows = read_csv(&csv_path());
    let json_path = litellm_prices_path();
    let json_text = std::fs::read_to_string(&json_path)
        .unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
    let doc_value: Value = serde_json::from_str(&json_text).expect("price file is JSON");
    let doc = doc_value.as_object().expect("price file is an object");

    let db = TestDb::new("litellm_parity");
    let mut c = db.connect();
    if std::env::var_os("AICOST_PARITY_DROP_SCALE_CHECK").is_some() {
        // Escape hatch for diagnosing the rest of the comparison while the import of LiteLLM's file
        // trips over prices_scale_check (prices such as 1.5000020000000002e-05 per token need 16 to
        // 18 decimals per million). Never set in CI.
        eprintln!(
            "litellm_parity: WARNING: AICOST_PARITY_DROP_SCALE_CHECK set: dropping aicost.prices.prices_scale_check"
        );
        exec(
            &mut c,
            "ALTER TABLE aicost.prices DROP CONSTRAINT prices_scale_check",
        );
    }
    let imported: i32 = c
        .query_one("SELECT ai_pricing_import($1::text::jsonb)", &[&json_text])
        .unwrap_or_else(|e| {
            panic!(
                "ai_pricing_import of {} failed: {}",
                json_path.display(),
                describe(&e)
            )
        })
        .get(0);
    eprintln!(
        "litellm_parity: imported {imported} models in {:.1?}",
        t0.elapsed()
    );
    assert!(
        imported > 2000,
        "ai_pricing_import imported only {imported} models"
    );
    exec(&mut c, TRY_COST_SQL);

    let stmt = c
        .prepare(
            "SELECT it_try_cost(u.m, u.p, u.c, u.r, u.w, u.t, u.w1)
               FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::text[], $7::int8[])
                    WITH ORDINALITY AS u(m, p, c, r, w, t, w1, i)
              ORDER BY u.i",
        )
        .unwrap();
    let mut ours: Vec<Ours> = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(BATCH) {
        let col = |f: fn(&CsvRow) -> i64| chunk.iter().map(f).collect::<Vec<i64>>();
        let models: Vec<&str> = chunk.iter().map(|r| r.model.as_str()).collect();
        let tiers: Vec<&str> = chunk.iter().map(|r| r.tier.as_str()).collect();
        let result = c
            .query(
                &stmt,
                &[
                    &models,
                    &col(|r| r.prompt),
                    &col(|r| r.completion),
                    &col(|r| r.cached),
                    &col(|r| r.cache_write),
                    &tiers,
                    &col(|r| r.cache_write_1h),
                ],
            )
            .unwrap_or_else(|e| panic!("pricing a batch: {}", describe(&e)));
        assert_eq!(result.len(), chunk.len());
        for row in result {
            let s: String = row.get(0);
            ours.push(match s.strip_prefix("OK ") {
                Some(v) => Ours::Cost(v.to_string(), v.parse::<f64>().expect("numeric text")),
                None => Ours::Error(s.strip_prefix("ERR ").unwrap_or(&s).to_string()),
            });
        }
    }

    let ctx = Ctx {
        doc,
        litellm: rows
            .iter()
            .map(|r| {
                (
                    (r.model.as_str(), r.scenario.as_str(), r.tier.as_str()),
                    r.litellm,
                )
            })
            .collect(),
    };
    let mut matched = 0usize;
    let mut excluded = vec![0usize; RULES.len()];
    let mut unexplained: Vec<String> = Vec::new();
    let mut by_group: HashMap<String, usize> = HashMap::new();
    for (r, o) in rows.iter().zip(&ours) {
        if let Ours::Cost(_, v) = o
            && close(*v, r.litellm)
        {
            matched += 1;
            continue;
        }
        if let Some(i) = RULES.iter().position(|rule| (rule.explains)(&ctx, r, o)) {
            excluded[i] += 1;
            continue;
        }
        *by_group
            .entry(format!(
                "{} {} {}",
                ctx.provider(&r.model),
                r.tier,
                r.scenario
            ))
            .or_default() += 1;
        unexplained.push(format!(
            "line {} {} {} {} P={} C={} R={} W5m={} W1h={}: litellm={:?} pg_aicost={}",
            r.line,
            r.model,
            r.scenario,
            r.tier,
            r.prompt,
            r.completion,
            r.cached,
            r.cache_write,
            r.cache_write_1h,
            r.litellm,
            match o {
                Ours::Cost(s, _) => s.clone(),
                Ours::Error(e) => format!("ERROR {e}"),
            }
        ));
    }

    let compared = rows.len();
    eprintln!(
        "litellm_parity: compared {compared} rows in {:.1?}: {matched} matched",
        t0.elapsed()
    );
    for (rule, n) in RULES.iter().zip(&excluded) {
        eprintln!(
            "litellm_parity: excluded {n:>5} by rule \"{}\": {}",
            rule.name, rule.reason
        );
    }
    if !unexplained.is_empty() {
        let mut groups: Vec<_> = by_group.into_iter().collect();
        groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        eprintln!(
            "litellm_parity: {} unexplained mismatches by provider/tier/scenario: {groups:?}",
            unexplained.len()
        );
        for u in unexplained.iter().take(60) {
            eprintln!("  {u}");
        }
    }
    assert!(
        compared >= MIN_COMPARED,
        "only {compared} rows compared (at least {MIN_COMPARED} expected)"
    );
    assert!(
        matched >= MIN_COMPARED,
        "only {matched} rows matched exactly (at least {MIN_COMPARED} expected)"
    );
    assert!(
        unexplained.is_empty(),
        "{} unexplained mismatches with LiteLLM (see stderr)",
        unexplained.len()
    );
}
