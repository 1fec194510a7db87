//! Built-in service declarations (shared by clients and servers) and the servers of the
//! pure-logic ones. Service ids: introspection 0, echo 1, arith 2, kv 3.

pub mod arith;
pub mod echo;
pub mod introspection;
pub mod kv;

/// A name as a fixed-size, zero-padded byte field (truncated if longer).
pub fn name_field<const N: usize>(name: &str) -> [u8; N] {
    let mut field = [0u8; N];
    let n = name.len().min(N);
    field[..n].copy_from_slice(&name.as_bytes()[..n]);
    field
}

/// The name in a zero-padded byte field (up to the first zero byte).
pub fn field_name(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}
