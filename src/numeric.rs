//! Returning exact `numeric` values without a detour through text or an extra copy.

use pgrx::callconv::{BoxRet, FcInfo};
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::{AnyNumeric, IntoDatum, pg_sys};
use rust_decimal::Decimal;
use std::str::FromStr;

/// A palloc'd `numeric` Datum, returned as-is. (`AnyNumeric` copies its bytes twice per call.)
pub struct NumericDatum(pg_sys::Datum);

impl NumericDatum {
    pub fn from_decimal(d: Decimal) -> NumericDatum {
        #[cfg(not(feature = "pg13"))]
        if let Ok(m) = i64::try_from(d.mantissa()) {
            // SAFETY: plain C function building a numeric m / 10^scale in CurrentMemoryContext.
            let n = unsafe { pg_sys::int64_div_fast_to_numeric(m, d.scale() as i32) };
            return NumericDatum(pg_sys::Datum::from(n));
        }
        let n = AnyNumeric::from_str(&d.to_string()).expect("a Decimal is a valid numeric literal");
        NumericDatum(n.into_datum().expect("numeric is not null"))
    }
}

impl IntoDatum for NumericDatum {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::NUMERICOID
    }
}

unsafe impl BoxRet for NumericDatum {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

unsafe impl SqlTranslatable for NumericDatum {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(NumericDatum);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::Numeric {
        precision: None,
        scale: None,
    });
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::Numeric {
            precision: None,
            scale: None,
        }));
}
