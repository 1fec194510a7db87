//! The one seam through which services are registered: a [`ServiceSet`] built from a
//! [`ServiceEnv`].
//!
//! Every server takes its services this way: the service VM (`xenrpc_kernel::service_vm!`),
//! the host server (`xenrpc_host::hostd::main_with_services`), the client crate's fake service
//! VM and the in-process test fixture. A user's crate exposes one function,
//! `fn services(env: &ServiceEnv<'_>) -> impl ServiceSet`, and every server can serve it.
//!
//! A handler (`<service>::Handler(impl)`) is a set of one; tuples of sets are sets, so
//! `(echo::Handler(EchoServer), counter::Handler(Counter::default()))` serves both;
//! [`Restricted`] adds an access check; `Option<S>` serves `S` only when present.

use core::fmt;

use super::registry::{AccessCheck, Registry, RegistryError};
use super::ServiceHandler;

/// Services a server serves, registered together (see the module docs).
pub trait ServiceSet {
    /// Registers every service of the set into `registry`. Errors name the service refused
    /// (a clashing or reserved id, a full registry); a server does not start with them.
    fn register_into<'a>(&'a mut self, registry: &mut Registry<'a>) -> Result<(), RegistryError>;
}

impl<H: ServiceHandler> ServiceSet for H {
    fn register_into<'a>(&'a mut self, registry: &mut Registry<'a>) -> Result<(), RegistryError> {
        registry.register(self)
    }
}

/// A service only peers accepted by the check may call; the others get `AccessDenied` and
/// introspection does not list it to them. Peers are domain ids in the service VM
/// (`PeerId(0)` is dom0) and uids on the host transport.
pub struct Restricted<H>(pub H, pub AccessCheck);

impl<H: ServiceHandler> ServiceSet for Restricted<H> {
    fn register_into<'a>(&'a mut self, registry: &mut Registry<'a>) -> Result<(), RegistryError> {
        registry.register_restricted(&mut self.0, self.1)
    }
}

impl<S: ServiceSet> ServiceSet for Option<S> {
    fn register_into<'a>(&'a mut self, registry: &mut Registry<'a>) -> Result<(), RegistryError> {
        match self {
            Some(set) => set.register_into(registry),
            None => Ok(()),
        }
    }
}

/// A service that cannot start where it is being built (no key, no randomness): a set that
/// fails registration with this reason, so the server does not start with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceUnavailable {
    /// The service's name (its `NAME`).
    pub service: &'static str,
    /// Why, as a clause that completes "cannot start: …".
    pub why: &'static str,
}

impl fmt::Display for ServiceUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Service \"{}\" cannot start: {}.",
            self.service, self.why
        )
    }
}

impl core::error::Error for ServiceUnavailable {}

impl<S: ServiceSet> ServiceSet for Result<S, ServiceUnavailable> {
    fn register_into<'a>(&'a mut self, registry: &mut Registry<'a>) -> Result<(), RegistryError> {
        match self {
            Ok(set) => set.register_into(registry),
            Err(e) => Err(RegistryError::Unavailable {
                name: e.service,
                why: e.why,
            }),
        }
    }
}

macro_rules! tuple_sets {
    ($( ($($name:ident . $index:tt),+) )+) => {$(
        impl<$($name: ServiceSet),+> ServiceSet for ($($name,)+) {
            fn register_into<'a>(
                &'a mut self,
                registry: &mut Registry<'a>,
            ) -> Result<(), RegistryError> {
                $( self.$index.register_into(registry)?; )+
                Ok(())
            }
        }
    )+};
}

tuple_sets! {
    (A.0)
    (A.0, B.1)
    (A.0, B.1, C.2)
    (A.0, B.1, C.2, D.3)
    (A.0, B.1, C.2, D.3, E.4)
    (A.0, B.1, C.2, D.3, E.4, F.5)
    (A.0, B.1, C.2, D.3, E.4, F.5, G.6)
    (A.0, B.1, C.2, D.3, E.4, F.5, G.6, H.7)
}

