//! Signatures as a client receives them: checked once ([`RemoteSignature::parse`]), then used
//! to turn `field=value` text into inline argument bytes and result bytes into values, for
//! services the client was not compiled against.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::{
    FieldEntry, FieldType, Scalar, Signature, SignatureReply, ROLE_ARGS, ROLE_RESULT,
    SIGNATURE_BYTES_IN, SIGNATURE_BYTES_OUT,
};
use crate::INLINE_CAPACITY;

/// A field of a signature a server reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteField {
    /// The field's name (printable ASCII, at most `FIELD_NAME_MAX` bytes).
    pub name: String,
    /// The field's type.
    pub ty: FieldType,
    /// Byte offset of the field in its shape (the field lies inside it).
    pub offset: usize,
}

/// The inline arguments or result of a method: their size and fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteShape {
    /// Bytes of the shape, at most `INLINE_CAPACITY`.
    pub size: usize,
    /// Its fields in the order the server reported them, none overlapping.
    pub fields: Vec<RemoteField>,
}

/// A method's signature as a server reported it, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSignature {
    /// The inline arguments.
    pub args: RemoteShape,
    /// The inline result.
    pub result: RemoteShape,
    /// The method reads bytes from the call's argument window.
    pub bytes_in: bool,
    /// The method writes bytes into the call's result window.
    pub bytes_out: bool,
}

/// A server reported a signature no `define_service!` declaration produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// The server wrote fewer field records than the signature has.
    Truncated {
        /// Field records that arrived.
        written: u32,
        /// Fields the signature has (arguments and result).
        fields: u32,
    },
    /// A shape is larger than a slot's inline capacity.
    TooLarge {
        /// The shape's size in bytes.
        size: usize,
    },
    /// A field has no valid name.
    BadName {
        /// The field record's index (arguments first).
        index: usize,
    },
    /// A field name appears twice in one shape.
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A field has an unknown type code, count or role.
    BadType {
        /// The field's name.
        name: String,
    },
    /// A field lies outside its shape or overlaps another.
    BadOffset {
        /// The field's name.
        name: String,
    },
    /// Unknown flag bits.
    BadFlags {
        /// The reported flags, all bits.
        flags: u32,
    },
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server reported a malformed signature: ")?;
        match self {
            SignatureError::Truncated { written, fields } => {
                write!(f, "{written} of its {fields} fields arrived")
            }
            SignatureError::TooLarge { size } => write!(
                f,
                "a {size}-byte shape does not fit a slot's {INLINE_CAPACITY} inline bytes"
            ),
            SignatureError::BadName { index } => write!(f, "field {index} has no valid name"),
            SignatureError::DuplicateName { name } => write!(f, "field \"{name}\" appears twice"),
            SignatureError::BadType { name } => write!(f, "field \"{name}\" has an unknown type"),
            SignatureError::BadOffset { name } => write!(
                f,
                "field \"{name}\" lies outside its shape or overlaps another field"
            ),
            SignatureError::BadFlags { flags } => write!(f, "unknown flags {flags:#x}"),
        }
    }
}

impl core::error::Error for SignatureError {}

/// A field value the caller gave could not be encoded (nothing was sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldError {
    /// No value for a field.
    Missing {
        /// The field without a value.
        field: String,
    },
    /// A value for a field the method does not have.
    Unknown {
        /// The name given.
        field: String,
        /// The fields the method takes, comma-separated (empty if none).
        known: String,
    },
    /// Two values for one field.
    Repeated {
        /// The field given twice.
        field: String,
    },
    /// A value that is not of the field's type.
    BadValue {
        /// The field.
        field: String,
        /// The text given for it.
        value: String,
        /// What the field takes, as a phrase ("hex digits", "an unsigned integer of type u32").
        expected: String,
    },
    /// More values than the fields take (positional arguments).
    TooMany {
        /// How many fields take values.
        fields: usize,
    },
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::Missing { field } => write!(f, "field \"{field}\" needs a value"),
            FieldError::Unknown { field, known } if known.is_empty() => {
                write!(f, "no field \"{field}\": the method takes no fields")
            }
            FieldError::Unknown { field, known } => {
                write!(f, "no field \"{field}\" (the fields are {known})")
            }
            FieldError::Repeated { field } => write!(f, "field \"{field}\" is given twice"),
            FieldError::BadValue {
                field,
                value,
                expected,
            } => write!(f, "field \"{field}\": \"{value}\" is not {expected}"),
            FieldError::TooMany { fields } => {
                write!(f, "too many values: the method takes {fields} fields")
            }
        }
    }
}

