//! Criterion benchmarks of the pure-Rust hot paths: name resolution, cost arithmetic, usage parsing.
//! Each group compares against a peer in the same run (an f64 computation, a plain HashMap lookup).
use aicost_core::catalog::{Model, PriceVersion};
use aicost_core::frozen::{FrozenCatalog, freeze};
use aicost_core::{Catalog, ServiceTier, TokenCounts, UsageType, compute, usage};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;

fn model(name: &str) -> Model {
    let p = |usage, threshold, rate: &str| PriceVersion {
        price_id: 1,
        usage,
        tier: ServiceTier::Standard,
        threshold_tokens: threshold,
        usd_per_mtok: Decimal::from_str(rate).unwrap(),
        valid_from: i64::MIN,
        valid_to: i64::MAX,
    };
    Model {
        name: name.into(),
        provider: "openai".into(),
        aliases: vec![format!("openai/{name}")],
        prices: vec![
            p(UsageType::Input, 0, "2.50"),
            p(UsageType::Output, 0, "10"),
            p(UsageType::CacheRead, 0, "1.25"),
            p(UsageType::Input, 200_000, "5"),
            p(UsageType::Output, 200_000, "15"),
        ],
    }
}

fn bench(c: &mut Criterion) {
    let mut models: Vec<Model> = (0..4000).map(|i| model(&format!("model-{i}"))).collect();
    models.push(model("gpt-4o"));
    let catalog = Catalog::new(models);
    let counts = TokenCounts {
        input: 1234,
        output: 567,
        cached: 200,
        ..Default::default()
    };
    let mut g = c.benchmark_group("cost");
    g.bench_function("resolve+compute (exact decimal)", |b| {
        b.iter(|| match catalog.resolve(black_box("gpt-4o")) {
            aicost_core::Resolved::Found(m, _) => {
                compute(m, black_box(&counts), ServiceTier::Standard, 0)
                    .unwrap()
                    .total
            }
            _ => unreachable!(),
        })
    });
    let peer: HashMap<String, (f64, f64, f64)> =
        [("gpt-4o".to_string(), (2.5e-6, 1e-5, 1.25e-6))].into();
    g.bench_function("peer: HashMap lookup + f64 arithmetic", |b| {
        b.iter(|| {
            let (i, o, cr) = peer[black_box("gpt-4o")];
            let t = black_box(&counts);
            (t.input - t.cached) as f64 * i + t.output as f64 * o + t.cached as f64 * cr
        })
    });
    g.finish();
    let json = serde_json::json!({"prompt_tokens": 1200, "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1024}});
    let text = json.to_string();
    c.bench_function("usage: parse OpenAI usage text", |b| {
        b.iter(|| usage::parse(&serde_json::from_str(black_box(&text)).unwrap()).unwrap())
    });
}

/// Resolving one name from a frozen catalog (as a backend reads it from shared memory), on
/// LiteLLM's price file (`AICOST_SHARED_DATA`, default `../shared/data`; skipped when absent);
/// peer: the same resolution on the decoded in-memory catalog.
fn frozen(c: &mut Criterion) {
    let dir = std::env::var_os("AICOST_SHARED_DATA").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
        std::path::PathBuf::from,
    );
    let Ok(text) = std::fs::read_to_string(dir.join("litellm_model_prices.json")) else {
        return;
    };
    let doc = aicost_core::litellm::parse_doc(&serde_json::from_str(&text).unwrap()).unwrap();
    let models = doc.models.into_iter().map(|m| Model {
        name: m.name,
        provider: m.provider,
        aliases: m.aliases,
        prices: m
            .prices
            .into_iter()
            .map(|p| PriceVersion {
                price_id: 1,
                usage: p.usage,
                tier: p.tier,
                threshold_tokens: p.threshold_tokens,
                usd_per_mtok: p.usd_per_mtok,
                valid_from: i64::MIN,
                valid_to: i64::MAX,
            })
            .collect(),
    });
    let catalog = Catalog::new(models.collect());
    let bytes = freeze(&catalog);
    let frozen = FrozenCatalog::new(&bytes).unwrap();
    let mut g = c.benchmark_group("frozen_candidates_resolve");
    g.bench_function("candidates(gpt-4o) + Catalog::new + resolve", |b| {
        b.iter(|| {
            let name = black_box("gpt-4o");
            match Catalog::new(frozen.candidates(name)).resolve(name) {
                aicost_core::Resolved::Found(m, _) => m.prices.len(),
                _ => unreachable!(),
            }
        })
    });
    g.bench_function("peer: resolve(gpt-4o) on the in-memory catalog", |b| {
        b.iter(|| match catalog.resolve(black_box("gpt-4o")) {
            aicost_core::Resolved::Found(m, _) => m.prices.len(),
            _ => unreachable!(),
        })
    });
    g.bench_function("freeze(whole catalog)", |b| {
        b.iter(|| freeze(black_box(&catalog)))
    });
    g.finish();
}

criterion_group!(benches, bench, frozen);
criterion_main!(benches);
