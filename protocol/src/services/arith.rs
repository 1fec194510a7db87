//! The arith service: checked 64-bit integer arithmetic (overflow and division by zero are
//! `BadArguments`).

use crate::{CallContext, Status};

crate::define_pod! {
    #[derive(Default)]
    pub struct Operands {
        pub a: i64,
        pub b: i64,
    }
}

crate::define_pod! {
    #[derive(Default)]
    pub struct Value {
        pub value: i64,
    }
}

crate::define_service! {
    /// Integer arithmetic.
    pub mod arith {
        name = "arith", id = 2, version = 1;
        /// `a + b`.
        fn add = 1 (Operands) -> Value;
        /// `a * b`.
        fn mul = 2 (Operands) -> Value;
        /// `a / b`, truncating.
        fn div = 3 (Operands) -> Value;
    }
}

pub use arith::*;

/// The arith server (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct ArithServer;

fn checked(value: Option<i64>) -> Result<Value, Status> {
    value
        .map(|value| Value { value })
        .ok_or(Status::BadArguments)
}

impl arith::Server for ArithServer {
    fn add(&mut self, _call: &mut CallContext<'_>, op: Operands) -> Result<Value, Status> {
        checked(op.a.checked_add(op.b))
    }

    fn mul(&mut self, _call: &mut CallContext<'_>, op: Operands) -> Result<Value, Status> {
        checked(op.a.checked_mul(op.b))
    }

    fn div(&mut self, _call: &mut CallContext<'_>, op: Operands) -> Result<Value, Status> {
        checked(op.a.checked_div(op.b))
    }
}
