//! Calls by name, resolved at run time: what a server offers (introspection's
//! `list_services`, `list_methods`, `method_signature`), looked up by `service.method`, and a
//! call made from `field=value` text ([`call_by_signature`]). Everything the server reports is
//! checked before use; a malformed report is an error, never a panic.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use zerocopy::FromBytes;

use super::{FieldError, MethodQuery, RemoteSignature, SignatureError, SignatureReply, Value};
use crate::caller::{decode_reply, Caller};
use crate::client::{CallError, TypedCall};
use crate::layout::Status;
use crate::services::field_name;
use crate::services::introspection::{self, ListReply, MethodEntry, ServiceEntry, ServiceQuery};

/// A service as a server lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteService {
    /// The service id.
    pub id: u32,
    /// The service's name.
    pub name: String,
    /// The service's interface version.
    pub version: u32,
}

/// A method of a service, with its checked signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteMethod {
    /// The method id within its service.
    pub id: u32,
    /// The method's name.
    pub name: String,
    /// What it takes and returns, as checked by [`RemoteSignature::parse`].
    pub signature: RemoteSignature,
}

/// Why a call by name could not be made or its answer not be read.
#[derive(Debug)]
pub enum LookupError<E> {
    /// The connection failed (the transport's own error).
    Transport(E),
    /// The server lists no service of this name (to this caller).
    UnknownService {
        /// The name asked for.
        name: String,
        /// The services the server lists to this caller.
        known: Vec<String>,
    },
    /// The service has no method of this name.
    UnknownMethod {
        /// The service's name.
        service: String,
        /// The method name asked for.
        name: String,
        /// The methods the service has.
        known: Vec<String>,
    },
    /// `SERVICE.METHOD` was expected.
    BadSpec(String),
    /// The server's introspection answered with an error status.
    Introspection(Status),
    /// The server reported something malformed.
    Malformed(String),
    /// A field value was missing, extra or ill-typed (nothing was sent).
    Field(FieldError),
}

