//! Full client/server conversations over in-memory regions, one per status value and per
//! built-in service.

mod common;

use common::*;
use xenrpc_proto::services::arith::{self, Operands, Value};
use xenrpc_proto::services::echo::{self, InlineBytes};
use xenrpc_proto::Status;

#[test]
fn arith_add_round_trip() {
    let mem = Memory::new(16, 1);
    let (mut client, mut server) = mem.connect(8, 1);
    let mut services = Services::new();
    let mut registry = services.registry();
    let reply = round_trip(
        &mut client,
        &mut server,
        &mut registry,
        &arith::client::add(&Operands { a: 40, b: 2 }),
    )
    .unwrap();
    assert_eq!(reply.value, Value { value: 42 });
    let err = round_trip(
        &mut client,
        &mut server,
        &mut registry,
        &arith::client::div(&Operands { a: 1, b: 0 }),
    );
    assert_eq!(
        err,
        Err(xenrpc_proto::CallError::Remote(Status::BadArguments))
    );
    let bytes = InlineBytes::new(b"hello").unwrap();
    let reply = round_trip(
        &mut client,
        &mut server,
        &mut registry,
        &echo::client::echo_inline(&bytes),
    )
    .unwrap();
    assert_eq!(reply.value.bytes(), Some(&b"hello"[..]));
    assert!(mem.guards_intact());
}
