//! Signatures: what `define_service!` records, what introspection reports of it, what a client
//! makes of a report (honest or hostile), and `field=value` encoding and decoding.

mod common;

use common::{round_trip, Memory, Services};
use proptest::prelude::*;
use xenrpc_proto::services::introspection;
use xenrpc_proto::services::{arith, echo, kv};
use xenrpc_proto::signature::{
    FieldEntry, FieldError, MethodQuery, RemoteSignature, Scalar, SignatureError, SignatureReply,
    Value, ROLE_ARGS, ROLE_RESULT,
};
use xenrpc_proto::zerocopy::IntoBytes;
use xenrpc_proto::{OolRef, ServiceInfo, PAGE_SIZE};

/// Asks the server for a method's signature and checks it, as a generic client does.
fn fetch(info: &ServiceInfo, method: usize) -> RemoteSignature {
    let mem = Memory::new(16, 1);
    let (mut client, mut server) = mem.connect(4, 1);
    let mut services = Services::new();
    let mut registry = services.registry();
    let query = MethodQuery {
        service: info.id,
        method: info.methods[method].id,
    };
    let call = introspection::client::method_signature(&query)
        .ool_result(OolRef::new(0, PAGE_SIZE as u32));
    let reply = round_trip(&mut client, &mut server, &mut registry, &call).unwrap();
    let mut entries = vec![0u8; reply.ool_written as usize];
    client.data().read(0, &mut entries).unwrap();
    RemoteSignature::parse(&reply.value, &entries).expect("an honest signature parses")
}

#[test]
fn introspection_reports_what_define_service_recorded() {
    for info in [&arith::INFO, &echo::INFO, &kv::INFO, &introspection::INFO] {
        for (i, method) in info.methods.iter().enumerate() {
            assert_eq!(
                fetch(info, i),
                RemoteSignature::from_local(&method.signature),
                "{}.{}",
                info.name,
                method.name
            );
        }
    }
    let add = fetch(&arith::INFO, 0);
    assert_eq!(add.to_string(), "({ a: i64, b: i64 }) -> ({ value: i64 })");
    let put = fetch(&kv::INFO, 0);
    assert_eq!(
        put.to_string(),
        "({ len: u32, bytes: [u8; 64] }, bytes) -> ({})"
    );
    assert!(put.bytes_in && !put.bytes_out);
    let get = fetch(&kv::INFO, 1);
    assert!(!get.bytes_in && get.bytes_out);
}

#[test]
fn an_unknown_method_is_bad_arguments() {
    let mem = Memory::new(16, 1);
    let (mut client, mut server) = mem.connect(4, 1);
    let mut services = Services::new();
    let mut registry = services.registry();
    let query = MethodQuery {
        service: arith::SERVICE_ID,
        method: 99,
    };
    let call = introspection::client::method_signature(&query);
    let err = round_trip(&mut client, &mut server, &mut registry, &call).unwrap_err();
    assert_eq!(
        err,
        xenrpc_proto::CallError::Remote(xenrpc_proto::Status::BadArguments)
    );
}

#[test]
fn fields_encode_by_name_or_position_and_errors_name_the_field() {
    let add = RemoteSignature::from_local(&arith::METHODS[0].signature);
    let expected = arith::Operands { a: 40, b: -2 };
    assert_eq!(
        add.args.encode(&[("a", "40"), ("b", "-2")]).unwrap(),
        expected.as_bytes()
    );
    assert_eq!(
        add.args.encode(&[("", "40"), ("", "-2")]).unwrap(),
        expected.as_bytes()
    );
    assert_eq!(
        add.args.encode(&[("a", "0x28"), ("b", "-2")]).unwrap(),
        expected.as_bytes()
    );
    let err = |values: &[(&str, &str)]| add.args.encode(values).unwrap_err();
    assert_eq!(
        err(&[("a", "1")]),
        FieldError::Missing { field: "b".into() }
    );
    assert_eq!(
        err(&[("a", "1"), ("b", "2"), ("c", "3")]).to_string(),
        "no field \"c\" (the fields are a, b)"
    );
    assert_eq!(
        err(&[("a", "1"), ("b", "x")]).to_string(),
        "field \"b\": \"x\" is not a signed integer of type i64"
    );
    assert!(matches!(
        err(&[("a", "99999999999999999999"), ("b", "1")]),
        FieldError::BadValue { .. }
    ));
    assert_eq!(
        err(&[("a", "1"), ("a", "2")]),
        FieldError::Repeated { field: "a".into() }
    );
    assert_eq!(
        err(&[("", "1"), ("", "2"), ("", "3")]),
        FieldError::TooMany { fields: 2 }
    );
    // Range checks per width: i8 -128..=127, u16 0..=65535.
    let i8_field = fake_shape(&[("x", Scalar::I8, 0, 0)], 1);
    assert!(i8_field.args.encode(&[("x", "-128")]).is_ok());
    assert!(i8_field.args.encode(&[("x", "128")]).is_err());
    assert!(i8_field.args.encode(&[("x", "-129")]).is_err());
    let u16_field = fake_shape(&[("x", Scalar::U16, 0, 0)], 2);
    assert_eq!(
        u16_field.args.encode(&[("x", "65535")]).unwrap(),
        [0xff, 0xff]
    );
    assert!(u16_field.args.encode(&[("x", "65536")]).is_err());
    assert!(u16_field.args.encode(&[("x", "-1")]).is_err());
}