impl<E: fmt::Display> fmt::Display for LookupError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::Transport(e) => write!(f, "{e}"),
            LookupError::UnknownService { name, known } => write!(
                f,
                "unknown service \"{name}\" (the server offers {})",
                known.join(", ")
            ),
            LookupError::UnknownMethod {
                service,
                name,
                known,
            } => write!(
                f,
                "service \"{service}\" has no method \"{name}\" (its methods are {})",
                known.join(", ")
            ),
            LookupError::BadSpec(spec) => {
                write!(f, "\"{spec}\" is not SERVICE.METHOD")
            }
            LookupError::Introspection(status) => {
                write!(f, "the server's introspection answered {status:?}")
            }
            LookupError::Malformed(why) => write!(f, "{why}"),
            LookupError::Field(e) => write!(f, "{e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for LookupError<E> {}

impl<E> From<FieldError> for LookupError<E> {
    fn from(e: FieldError) -> Self {
        LookupError::Field(e)
    }
}

impl<E> From<SignatureError> for LookupError<E> {
    fn from(e: SignatureError) -> Self {
        LookupError::Malformed(e.to_string())
    }
}

/// Records of `T` out of a list reply's bytes, checked against what the reply claims.
fn records<T: FromBytes, E>(
    reply: &ListReply,
    bytes: &[u8],
    what: &str,
) -> Result<Vec<T>, LookupError<E>> {
    let size = core::mem::size_of::<T>();
    let claimed = reply.written as usize;
    if claimed.checked_mul(size) != Some(bytes.len()) || reply.written > reply.total {
        return Err(LookupError::Malformed(format!(
            "the server's {what} list claims {} records in {} bytes",
            reply.written,
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(size)
        .filter_map(|chunk| T::read_from_bytes(chunk).ok())
        .collect())
}

fn name_of<E>(field: &[u8], what: &str) -> Result<String, LookupError<E>> {
    core::str::from_utf8(field_name(field))
        .ok()
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .ok_or_else(|| {
            LookupError::Malformed(format!("the server reported a {what} without a valid name"))
        })
}

/// Makes an introspection call, mapping an error status to [`LookupError::Introspection`].
fn ask<C: Caller + ?Sized, R: FromBytes>(
    caller: &mut C,
    call: TypedCall<'_, R>,
) -> Result<(R, Vec<u8>), LookupError<C::Error>> {
    let completion = caller
        .call_raw(call.request(), &[], None)
        .map_err(LookupError::Transport)?;
    match decode_reply::<R>(&completion) {
        Ok(value) => Ok((value, completion.into_bytes())),
        Err(CallError::Remote(status)) => Err(LookupError::Introspection(status)),
        Err(_) => Err(LookupError::Malformed(
            "the server's introspection reply does not decode".to_string(),
        )),
    }
}

/// The services the server lets this caller see (introspection included).
pub fn list_services<C: Caller + ?Sized>(
    caller: &mut C,
) -> Result<Vec<RemoteService>, LookupError<C::Error>> {
    let (reply, bytes) = ask(caller, introspection::client::list_services(&()))?;
    records::<ServiceEntry, _>(&reply, &bytes, "service")?
        .into_iter()
        .map(|entry| {
            Ok(RemoteService {
                id: entry.id,
                name: name_of(&entry.name, "service")?,
                version: entry.version,
            })
        })
        .collect()
}

/// Every method of `service`, with its signature.
pub fn list_methods<C: Caller + ?Sized>(
    caller: &mut C,
    service: &RemoteService,
) -> Result<Vec<RemoteMethod>, LookupError<C::Error>> {
    let query = ServiceQuery { id: service.id };
    let (reply, bytes) = ask(caller, introspection::client::list_methods(&query))?;
    let entries = records::<MethodEntry, _>(&reply, &bytes, "method")?;
    let mut methods = Vec::with_capacity(entries.len());
    for entry in entries {
        let name = name_of(&entry.name, "method")?;
        let query = MethodQuery {
            service: service.id,
            method: entry.id,
        };
        let (reply, fields): (SignatureReply, _) =
            ask(caller, introspection::client::method_signature(&query))?;
        let signature = RemoteSignature::parse(&reply, &fields)
            .map_err(|e| LookupError::Malformed(format!("{}.{name}: {e}", service.name)))?;
        methods.push(RemoteMethod {
            id: entry.id,
            name,
            signature,
        });
    }
    Ok(methods)
}

/// The service named `name`.
pub fn find_service<C: Caller + ?Sized>(
    caller: &mut C,
    name: &str,
) -> Result<RemoteService, LookupError<C::Error>> {
    let services = list_services(caller)?;
    match services.iter().position(|s| s.name == name) {
        Some(i) => Ok(services[i].clone()),
        None => Err(LookupError::UnknownService {
            name: name.to_string(),
            known: services.into_iter().map(|s| s.name).collect(),
        }),
    }
}

/// The service and method `SERVICE.METHOD` names.
pub fn resolve<C: Caller + ?Sized>(
    caller: &mut C,
    spec: &str,
) -> Result<(RemoteService, RemoteMethod), LookupError<C::Error>> {
    let Some((service_name, method_name)) = spec.split_once('.') else {
        return Err(LookupError::BadSpec(spec.to_string()));
    };
    let service = find_service(caller, service_name)?;
    let methods = list_methods(caller, &service)?;
    match methods.iter().position(|m| m.name == method_name) {
        Some(i) => Ok((service, methods[i].clone())),
        None => Err(LookupError::UnknownMethod {
            service: service.name,
            name: method_name.to_string(),
            known: methods.into_iter().map(|m| m.name).collect(),
        }),
    }
}

/// The answer to a call by signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenericReply {
    /// The call's status.
    pub status: Status,
    /// The result's fields (empty unless the status is `Ok`).
    pub fields: Vec<(String, Value)>,
    /// The result bytes, for a method that returns bytes.
    pub bytes: Vec<u8>,
}

/// Calls `method` of `service` with `values` (see [`super::RemoteShape::encode`]) and `input`
/// out of line (only for a method that takes bytes; others must get none). Values are
/// checked before anything is sent.
pub fn call_by_signature<C: Caller + ?Sized>(
    caller: &mut C,
    service: &RemoteService,
    method: &RemoteMethod,
    values: &[(&str, &str)],
    input: &[u8],
    output_capacity: Option<usize>,
) -> Result<GenericReply, LookupError<C::Error>> {
    let signature = &method.signature;
    let inline = signature.args.encode(values)?;
    if !signature.bytes_in && !input.is_empty() {
        return Err(LookupError::Field(FieldError::Unknown {
            field: "(input bytes)".to_string(),
            known: "none: the method takes no bytes".to_string(),
        }));
    }
    let call = TypedCall::<()>::new(service.id, method.id, service.version, &inline);
    let capacity = if signature.bytes_out {
        output_capacity
    } else {
        Some(0)
    };
    let completion = caller
        .call_raw(call.request(), input, capacity)
        .map_err(LookupError::Transport)?;
    if completion.status != Status::Ok {
        return Ok(GenericReply {
            status: completion.status,
            fields: Vec::new(),
            bytes: Vec::new(),
        });
    }
    if completion.inline().len() != signature.result.size {
        return Err(LookupError::Malformed(format!(
            "{}.{} answered {} inline bytes; its signature says {}",
            service.name,
            method.name,
            completion.inline().len(),
            signature.result.size
        )));
    }
    let fields = signature.result.decode(completion.inline());
    Ok(GenericReply {
        status: Status::Ok,
        fields,
        bytes: completion.into_bytes(),
    })
}
