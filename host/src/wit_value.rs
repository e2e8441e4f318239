//! WIT values on the wire, for calls between components over custom interfaces: each value
//! is a MessagePack value of a documented shape (docs/protocol.md, "Component-to-component
//! calls"), read back with the type the receiving side declares. Resources cannot cross.

use rmpv::Value as Msg;
use wasmtime::component::{Type, Val};

/// A value that is not the shape its type asks for, or a type that cannot cross.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ValueError(String);

fn err<T>(what: impl Into<String>) -> Result<T, ValueError> {
    Err(ValueError(what.into()))
}

/// The wire form of `val`.
pub(crate) fn to_msg(val: &Val) -> Result<Msg, ValueError> {
    Ok(match val {
        Val::Bool(b) => Msg::Boolean(*b),
        Val::S8(n) => Msg::from(*n),
        Val::U8(n) => Msg::from(*n),
        Val::S16(n) => Msg::from(*n),
        Val::U16(n) => Msg::from(*n),
        Val::S32(n) => Msg::from(*n),
        Val::U32(n) => Msg::from(*n),
        Val::S64(n) => Msg::from(*n),
        Val::U64(n) => Msg::from(*n),
        Val::Float32(f) => Msg::F32(*f),
        Val::Float64(f) => Msg::F64(*f),
        Val::Char(c) => Msg::from(c.to_string()),
        Val::String(s) => Msg::from(s.as_str()),
        // Bytes as MessagePack binary: a `list<u8>` of any size stays compact.
        Val::List(items) if !items.is_empty() && items.iter().all(|v| matches!(v, Val::U8(_))) => {
            Msg::Binary(items.iter().map(|v| if let Val::U8(b) = v { *b } else { 0 }).collect())
        }
        Val::List(items) | Val::Tuple(items) => Msg::Array(items.iter().map(to_msg).collect::<Result<_, _>>()?),
        Val::Record(fields) => {
            Msg::Map(fields.iter().map(|(k, v)| Ok((Msg::from(k.as_str()), to_msg(v)?))).collect::<Result<_, _>>()?)
        }
        Val::Variant(case, payload) => Msg::Map(vec![(Msg::from(case.as_str()), optional(payload.as_deref())?)]),
        Val::Enum(case) => Msg::from(case.as_str()),
        Val::Option(None) => Msg::Nil,
        // `some(none)` must not read as `none`: an option inside an option is wrapped.
        Val::Option(Some(inner)) if matches!(**inner, Val::Option(_)) => Msg::Array(vec![to_msg(inner)?]),
        Val::Option(Some(inner)) => to_msg(inner)?,
        Val::Result(Ok(v)) => Msg::Map(vec![(Msg::from("ok"), optional(v.as_deref())?)]),
        Val::Result(Err(e)) => Msg::Map(vec![(Msg::from("err"), optional(e.as_deref())?)]),
        Val::Flags(names) => Msg::Array(names.iter().map(|n| Msg::from(n.as_str())).collect()),
        Val::Resource(_) => return err("resources cannot cross between components"),
        other => return err(format!("a value of this kind cannot cross between components: {other:?}")),
    })
}

fn optional(val: Option<&Val>) -> Result<Msg, ValueError> {
    val.map_or(Ok(Msg::Nil), to_msg)
}