#[test]
fn a_len_beside_one_byte_array_is_filled_and_cuts_the_decoded_bytes() {
    let get = RemoteSignature::from_local(&kv::METHODS[1].signature);
    let names: Vec<&str> = get.args.input_fields().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["bytes"], "len is not asked for");
    let key = kv::Key::new(b"colour").unwrap();
    assert_eq!(
        get.args.encode(&[("bytes", "colour")]).unwrap(),
        key.as_bytes()
    );
    assert_eq!(
        get.args.encode(&[("", "hex:636f6c6f7572")]).unwrap(),
        key.as_bytes()
    );
    let decoded = get.args.decode(key.as_bytes());
    assert_eq!(decoded[0], ("len".into(), Value::Unsigned(6)));
    assert_eq!(
        decoded[1],
        ("bytes".into(), Value::Bytes(b"colour".to_vec()))
    );
    let too_long = "k".repeat(65);
    assert!(matches!(
        get.args.encode(&[("bytes", &too_long)]),
        Err(FieldError::BadValue { .. })
    ));
    assert!(get.args.encode(&[("bytes", "hex:abc")]).is_err());
    // Only hex digits: no sign, no space (`from_str_radix` would take "+f").
    assert!(get.args.encode(&[("bytes", "hex:+f")]).is_err());
    assert_eq!(
        xenrpc_proto::signature::decode_hex("00fF7a"),
        Some(vec![0, 0xff, 0x7a])
    );
    assert_eq!(xenrpc_proto::signature::decode_hex("+f"), None);
    assert_eq!(xenrpc_proto::signature::decode_hex(" f"), None);
}

#[test]
fn results_decode_with_sign_and_width() {
    let shape = fake_shape(
        &[
            ("small", Scalar::I8, 0, 0),
            ("wide", Scalar::U32, 4, 0),
            ("list", Scalar::I16, 8, 2),
        ],
        12,
    );
    let bytes = [0xfe, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 7, 0];
    let values = shape.args.decode(&bytes);
    assert_eq!(values[0].1, Value::Signed(-2));
    assert_eq!(values[1].1, Value::Unsigned(u32::MAX as u64));
    assert_eq!(
        values[2].1,
        Value::Array(vec![Value::Signed(-1), Value::Signed(7)])
    );
    // Short input reads as zeros rather than failing.
    assert_eq!(shape.args.decode(&[])[1].1, Value::Unsigned(0));
}

/// A signature with argument fields `(name, scalar, offset, count)` and no result.
fn fake_shape(fields: &[(&str, Scalar, u16, u16)], size: u16) -> RemoteSignature {
    let (reply, entries) = report(fields, size, 0);
    RemoteSignature::parse(&reply, &entries).expect("well-formed")
}

fn report(fields: &[(&str, Scalar, u16, u16)], size: u16, flags: u32) -> (SignatureReply, Vec<u8>) {
    let mut entries = Vec::new();
    for &(name, scalar, offset, count) in fields {
        let entry = FieldEntry {
            name: xenrpc_proto::services::name_field(name),
            offset,
            count,
            scalar: scalar as u8,
            role: ROLE_ARGS,
            reserved: [0; 6],
        };
        entries.extend_from_slice(entry.as_bytes());
    }
    let reply = SignatureReply {
        flags,
        args_size: size,
        result_size: 0,
        arg_fields: fields.len() as u16,
        result_fields: 0,
        written: fields.len() as u32,
    };
    (reply, entries)
}

