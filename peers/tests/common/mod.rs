//! What the peers' tests share.

use xenrpc_peers::{PeerClient, MAX_ECHO};

/// Bytes that differ from their neighbours and from a shifted copy of themselves.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
}

/// A null call, echoes of every size up to [`MAX_ECHO`] (each answer checked, into a buffer
/// that held something else), and a null call again.
pub fn null_and_echoes(client: &mut dyn PeerClient) {
    client.null().unwrap();
    let mut answer = b"stale".to_vec();
    for len in [0, 1, 64, 4096, 65536, MAX_ECHO] {
        let data = pattern(len);
        client.echo(&data, &mut answer).unwrap();
        assert!(answer == data, "echo of {len} bytes came back different");
    }
    client.null().unwrap();
}
