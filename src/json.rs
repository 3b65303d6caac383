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

/// The argument plumbing of a Rust type that is `jsonb` in SQL and read by its `FromDatum`.
macro_rules! jsonb_argument {
    ($t:ident) => {
        unsafe impl<'fcx> ArgAbi<'fcx> for $t {
            unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
                let index = arg.index();
                // SAFETY: the caller (pgrx's wrapper) passes an argument of this function's jsonb
                // type.
                unsafe { arg.unbox_arg_using_from_datum() }
                    .unwrap_or_else(|| panic!("argument {index} must not be null"))
            }

            unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> pgrx::nullable::Nullable<Self> {
                // SAFETY: as above.
                unsafe { arg.unbox_arg_using_from_datum() }.into()
            }
        }

        // SAFETY: the SQL type is jsonb, whose datum FromDatum reads.
        unsafe impl SqlTranslatable for $t {
            const TYPE_IDENT: &'static str = concat!(module_path!(), "::", stringify!($t));
            const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
            const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> =
                Ok(SqlMappingRef::literal("jsonb"));
            const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
                Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
        }
    };
}

jsonb_argument!(JsonArg);

/// A `jsonb` argument left in PostgreSQL's binary form (detoasted on use), for code that walks it
/// directly instead of printing and re-parsing it (see [`canonical_object`]).
#[derive(Clone, Copy, Debug)]
pub struct JsonbDatum(pg_sys::Datum);

impl JsonbDatum {
    /// The same argument, parsed (for the error paths and for code that needs a `Value`).
    pub fn parse(self) -> JsonArg {
        // SAFETY: the datum is a non-null jsonb of this call's arguments.
        unsafe { JsonArg::from_polymorphic_datum(self.0, false, pg_sys::JSONBOID) }
            .expect("a non-null datum")
    }
}

impl FromDatum for JsonbDatum {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<JsonbDatum> {
        (!is_null).then_some(JsonbDatum(datum))
    }
}

jsonb_argument!(JsonbDatum);

/// serde_json's nesting limit for [`JsonArg`]: at most 127 nested arrays and objects.
const MAX_DEPTH: usize = 128;

/// The canonical JSON text (`aicost_core::cachekey::canonicalize`) of a jsonb whose top level is an
/// object, read straight from the binary form: the same text as canonicalizing the parsed value,
/// without printing the document and parsing it back. None when the top level is not an object or
/// the nesting is deeper than [`JsonArg`] accepts (the caller reports those through `parse`).
pub fn canonical_object(arg: JsonbDatum) -> Option<String> {
    // SAFETY: a jsonb datum of this call; detoasting returns it or a palloc'd copy in the current
    // memory context. The iterator reads the container and allocates in the same context.
    unsafe {
        let jb = pg_sys::pg_detoast_datum(arg.0.cast_mut_ptr()).cast::<pg_sys::Jsonb>();
        const JB_FOBJECT: u32 = 0x2000_0000;
        if (*jb).root.header & JB_FOBJECT == 0 {
            return None;
        }
        let mut it = pg_sys::JsonbIteratorInit(&raw mut (*jb).root);
        let mut v = std::mem::zeroed::<pg_sys::JsonbValue>();
        let tok = pg_sys::JsonbIteratorNext(&raw mut it, &raw mut v, false);
        let mut out = String::with_capacity(256);
        let mut w = Walker { it, v, tokens: 0 };
        w.value(tok, &mut out, 0).then_some(out)
    }
}

struct Walker {
    it: *mut pg_sys::JsonbIterator,
    v: pg_sys::JsonbValue,
    tokens: u32,
}

impl Walker {
    /// # Safety
    /// `self.it` is a live iterator of a detoasted jsonb.
    unsafe fn next(&mut self) -> pg_sys::JsonbIteratorToken::Type {
        self.tokens = self.tokens.wrapping_add(1);
        if self.tokens.is_multiple_of(4096) {
            pg_sys::check_for_interrupts!();
        }
        // SAFETY: see above.
        unsafe { pg_sys::JsonbIteratorNext(&raw mut self.it, &raw mut self.v, false) }
    }