#[test]
fn malformed_signatures_are_errors() {
    let parse = |fields: &[(&str, Scalar, u16, u16)], size: u16, flags: u32| {
        let (reply, entries) = report(fields, size, flags);
        RemoteSignature::parse(&reply, &entries)
    };
    assert!(matches!(
        parse(&[("a", Scalar::U64, 0, 0)], 8, 4),
        Err(SignatureError::BadFlags { .. })
    ));
    assert!(matches!(
        parse(&[("a", Scalar::U64, 4, 0)], 8, 0),
        Err(SignatureError::BadOffset { .. })
    ));
    assert!(matches!(
        parse(&[("a", Scalar::U64, 0, 0), ("b", Scalar::U32, 4, 0)], 8, 0),
        Err(SignatureError::BadOffset { .. })
    ));
    assert!(matches!(
        parse(&[("a", Scalar::U8, 0, 300)], 200, 0),
        Err(SignatureError::TooLarge { size: 200 })
    ));
    assert!(matches!(
        parse(&[("a", Scalar::U8, 0, 0), ("a", Scalar::U8, 1, 0)], 2, 0),
        Err(SignatureError::DuplicateName { .. })
    ));
    assert!(matches!(
        parse(&[("", Scalar::U8, 0, 0)], 1, 0),
        Err(SignatureError::BadName { index: 0 })
    ));
    assert!(matches!(
        parse(&[("a b", Scalar::U8, 0, 0)], 1, 0),
        Err(SignatureError::BadName { index: 0 })
    ));
    assert!(matches!(
        parse(&[("a", Scalar::U16, 1, 0)], 4, 0),
        Err(SignatureError::BadOffset { .. })
    ));
    let (mut reply, mut entries) = report(&[("a", Scalar::U8, 0, 0)], 1, 0);
    entries[24] = 99; // the scalar code
    assert!(matches!(
        RemoteSignature::parse(&reply, &entries),
        Err(SignatureError::BadType { .. })
    ));
    entries[24] = Scalar::U8 as u8;
    entries[25] = ROLE_RESULT; // an argument field claiming to be a result
    assert!(matches!(
        RemoteSignature::parse(&reply, &entries),
        Err(SignatureError::BadType { .. })
    ));
    entries[25] = ROLE_ARGS;
    reply.written = 0;
    let err = RemoteSignature::parse(&reply, &entries).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("the server reported a malformed signature"));
    reply.written = 1;
    assert!(matches!(
        RemoteSignature::parse(&reply, &entries[..31]),
        Err(SignatureError::Truncated { .. })
    ));
}

proptest! {
    /// Whatever a server reports, parsing never panics, and a signature that parses can be
    /// encoded into and decoded from without panicking.
    #[test]
    fn any_report_is_parsed_or_refused_without_panicking(
        flags in 0u32..4,
        args_size in 0u16..256,
        arg_fields in 0u16..6,
        written in 0u32..8,
        entries in proptest::collection::vec(any::<u8>(), 0..256),
        values in proptest::collection::vec(("[a-z]{0,3}", "-?[0-9a-fx:]{0,6}"), 0..4),
    ) {
        let reply = SignatureReply {
            flags,
            args_size,
            result_size: 8,
            arg_fields,
            result_fields: 0,
            written,
        };
        if let Ok(signature) = RemoteSignature::parse(&reply, &entries) {
            let pairs: Vec<(&str, &str)> =
                values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            if let Ok(bytes) = signature.args.encode(&pairs) {
                prop_assert_eq!(bytes.len(), signature.args.size);
                let _ = signature.args.decode(&bytes);
            }
            let _ = signature.args.decode(&entries);
            let _ = signature.to_string();
        }
    }
}

mod by_name {
    use super::common::{clock, Memory};
    use xenrpc_proto::services::builtins;
    use xenrpc_proto::signature::directory::{
        call_by_signature, list_methods, list_services, resolve, LookupError,
    };
    use xenrpc_proto::signature::Value;
    use xenrpc_proto::testing::TestServer;
    use xenrpc_proto::{
        CallContext, CallRequest, Caller, Completion, Dispatcher, PeerId, ServiceEnv, Status,
    };

    fn server() -> TestServer<xenrpc_proto::services::BuiltIns> {
        TestServer::new(builtins(&ServiceEnv::new("", 16 << 20))).as_peer(PeerId(9))
    }