impl core::error::Error for FieldError {}

/// A decoded field value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// An unsigned integer (`u8`..`u64`).
    Unsigned(u64),
    /// A signed integer (`i8`..`i64`).
    Signed(i64),
    /// A byte string (a `[u8; N]`, cut to its `len` field when the shape has one).
    Bytes(Vec<u8>),
    /// An array of integers.
    Array(Vec<Value>),
}

impl RemoteShape {
    fn from_local(size: u16, fields: &[super::Field]) -> RemoteShape {
        RemoteShape {
            size: usize::from(size),
            fields: fields
                .iter()
                .map(|f| RemoteField {
                    name: f.name.to_string(),
                    ty: f.ty,
                    offset: usize::from(f.offset),
                })
                .collect(),
        }
    }

    fn check(&self) -> Result<(), SignatureError> {
        if self.size > INLINE_CAPACITY {
            return Err(SignatureError::TooLarge { size: self.size });
        }
        let mut spans: Vec<(usize, usize, &str)> = Vec::with_capacity(self.fields.len());
        for field in &self.fields {
            if self.fields.iter().filter(|f| f.name == field.name).count() > 1 {
                return Err(SignatureError::DuplicateName {
                    name: field.name.clone(),
                });
            }
            let end = field.offset.checked_add(field.ty.size());
            let aligned = field.offset % field.ty.scalar.size() == 0;
            match end {
                Some(end) if end <= self.size && aligned => {
                    spans.push((field.offset, end, &field.name))
                }
                _ => {
                    return Err(SignatureError::BadOffset {
                        name: field.name.clone(),
                    })
                }
            }
        }
        spans.sort_unstable();
        if let Some(pair) = spans.windows(2).find(|pair| pair[0].1 > pair[1].0) {
            return Err(SignatureError::BadOffset {
                name: pair[1].2.to_string(),
            });
        }
        Ok(())
    }

    /// The byte array a `len` field measures: when the shape has a `len` integer field and
    /// exactly one byte array, `(len index, array index)`.
    fn length_pair(&self) -> Option<(usize, usize)> {
        let len = self
            .fields
            .iter()
            .position(|f| f.name == "len" && f.ty.count == 0)?;
        let mut arrays = self
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.ty.is_bytes());
        match (arrays.next(), arrays.next()) {
            (Some((array, _)), None) => Some((len, array)),
            _ => None,
        }
    }

    /// The fields a caller gives values for (a `len` the shape fills itself is left out).
    pub fn input_fields(&self) -> impl Iterator<Item = &RemoteField> {
        let auto = self.length_pair().map(|(len, _)| len);
        self.fields
            .iter()
            .enumerate()
            .filter(move |(i, _)| Some(*i) != auto)
            .map(|(_, f)| f)
    }

    /// Encodes `values` (`(field, text)` pairs; a field named `""` takes the next field in
    /// order, for positional arguments) into the shape's bytes. Integers are decimal or
    /// `0x` hex; byte strings are text or `hex:...`, zero-padded; integer arrays are
    /// comma-separated, zero-padded. A `len` field beside the one byte array is set to the
    /// byte string's length unless given.
    pub fn encode(&self, values: &[(&str, &str)]) -> Result<Vec<u8>, FieldError> {
        let mut given: Vec<Option<&str>> = alloc::vec![None; self.fields.len()];
        let implied_len = self.length_pair().map(|(len, _)| len);
        let inputs: Vec<usize> = (0..self.fields.len())
            .filter(|i| Some(*i) != implied_len)
            .collect();
        let mut next_positional = 0;
        for &(name, text) in values {
            let index = if name.is_empty() {
                let Some(&index) = inputs.get(next_positional) else {
                    return Err(FieldError::TooMany {
                        fields: inputs.len(),
                    });
                };
                next_positional += 1;
                index
            } else {
                self.fields
                    .iter()
                    .position(|f| f.name == name)
                    .ok_or_else(|| FieldError::Unknown {
                        field: name.to_string(),
                        known: self.field_list(),
                    })?
            };
            if given[index].replace(text).is_some() {
                return Err(FieldError::Repeated {
                    field: self.fields[index].name.clone(),
                });
            }
        }
        let mut bytes = alloc::vec![0u8; self.size];
        let mut string_len = None;
        for (field, text) in self.fields.iter().zip(&given) {
            let Some(text) = text else { continue };
            let written = encode_field(field, text, &mut bytes[field.offset..][..field.ty.size()])?;
            if field.ty.is_bytes() {
                string_len = Some(written);
            }
        }
        for (index, (field, text)) in self.fields.iter().zip(&given).enumerate() {
            if text.is_some() {
                continue;
            }
            match implied_len {
                Some(len) if len == index => {
                    let n = string_len.unwrap_or(0) as u64;
                    write_int(field, n, &mut bytes[field.offset..][..field.ty.size()])?;
                }
                _ => {
                    return Err(FieldError::Missing {
                        field: field.name.clone(),
                    })
                }
            }
        }
        Ok(bytes)
    }

    fn field_list(&self) -> String {
        let names: Vec<&str> = self.input_fields().map(|f| f.name.as_str()).collect();
        names.join(", ")
    }

    /// Decodes the shape's fields from `bytes` (shorter input reads as zeros).
    pub fn decode(&self, bytes: &[u8]) -> Vec<(String, Value)> {
        let read = |offset: usize, len: usize| -> Vec<u8> {
            let mut out = alloc::vec![0u8; len];
            if let Some(src) = bytes.get(offset..) {
                let n = src.len().min(len);
                out[..n].copy_from_slice(&src[..n]);
            }
            out
        };
        let mut values: Vec<(String, Value)> = self
            .fields
            .iter()
            .map(|field| {
                let raw = read(field.offset, field.ty.size());
                let value = if field.ty.is_bytes() {
                    Value::Bytes(raw)
                } else if field.ty.count == 0 {
                    scalar_value(field.ty.scalar, &raw)
                } else {
                    Value::Array(
                        raw.chunks(field.ty.scalar.size())
                            .map(|chunk| scalar_value(field.ty.scalar, chunk))
                            .collect(),
                    )
                };
                (field.name.clone(), value)
            })
            .collect();
        if let Some((len, array)) = self.length_pair() {
            let n = match values[len].1 {
                Value::Unsigned(n) => usize::try_from(n).unwrap_or(usize::MAX),
                Value::Signed(n) => usize::try_from(n).unwrap_or(0),
                _ => 0,
            };
            if let Value::Bytes(b) = &mut values[array].1 {
                b.truncate(n);
            }
        }
        values
    }
}

