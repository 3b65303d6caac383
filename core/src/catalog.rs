//! The resolved pricing catalog and model-name resolution.
//!
//! Matching rules, tried in order (the first that finds a model wins):
//! 1. the exact canonical name or an exact alias;
//! 2. the same, ignoring ASCII case;
//! 3. `provider/name` where `name` matches by rule 1 or 2 a model whose provider is `provider`
//!    (`openai/gpt-4o` finds `gpt-4o` of provider `openai`);
//! 4. a bare name equal to the part after the first `/` of exactly one canonical name
//!    (`grok-4` finds `xai/grok-4`); when several models share that suffix the name is ambiguous.

use crate::{ServiceTier, UsageType, edit_distance};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;

/// Microseconds since 2000-01-01 00:00 UTC, PostgreSQL's `timestamptz` representation.
pub type PgTimestamp = i64;

/// One version of one price: valid for `[valid_from, valid_to)`; `i64::MIN`/`i64::MAX` mean unbounded.
#[derive(Clone, Debug, PartialEq)]
pub struct PriceVersion {
    pub price_id: i64,
    pub usage: UsageType,
    pub tier: ServiceTier,
    /// The price applies when the request's prompt tokens exceed this count (0 = base price).
    pub threshold_tokens: i64,
    /// US dollars per million tokens, exact.
    pub usd_per_mtok: Decimal,
    pub valid_from: PgTimestamp,
    pub valid_to: PgTimestamp,
}

impl PriceVersion {
    #[inline]
    pub fn valid_at(&self, at: PgTimestamp) -> bool {
        self.valid_from <= at && at < self.valid_to
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Canonical name (the primary key of `aicost.models`).
    pub name: String,
    pub provider: String,
    pub aliases: Vec<String>,
    pub prices: Vec<PriceVersion>,
}

impl Model {
    /// The price version for `usage` in `tier` valid at `at` whose long-context threshold is the
    /// highest one below `prompt_tokens`.
    pub fn find_price(
        &self,
        usage: UsageType,
        tier: ServiceTier,
        prompt_tokens: i64,
        at: PgTimestamp,
    ) -> Option<&PriceVersion> {
        let mut best: Option<&PriceVersion> = None;
        for p in &self.prices {
            if p.usage == usage
                && p.tier == tier
                && p.threshold_tokens < prompt_tokens.max(1)
                && p.valid_at(at)
                && best.is_none_or(|b| p.threshold_tokens > b.threshold_tokens)
            {
                best = Some(p);
            }
        }
        best
    }

    /// Whether the model has any price at all in `tier` valid at `at`.
    pub fn has_tier(&self, tier: ServiceTier, at: PgTimestamp) -> bool {
        self.prices.iter().any(|p| p.tier == tier && p.valid_at(at))
    }
}

/// How a requested name was matched (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchKind {
    Canonical,
    Alias,
    CaseInsensitive,
    ProviderPrefix,
    Unprefixed,
}

