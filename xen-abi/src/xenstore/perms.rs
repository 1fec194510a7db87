//! Xenstore node permissions: the `n0` / `r5` / `w3` / `b1` strings of `XS_SET_PERMS` and
//! `XS_GET_PERMS`. The first entry names the owner and the access of every domain not listed;
//! later entries grant a listed domain that access.

use crate::DomId;
use core::fmt;

/// What a permission entry allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: nothing.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// The letter on the wire.
    pub const fn letter(self) -> u8 {
        match self {
            Access::None => b'n',
            Access::Read => b'r',
            Access::Write => b'w',
            Access::Both => b'b',
        }
    }

    /// The access a letter stands for.
    pub const fn from_letter(letter: u8) -> Option<Access> {
        match letter {
            b'n' => Some(Access::None),
            b'r' => Some(Access::Read),
            b'w' => Some(Access::Write),
            b'b' => Some(Access::Both),
            _ => None,
        }
    }
}

/// One permission entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission {
    /// What the domain may do.
    pub access: Access,
    /// The domain.
    pub domid: DomId,
}

/// Longest encoding of one entry: a letter, five digits, a NUL.
pub const PERMISSION_MAX_LEN: usize = 7;

/// A permission string that is not `<n|r|w|b><decimal domid>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPermission;

impl fmt::Display for InvalidPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid xenstore permission (expected n|r|w|b followed by a domid)")
    }
}

impl Permission {
    /// Shorthand constructor.
    pub const fn new(access: Access, domid: DomId) -> Permission {
        Permission { access, domid }
    }

    /// Writes the entry with its NUL terminator into `out`, returning the length, or `None`
    /// if `out` is too small.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let mut digits = [0u8; 5];
        let mut value = self.domid;
        let mut count = 0;
        loop {
            digits[count] = b'0' + (value % 10) as u8;
            count += 1;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        let len = 1 + count + 1;
        let dst = out.get_mut(..len)?;
        dst[0] = self.access.letter();
        for (slot, digit) in dst[1..=count].iter_mut().zip(digits[..count].iter().rev()) {
            *slot = *digit;
        }
        dst[len - 1] = 0;
        Some(len)
    }

    /// Parses one entry without its NUL terminator, e.g. `b"r5"`.
    pub fn parse(text: &[u8]) -> Result<Permission, InvalidPermission> {
        let (&letter, digits) = text.split_first().ok_or(InvalidPermission)?;
        let access = Access::from_letter(letter).ok_or(InvalidPermission)?;
        Ok(Permission {
            access,
            domid: parse_decimal_u16(digits).ok_or(InvalidPermission)?,
        })
    }
}

/// A plain decimal `u16`: 1 to 5 digits, no sign, no leading zeros except "0" itself.
fn parse_decimal_u16(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut value: u32 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(digit - b'0');
    }
    u16::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(p: Permission) -> Vec<u8> {
        let mut buf = [0u8; PERMISSION_MAX_LEN];
        let len = p.encode(&mut buf).unwrap();
        buf[..len].to_vec()
    }

    #[test]
    fn encodes_letters_and_domids() {
        assert_eq!(encoded(Permission::new(Access::None, 0)), b"n0\0");
        assert_eq!(encoded(Permission::new(Access::Read, 5)), b"r5\0");
        assert_eq!(encoded(Permission::new(Access::Write, 42)), b"w42\0");
        assert_eq!(encoded(Permission::new(Access::Both, 65535)), b"b65535\0");
        assert_eq!(Permission::new(Access::Read, 1).encode(&mut [0u8; 2]), None);
    }

    #[test]
    fn parses_what_it_encodes() {
        for access in [Access::None, Access::Read, Access::Write, Access::Both] {
            for domid in [0, 1, 9, 10, 4095, 0x7ff0, 65535] {
                let p = Permission::new(access, domid);
                let bytes = encoded(p);
                assert_eq!(Permission::parse(&bytes[..bytes.len() - 1]), Ok(p));
            }
        }
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in [
            &b""[..],
            b"r",
            b"x5",
            b"R5",
            b"r-1",
            b"r+1",
            b"r65536",
            b"r123456",
            b"r05",
            b"r5\0",
            b"r 5",
            b"5",
        ] {
            assert_eq!(Permission::parse(bad), Err(InvalidPermission), "{bad:?}");
        }
    }
}