/// Where a service set is being built: the server's parameters and the memory its services
/// may plan for. In the service VM the parameters are the `key=value` words of the kernel
/// command line (the xl config's `extra`), on the host `xenrpc-hostd --param key=value`.
pub struct ServiceEnv<'a> {
    params: &'a str,
    memory_bytes: usize,
    log: &'a dyn Fn(fmt::Arguments<'_>),
    platform: &'a dyn Platform,
}

fn no_log(_: fmt::Arguments<'_>) {}

/// What the place a service set is built in offers besides parameters: secrets the
/// toolstack provisioned for it, and randomness.
///
/// In the service VM a secret `NAME` is the hex value the toolstack wrote to the VM's
/// xenstore node `data/xenrpc/secret/NAME` before unpausing it (`xl create -p`, then
/// `xenstore-write`, then `xl unpause`); taking it removes the node, so the value lives only
/// in the service's memory afterwards. Randomness is the CPU's `RDRAND`. On the host,
/// `xenrpc-hostd --secret NAME=FILE` names a file holding the raw bytes, and randomness is
/// `/dev/urandom`.
pub trait Platform {
    /// Moves secret `name` into `buf` and returns its length, or `None` if none was
    /// provisioned. It cannot be taken twice.
    fn take_secret(&self, name: &str, buf: &mut [u8]) -> Result<Option<usize>, PlatformError>;

    /// Fills `buf` with random bytes.
    fn fill_random(&self, buf: &mut [u8]) -> Result<(), PlatformError>;
}

/// A secret or randomness could not be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// This platform has no source of randomness.
    NoRandomness,
    /// The secret is longer than the buffer for it.
    SecretTooLong {
        /// Size in bytes of the buffer for the secret.
        max: usize,
    },
    /// The provisioned value is not what the platform expects (e.g. not hex).
    SecretMalformed,
    /// Secrets cannot be read here (what failed).
    Unavailable(&'static str),
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformError::NoRandomness => f.write_str("this platform has no source of randomness"),
            PlatformError::SecretTooLong { max } => {
                write!(f, "the secret is longer than the {max} bytes it may have")
            }
            PlatformError::SecretMalformed => {
                f.write_str("the provisioned secret is malformed (the service VM expects hex)")
            }
            PlatformError::Unavailable(what) => write!(f, "secrets cannot be read: {what}"),
        }
    }
}

impl core::error::Error for PlatformError {}

/// Moves a secret's bytes into the caller's `buf` and wipes `secret` whatever happens: what a
/// [`Platform::take_secret`] does with the value it read. `SecretTooLong` if it does not fit.
pub fn hand_over_secret(secret: &mut [u8], buf: &mut [u8]) -> Result<Option<usize>, PlatformError> {
    let taken = match buf.get_mut(..secret.len()) {
        Some(dst) => {
            dst.copy_from_slice(secret);
            Ok(Some(secret.len()))
        }
        None => Err(PlatformError::SecretTooLong { max: buf.len() }),
    };
    secret.fill(0);
    taken
}

/// A platform with no secrets and no randomness (tests, and environments that offer none).
pub struct NoPlatform;

impl Platform for NoPlatform {
    fn take_secret(&self, _: &str, _: &mut [u8]) -> Result<Option<usize>, PlatformError> {
        Ok(None)
    }

    fn fill_random(&self, _: &mut [u8]) -> Result<(), PlatformError> {
        Err(PlatformError::NoRandomness)
    }
}

impl<'a> ServiceEnv<'a> {
    /// An environment with `params` (whitespace-separated words; `key=value` ones are
    /// parameters) and `memory_bytes` of memory the services may plan for, logging nowhere.
    pub fn new(params: &'a str, memory_bytes: usize) -> Self {
        ServiceEnv {
            params,
            memory_bytes,
            log: &no_log,
            platform: &NoPlatform,
        }
    }

    /// Takes secrets and randomness from `platform`.
    pub fn with_platform(mut self, platform: &'a dyn Platform) -> Self {
        self.platform = platform;
        self
    }