    #[test]
    fn every_method_of_every_service_is_callable_by_name() {
        let mut server = server();
        let names: Vec<String> = list_services(&mut server)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["introspection", "echo", "arith", "kv"]);
        let (service, method) = resolve(&mut server, "arith.add").unwrap();
        let reply = call_by_signature(
            &mut server,
            &service,
            &method,
            &[("a", "40"), ("b", "2")],
            &[],
            None,
        )
        .unwrap();
        assert_eq!(reply.fields, [("value".to_string(), Value::Signed(42))]);
        let (service, put) = resolve(&mut server, "kv.put").unwrap();
        let reply =
            call_by_signature(&mut server, &service, &put, &[("", "k")], b"v1", None).unwrap();
        assert_eq!(reply.status, Status::Ok);
        let (_, get) = resolve(&mut server, "kv.get").unwrap();
        let reply =
            call_by_signature(&mut server, &service, &get, &[("bytes", "k")], &[], None).unwrap();
        assert_eq!(reply.bytes, b"v1");
        assert_eq!(reply.fields[0], ("found".to_string(), Value::Unsigned(1)));
        let (service, div) = resolve(&mut server, "arith.div").unwrap();
        let reply = call_by_signature(
            &mut server,
            &service,
            &div,
            &[("", "1"), ("", "0")],
            &[],
            None,
        )
        .unwrap();
        assert_eq!(reply.status, Status::BadArguments);
        // Every method of every listed service has a signature that parses.
        for service in list_services(&mut server).unwrap() {
            assert!(!list_methods(&mut server, &service).unwrap().is_empty());
        }
    }

    #[test]
    fn unknown_names_and_bad_fields_are_errors_before_anything_is_sent() {
        let mut server = server();
        let err = resolve(&mut server, "counter.incr").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown service \"counter\" (the server offers introspection, echo, arith, kv)"
        );
        let err = resolve(&mut server, "arith.pow").unwrap_err();
        assert_eq!(
            err.to_string(),
            "service \"arith\" has no method \"pow\" (its methods are add, mul, div)"
        );
        assert!(matches!(
            resolve(&mut server, "arith"),
            Err(LookupError::BadSpec(_))
        ));
        let (service, add) = resolve(&mut server, "arith.add").unwrap();
        let err = call_by_signature(
            &mut server,
            &service,
            &add,
            &[("a", "1"), ("c", "2")],
            &[],
            None,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "no field \"c\" (the fields are a, b)");
        let err =
            call_by_signature(&mut server, &service, &add, &[("a", "1")], b"x", None).unwrap_err();
        assert!(matches!(err, LookupError::Field(_)));
    }

    /// A server whose introspection answers are garbage, byte `corrupt` of each result
    /// window flipped (or its inline reply cut short).
    struct Liar {
        corrupt: usize,
    }

    impl Dispatcher for Liar {
        fn dispatch(&mut self, call: &mut CallContext<'_>) -> Status {
            let mut services = builtins(&ServiceEnv::new("", 1 << 20));
            let mut registry = xenrpc_proto::Registry::new();
            registry.register_set(&mut services).unwrap();
            let status = registry.dispatch(call);
            let at = self.corrupt;
            let out = call.ool_result();
            if at < out.written() {
                // Something no honest server writes there.
                let _ = out.write(at, &[0xff ^ (at as u8)]);
            }
            status
        }
    }

    struct Lying<'m> {
        client: super::common::Client<'m>,
        server: super::common::Server<'m>,
        liar: Liar,
    }

    impl Caller for Lying<'_> {
        type Error = xenrpc_proto::CallError;
        fn call_raw(
            &mut self,
            request: &CallRequest<'_>,
            input: &[u8],
            output_capacity: Option<usize>,
        ) -> Result<Completion, Self::Error> {
            self.client
                .enqueue_with_bytes(request, input, output_capacity)?;
            self.client.publish();
            self.server.poll(&mut self.liar, &clock(), u64::MAX);
            Ok(self.client.poll_response()?.expect("answered"))
        }
    }

    #[test]
    fn a_lying_introspection_is_an_error_not_a_crash() {
        let mem = Memory::new(16, 2);
        let mut refused = 0;
        for corrupt in 0..64 {
            let (client, server) = mem.connect(4, 1);
            let mut lying = Lying {
                client,
                server,
                liar: Liar { corrupt },
            };
            match resolve(&mut lying, "kv.put") {
                Ok((_, method)) => assert_eq!(method.name, "put"),
                Err(LookupError::Malformed(why)) => {
                    assert!(!why.is_empty());
                    refused += 1;
                }
                Err(other) => assert!(
                    matches!(
                        other,
                        LookupError::UnknownService { .. }
                            | LookupError::UnknownMethod { .. }
                            // A corrupted id asks for a service that is not there.
                            | LookupError::Introspection(Status::BadArguments)
                    ),
                    "{other:?}"
                ),
            }
        }
        assert!(refused > 0, "some corruption must be caught as malformed");
    }
}