/// Read `msg` as a value of type `ty`.
pub(crate) fn from_msg(msg: &Msg, ty: &Type) -> Result<Val, ValueError> {
    let int = |msg: &Msg| -> Result<i128, ValueError> {
        msg.as_i64().map(i128::from).or_else(|| msg.as_u64().map(i128::from)).ok_or_else(|| shape("an integer", msg))
    };
    macro_rules! ranged {
        ($variant:ident, $t:ty) => {{
            let n = int(msg)?;
            Val::$variant(
                <$t>::try_from(n).map_err(|_| ValueError(format!("{n} is out of range for {}", stringify!($t))))?,
            )
        }};
    }
    Ok(match ty {
        Type::Bool => Val::Bool(msg.as_bool().ok_or_else(|| shape("a boolean", msg))?),
        Type::S8 => ranged!(S8, i8),
        Type::U8 => ranged!(U8, u8),
        Type::S16 => ranged!(S16, i16),
        Type::U16 => ranged!(U16, u16),
        Type::S32 => ranged!(S32, i32),
        Type::U32 => ranged!(U32, u32),
        Type::S64 => ranged!(S64, i64),
        Type::U64 => ranged!(U64, u64),
        #[allow(clippy::cast_possible_truncation, reason = "an f64 on the wire read as the f32 the type asks for")]
        Type::Float32 => Val::Float32(float(msg)? as f32),
        Type::Float64 => Val::Float64(float(msg)?),
        Type::Char => {
            let s = msg.as_str().ok_or_else(|| shape("a one-character string", msg))?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return err(format!("{s:?} is not one character")),
            }
        }
        Type::String => Val::String(msg.as_str().ok_or_else(|| shape("a string", msg))?.to_owned()),
        Type::List(list) => {
            let item = list.ty();
            match (msg, &item) {
                (Msg::Binary(bytes), Type::U8) => Val::List(bytes.iter().map(|b| Val::U8(*b)).collect()),
                (Msg::Array(items), _) => {
                    Val::List(items.iter().map(|m| from_msg(m, &item)).collect::<Result<_, _>>()?)
                }
                _ => return err(shape("a list", msg).0),
            }
        }
        Type::Record(record) => {
            let map = msg.as_map().ok_or_else(|| shape("a map of fields", msg))?;
            let mut fields = Vec::new();
            for field in record.fields() {
                let value =
                    lookup(map, field.name).ok_or_else(|| ValueError(format!("field {:?} is missing", field.name)))?;
                fields.push((field.name.to_owned(), from_msg(value, &field.ty)?));
            }
            Val::Record(fields)
        }
        Type::Tuple(tuple) => {
            let items = msg.as_array().ok_or_else(|| shape("an array", msg))?;
            let types: Vec<Type> = tuple.types().collect();
            if items.len() != types.len() {
                return err(format!("a tuple of {} values, got {}", types.len(), items.len()));
            }
            Val::Tuple(items.iter().zip(&types).map(|(m, t)| from_msg(m, t)).collect::<Result<_, _>>()?)
        }
        Type::Variant(variant) => {
            let (case, payload) = single(msg)?;
            let ty =
                variant.cases().find(|c| c.name == case).ok_or_else(|| ValueError(format!("no case {case:?}")))?.ty;
            Val::Variant(case.to_owned(), payload_of(payload, ty.as_ref())?)
        }
        Type::Enum(e) => {
            let case = msg.as_str().ok_or_else(|| shape("a case name", msg))?;
            if !e.names().any(|n| n == case) {
                return err(format!("no case {case:?}"));
            }
            Val::Enum(case.to_owned())
        }
        Type::Option(option) => {
            let inner = option.ty();
            match (msg, &inner) {
                (Msg::Nil, _) => Val::Option(None),
                (Msg::Array(wrapped), Type::Option(_)) if wrapped.len() == 1 => {
                    Val::Option(Some(Box::new(from_msg(&wrapped[0], &inner)?)))
                }
                _ => Val::Option(Some(Box::new(from_msg(msg, &inner)?))),
            }
        }
        Type::Result(result) => {
            let (case, payload) = single(msg)?;
            match case {
                "ok" => Val::Result(Ok(payload_of(payload, result.ok().as_ref())?)),
                "err" => Val::Result(Err(payload_of(payload, result.err().as_ref())?)),
                other => return err(format!("a result is {{\"ok\": …}} or {{\"err\": …}}, not {other:?}")),
            }
        }
        Type::Flags(flags) => {
            let names = msg.as_array().ok_or_else(|| shape("an array of flag names", msg))?;
            let mut set = Vec::new();
            for name in names {
                let name = name.as_str().ok_or_else(|| shape("a flag name", name))?;
                if !flags.names().any(|n| n == name) {
                    return err(format!("no flag {name:?}"));
                }
                set.push(name.to_owned());
            }
            Val::Flags(set)
        }
        Type::Own(_) | Type::Borrow(_) => return err("resources cannot cross between components"),
        other => return err(format!("values of type {other:?} cannot cross between components")),
    })
}

fn float(msg: &Msg) -> Result<f64, ValueError> {
    msg.as_f64().or_else(|| msg.as_i64().map(|i| i as f64)).ok_or_else(|| shape("a number", msg))
}

fn shape(expected: &str, got: &Msg) -> ValueError {
    ValueError(format!("expected {expected}, got {got}"))
}

fn lookup<'a>(map: &'a [(Msg, Msg)], key: &str) -> Option<&'a Msg> {
    map.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
}

/// The one entry of a variant's or result's map.
fn single(msg: &Msg) -> Result<(&str, &Msg), ValueError> {
    match msg.as_map().map(Vec::as_slice) {
        Some([(case, payload)]) => Ok((case.as_str().ok_or_else(|| shape("a case name", case))?, payload)),
        _ => err(shape("a map with one case", msg).0),
    }
}

fn payload_of(msg: &Msg, ty: Option<&Type>) -> Result<Option<Box<Val>>, ValueError> {
    match ty {
        None if msg.is_nil() => Ok(None),
        None => err(format!("this case carries no value, got {msg}")),
        Some(ty) => Ok(Some(Box::new(from_msg(msg, ty)?))),
    }
}

/// Encode positional values (a call's arguments or results) as one MessagePack array.
pub(crate) fn encode(values: &[Val]) -> Result<Vec<u8>, ValueError> {
    let array = Msg::Array(values.iter().map(to_msg).collect::<Result<_, _>>()?);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &array).map_err(|e| ValueError(e.to_string()))?;
    Ok(out)
}

/// Decode positional values of `types` from a MessagePack array.
pub(crate) fn decode(bytes: &[u8], types: &[Type]) -> Result<Vec<Val>, ValueError> {
    let msg = rmpv::decode::read_value(&mut &bytes[..]).map_err(|e| ValueError(format!("not MessagePack: {e}")))?;
    let items = msg.as_array().ok_or_else(|| shape("an array of values", &msg))?;
    if items.len() != types.len() {
        return err(format!("{} values expected, got {}", types.len(), items.len()));
    }
    items.iter().zip(types).map(|(m, t)| from_msg(m, t)).collect()
}