fn scalar_value(scalar: Scalar, raw: &[u8]) -> Value {
    let mut le = [0u8; 8];
    le[..raw.len()].copy_from_slice(raw);
    let unsigned = u64::from_le_bytes(le);
    if !scalar.signed() {
        return Value::Unsigned(unsigned);
    }
    let shift = 64 - 8 * raw.len() as u32;
    Value::Signed(((unsigned << shift) as i64) >> shift)
}

fn bad(field: &RemoteField, text: &str, expected: impl Into<String>) -> FieldError {
    FieldError::BadValue {
        field: field.name.clone(),
        value: text.to_string(),
        expected: expected.into(),
    }
}

fn parse_int(text: &str, scalar: Scalar) -> Option<u64> {
    let bits = 8 * scalar.size() as u32;
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let magnitude = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<u64>().ok()?,
    };
    if scalar.signed() {
        let min = 1u64 << (bits - 1);
        let value = if negative {
            (magnitude <= min).then(|| (magnitude as i64).wrapping_neg() as u64)?
        } else {
            (magnitude < min).then_some(magnitude)?
        };
        Some(value)
    } else if negative {
        None
    } else {
        (bits == 64 || magnitude < 1u64 << bits).then_some(magnitude)
    }
}

fn write_int(field: &RemoteField, value: u64, dst: &mut [u8]) -> Result<(), FieldError> {
    let size = field.ty.scalar.size();
    let fits = size == 8 || value < 1u64 << (8 * size);
    if !fits {
        return Err(bad(field, &value.to_string(), "a length that fits"));
    }
    dst[..size].copy_from_slice(&value.to_le_bytes()[..size]);
    Ok(())
}