    /// The string of the current (key or string) value.
    ///
    /// # Safety
    /// The current value is a jbvString.
    unsafe fn string(&self) -> &str {
        // SAFETY: jsonb strings are valid UTF-8 of the given length, alive as long as the document.
        unsafe {
            let s = self.v.val.string;
            let bytes = std::slice::from_raw_parts(s.val.cast::<u8>(), s.len as usize);
            std::str::from_utf8_unchecked(bytes)
        }
    }

    /// Appends the canonical form of the value that starts with token `tok`; false if it nests
    /// deeper than [`MAX_DEPTH`].
    ///
    /// # Safety
    /// As [`Walker::next`].
    unsafe fn value(
        &mut self,
        tok: pg_sys::JsonbIteratorToken::Type,
        out: &mut String,
        depth: usize,
    ) -> bool {
        use aicost_core::cachekey::{canonical_number, canonical_string};
        use pg_sys::JsonbIteratorToken::*;
        match tok {
            WJB_BEGIN_OBJECT => {
                if depth + 1 >= MAX_DEPTH {
                    return false;
                }
                // Members are written as `"key":value` in jsonb's order (keys by length first),
                // then moved into `canonicalize`'s bytewise key order only if that differs (so a
                // deep chain of one-member objects is never copied). Keys point into the document
                // (alive for the whole call).
                out.push('{');
                let p0 = out.len();
                let mut members: Vec<(&[u8], std::ops::Range<usize>)> = Vec::new();
                // SAFETY (the calls below): as this function's. Members end at WJB_END_OBJECT.
                while unsafe { self.next() } == WJB_KEY {
                    // SAFETY: a key is a jbvString of the document.
                    let key: &[u8] = unsafe {
                        let k = self.v.val.string;
                        std::slice::from_raw_parts(k.val.cast::<u8>(), k.len as usize)
                    };
                    if !members.is_empty() {
                        out.push(',');
                    }
                    let start = out.len();
                    // SAFETY: jsonb keys are valid UTF-8.
                    canonical_string(unsafe { std::str::from_utf8_unchecked(key) }, out);
                    out.push(':');
                    let t = unsafe { self.next() };
                    if !unsafe { self.value(t, out, depth + 1) } {
                        return false;
                    }
                    members.push((key, start..out.len()));
                }
                if !members.is_sorted_by(|a, b| a.0 <= b.0) {
                    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
                    let written = out.split_off(p0);
                    for (i, (_, r)) in members.into_iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&written[r.start - p0..r.end - p0]);
                    }
                }
                out.push('}');
            }
            WJB_BEGIN_ARRAY => {
                if depth + 1 >= MAX_DEPTH {
                    return false;
                }
                out.push('[');
                let mut first = true;
                loop {
                    // SAFETY: as this function's.
                    let t = unsafe { self.next() };
                    if t == WJB_END_ARRAY || t == WJB_DONE {
                        break;
                    }
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    // SAFETY: as this function's.
                    if !unsafe { self.value(t, out, depth + 1) } {
                        return false;
                    }
                }
                out.push(']');
            }
            // WJB_VALUE, WJB_ELEM: a scalar in self.v.
            _ => {
                // SAFETY: the union member read is the one type_ names.
                unsafe {
                    match self.v.type_ {
                        pg_sys::jbvType::jbvString => canonical_string(self.string(), out),
                        pg_sys::jbvType::jbvNumeric => {
                            // numeric_out: the text jsonb_out prints, so the same canonical number.
                            let text = pgrx::direct_function_call::<&core::ffi::CStr>(
                                pg_sys::numeric_out,
                                &[Some(pg_sys::Datum::from(self.v.val.numeric))],
                            )
                            .expect("numeric_out returns text");
                            canonical_number(&text.to_string_lossy(), out);
                        }
                        pg_sys::jbvType::jbvBool => {
                            out.push_str(if self.v.val.boolean { "true" } else { "false" })
                        }
                        _ => out.push_str("null"),
                    }
                }
            }
        }
        true
    }
}
