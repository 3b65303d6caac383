//! In-database unit tests (`cargo pgrx test`). Each runs inside one transaction that is rolled
//! back; commit, rollback and multi-session behaviour is tested in `pgrx-tests/`.

#[pgrx::pg_schema]
pub(crate) mod tests {
    use pgrx::prelude::*;

    pub(crate) fn one<T: IntoDatum + FromDatum>(sql: &str) -> Option<T> {
        Spi::get_one::<T>(sql).expect(sql)
    }

    pub(crate) fn text(sql: &str) -> String {
        one::<String>(&format!("SELECT ({sql})::text")).unwrap_or_else(|| "NULL".into())
    }

    /// ai_cache_key canonicalizes the request straight from jsonb's binary form: the key must be
    /// the one of the parsed document (what 0.3.0's first builds hashed), for tricky and random
    /// documents alike.
    #[pg_test]
    fn cache_key_from_binary_jsonb_equals_the_parsed_one() {
        use aicost_core::cachekey::cache_key;
        let check = |doc: &str| {
            let got = Spi::get_one_with_args::<String>(
                "SELECT ai_cache_key('m-test', $1::jsonb, 'ns')",
                &[doc.into()],
            )
            .unwrap()
            .unwrap();
            let printed = Spi::get_one_with_args::<String>("SELECT $1::jsonb::text", &[doc.into()])
                .unwrap()
                .unwrap();
            let want = cache_key("ns", "m-test", &serde_json::from_str(&printed).unwrap());
            assert_eq!(got, want, "{doc}");
        };
        for doc in [
            r#"{}"#,
            r#"{"a": [], "b": {}, "c": null, "d": true, "e": false}"#,
            r#"{"a": 1, "a!": 2, "a\"": 3, "a#": 4, "ab": 5, "b": 6, "": 7, "\\": 8}"#,
            r#"{"x\ny": "tab\there", "\u0001": "\u001f", "é": "ü", "😀": ["\u00e9"]}"#,
            r#"{"n": [1.0, 1.00, 1e2, -0.0, 0.50, 1E-3, 123456789012345678901234567890.5]}"#,
            r#"{"n": [1.000000000000000000000000000000000001, -7, 3.14159]}"#,
            r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}"#,
            r#"{"deep": [[[[[[{"a": [[{"b": {"c": [1, [2, [3]]]}}]]}]]]]]]}"#,
        ] {
            check(doc);
        }
        // 127 nested containers have a key; 128 are refused (22023), as by the parsed path.
        let nested = |k: usize| format!("{}1{}", "[".repeat(k), "]".repeat(k));
        check(&format!("{{\"a\": {}}}", nested(126)));
        Spi::run(&format!(
            "DO $$ BEGIN PERFORM ai_cache_key('m', '{{\"a\": {}}}'::jsonb); RAISE 'no error';
             EXCEPTION WHEN invalid_parameter_value THEN NULL; END $$",
            nested(127)
        ))
        .unwrap();
        // Random documents (a fixed seed: a failure reproduces).
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn random_value(next: &mut dyn FnMut() -> u64, depth: u32) -> serde_json::Value {
            use serde_json::Value;
            let pick = next() % if depth > 4 { 4 } else { 6 };
            let s = |n: u64| -> String {
                const CH: [&str; 10] = ["a", "b", "\"", "\\", "\n", "é", "!", "#", "\u{1}", "z"];
                (0..n % 5)
                    .map(|i| CH[((n >> (i * 4)) % 10) as usize])
                    .collect()
            };
            match pick {
                0 => Value::Null,
                1 => Value::Bool(next().is_multiple_of(2)),
                2 => serde_json::from_str(&format!("{}.{}", next() % 1000, next() % 100)).unwrap(),
                3 => Value::String(s(next())),
                4 => Value::Array(
                    (0..next() % 4)
                        .map(|_| random_value(next, depth + 1))
                        .collect(),
                ),
                _ => Value::Object(
                    (0..next() % 5)
                        .map(|_| (s(next()), random_value(next, depth + 1)))
                        .collect(),
                ),
            }
        }
        for _ in 0..300 {
            let mut doc = serde_json::Map::new();
            for _ in 0..(next() % 4) {
                let k = format!("k{}", next() % 7);
                doc.insert(k, random_value(&mut next, 0));
            }
            check(&serde_json::Value::Object(doc).to_string());
        }
    }

    #[pg_test]
    fn default_catalog_is_loaded_by_create_extension() {
        assert_eq!(text("ai_cost('gpt-4o', 1000, 500)"), "0.0075");
        assert!(
            one::<i64>("SELECT count(*) FROM aicost.models WHERE origin = 'default'").unwrap()
                >= 40
        );
        let providers = text(
            "(SELECT string_agg(DISTINCT provider, ',' ORDER BY provider) FROM aicost.models)",
        );
        assert_eq!(providers, "anthropic,deepseek,gemini,mistral,openai,xai");
        // Every default model has a source and an as-of date.
        assert_eq!(
            one::<i64>("SELECT count(*) FROM aicost.models WHERE source IS NULL OR as_of IS NULL"),
            Some(0)
        );
    }

    #[pg_test]
    fn cost_is_exact_decimal() {
        assert_eq!(text("ai_cost('gpt-4o', 1234567, 0)"), "3.0864175");
        assert_eq!(text("pg_typeof(ai_cost('gpt-4o', 1, 1))"), "numeric");
        // 0.1 + 0.2 style sums stay exact over many rows.
        assert_eq!(
            text("(SELECT sum(ai_cost('gpt-4o', 40000, 20000)) FROM generate_series(1, 1000))"),
            "300.0"
        );
        assert_eq!(text("ai_cost('gpt-4o', 0, 0)"), "0");
    }

    #[pg_test]
    fn named_arguments_and_cached_tokens() {
        // 6000 uncached × 2.50 + 4000 cached × 1.25 + 500 out × 10, per million
        assert_eq!(
            text("ai_cost('gpt-4o', in_tokens => 10000, out_tokens => 500, cached_tokens => 4000)"),
            "0.025"
        );
        // batch tier: 1000 × 1.25 + 1000 × 5
        assert_eq!(
            text("ai_cost('gpt-4o', 1000, 1000, service_tier => 'batch')"),
            "0.00625"
        );
        assert_eq!(
            text("ai_cost('gpt-4o', 1000, 1000, service_tier => 'default')"),
            "0.0125"
        );
    }

    #[pg_test]
    fn usage_objects_of_each_provider() {
        let openai = r#"{"prompt_tokens": 10000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 4000}}"#;
        assert_eq!(
            text(&format!("ai_cost('gpt-4o', '{openai}'::jsonb)")),
            "0.025"
        );
        let responses = r#"{"input_tokens": 10000, "output_tokens": 500, "input_tokens_details": {"cached_tokens": 4000}}"#;
        assert_eq!(
            text(&format!("ai_cost('gpt-4o', '{responses}'::jsonb)")),
            "0.025"
        );
        // Anthropic input_tokens excludes cache reads and writes: 100 × 3 + 1000 × 0.3 + 200 × 3.75 + 50 × 15
        let anthropic = r#"{"input_tokens": 100, "output_tokens": 50, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200}"#;
        assert_eq!(
            text(&format!(
                "ai_cost('claude-sonnet-4-5', '{anthropic}'::jsonb)"
            )),
            "0.0021"
        );
        let gemini = r#"{"usageMetadata": {"promptTokenCount": 1000, "candidatesTokenCount": 100, "thoughtsTokenCount": 100}}"#;
        // 1000 × 0.30 + 200 × 2.50
        assert_eq!(
            text(&format!(
                "ai_cost('gemini/gemini-2.5-flash', '{gemini}'::jsonb)"
            )),
            "0.0008"
        );
    }

    #[pg_test]
    fn explain_names_model_prices_and_terms() {
        let e = one::<pgrx::JsonB>(
            "SELECT ai_cost_explain('OpenAI/GPT-4o', 10000, 500, cached_tokens => 4000)",
        )
        .unwrap()
        .0;
        assert_eq!(e["model"], "gpt-4o");
        assert_eq!(e["matched_by"], "case-insensitive name or alias");
        assert_eq!(
            text("ai_cost_explain('deepseek/deepseek-chat', 1, 1)->>'matched_by'"),
            "provider prefix"
        );
        assert_eq!(e["total"].to_string(), "0.025");
        let terms = e["terms"].as_array().unwrap();
        assert_eq!(terms.len(), 3);
        assert_eq!(terms[0]["usage_type"], "input");
        assert_eq!(terms[0]["tokens"], 6000);
        assert_eq!(terms[2]["usage_type"], "cache_read");
        assert_eq!(terms[2]["usd_per_mtok"].to_string(), "1.25");
        let id = terms[2]["price_id"].as_i64().unwrap();
        assert_eq!(
            text(&format!(
                "(SELECT usage_type FROM aicost.prices WHERE price_id = {id})"
            )),
            "cache_read"
        );
        let u = one::<pgrx::JsonB>(
            r#"SELECT ai_cost_explain('gpt-4o', '{"input_tokens": 5, "output_tokens": 1}')"#,
        )
        .unwrap()
        .0;
        assert_eq!(u["usage_format"], "openai_responses");
    }

    #[pg_test]
    fn own_uncommitted_price_change_is_visible() {
        assert_eq!(text("ai_cost('gpt-4o', 1000000, 0)"), "2.5");
        Spi::run("SELECT ai_price_set('gpt-4o', 'input', 3.00)").unwrap();
        assert_eq!(text("ai_cost('gpt-4o', 1000000, 0)"), "3");
        // The earlier version still prices earlier instants.
        assert_eq!(
            text("ai_cost('gpt-4o', 1000000, 0, at => now() - interval '1 second')"),
            "2.5"
        );
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM aicost.prices WHERE model = 'gpt-4o' AND usage_type = 'input' AND service_tier = 'standard'"
            ),
            Some(2)
        );
    }

    #[pg_test]
    fn scheduled_price_and_history() {
        Spi::run("SELECT ai_price_set('gpt-4o', 'output', 12, effective_from => now() + interval '1 day')").unwrap();
        assert_eq!(text("ai_cost('gpt-4o', 0, 1000000)"), "10");
        assert_eq!(
            text("ai_cost('gpt-4o', 0, 1000000, at => now() + interval '2 days')"),
            "12"
        );
        // Setting the same price again is a no-op.
        Spi::run("SELECT ai_price_set('gpt-4o', 'output', 12, effective_from => now() + interval '1 day')").unwrap();
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM aicost.prices WHERE model = 'gpt-4o' AND usage_type = 'output' AND service_tier = 'standard'"
            ),
            Some(2)
        );
    }

    #[pg_test]
    fn reimport_records_history_instead_of_overwriting() {
        let doc = |price: &str| {
            format!(
                r#"SELECT ai_pricing_import('{{"acme/m1": {{"litellm_provider": "acme", "mode": "chat", "input_cost_per_token": {price}, "output_cost_per_token": 2e-06, "input_cost_per_token_above_128k_tokens": 4e-06}}}}'::jsonb)"#
            )
        };
        assert_eq!(one::<i32>(&doc("1e-06")), Some(1));
        assert_eq!(text("ai_cost('acme/m1', 100000, 0)"), "0.1");
        assert_eq!(text("ai_cost('m1', 200000, 0)"), "0.8"); // unprefixed name, long-context price
        // Same prices again: nothing new.
        one::<i32>(&doc("1e-06"));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM aicost.prices WHERE model = 'acme/m1'"),
            Some(3)
        );
        // A changed price at a later instant closes the old version.
        Spi::run("SELECT ai_price_set('acme/m1', 'input', 1.5, effective_from => now() + interval '1 hour')").unwrap();
        assert_eq!(
            one::<i64>("SELECT count(*) FROM aicost.prices WHERE model = 'acme/m1'"),
            Some(4)
        );
        assert_eq!(
            text("ai_cost('acme/m1', 100000, 0, at => now() + interval '2 hours')"),
            "0.15"
        );
        assert_eq!(text("ai_cost('acme/m1', 100000, 0)"), "0.1");
    }

    #[pg_test]
    fn pricing_cache_off_gives_the_same_costs() {
        let on = text("ai_cost('claude-sonnet-4-5', 300000, 1000, cached_tokens => 1000)");
        Spi::run("SET LOCAL aicost.pricing_cache = off").unwrap();
        assert_eq!(
            text("ai_cost('claude-sonnet-4-5', 300000, 1000, cached_tokens => 1000)"),
            on
        );
        assert_eq!(text("ai_cost('GPT-4O', 1000, 500)"), "0.0075");
        assert_eq!(text("ai_model_resolve('grok-4.5')"), "xai/grok-4.5");
    }

    #[pg_test]
    fn unknown_model_null_mode_never_returns_zero() {
        Spi::run("SET LOCAL aicost.unknown_model = 'null'").unwrap();
        assert_eq!(text("ai_cost('no-such-model', 1, 1)"), "NULL");
        assert_eq!(text("ai_cost('gpt-4o', 1000, 500)"), "0.0075");
    }

    #[pg_test(error = "unknown model \"gpt4o\"")]
    fn unknown_model_is_an_error() {
        one::<pgrx::AnyNumeric>("SELECT ai_cost('gpt4o', 1, 1)");
    }

    #[pg_test(error = "out_tokens must not be negative (got -1)")]
    fn negative_counts_are_errors() {
        one::<pgrx::AnyNumeric>("SELECT ai_cost('gpt-4o', 1, -1)");
    }

    #[pg_test(
        error = "cached and cache-write tokens (11) exceed in_tokens (10); in_tokens counts all prompt tokens, cached ones included"
    )]
    fn cached_more_than_input_is_an_error() {
        one::<pgrx::AnyNumeric>("SELECT ai_cost('gpt-4o', 10, 1, cached_tokens => 11)");
    }

    #[pg_test(error = "usage must be a JSON object, not an array")]
    fn malformed_usage_is_an_error() {
        one::<pgrx::AnyNumeric>("SELECT ai_cost('gpt-4o', '[1]'::jsonb)");
    }

    #[pg_test(error = "model \"gpt-4o\" has no \"flex\" service tier prices at that time")]
    fn missing_tier_is_an_error() {
        one::<pgrx::AnyNumeric>("SELECT ai_cost('gpt-4o', 1, 1, service_tier => 'flex')");
    }

    #[pg_test(error = "cost is out of range")]
    fn overflow_is_an_error() {
        Spi::run("SELECT ai_price_set('gpt-4o', 'input', 99999.123456789012)").unwrap();
        one::<pgrx::AnyNumeric>("SELECT ai_cost('gpt-4o', 9223372036854775807, 0)");
    }

    #[pg_test(error = "price 0.0000025 per million tokens looks like a per-token price")]
    fn per_token_price_is_rejected() {
        Spi::run("SELECT ai_price_set('gpt-4o', 'input', 0.0000025)").unwrap();
    }

    #[pg_test(
        error = "new row for relation \"prices\" violates check constraint \"prices_per_million_check\""
    )]
    fn unit_check_constraint_catches_direct_inserts() {
        Spi::run("INSERT INTO aicost.prices (model, usage_type, usd_per_mtok) VALUES ('gpt-4o', 'input', 0.0000025)").unwrap();
    }

    #[pg_test]
    fn functions_are_stable_and_parallel_safe() {
        assert_eq!(
            text(
                "(SELECT string_agg(DISTINCT provolatile::text || proparallel::text, ',') FROM pg_proc WHERE proname IN ('ai_cost', 'ai_cost_explain', 'ai_model_resolve'))"
            ),
            "ss"
        );
    }

    /// Logical replication applies rows with session_replication_role = replica, where ordinary
    /// triggers do not fire: the cache invalidation triggers are ENABLE ALWAYS.
    #[pg_test]
    fn invalidation_triggers_fire_on_replicas_too() {
        assert_eq!(
            text(
                "(SELECT string_agg(tgname || ':' || tgenabled::text, ',' ORDER BY tgname) FROM pg_trigger
                   WHERE tgrelid IN ('aicost.models'::regclass, 'aicost.model_aliases'::regclass,
                                     'aicost.prices'::regclass, 'aicost.tenants'::regclass,
                                     'aicost.breaker_config'::regclass)
                     AND tgname LIKE '%changed%')"
            ),
            "breaker_config_changed:A,model_aliases_changed_del:A,model_aliases_changed_ins:A,model_aliases_changed_trunc:A,\
             model_aliases_changed_upd:A,models_changed_del:A,models_changed_ins:A,models_changed_trunc:A,\
             models_changed_upd:A,prices_changed_del:A,prices_changed_ins:A,prices_changed_trunc:A,\
             prices_changed_upd:A,tenants_changed:A"
        );
    }

    #[pg_test]
    fn catalog_tables_are_dumped_and_commented() {
        assert_eq!(
            one::<i64>(
                "SELECT cardinality(extconfig)::bigint FROM pg_extension WHERE extname = 'pg_aicost'"
            ),
            Some(18)
        );
        let uncommented = text(
            "(SELECT string_agg(c.relname || coalesce('.' || a.attname, ''), ', ')
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind = 'r'
              WHERE n.nspname = 'aicost' AND c.relkind IN ('r', 'v')
                AND obj_description(c.oid, 'pg_class') IS NOT NULL IS NOT TRUE
                 OR (n.nspname = 'aicost' AND c.relkind = 'r' AND a.attnum IS NOT NULL
                     AND col_description(c.oid, a.attnum) IS NULL))",
        );
        assert_eq!(uncommented, "NULL", "objects without COMMENT");
        let undocumented_functions = text(
            "(SELECT string_agg(p.proname, ', ') FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_aicost'
              WHERE obj_description(p.oid, 'pg_proc') IS NULL
                AND p.pronamespace::regnamespace::text <> 'tests')",
        );
        assert_eq!(undocumented_functions, "NULL", "functions without COMMENT");
    }

    // ---- response cache ----

    const REQ: &str = r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}"#;

    fn put(ns: &str, req: &str, resp: &str) -> String {
        text(&format!(
            "ai_cache_put('gpt-4o', '{req}', '{resp}', namespace => '{ns}')"
        ))
    }

    fn get(ns: &str, req: &str) -> String {
        text(&format!(
            "ai_cache_get('gpt-4o', '{req}', namespace => '{ns}')"
        ))
    }

    #[pg_test]
    fn cache_hits_ignore_key_order_and_whitespace_but_not_fields() {
        put("t", REQ, r#"{"answer": 1}"#);
        let reordered = r#"{"temperature":0.50,"messages":[{"content":"hi","role":"user"}]}"#;
        assert_eq!(
            text(&format!(
                "ai_cache_get('openai/gpt-4o', '{reordered}', namespace => 't')"
            )),
            r#"{"answer": 1}"#
        );
        let hotter = r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 0.7}"#;
        assert_eq!(get("t", hotter), "NULL");
        let seeded =
            r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "seed": 7}"#;
        assert_eq!(get("t", seeded), "NULL");
        assert_eq!(get("other-namespace", REQ), "NULL");
        assert_eq!(
            text(&format!(
                "ai_cache_get('gpt-4o-mini', '{REQ}', namespace => 't')"
            )),
            "NULL"
        );
    }

    #[pg_test]
    fn cache_stores_cost_and_counts_money_saved() {
        let resp = r#"{"choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}"#;
        let key = put("s", REQ, resp);
        assert_eq!(
            text(&format!(
                "(SELECT cost FROM aicost.cache_entries WHERE key = '{key}')"
            )),
            "0.0075"
        );
        for _ in 0..3 {
            get("s", REQ);
        }
        get("s", r#"{"other": true}"#);
        let stats = "(SELECT row(entries, hits, misses, hit_ratio, saved_usd, puts) FROM aicost.cache_stats WHERE namespace = 's')";
        assert_eq!(text(stats), "(1,3,1,0.7500,0.0225,1)");
        // Rolling the log up changes nothing visible.
        Spi::run("SELECT ai_cache_sweep()").unwrap();
        assert_eq!(text(stats), "(1,3,1,0.7500,0.0225,1)");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM aicost.cache_events"),
            Some(0)
        );
        // An explicit cost wins over the usage object.
        let key = text(&format!(
            "ai_cache_put('gpt-4o', '{{\"q\": 2}}', '{resp}', namespace => 's', cost => 0.5)"
        ));
        assert_eq!(
            text(&format!(
                "(SELECT cost FROM aicost.cache_entries WHERE key = '{key}')"
            )),
            "0.5"
        );
        // A response without usage is cached with unknown (NULL) cost, never 0.
        let key = put("s", r#"{"q": 3}"#, r#"{"text": "no usage"}"#);
        assert_eq!(
            text(&format!(
                "(SELECT cost FROM aicost.cache_entries WHERE key = '{key}')"
            )),
            "NULL"
        );
    }

    #[pg_test]
    fn expired_entries_are_never_returned() {
        Spi::run(&format!("SELECT ai_cache_put('gpt-4o', '{REQ}', '{{\"a\": 1}}', ttl => interval '50 milliseconds', namespace => 'ttl')")).unwrap();
        Spi::run(r#"SELECT ai_cache_put('gpt-4o', '{"long": 1}', '{"a": 2}', ttl => interval '1 hour', namespace => 'ttl')"#).unwrap();
        assert_eq!(get("ttl", REQ), r#"{"a": 1}"#);
        Spi::run("SELECT pg_sleep(0.1)").unwrap();
        assert_eq!(get("ttl", REQ), "NULL");
        assert_eq!(get("ttl", r#"{"long": 1}"#), r#"{"a": 2}"#);
        assert_eq!(one::<i64>("SELECT ai_cache_sweep()"), Some(1));
        assert_eq!(
            text(
                "(SELECT row(entries, expirations) FROM aicost.cache_stats WHERE namespace = 'ttl')"
            ),
            "(1,1)"
        );
        // Namespace default TTL and the GUC default.
        Spi::run("SELECT ai_cache_namespace_set('ttl2', default_ttl => interval '2 hours')")
            .unwrap();
        let k = put("ttl2", REQ, "{}");
        let left = text(&format!(
            "(SELECT round(extract(epoch FROM expires_at - created_at) / 3600) FROM aicost.cache_entries WHERE key = '{k}')"
        ));
        assert_eq!(left, "2");
        Spi::run("SET LOCAL aicost.cache_default_ttl = '0'").unwrap();
        let k = put("ttl3", REQ, "{}");
        assert_eq!(
            text(&format!(
                "(SELECT expires_at FROM aicost.cache_entries WHERE key = '{k}')"
            )),
            "NULL"
        );
    }

    #[pg_test]
    fn cost_aware_ttl_keeps_expensive_and_popular_entries_longer() {
        Spi::run("SELECT ai_cache_namespace_set('ca', default_ttl => interval '1 hour', cost_aware_ttl => true)").unwrap();
        let k = text(&format!(
            "ai_cache_put('gpt-4o', '{REQ}', '{{}}', namespace => 'ca', cost => 0.01)"
        ));
        let hours = format!(
            "(SELECT extract(epoch FROM expires_at - created_at) / 3600 FROM aicost.cache_entries WHERE key = '{k}')"
        );
        // least(8, 1 + 100 x 0.01 + log2(1 + 0 hits)) = 2
        assert_eq!(text(&format!("round({hours})")), "2");
        for _ in 0..3 {
            get("ca", REQ);
        }
        Spi::run("SELECT ai_cache_sweep()").unwrap();
        // 1 + 1 + log2(1 + 3) = 4
        assert_eq!(text(&format!("round({hours})")), "4");
        // A cheap entry in a plain namespace keeps the base TTL.
        let k = text(&format!(
            "ai_cache_put('gpt-4o', '{REQ}', '{{}}', ttl => interval '1 hour', namespace => 'plain', cost => 0.01)"
        ));
        assert_eq!(
            text(&format!(
                "(SELECT round(extract(epoch FROM expires_at - created_at) / 3600) FROM aicost.cache_entries WHERE key = '{k}')"
            )),
            "1"
        );
    }

    #[pg_test]
    fn lru_evicts_least_recently_used() {
        Spi::run("SELECT ai_cache_namespace_set('lru', max_entries => 3, eviction => 'lru')")
            .unwrap();
        for i in 1..=3 {
            put(
                "lru",
                &format!(r#"{{"q": {i}}}"#),
                &format!(r#"{{"a": {i}}}"#),
            );
            Spi::run("SELECT pg_sleep(0.002)").unwrap();
        }
        get("lru", r#"{"q": 1}"#); // 1 is now the most recently used; 2 the least
        Spi::run("SELECT pg_sleep(0.002)").unwrap();
        put("lru", r#"{"q": 4}"#, r#"{"a": 4}"#);
        assert_eq!(get("lru", r#"{"q": 2}"#), "NULL");
        for i in [1, 3, 4] {
            assert_eq!(
                get("lru", &format!(r#"{{"q": {i}}}"#)),
                format!(r#"{{"a": {i}}}"#)
            );
        }
        assert_eq!(
            text(
                "(SELECT row(entries, evictions) FROM aicost.cache_stats WHERE namespace = 'lru')"
            ),
            "(3,1)"
        );
    }

    #[pg_test]
    fn lfu_evicts_least_frequently_used() {
        Spi::run("SELECT ai_cache_namespace_set('lfu', max_entries => 3, eviction => 'lfu')")
            .unwrap();
        for i in 1..=3 {
            put(
                "lfu",
                &format!(r#"{{"q": {i}}}"#),
                &format!(r#"{{"a": {i}}}"#),
            );
        }
        for (i, n) in [(1, 4), (2, 1), (3, 3)] {
            for _ in 0..n {
                get("lfu", &format!(r#"{{"q": {i}}}"#));
            }
        }
        Spi::run("SELECT pg_sleep(0.002)").unwrap();
        // 2 was used most recently of all but least often: LFU evicts it (LRU would evict 1).
        get("lfu", r#"{"q": 2}"#);
        put("lfu", r#"{"q": 4}"#, r#"{"a": 4}"#);
        put("lfu", r#"{"q": 5}"#, r#"{"a": 5}"#);
        // 2 (2 hits) went first, then 4 (0 hits; the newest entry is never the one evicted).
        assert_eq!(get("lfu", r#"{"q": 2}"#), "NULL");
        assert_eq!(get("lfu", r#"{"q": 4}"#), "NULL");
        for i in [1, 3, 5] {
            assert_eq!(
                get("lfu", &format!(r#"{{"q": {i}}}"#)),
                format!(r#"{{"a": {i}}}"#)
            );
        }
    }

    #[pg_test]
    fn byte_limit_and_invalidation() {
        Spi::run("SELECT ai_cache_namespace_set('bytes', max_bytes => 400)").unwrap();
        let big = format!(r#"{{"text": "{}"}}"#, "x".repeat(150));
        for i in 1..=4 {
            put("bytes", &format!(r#"{{"q": {i}}}"#), &big);
        }
        let (entries, bytes) = (
            one::<i64>("SELECT entries FROM aicost.cache_stats WHERE namespace = 'bytes'").unwrap(),
            one::<i64>("SELECT bytes FROM aicost.cache_stats WHERE namespace = 'bytes'").unwrap(),
        );
        assert!(
            bytes <= 400 && entries == 2,
            "{entries} entries, {bytes} bytes"
        );
        assert_eq!(
            one::<i64>(
                "SELECT sum(bytes)::bigint FROM aicost.cache_entries WHERE namespace = 'bytes'"
            ),
            Some(bytes)
        );
        assert_eq!(
            one::<i64>(
                "SELECT ai_cache_invalidate(namespace => 'bytes', model => 'openai/gpt-4o')"
            ),
            Some(2)
        );
        assert_eq!(
            text("(SELECT row(entries, bytes) FROM aicost.cache_stats WHERE namespace = 'bytes')"),
            "(0,0)"
        );
        let k = put("inv", REQ, "{}");
        assert_eq!(
            one::<i64>(&format!("SELECT ai_cache_invalidate(key => '{k}')")),
            Some(1)
        );
        assert_eq!(get("inv", REQ), "NULL");
    }

    #[pg_test]
    fn unlogged_namespace_round_trip() {
        Spi::run("SELECT ai_cache_namespace_set('fast', durability => 'unlogged')").unwrap();
        let k = put("fast", REQ, r#"{"a": 1}"#);
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM aicost.cache_entries_unlogged WHERE key = '{k}'"
            )),
            Some(1)
        );
        assert_eq!(get("fast", REQ), r#"{"a": 1}"#);
        Spi::run("SELECT ai_cache_namespace_set('fast', durability => 'logged')").unwrap();
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM aicost.cache_entries WHERE key = '{k}'"
            )),
            Some(1)
        );
        assert_eq!(get("fast", REQ), r#"{"a": 1}"#);
        assert_eq!(
            text(
                "(SELECT row(entries, durability) FROM aicost.cache_stats WHERE namespace = 'fast')"
            ),
            "(1,logged)"
        );
    }

    #[pg_test]
    fn warm_loads_many_entries_atomically() {
        let n = one::<i32>(
            r#"SELECT ai_cache_warm('w', jsonb_build_array(
                 jsonb_build_object('model', 'gpt-4o', 'request', '{"q": 1}'::jsonb, 'response', '{"a": 1}'::jsonb),
                 jsonb_build_object('model', 'claude-sonnet-4-5', 'request', '{"q": 2}'::jsonb, 'response', '{"a": 2}'::jsonb, 'ttl', '1 hour', 'cost', 0.01)))"#,
        );
        assert_eq!(n, Some(2));
        assert_eq!(get("w", r#"{"q": 1}"#), r#"{"a": 1}"#);
        assert_eq!(
            text(r#"ai_cache_get('claude-sonnet-4-5-20250929', '{"q": 2}', 'w')"#),
            r#"{"a": 2}"#
        );
    }

    #[pg_test]
    fn cache_key_is_sha256_hex_and_canonical() {
        let a = text(r#"ai_cache_key('gpt-4o', '{"b": [1, 2.0], "a": "x"}')"#);
        let b = text(r#"ai_cache_key('GPT-4o', '{ "a":"x", "b":[1.00,2] }')"#);
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(
            a,
            text(r#"ai_cache_key('gpt-4o', '{"b": [2, 1], "a": "x"}')"#)
        );
        assert_ne!(
            a,
            text(r#"ai_cache_key('gpt-4o', '{"b": [1, 2.0], "a": "x"}', 'ns2')"#)
        );
        // Prompts of any size: the key is a hash, the prompt is never indexed.
        let big =
            text("ai_cache_key('gpt-4o', jsonb_build_object('messages', repeat('x', 3000000)))");
        assert_eq!(big.len(), 64);
        Spi::run("SELECT ai_cache_put('gpt-4o', jsonb_build_object('messages', repeat('y', 3000000)), '{\"a\": 1}', namespace => 'big')").unwrap();
        assert_eq!(
            text(
                "ai_cache_get('gpt-4o', jsonb_build_object('messages', repeat('y', 3000000)), 'big')"
            ),
            r#"{"a": 1}"#
        );
    }

    #[pg_test(error = "request must be a JSON object, not an array")]
    fn cache_rejects_non_object_request() {
        put("e", "[1]", "{}");
    }

    #[pg_test(error = "request must not be NULL")]
    fn cache_rejects_null_request() {
        Spi::run("SELECT ai_cache_get('gpt-4o', NULL)").unwrap();
    }

    #[pg_test(error = "ttl must be positive, not 00:00:00")]
    fn cache_rejects_zero_ttl() {
        Spi::run(&format!(
            "SELECT ai_cache_put('gpt-4o', '{REQ}', '{{}}', ttl => interval '0')"
        ))
        .unwrap();
    }

    #[pg_test(error = "unknown eviction policy \"fifo\"")]
    fn cache_rejects_unknown_policy() {
        Spi::run("SELECT ai_cache_namespace_set('x', eviction => 'fifo')").unwrap();
    }

    #[pg_test(error = "response of 2007 bytes exceeds aicost.cache_max_response_bytes (1000)")]
    fn cache_rejects_oversized_response() {
        Spi::run("SET LOCAL aicost.cache_max_response_bytes = 1000").unwrap();
        Spi::run(&format!(
            "SELECT ai_cache_put('gpt-4o', '{REQ}', jsonb_build_object('t', repeat('z', 1990)))"
        ))
        .unwrap();
    }

    // ---- usage ledger, budgets, rate limits ----

    fn insert(cols: &str, vals: &str) {
        Spi::run(&format!(
            "INSERT INTO aicost.usage ({cols}) VALUES ({vals})"
        ))
        .unwrap();
    }

    #[pg_test]
    fn ledger_prices_rows_and_charges_covering_budgets() {
        let b_user = one::<i64>("SELECT ai_budget_set('user', 'u1', 10)").unwrap();
        let b_org = one::<i64>("SELECT ai_budget_set('org', 'o1', 100, 'day')").unwrap();
        one::<i64>("SELECT ai_budget_set('team', 'other-team', 5)");
        insert(
            "request_id, org_id, team_id, user_id, model, in_tokens, out_tokens",
            "'r1', 'o1', 't1', 'u1', 'gpt-4o', 10000, 2000",
        );
        let usage =
            r#"{"input_tokens": 100, "output_tokens": 3000, "cache_read_input_tokens": 1000}"#;
        insert(
            "request_id, user_id, model, usage",
            &format!("'r2', 'u1', 'claude-sonnet-4-5', '{usage}'"),
        );
        assert_eq!(
            text(
                "(SELECT row(cost, status, cardinality(price_ids), budget_ids) FROM aicost.usage WHERE request_id = 'r1')"
            ),
            format!("(0.045,ok,2,\"{{{b_user},{b_org}}}\")")
        );
        assert_eq!(
            text(
                "(SELECT row(in_tokens, out_tokens, cached_tokens, cost) FROM aicost.usage WHERE request_id = 'r2')"
            ),
            "(1100,3000,1000,0.0456)"
        );
        assert_eq!(
            text(&format!(
                "(SELECT spent FROM aicost.budget_status WHERE budget_id = {b_user})"
            )),
            "0.0906"
        );
        assert_eq!(
            text(&format!(
                "(SELECT spent FROM aicost.budget_status WHERE budget_id = {b_org})"
            )),
            "0.045"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM ai_budget_audit()"),
            Some(0)
        );
        // A cache hit costs nothing unless told otherwise.
        insert(
            "user_id, model, in_tokens, out_tokens, cache_hit",
            "'u1', 'gpt-4o', 1000, 1000, true",
        );
        assert_eq!(text("(SELECT cost FROM aicost.usage WHERE cache_hit)"), "0");
    }

    #[pg_test]
    fn periods_roll_over_by_the_rows_time() {
        let b = one::<i64>("SELECT ai_budget_set('user', 'u', 100, 'month')").unwrap();
        let ny = one::<i64>(
            "SELECT ai_budget_set('team', 't', 100, 'day', time_zone => 'America/New_York')",
        )
        .unwrap();
        insert(
            "created_at, user_id, team_id, model, in_tokens, out_tokens",
            "'2026-01-31 23:59:59+00', 'u', 't', 'gpt-4o', 1000000, 0",
        );
        insert(
            "created_at, user_id, team_id, model, in_tokens, out_tokens",
            "'2026-02-01 00:00:00+00', 'u', 't', 'gpt-4o', 2000000, 0",
        );
        assert_eq!(
            text(&format!(
                "(SELECT string_agg(period_start::text || '=' || spent, ' ' ORDER BY period_start) FROM aicost.budget_spend WHERE budget_id = {b})"
            )),
            "2026-01-31 21:00:00-03=2.5 2026-02-28 21:00:00-03=5"
                .replace(
                    "2026-01-31 21:00:00-03",
                    &text("'2026-02-01 00:00:00+00'::timestamptz - interval '1 month'")
                )
                .replace(
                    "2026-02-28 21:00:00-03",
                    &text("'2026-02-01 00:00:00+00'::timestamptz")
                )
        );
        // In New York both instants are on 2026-01-31.
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM aicost.budget_spend WHERE budget_id = {ny}"
            )),
            Some(1)
        );
        assert_eq!(
            text(&format!(
                "(SELECT spent FROM aicost.budget_spend WHERE budget_id = {ny})"
            )),
            "7.5"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM ai_budget_audit()"),
            Some(0)
        );
    }

    #[pg_test]
    fn alert_fires_once_and_throttle_switches_rate_limit() {
        let b = one::<i64>("SELECT ai_budget_set('user', 'u', 1.00)").unwrap();
        Spi::run("SELECT ai_rate_limit_set('user', 'u', '1 hour', max_requests => 100, throttled_requests => 5)").unwrap();
        Spi::run("LISTEN aicost_budget").unwrap();
        // 0.25 each (100k in tokens at 2.50/M): 0.25, 0.5, 0.75, 1.0
        for _ in 0..3 {
            insert(
                "user_id, model, in_tokens, out_tokens",
                "'u', 'gpt-4o', 100000, 0",
            );
        }
        assert_eq!(
            one::<i64>("SELECT count(*) FROM aicost.budget_alerts"),
            Some(0)
        );
        insert(
            "user_id, model, in_tokens, out_tokens",
            "'u', 'gpt-4o', 30000, 0",
        ); // 0.825: alert
        insert(
            "user_id, model, in_tokens, out_tokens",
            "'u', 'gpt-4o', 4000, 0",
        ); // 0.835: still only alert
        assert_eq!(
            text("(SELECT string_agg(threshold, ',') FROM aicost.budget_alerts)"),
            "alert"
        );
        assert_eq!(
            text(&format!(
                "(SELECT state FROM aicost.budget_status WHERE budget_id = {b})"
            )),
            "alert"
        );
        assert_eq!(
            text("(SELECT allowed FROM ai_rate_limit_check('user', 'u'))"),
            "true"
        );
        insert(
            "user_id, model, in_tokens, out_tokens",
            "'u', 'gpt-4o', 50000, 0",
        ); // 0.96: throttle
        assert_eq!(
            text(
                "(SELECT string_agg(threshold, ',' ORDER BY threshold) FROM aicost.budget_alerts)"
            ),
            "alert,throttle"
        );
        // 6 requests already in this window: past the throttled limit of 5.
        assert_eq!(
            text(
                "(SELECT row(allowed, requests_used, requests_limit) FROM ai_rate_limit_check('user', 'u'))"
            ),
            "(f,6,5)"
        );
        assert_eq!(
            text("(SELECT state FROM ai_budget_check('user', 'u', 0.05))"),
            "deny"
        );
        assert_eq!(
            text("(SELECT row(state, remaining) FROM ai_budget_check('user', 'u'))"),
            "(throttle,0.04)"
        );
    }

    #[pg_test(
        error = "rate limit exceeded: user \"u\" allows 5 requests and unlimited tokens per 01:00:00 (throttled: its budget is past the throttle threshold)"
    )]
    fn throttled_rate_limit_refuses_inserts() {
        Spi::run("SELECT ai_budget_set('user', 'u', 1.00)").unwrap();
        Spi::run("SELECT ai_rate_limit_set('user', 'u', '1 hour', max_requests => 100, throttled_requests => 5)").unwrap();
        insert(
            "user_id, model, in_tokens, out_tokens",
            "'u', 'gpt-4o', 390000, 0",
        ); // 0.975
        for _ in 0..5 {
            insert(
                "user_id, model, in_tokens, out_tokens",
                "'u', 'gpt-4o', 1, 0",
            );
        }
    }

    #[pg_test(error = "budget exceeded: user \"u\" has 0.05 USD left of 1 USD this period")]
    fn hard_limit_refuses_the_insert() {
        Spi::run("SELECT ai_budget_set('user', 'u', 1.00)").unwrap();
        insert(
            "user_id, model, in_tokens, out_tokens",
            "'u', 'gpt-4o', 380000, 0",
        ); // 0.95
        insert(
            "user_id, model, in_tokens, out_tokens",
            "'u', 'gpt-4o', 40000, 0",
        ); // +0.10 > 1.00
    }

    #[pg_test]
    fn reservations_count_and_are_settled_by_request_id() {
        Spi::run("SELECT ai_budget_set('user', 'u', 1.00)").unwrap();
        let r = one::<i64>("SELECT ai_budget_reserve('user', 'u', 0.60, request_id => 'req-1')")
            .unwrap();
        assert_eq!(
            text("(SELECT row(spent, reserved, remaining) FROM aicost.budget_status)"),
            "(0,0.60,0.4)"
        );
        assert_eq!(
            text("(SELECT state FROM ai_budget_check('user', 'u', 0.5))"),
            "deny"
        );
        // The usage row settles its reservation: only the actual cost remains.
        insert(
            "request_id, user_id, model, in_tokens, out_tokens",
            "'req-1', 'u', 'gpt-4o', 100000, 0",
        );
        assert_eq!(
            text("(SELECT row(spent, reserved, remaining) FROM aicost.budget_status)"),
            "(0.25,0,0.75)"
        );
        assert_eq!(
            text(&format!(
                "(SELECT usage_id IS NOT NULL FROM aicost.budget_reservations WHERE reservation_id = {r})"
            )),
            "true"
        );
        let r2 = one::<i64>("SELECT ai_budget_reserve('user', 'u', 0.5)").unwrap();
        assert_eq!(text(&format!("ai_budget_release({r2})")), "true");
        assert_eq!(text(&format!("ai_budget_release({r2})")), "NULL");
        assert_eq!(text("(SELECT reserved FROM aicost.budget_status)"), "0");
    }

    #[pg_test(error = "budget exceeded: user \"u\" has 0.4 USD left of 1 USD this period")]
    fn reservations_that_do_not_fit_are_refused() {
        Spi::run("SELECT ai_budget_set('user', 'u', 1.00)").unwrap();
        Spi::run("SELECT ai_budget_reserve('user', 'u', 0.60)").unwrap();
        Spi::run("SELECT ai_budget_reserve('user', 'u', 0.50)").unwrap();
    }

    #[pg_test]
    fn unpriced_rows_are_never_zero_and_can_be_repriced() {
        let b = one::<i64>("SELECT ai_budget_set('user', 'u', 10)").unwrap();
        Spi::run("SET LOCAL aicost.ledger_unknown_model = 'unpriced'").unwrap();
        insert(
            "user_id, model, in_tokens, out_tokens",
            "'u', 'acme-1', 1000000, 1000000",
        );
        assert_eq!(
            text("(SELECT row(cost, status, budget_ids) FROM aicost.usage)"),
            "(,unpriced,{})"
        );
        assert_eq!(one::<i64>("SELECT ai_reprice_unpriced()"), Some(0));
        Spi::run("INSERT INTO aicost.models (model, provider) VALUES ('acme-1', 'acme')").unwrap();
        Spi::run("SELECT ai_price_set('acme-1', 'input', 1), ai_price_set('acme-1', 'output', 2)")
            .unwrap();
        assert_eq!(one::<i64>("SELECT ai_reprice_unpriced()"), Some(1));
        assert_eq!(
            text("(SELECT row(cost, status) FROM aicost.usage)"),
            "(3,ok)"
        );
        assert_eq!(
            text(&format!(
                "(SELECT spent FROM aicost.budget_status WHERE budget_id = {b})"
            )),
            "3"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM ai_budget_audit()"),
            Some(0)
        );
    }

    #[pg_test(error = "unknown model \"acme-2\"")]
    fn unknown_model_insert_is_an_error_by_default() {
        insert(
            "user_id, model, in_tokens, out_tokens",
            "'u', 'acme-2', 1, 1",
        );
    }

    #[pg_test(error = "aicost.usage is insert-only (UPDATE refused)")]
    fn ledger_is_insert_only() {
        insert(
            "user_id, model, in_tokens, out_tokens",
            "'u', 'gpt-4o', 1, 1",
        );
        Spi::run("UPDATE aicost.usage SET cost = 0").unwrap();
    }

    #[pg_test(error = "duplicate key value violates unique constraint \"usage_org_request_key\"")]
    fn duplicate_request_ids_are_refused() {
        insert(
            "request_id, user_id, model, in_tokens, out_tokens",
            "'same', 'u', 'gpt-4o', 1, 1",
        );
        insert(
            "request_id, user_id, model, in_tokens, out_tokens",
            "'same', 'u', 'gpt-4o', 1, 1",
        );
    }

    #[pg_test(
        error = "thresholds out of order: need 0 < alert_pct (90) <= throttle_pct (80) <= hard_pct (100)"
    )]
    fn budget_thresholds_must_be_ordered() {
        Spi::run("SELECT ai_budget_set('user', 'u', 1, alert_pct => 90, throttle_pct => 80)")
            .unwrap();
    }

    #[pg_test(
        error = "cannot change the period or time zone of the budget of user \"u\": it has recorded spend"
    )]
    fn budget_period_cannot_change_under_recorded_spend() {
        Spi::run("SELECT ai_budget_set('user', 'u', 10, 'month')").unwrap();
        // Without spend the period may still change.
        Spi::run("SELECT ai_budget_set('user', 'u', 10, 'day')").unwrap();
        insert(
            "user_id, model, in_tokens, out_tokens",
            "'u', 'gpt-4o', 1000, 0",
        );
        // Amount and thresholds may change; dropping and recreating resets the budget.
        Spi::run("SELECT ai_budget_set('user', 'u', 20, 'day')").unwrap();
        assert_eq!(text("ai_budget_drop('user', 'u')"), "true");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM aicost.budget_spend"),
            Some(0)
        );
        Spi::run("SELECT ai_budget_set('user', 'u', 10, 'day')").unwrap();
        insert(
            "user_id, model, in_tokens, out_tokens",
            "'u', 'gpt-4o', 1000, 0",
        );
        Spi::run("SELECT ai_budget_set('user', 'u', 10, 'month')").unwrap();
    }

    /// A recorded row without its cost would be a half-written one.
    #[pg_test(
        error = "a recorded usage row (one given its budget_ids) needs its cost, or status 'unpriced'"
    )]
    fn a_recorded_row_needs_its_cost() {
        insert(
            "user_id, model, in_tokens, out_tokens, budget_ids",
            "'c', 'gpt-4o', 1, 0, '{}'",
        );
    }

    #[pg_test]
    fn rate_limits_and_budgets_count_only_rows_written() {
        let b = one::<i64>("SELECT ai_budget_set('user', 'c', 10)").unwrap();
        Spi::run("SELECT ai_rate_limit_set('user', 'c', '1 hour', max_requests => 2)").unwrap();
        insert(
            "request_id, user_id, model, in_tokens, out_tokens",
            "'c1', 'c', 'gpt-4o', 1000000, 0",
        );
        // An idempotent retry skipped by ON CONFLICT counts nothing.
        Spi::run("INSERT INTO aicost.usage (request_id, user_id, model, in_tokens, out_tokens) VALUES ('c1', 'c', 'gpt-4o', 1000000, 0) ON CONFLICT DO NOTHING").unwrap();
        assert_eq!(text("(SELECT requests FROM aicost.rate_counters)"), "1");
        assert_eq!(
            text(&format!(
                "(SELECT spent FROM aicost.budget_status WHERE budget_id = {b})"
            )),
            "2.5"
        );
        insert(
            "request_id, user_id, model, in_tokens, out_tokens",
            "'c2', 'c', 'gpt-4o', 1, 0",
        );
        // A row given its budget_ids (only admins may: a restore) was accounted where it was
        // first recorded: stored as it is, it charges, counts and settles nothing (here: its
        // request would pass the rate limit of 2, and it names no budget, so the audit agrees).
        let counters = text("(SELECT requests FROM aicost.rate_counters)");
        insert(
            "request_id, user_id, model, in_tokens, out_tokens, cost, budget_ids",
            "'c1-restored', 'c', 'gpt-4o', 1000000, 0, 2.5, '{}'",
        );
        assert_eq!(
            text(&format!(
                "(SELECT spent FROM aicost.budget_status WHERE budget_id = {b})"
            )),
            "2.5000025"
        );
        assert_eq!(
            text("(SELECT requests FROM aicost.rate_counters)"),
            counters
        );

        assert_eq!(
            one::<i64>("SELECT count(*) FROM ai_budget_audit()"),
            Some(0)
        );
    }

    #[pg_test(error = "status 'unpriced' is reserved for rows the trigger could not price")]
    fn priced_rows_cannot_claim_to_be_unpriced() {
        insert(
            "user_id, model, in_tokens, out_tokens, status",
            "'u', 'gpt-4o', 1, 1, 'unpriced'",
        );
    }

    #[pg_test(error = "permission denied to set parameter \"aicost.ledger_maintenance\"")]
    fn only_superusers_may_open_the_ledger() {
        Spi::run("CREATE ROLE aicost_test_app").unwrap();
        Spi::run("SET ROLE aicost_test_app").unwrap();
        Spi::run("SET aicost.ledger_maintenance = on").unwrap();
    }

    #[pg_test(error = "unknown scope kind \"project\"")]
    fn unknown_scope_kinds_are_refused() {
        Spi::run("SELECT ai_budget_set('project', 'p', 1)").unwrap();
    }

    #[pg_test(error = "scope_id must not be NULL or empty")]
    fn null_scope_ids_are_refused() {
        Spi::run("SELECT ai_budget_set('user', NULL, 1)").unwrap();
    }

    #[pg_test(error = "amount must be a finite non-negative number of USD, not -1")]
    fn negative_budgets_are_refused() {
        Spi::run("SELECT ai_budget_set('user', 'u', -1)").unwrap();
    }

    #[pg_test(error = "limits must not be negative")]
    fn negative_rate_limits_are_refused() {
        Spi::run("SELECT ai_rate_limit_set('user', 'u', '1 minute', max_requests => -1)").unwrap();
    }

    #[pg_test(
        error = "new row for relation \"usage\" violates check constraint \"usage_out_tokens_check\""
    )]
    fn negative_token_counts_are_refused() {
        insert(
            "user_id, model, in_tokens, out_tokens, cost",
            "'u', 'gpt-4o', 1, -1, 0",
        );
    }
}