/// Encodes `text` into `dst` (the field's bytes); returns the byte string's length.
fn encode_field(field: &RemoteField, text: &str, dst: &mut [u8]) -> Result<usize, FieldError> {
    let scalar = field.ty.scalar;
    let expected = || {
        let range = if scalar.signed() {
            "a signed integer"
        } else {
            "an unsigned integer"
        };
        alloc::format!("{range} of type {}", field.ty)
    };
    if field.ty.is_bytes() {
        let bytes = match text.strip_prefix("hex:") {
            Some(hex) => decode_hex(hex).ok_or_else(|| bad(field, text, "hex digits"))?,
            None => text.as_bytes().to_vec(),
        };
        if bytes.len() > dst.len() {
            return Err(bad(
                field,
                text,
                alloc::format!("at most {} bytes", dst.len()),
            ));
        }
        dst[..bytes.len()].copy_from_slice(&bytes);
        return Ok(bytes.len());
    }
    let size = scalar.size();
    if field.ty.count == 0 {
        let value = parse_int(text, scalar).ok_or_else(|| bad(field, text, expected()))?;
        dst.copy_from_slice(&value.to_le_bytes()[..size]);
        return Ok(0);
    }
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    if items.len() > usize::from(field.ty.count) {
        return Err(bad(
            field,
            text,
            alloc::format!("at most {} comma-separated values", field.ty.count),
        ));
    }
    for (item, slot) in items.iter().zip(dst.chunks_mut(size)) {
        let value = parse_int(item, scalar).ok_or_else(|| bad(field, text, expected()))?;
        slot.copy_from_slice(&value.to_le_bytes()[..size]);
    }
    Ok(0)
}

/// Bytes from hex digits (`None` for an odd count or anything but `0-9a-fA-F`, a sign
/// included).
pub fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    fn digit(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = hex.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

impl RemoteSignature {
    /// Checks what a server reported for a method: `reply` and the [`FieldEntry`] records
    /// it wrote (`entries`, arguments first). Nothing in it is trusted before this.
    pub fn parse(reply: &SignatureReply, entries: &[u8]) -> Result<Self, SignatureError> {
        let unknown = reply.flags & !(SIGNATURE_BYTES_IN | SIGNATURE_BYTES_OUT);
        if unknown != 0 {
            return Err(SignatureError::BadFlags { flags: reply.flags });
        }
        let fields = u32::from(reply.arg_fields) + u32::from(reply.result_fields);
        let record = core::mem::size_of::<FieldEntry>();
        if reply.written < fields || entries.len() < fields as usize * record {
            return Err(SignatureError::Truncated {
                written: reply.written.min((entries.len() / record) as u32),
                fields,
            });
        }
        let mut args = RemoteShape {
            size: usize::from(reply.args_size),
            fields: Vec::new(),
        };
        let mut result = RemoteShape {
            size: usize::from(reply.result_size),
            fields: Vec::new(),
        };
        for (index, chunk) in entries
            .chunks_exact(record)
            .take(fields as usize)
            .enumerate()
        {
            let entry = <FieldEntry as zerocopy::FromBytes>::read_from_bytes(chunk)
                .map_err(|_| SignatureError::BadName { index })?;
            let name = core::str::from_utf8(crate::services::field_name(&entry.name))
                .ok()
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or(SignatureError::BadName { index })?
                .to_string();
            let expected_role = if index < usize::from(reply.arg_fields) {
                ROLE_ARGS
            } else {
                ROLE_RESULT
            };
            let Some(scalar) = Scalar::from_code(entry.scalar) else {
                return Err(SignatureError::BadType { name });
            };
            if entry.role != expected_role {
                return Err(SignatureError::BadType { name });
            }
            let field = RemoteField {
                name,
                ty: FieldType {
                    scalar,
                    count: entry.count,
                },
                offset: usize::from(entry.offset),
            };
            if expected_role == ROLE_ARGS {
                args.fields.push(field);
            } else {
                result.fields.push(field);
            }
        }
        args.check()?;
        result.check()?;
        Ok(RemoteSignature {
            args,
            result,
            bytes_in: reply.flags & SIGNATURE_BYTES_IN != 0,
            bytes_out: reply.flags & SIGNATURE_BYTES_OUT != 0,
        })
    }

    /// A local signature in the same form (what a server built from it would report).
    pub fn from_local(signature: &Signature) -> Self {
        RemoteSignature {
            args: RemoteShape::from_local(signature.args_size, signature.args),
            result: RemoteShape::from_local(signature.result_size, signature.result),
            bytes_in: signature.bytes_in,
            bytes_out: signature.bytes_out,
        }
    }
}

impl fmt::Display for RemoteShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, field) in self.fields.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{}: {}", field.name, field.ty)?;
        }
        f.write_str(if self.fields.is_empty() { "}" } else { " }" })
    }
}

impl fmt::Display for RemoteSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}", self.args)?;
        if self.bytes_in {
            f.write_str(", bytes")?;
        }
        write!(f, ") -> ({}", self.result)?;
        if self.bytes_out {
            f.write_str(", bytes")?;
        }
        f.write_str(")")
    }
}
