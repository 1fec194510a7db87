//! The arith service: checked 64-bit integer arithmetic (overflow and division by zero are
//! `BadArguments`).

use crate::{CallContext, Status};

crate::define_pod! {
    /// The two operands of a binary operation.
    #[derive(Default)]
    pub struct Operands {
        /// The left operand.
        pub a: i64,
        /// The right operand (the divisor of `div`).
        pub b: i64,
    }
}

crate::define_pod! {
    /// An operation's result.
    #[derive(Default)]
    pub struct Value {
        /// The result.
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
