//! Method signatures: the shape of a call's inline arguments and result (field names,
//! integer types, fixed-size arrays) and whether it carries bytes out of line, recorded by
//! [`define_service!`](crate::define_service) and reported by introspection, so that a client
//! that has never seen a service can call it (`xenrpc call SERVICE.METHOD field=value ...`).
//!
//! Argument and result types are declared with [`define_pod!`](crate::define_pod), which
//! derives the zerocopy traits (through this crate: no zerocopy dependency needed) and
//! implements [`Shape`]. Field types are the integers `u8`..`u64`, `i8`..`i64`, and arrays of
//! them; a `[u8; N]` is a byte string (zero-padded), and a `len` field beside exactly one
//! byte array is taken to be that array's length by generic clients.
//!
//! On the wire (introspection's `method_signature`) each field is a [`FieldEntry`]; a client
//! checks what it receives with `RemoteSignature::parse` (feature `alloc`) before trusting
//! any offset: a server may be buggy or hostile.

/// Most bytes of a field name (longer names are refused at compile time).
pub const FIELD_NAME_MAX: usize = 20;

/// An integer type a field holds (alone or as an array).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Scalar {
    /// `u8` (wire code 1).
    U8 = 1,
    /// `u16` (wire code 2).
    U16 = 2,
    /// `u32` (wire code 3).
    U32 = 3,
    /// `u64` (wire code 4).
    U64 = 4,
    /// `i8` (wire code 5).
    I8 = 5,
    /// `i16` (wire code 6).
    I16 = 6,
    /// `i32` (wire code 7).
    I32 = 7,
    /// `i64` (wire code 8).
    I64 = 8,
}

impl Scalar {
    /// Bytes one value takes.
    pub const fn size(self) -> usize {
        match self {
            Scalar::U8 | Scalar::I8 => 1,
            Scalar::U16 | Scalar::I16 => 2,
            Scalar::U32 | Scalar::I32 => 4,
            Scalar::U64 | Scalar::I64 => 8,
        }
    }

    /// Whether it is a signed type.
    pub const fn signed(self) -> bool {
        matches!(self, Scalar::I8 | Scalar::I16 | Scalar::I32 | Scalar::I64)
    }

    /// The type's Rust name.
    pub const fn name(self) -> &'static str {
        match self {
            Scalar::U8 => "u8",
            Scalar::U16 => "u16",
            Scalar::U32 => "u32",
            Scalar::U64 => "u64",
            Scalar::I8 => "i8",
            Scalar::I16 => "i16",
            Scalar::I32 => "i32",
            Scalar::I64 => "i64",
        }
    }

    /// The type with wire code `code`, if any.
    pub const fn from_code(code: u8) -> Option<Scalar> {
        Some(match code {
            1 => Scalar::U8,
            2 => Scalar::U16,
            3 => Scalar::U32,
            4 => Scalar::U64,
            5 => Scalar::I8,
            6 => Scalar::I16,
            7 => Scalar::I32,
            8 => Scalar::I64,
            _ => return None,
        })
    }
}

/// A field's type: one integer (`count` 0) or an array of `count` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldType {
    /// The integer type of the field or of each array element.
    pub scalar: Scalar,
    /// Array length, 1..=65535; 0 for a single integer.
    pub count: u16,
}

impl FieldType {
    /// Bytes the field takes.
    pub const fn size(self) -> usize {
        let n = if self.count == 0 {
            1
        } else {
            self.count as usize
        };
        n * self.scalar.size()
    }

    /// Whether it is a byte string (`[u8; N]`).
    pub const fn is_bytes(self) -> bool {
        self.count > 0 && matches!(self.scalar, Scalar::U8)
    }
}

impl core::fmt::Display for FieldType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.count {
            0 => f.write_str(self.scalar.name()),
            n => write!(f, "[{}; {n}]", self.scalar.name()),
        }
    }
}

/// One named field of an argument or result type, at `offset` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field's name as declared, at most [`FIELD_NAME_MAX`] bytes.
    pub name: &'static str,
    /// The field's type.
    pub ty: FieldType,
    /// Byte offset of the field from the start of the type.
    pub offset: u16,
}

/// A type a field may have: the integers and arrays of them.
pub trait FieldKind {
    /// The type as a field records it.
    const TYPE: FieldType;
}

/// An integer a field may hold.
pub trait ScalarKind {
    /// Which integer type it is.
    const SCALAR: Scalar;
}

macro_rules! scalars {
    ($($ty:ty => $scalar:ident),*) => {$(
        impl ScalarKind for $ty {
            const SCALAR: Scalar = Scalar::$scalar;
        }
        impl FieldKind for $ty {
            const TYPE: FieldType = FieldType { scalar: Scalar::$scalar, count: 0 };
        }
        /// A bare integer argument or result is one field named `value`.
        impl Shape for $ty {
            const FIELDS: &'static [Field] = &[Field {
                name: "value",
                ty: <$ty as FieldKind>::TYPE,
                offset: 0,
            }];
        }
    )*};
}

scalars!(u8 => U8, u16 => U16, u32 => U32, u64 => U64, i8 => I8, i16 => I16, i32 => I32, i64 => I64);