impl MatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKind::Canonical => "canonical name",
            MatchKind::Alias => "alias",
            MatchKind::CaseInsensitive => "case-insensitive name or alias",
            MatchKind::ProviderPrefix => "provider prefix",
            MatchKind::Unprefixed => "unprefixed name",
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Resolved<'a> {
    Found(&'a Model, MatchKind),
    /// Several models match a bare name by rule 4; their canonical names.
    Ambiguous(Vec<&'a str>),
    NotFound,
}

const AMBIGUOUS: u32 = u32::MAX;

#[derive(Default, Debug)]
pub struct Catalog {
    models: Vec<Model>,
    /// Canonical names and aliases, exactly as stored. Value: index into `models`, high bit = alias.
    exact: FxHashMap<Box<str>, u32>,
    /// Lower-cased canonical names and aliases.
    lower: FxHashMap<Box<str>, u32>,
    /// Lower-cased part after the first `/` of canonical names; `AMBIGUOUS` when shared.
    unprefixed: FxHashMap<Box<str>, u32>,
}

const ALIAS_BIT: u32 = 1 << 31;

impl Catalog {
    pub fn new(models: Vec<Model>) -> Catalog {
        let mut c = Catalog {
            models,
            ..Default::default()
        };
        for (i, m) in c.models.iter().enumerate() {
            if i % 1024 == 0 {
                crate::limits::check_interrupts();
            }
            let i = u32::try_from(i).expect("fewer than 2^31 models");
            c.exact.insert(m.name.as_str().into(), i);
            c.lower.insert(m.name.to_ascii_lowercase().into(), i);
            if let Some((_, rest)) = m.name.split_once('/') {
                c.unprefixed
                    .entry(rest.to_ascii_lowercase().into())
                    .and_modify(|v| *v = AMBIGUOUS)
                    .or_insert(i);
            }
        }
        // Aliases never shadow a canonical name.
        for (i, m) in c.models.iter().enumerate() {
            let i = i as u32;
            for a in &m.aliases {
                c.exact.entry(a.as_str().into()).or_insert(i | ALIAS_BIT);
                c.lower.entry(a.to_ascii_lowercase().into()).or_insert(i);
            }
        }
        c
    }

    pub fn models(&self) -> &[Model] {
        &self.models
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Resolves a requested model name by the module's matching rules.
    pub fn resolve(&self, name: &str) -> Resolved<'_> {
        if let Some(&v) = self.exact.get(name) {
            let kind = if v & ALIAS_BIT != 0 {
                MatchKind::Alias
            } else {
                MatchKind::Canonical
            };
            return Resolved::Found(&self.models[(v & !ALIAS_BIT) as usize], kind);
        }
        let lower = name.trim().to_ascii_lowercase();
        if let Some(&v) = self.lower.get(lower.as_str()) {
            return Resolved::Found(&self.models[v as usize], MatchKind::CaseInsensitive);
        }
        if let Some((provider, rest)) = lower.split_once('/')
            && let Some(&v) = self.lower.get(rest)
        {
            let m = &self.models[v as usize];
            if m.provider.eq_ignore_ascii_case(provider) {
                return Resolved::Found(m, MatchKind::ProviderPrefix);
            }
        }
        match self.unprefixed.get(lower.as_str()) {
            Some(&AMBIGUOUS) => {
                let mut names: Vec<&str> = self
                    .models
                    .iter()
                    .filter(|m| {
                        m.name
                            .split_once('/')
                            .is_some_and(|(_, r)| r.eq_ignore_ascii_case(&lower))
                    })
                    .map(|m| m.name.as_str())
                    .collect();
                names.sort_unstable();
                Resolved::Ambiguous(names)
            }
            Some(&v) => Resolved::Found(&self.models[v as usize], MatchKind::Unprefixed),
            None => Resolved::NotFound,
        }
    }

    /// Up to `n` known names (canonical or alias) closest to `name`, for error hints.
    pub fn suggest(&self, name: &str, n: usize) -> Vec<String> {
        suggest_from(self.exact.keys().map(|k| &**k), name, n)
    }
}

/// [`Catalog::suggest`] over any set of distinct known names (shared with [`crate::frozen`]).
pub fn suggest_from<'k>(keys: impl Iterator<Item = &'k str>, name: &str, n: usize) -> Vec<String> {
    let needle = name.trim().to_ascii_lowercase();
    if needle.chars().count() > crate::limits::MAX_SUGGEST_CHARS {
        return Vec::new();
    }
    let mut scored: Vec<(usize, &str)> = keys
        .enumerate()
        .map(|(i, k)| {
            if i % 64 == 0 {
                crate::limits::check_interrupts();
            }
            let kl = k.to_ascii_lowercase();
            let mut d = edit_distance(&needle, &kl);
            // A name that contains the request (or the reverse) is a good hint even when long.
            if !needle.is_empty() && (kl.contains(&needle) || needle.contains(&kl)) {
                d = d.min(1 + kl.len().abs_diff(needle.len()) / 4);
            }
            (d, k)
        })
        .collect();
    scored.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.len().cmp(&b.1.len()))
            .then(a.1.cmp(b.1))
    });
    let limit = (needle.chars().count() / 2).max(3);
    scored
        .into_iter()
        .filter(|(d, _)| *d <= limit)
        .take(n)
        .map(|(_, s)| s.to_string())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::str::FromStr;

    pub fn price(usage: UsageType, tier: ServiceTier, threshold: i64, per_m: &str) -> PriceVersion {
        PriceVersion {
            price_id: 0,
            usage,
            tier,
            threshold_tokens: threshold,
            usd_per_mtok: Decimal::from_str(per_m).unwrap(),
            valid_from: i64::MIN,
            valid_to: i64::MAX,
        }
    }

    pub fn model(name: &str, provider: &str, aliases: &[&str], prices: Vec<PriceVersion>) -> Model {
        Model {
            name: name.into(),
            provider: provider.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            prices,
        }
    }

    fn catalog() -> Catalog {
        let p = || vec![price(UsageType::Input, ServiceTier::Standard, 0, "1")];
        Catalog::new(vec![
            model("gpt-4o", "openai", &["GPT4o-latest"], p()),
            model("azure/gpt-4o", "azure", &[], p()),
            model("xai/grok-4", "xai", &[], p()),
            model("gemini/gemini-2.5-pro", "gemini", &[], p()),
            model("vertex_ai/gemini-2.5-pro", "vertex_ai", &[], p()),
        ])
    }

    fn found(c: &Catalog, name: &str) -> (String, MatchKind) {
        match c.resolve(name) {
            Resolved::Found(m, k) => (m.name.clone(), k),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn matching_rules() {
        let c = catalog();
        assert_eq!(found(&c, "gpt-4o"), ("gpt-4o".into(), MatchKind::Canonical));
        assert_eq!(
            found(&c, "GPT4o-latest"),
            ("gpt-4o".into(), MatchKind::Alias)
        );
        assert_eq!(
            found(&c, "GPT-4O"),
            ("gpt-4o".into(), MatchKind::CaseInsensitive)
        );
        assert_eq!(
            found(&c, "openai/gpt-4o"),
            ("gpt-4o".into(), MatchKind::ProviderPrefix)
        );
        // A canonical prefixed name wins over prefix stripping.
        assert_eq!(
            found(&c, "azure/gpt-4o"),
            ("azure/gpt-4o".into(), MatchKind::Canonical)
        );
        assert_eq!(
            found(&c, "grok-4"),
            ("xai/grok-4".into(), MatchKind::Unprefixed)
        );
        assert_eq!(
            c.resolve("gemini-2.5-pro"),
            Resolved::Ambiguous(vec!["gemini/gemini-2.5-pro", "vertex_ai/gemini-2.5-pro"])
        );
        // A prefix that is not the model's provider does not match.
        assert_eq!(c.resolve("anthropic/gpt-4o"), Resolved::NotFound);
        assert_eq!(c.resolve("gpt-5"), Resolved::NotFound);
    }

    #[test]
    fn suggestions_are_close_names() {
        let c = catalog();
        let s = c.suggest("gpt4o", 3);
        assert_eq!(s[0], "gpt-4o");
        assert!(c.suggest("completely-unrelated-model-name", 3).is_empty());
        // Suggestions are bounded work: a long name gets none (no quadratic edit distance).
        let long = format!("gpt-4o{}", "x".repeat(crate::limits::MAX_SUGGEST_CHARS));
        assert!(c.suggest(&long, 3).is_empty());
        assert_eq!(
            c.suggest(&long[..120], 1),
            vec!["gpt-4o".to_string()],
            "up to 128 characters, suggestions are made"
        );
        assert!(c.suggest("grok", 3).contains(&"xai/grok-4".to_string()));
    }

    #[test]
    fn tier_selection_uses_highest_threshold_below_prompt() {
        let m = model(
            "m",
            "p",
            &[],
            vec![
                price(UsageType::Input, ServiceTier::Standard, 0, "1"),
                price(UsageType::Input, ServiceTier::Standard, 200_000, "2"),
                price(UsageType::Input, ServiceTier::Standard, 128_000, "1.5"),
            ],
        );
        let rate = |n| {
            m.find_price(UsageType::Input, ServiceTier::Standard, n, 0)
                .unwrap()
                .usd_per_mtok
        };
        assert_eq!(rate(0), Decimal::from(1));
        assert_eq!(rate(128_000), Decimal::from(1));
        assert_eq!(rate(128_001), Decimal::from_str("1.5").unwrap());
        assert_eq!(rate(200_000), Decimal::from_str("1.5").unwrap());
        assert_eq!(rate(200_001), Decimal::from(2));
    }

    #[test]
    fn validity_ranges_are_half_open() {
        let mut old = price(UsageType::Input, ServiceTier::Standard, 0, "1");
        old.valid_to = 1000;
        let mut new = price(UsageType::Input, ServiceTier::Standard, 0, "2");
        new.valid_from = 1000;
        let m = model("m", "p", &[], vec![old, new]);
        let rate = |at| {
            m.find_price(UsageType::Input, ServiceTier::Standard, 10, at)
                .map(|p| p.usd_per_mtok)
        };
        assert_eq!(rate(999), Some(Decimal::from(1)));
        assert_eq!(rate(1000), Some(Decimal::from(2)));
        assert!(m.has_tier(ServiceTier::Standard, 5));
        assert!(!m.has_tier(ServiceTier::Batch, 5));
    }
}
