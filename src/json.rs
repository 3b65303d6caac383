//! `jsonb` arguments read with a clear error. pgrx's `JsonB` converts through serde_json and panics
//! (SQLSTATE XX000) on a document serde_json refuses, e.g. one nested deeper than 128 levels, which
//! PostgreSQL itself accepts. [`JsonArg`] is the same `jsonb` in SQL (so function signatures do
//! not change) and reports 22023 instead; the depth limit also bounds every recursive walk of it.

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::{FromDatum, PgSqlErrorCode};
use serde_json::Value;

/// A `jsonb` argument, parsed.
#[derive(Debug)]
pub struct JsonArg(pub Value);

impl FromDatum for JsonArg {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<JsonArg> {
        if is_null {
            return None;
        }
        // SAFETY: the datum is a jsonb (the SQL signature says so); jsonb_out returns a palloc'd
        // C string, read before the call returns.
        let text = unsafe {
            pgrx::direct_function_call::<&core::ffi::CStr>(pg_sys::jsonb_out, &[Some(datum)])
        }?;
        let parsed = serde_json::from_str(&text.to_string_lossy());
        match parsed {
            Ok(v) => Some(JsonArg(v)),
            Err(e) => crate::error::raise_full(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("JSON argument cannot be read: {e}"),
                None,
                Some("JSON documents may be nested at most 128 levels deep.".into()),
            ),
        }
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for JsonArg {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the caller (pgrx's wrapper) passes an argument of this function's jsonb type.
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> pgrx::nullable::Nullable<Self> {
        // SAFETY: as above.
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

// SAFETY: the SQL type is jsonb, whose datum FromDatum above reads.
unsafe impl SqlTranslatable for JsonArg {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::JsonArg");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}