impl<T: ScalarKind, const N: usize> FieldKind for [T; N] {
    const TYPE: FieldType = {
        assert!(
            N > 0 && N <= u16::MAX as usize,
            "array fields hold 1..=65535 values"
        );
        FieldType {
            scalar: T::SCALAR,
            count: N as u16,
        }
    };
}

/// The fields of an argument or result type (implemented by [`define_pod!`](crate::define_pod),
/// for `()` (no fields) and for bare integers (one field, `value`)).
pub trait Shape {
    /// The fields in declaration order, each with its type and offset.
    const FIELDS: &'static [Field];
}

impl Shape for () {
    const FIELDS: &'static [Field] = &[];
}

/// A method's signature: inline argument and result shapes, and whether bytes travel out of
/// line each way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The fields of the inline arguments.
    pub args: &'static [Field],
    /// Bytes of the inline arguments (the argument type's size).
    pub args_size: u16,
    /// The fields of the inline result.
    pub result: &'static [Field],
    /// Bytes of the inline result (the result type's size).
    pub result_size: u16,
    /// The method reads bytes from the call's argument window.
    pub bytes_in: bool,
    /// The method writes bytes into the call's result window.
    pub bytes_out: bool,
}

impl Signature {
    /// The signature of a method taking `A` and returning `R` (used by `define_service!`).
    pub const fn of<A: Shape, R: Shape>(bytes_in: bool, bytes_out: bool) -> Signature {
        Signature {
            args: A::FIELDS,
            args_size: core::mem::size_of::<A>() as u16,
            result: R::FIELDS,
            result_size: core::mem::size_of::<R>() as u16,
            bytes_in,
            bytes_out,
        }
    }
}

/// Whether `name` fits a [`FieldEntry`] (checked at compile time by `define_pod!`).
pub const fn field_name_fits(name: &str) -> bool {
    !name.is_empty() && name.len() <= FIELD_NAME_MAX
}

/// `SignatureReply::flags`: the method reads bytes out of line.
pub const SIGNATURE_BYTES_IN: u32 = 1;
/// `SignatureReply::flags`: the method writes bytes out of line.
pub const SIGNATURE_BYTES_OUT: u32 = 2;

/// `FieldEntry::role`: a field of the arguments.
pub const ROLE_ARGS: u8 = 0;
/// `FieldEntry::role`: a field of the result.
pub const ROLE_RESULT: u8 = 1;

crate::define_pod! {
    /// Which method to describe.
    pub struct MethodQuery {
        /// The service id.
        pub service: u32,
        /// The method id within that service.
        pub method: u32,
    }

    /// A method's signature (its fields follow in the result window, arguments first, as
    /// [`FieldEntry`] records; `written` of them fitted).
    pub struct SignatureReply {
        /// `SIGNATURE_BYTES_*` bits.
        pub flags: u32,
        /// Bytes of the inline arguments.
        pub args_size: u16,
        /// Bytes of the inline result.
        pub result_size: u16,
        /// How many fields the arguments have.
        pub arg_fields: u16,
        /// How many fields the result has.
        pub result_fields: u16,
        /// `FieldEntry` records written into the result window (as many as fit).
        pub written: u32,
    }

    /// One field on the wire (32 bytes; the name zero-padded).
    pub struct FieldEntry {
        /// The field's name, zero-padded.
        pub name: [u8; FIELD_NAME_MAX],
        /// Byte offset of the field in its type.
        pub offset: u16,
        /// Array length; 0 for a single integer.
        pub count: u16,
        /// The integer type's wire code ([`Scalar`]).
        pub scalar: u8,
        /// [`ROLE_ARGS`] or [`ROLE_RESULT`].
        pub role: u8,
        /// Zero.
        pub reserved: [u8; 6],
    }
}

const _: () = assert!(core::mem::size_of::<FieldEntry>() == 32);
const _: () = assert!(core::mem::offset_of!(FieldEntry, offset) == 20);
const _: () = assert!(core::mem::size_of::<SignatureReply>() == 16);

impl FieldEntry {
    /// The wire record of `field`.
    pub fn of(field: &Field, role: u8) -> FieldEntry {
        FieldEntry {
            name: crate::services::name_field(field.name),
            offset: field.offset,
            count: field.ty.count,
            scalar: field.ty.scalar as u8,
            role,
            reserved: [0; 6],
        }
    }
}

impl SignatureReply {
    /// The reply describing `signature`, `written` of whose fields were written.
    pub fn of(signature: &Signature, written: u32) -> SignatureReply {
        let mut flags = 0;
        if signature.bytes_in {
            flags |= SIGNATURE_BYTES_IN;
        }
        if signature.bytes_out {
            flags |= SIGNATURE_BYTES_OUT;
        }
        SignatureReply {
            flags,
            args_size: signature.args_size,
            result_size: signature.result_size,
            arg_fields: signature.args.len() as u16,
            result_fields: signature.result.len() as u16,
            written,
        }
    }
}

#[cfg(feature = "alloc")]
pub mod directory;
#[cfg(feature = "alloc")]
mod remote;
#[cfg(feature = "alloc")]
pub use remote::{
    decode_hex, FieldError, RemoteField, RemoteShape, RemoteSignature, SignatureError, Value,
};