    /// Moves secret `name` (provisioned by the toolstack, see [`Platform`]) into `buf`: its
    /// length, or `None` if there is none.
    pub fn take_secret(&self, name: &str, buf: &mut [u8]) -> Result<Option<usize>, PlatformError> {
        self.platform.take_secret(name, buf)
    }

    /// Fills `buf` with random bytes from the platform's source (see [`Platform`]).
    pub fn fill_random(&self, buf: &mut [u8]) -> Result<(), PlatformError> {
        self.platform.fill_random(buf)
    }

    /// Sends what services log while they are built to `log` (the console, stderr).
    pub fn with_log(mut self, log: &'a dyn Fn(fmt::Arguments<'_>)) -> Self {
        self.log = log;
        self
    }

    /// The value of parameter `key` (the last `key=value` word), if given.
    pub fn param(&self, key: &str) -> Option<&'a str> {
        self.params
            .split_ascii_whitespace()
            .rev()
            .filter_map(|word| word.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, value)| value)
    }

    /// Memory the services may plan to use, in bytes: the service VM's heap, or what the
    /// host server was told. Services size their bounds from it (the kv store takes a
    /// quarter), leaving the rest for connections and calls.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Logs one line (at construction: what a service was configured with, what it ignored).
    pub fn log(&self, args: fmt::Arguments<'_>) {
        (self.log)(args)
    }
}

/// Service ids below this belong to the project (the built-ins and the host server's own);
/// a user's services take ids from here up. [`Registry::register`] refuses a reserved id
/// that is not one of [`PROJECT_SERVICES`].
pub const FIRST_USER_SERVICE_ID: u32 = 1024;

/// The project's services by id and name: the only ones allowed below
/// [`FIRST_USER_SERVICE_ID`].
pub const PROJECT_SERVICES: &[(u32, &str)] = &[
    (0, "introspection"),
    (1, "echo"),
    (2, "arith"),
    (3, "kv"),
    (100, "admin"),
    (101, "selftest"),
];

/// Whether `(id, name)` may be registered: a user id, or one of the project's services.
pub const fn id_allowed(id: u32, name: &str) -> bool {
    if id >= FIRST_USER_SERVICE_ID {
        return true;
    }
    let mut i = 0;
    while i < PROJECT_SERVICES.len() {
        let (reserved, reserved_name) = PROJECT_SERVICES[i];
        if reserved == id && str_eq(reserved_name, name) {
            return true;
        }
        i += 1;
    }
    false
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    #[test]
    fn params_are_key_value_words_and_the_last_one_counts() {
        let env = ServiceEnv::new("console=hvc0 kv-budget=100 flag kv-budget=7 a=b=c", 1 << 20);
        assert_eq!(env.param("kv-budget"), Some("7"));
        assert_eq!(env.param("a"), Some("b=c"));
        assert_eq!(env.param("flag"), None);
        assert_eq!(env.param("missing"), None);
        assert_eq!(env.memory_bytes(), 1 << 20);
    }

    #[test]
    fn a_secret_is_handed_over_whole_or_not_at_all_and_wiped() {
        let mut secret = *b"0123";
        let mut buf = [0u8; 8];
        assert_eq!(hand_over_secret(&mut secret, &mut buf), Ok(Some(4)));
        assert_eq!((&buf[..4], secret), (&b"0123"[..], [0; 4]));
        let mut secret = *b"too long";
        let mut small = [0u8; 4];
        assert_eq!(
            hand_over_secret(&mut secret, &mut small),
            Err(PlatformError::SecretTooLong { max: 4 })
        );
        assert_eq!((small, secret), ([0; 4], [0; 8]));
    }

    #[test]
    fn reserved_ids_are_the_projects_alone() {
        assert!(id_allowed(1, "echo"));
        assert!(id_allowed(100, "admin"));
        assert!(!id_allowed(1, "counter"));
        assert!(!id_allowed(5, "counter"));
        assert!(!id_allowed(FIRST_USER_SERVICE_ID - 1, "counter"));
        assert!(id_allowed(FIRST_USER_SERVICE_ID, "counter"));
        assert!(id_allowed(u32::MAX, "counter"));
    }
}
