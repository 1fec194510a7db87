//! `XenbusState` (`io/xenbus.h`): the state a frontend or backend publishes in its
//! xenstore `state` node, as a decimal string.

use core::fmt;

/// `enum xenbus_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum XenbusState {
    /// 0: not known (or the node is missing).
    Unknown = 0,
    /// 1: setting up.
    Initialising = 1,
    /// 2: waiting for information from the peer (backends, during hotplug).
    InitWait = 2,
    /// 3: information published, waiting for the peer.
    Initialised = 3,
    /// 4: connected.
    Connected = 4,
    /// 5: the device is being closed.
    Closing = 5,
    /// 6: closed.
    Closed = 6,
    /// 7: reconfiguration requested.
    Reconfiguring = 7,
    /// 8: reconfiguration done.
    Reconfigured = 8,
}

/// A xenstore value that is not a valid `XenbusState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidXenbusState;

impl fmt::Display for InvalidXenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a XenbusState (expected a decimal 0..=8)")
    }
}

impl XenbusState {
    /// The state with numeric value `raw`.
    pub const fn from_u32(raw: u32) -> Result<XenbusState, InvalidXenbusState> {
        Ok(match raw {
            0 => XenbusState::Unknown,
            1 => XenbusState::Initialising,
            2 => XenbusState::InitWait,
            3 => XenbusState::Initialised,
            4 => XenbusState::Connected,
            5 => XenbusState::Closing,
            6 => XenbusState::Closed,
            7 => XenbusState::Reconfiguring,
            8 => XenbusState::Reconfigured,
            _ => return Err(InvalidXenbusState),
        })
    }

    /// Parses a xenstore `state` value: one decimal digit, optionally NUL-terminated.
    pub fn parse(value: &[u8]) -> Result<XenbusState, InvalidXenbusState> {
        let digits = match value {
            [rest @ .., 0] => rest,
            all => all,
        };
        match digits {
            [digit @ b'0'..=b'8'] => XenbusState::from_u32(u32::from(digit - b'0')),
            _ => Err(InvalidXenbusState),
        }
    }

    /// The decimal string stored in xenstore.
    pub const fn as_str(self) -> &'static str {
        match self {
            XenbusState::Unknown => "0",
            XenbusState::Initialising => "1",
            XenbusState::InitWait => "2",
            XenbusState::Initialised => "3",
            XenbusState::Connected => "4",
            XenbusState::Closing => "5",
            XenbusState::Closed => "6",
            XenbusState::Reconfiguring => "7",
            XenbusState::Reconfigured => "8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_strings() {
        for raw in 0..=8 {
            let state = XenbusState::from_u32(raw).unwrap();
            assert_eq!(state as u32, raw);
            assert_eq!(XenbusState::parse(state.as_str().as_bytes()), Ok(state));
        }
        assert_eq!(XenbusState::parse(b"4\0"), Ok(XenbusState::Connected));
    }

    #[test]
    fn invalid_states_are_rejected() {
        assert_eq!(XenbusState::from_u32(9), Err(InvalidXenbusState));
        for bad in [
            &b""[..],
            b"9",
            b"44",
            b" 4",
            b"4 ",
            b"-1",
            b"\0",
            b"x",
            b"4\0\0",
        ] {
            assert_eq!(XenbusState::parse(bad), Err(InvalidXenbusState), "{bad:?}");
        }
    }
}
