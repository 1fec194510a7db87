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

/// The built-in services (echo, arith, kv) as one [`ServiceSet`](crate::ServiceSet): what the
/// stock service VM image and `xenrpc-hostd` serve, and a set to combine with a user's own.
#[cfg(feature = "alloc")]
pub struct BuiltIns {
    /// The echo service (id 1).
    pub echo: echo::Handler<echo::EchoServer>,
    /// The arith service (id 2).
    pub arith: arith::Handler<arith::ArithServer>,
    /// The kv service (id 3), one namespace per peer.
    pub kv: kv::Handler<kv::KvStore>,
}

#[cfg(feature = "alloc")]
impl BuiltIns {
    /// The built-ins for `env`: the kv store within [`kv::KvBudget::from_env`].
    pub fn new(env: &crate::ServiceEnv<'_>) -> Self {
        BuiltIns {
            echo: echo_service(env),
            arith: arith_service(env),
            kv: kv_service(env),
        }
    }
}

#[cfg(feature = "alloc")]
impl crate::ServiceSet for BuiltIns {
    fn register_into<'a>(
        &'a mut self,
        registry: &mut crate::Registry<'a>,
    ) -> Result<(), crate::RegistryError> {
        registry.register(&mut self.echo)?;
        registry.register(&mut self.arith)?;
        registry.register(&mut self.kv)
    }
}

/// The built-in services for `env`, as one set (what `xenrpc-hostd` serves).
#[cfg(feature = "alloc")]
pub fn builtins(env: &crate::ServiceEnv<'_>) -> BuiltIns {
    BuiltIns::new(env)
}

/// The echo service alone: the stock service VM image builds each built-in in a protection
/// domain of its own, from these three.
pub fn echo_service(_env: &crate::ServiceEnv<'_>) -> echo::Handler<echo::EchoServer> {
    echo::Handler(echo::EchoServer)
}

/// The arith service alone (see [`echo_service`]).
pub fn arith_service(_env: &crate::ServiceEnv<'_>) -> arith::Handler<arith::ArithServer> {
    arith::Handler(arith::ArithServer)
}

/// The kv service alone, within [`kv::KvBudget::from_env`] (see [`echo_service`]).
#[cfg(feature = "alloc")]
pub fn kv_service(env: &crate::ServiceEnv<'_>) -> kv::Handler<kv::KvStore> {
    kv::Handler(kv::KvStore::with_budget(kv::KvBudget::from_env(env)))
}
