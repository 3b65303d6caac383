//! `aicost.*` configuration parameters.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

/// What `ai_cost` does for a model it cannot price: raise an error or return NULL. Never 0.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum UnknownModel {
    #[name = c"error"]
    Error,
    #[name = c"null"]
    Null,
}

pub static UNKNOWN_MODEL: GucSetting<UnknownModel> =
    GucSetting::<UnknownModel>::new(UnknownModel::Error);
pub static PRICING_CACHE: GucSetting<bool> = GucSetting::<bool>::new(true);

pub fn register() {
    GucRegistry::define_enum_guc(
        c"aicost.unknown_model",
        c"What ai_cost() returns for a model (or price) that is not in the catalog: error or null.",
        c"error raises SQLSTATE 42704 naming the model and close names; null returns NULL. A cost is never silently 0.",
        &UNKNOWN_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"aicost.pricing_cache",
        c"Price from the backend's in-memory catalog cache.",
        c"off reads the catalog tables on every call (for comparison and debugging).",
        &PRICING_CACHE,
        GucContext::Userset,
        GucFlags::default(),
    );
}
