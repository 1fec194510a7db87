//! The Xen device layer, behind small traits so the attach, handshake and call logic can run
//! against fakes on any Linux host: granting pages to a domain ([`XenDevices::grant_pages`],
//! Linux: `/dev/xen/gntalloc`) and event channels ([`EventChannel`], Linux: `/dev/xen/evtchn`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;
use std::sync::Arc;

use xenrpc_proto::SharedMemory;

use crate::error::{Error, Result};

/// A Xen domain id.
pub type DomId = u16;

/// Pages this domain shares with a peer through grants. Dropping it revokes the grants
/// (memory still mapped by the peer is kept alive by Xen/Linux until the peer unmaps it).
///
/// # Safety
/// `base()..base() + len()` is mapped, page aligned, readable and writable for as long as the
/// value lives; the peer may write it at any moment (so it is only ever accessed through
/// `xenrpc_proto::RegionView`).
pub unsafe trait GrantedPages: Send + Sync {
    /// One grant reference per page, in page order.
    fn grant_refs(&self) -> &[u32];
    /// The first byte of the pages, page aligned.
    fn base(&self) -> *mut u8;
    /// Length in bytes, a whole number of pages.
    fn len(&self) -> usize;
    /// Whether there are no pages.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One end of an interdomain event channel.
pub trait EventChannel: Send {
    /// The local port (what the peer binds to).
    fn port(&self) -> u32;
    /// Sends an event to the peer.
    fn notify(&self) -> Result<()>;
    /// Readable when an event may have arrived.
    fn fd(&self) -> RawFd;
    /// Consumes arrived events without blocking and re-arms the port; whether any arrived.
    fn acknowledge(&self) -> Result<bool>;
}

/// Grants and event channels of this domain.
pub trait XenDevices {
    /// Pages granted by [`Self::grant_pages`].
    type Pages: GrantedPages + 'static;
    /// A port allocated by [`Self::alloc_unbound`].
    type Channel: EventChannel;
    /// Allocates `count` zeroed pages and grants each to `peer` (read-only unless `writable`).
    fn grant_pages(&self, peer: DomId, count: usize, writable: bool) -> Result<Self::Pages>;
    /// Allocates an unbound port that `peer` may bind to (`EVTCHNOP_alloc_unbound`).
    fn alloc_unbound(&self, peer: DomId) -> Result<Self::Channel>;
    /// When this process lets go of `pages` (drops them, exits or is killed), the kernel
    /// clears the byte at `byte_offset` of them and sends an event on `channel`: the server
    /// learns at once that the client is gone (Linux: gntalloc's unmap notify).
    fn notify_on_release(
        &self,
        pages: &Self::Pages,
        byte_offset: usize,
        channel: &Self::Channel,
    ) -> Result<()>;
}

/// A page-aligned window of granted pages, usable as a protocol region. Holds the pages alive.
pub struct Window<P: GrantedPages> {
    pages: Arc<P>,
    offset: usize,
    len: usize,
}

impl<P: GrantedPages> Window<P> {
    /// `pages[first_page .. first_page + page_count]`; `None` if that lies outside.
    pub fn new(pages: Arc<P>, first_page: usize, page_count: usize) -> Option<Self> {
        let offset = first_page.checked_mul(PAGE_SIZE)?;
        let len = page_count.checked_mul(PAGE_SIZE)?;
        if offset.checked_add(len)? > pages.len() {
            return None;
        }
        Some(Window { pages, offset, len })
    }
}

// SAFETY: the window lies inside `pages` (checked in `new`), which stays mapped while the Arc
// lives; page alignment follows from the page-aligned base and a whole-page offset.
unsafe impl<P: GrantedPages> SharedMemory for Window<P> {
    fn base(&self) -> *mut u8 {
        self.pages.base().wrapping_add(self.offset)
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Bytes per page (x86-64 guests).
pub const PAGE_SIZE: usize = 4096;

// ---- Linux: include/uapi/xen/gntalloc.h and evtchn.h -------------------------------------

/// `_IOC(_IOC_NONE, type, nr, size)` on x86 (direction bits 0).
const fn ioc_none(kind: u8, nr: u8, size: usize) -> libc::c_ulong {
    ((size as libc::c_ulong) << 16) | ((kind as libc::c_ulong) << 8) | nr as libc::c_ulong
}

/// `struct ioctl_gntalloc_alloc_gref` with its one-element trailing array; the kernel reads
/// and writes `count` grant ids from `gref_ids` on.
#[repr(C)]
struct GntallocAllocGref {
    domid: u16,
    flags: u16,
    count: u32,
    index: u64,
    gref_ids: [u32; 1],
}
const _: () = assert!(core::mem::size_of::<GntallocAllocGref>() == 24);
const _: () = assert!(core::mem::offset_of!(GntallocAllocGref, count) == 4);
const _: () = assert!(core::mem::offset_of!(GntallocAllocGref, index) == 8);
const _: () = assert!(core::mem::offset_of!(GntallocAllocGref, gref_ids) == 16);

#[repr(C)]
struct GntallocDeallocGref {
    index: u64,
    count: u32,
}
const _: () = assert!(core::mem::size_of::<GntallocDeallocGref>() == 16);
const _: () = assert!(core::mem::offset_of!(GntallocDeallocGref, count) == 8);

const IOCTL_GNTALLOC_ALLOC_GREF: libc::c_ulong =
    ioc_none(b'G', 5, core::mem::size_of::<GntallocAllocGref>());
const IOCTL_GNTALLOC_DEALLOC_GREF: libc::c_ulong =
    ioc_none(b'G', 6, core::mem::size_of::<GntallocDeallocGref>());
const GNTALLOC_FLAG_WRITABLE: u16 = 1;

/// `struct ioctl_gntalloc_unmap_notify`: what the kernel does when the last user of a granted
/// page lets go of it (the process unmaps it and deallocates it, or exits or is killed).
#[repr(C)]
struct GntallocUnmapNotify {
    /// The page's offset in the gntalloc file plus the byte offset within the page.
    index: u64,
    action: u32,
    event_channel_port: u32,
}
const _: () = assert!(core::mem::size_of::<GntallocUnmapNotify>() == 16);
const _: () = assert!(core::mem::offset_of!(GntallocUnmapNotify, action) == 8);
const _: () = assert!(core::mem::offset_of!(GntallocUnmapNotify, event_channel_port) == 12);
const IOCTL_GNTALLOC_SET_UNMAP_NOTIFY: libc::c_ulong =
    ioc_none(b'G', 7, core::mem::size_of::<GntallocUnmapNotify>());
const UNMAP_NOTIFY_CLEAR_BYTE: u32 = 0x1;
const UNMAP_NOTIFY_SEND_EVENT: u32 = 0x2;

/// `struct ioctl_evtchn_bind_unbound_port`, `..._unbind`, `..._notify`: one `unsigned int`.
#[repr(C)]
struct EvtchnPortArg {
    value: u32,
}
const _: () = assert!(core::mem::size_of::<EvtchnPortArg>() == 4);

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
struct EvtchnBindInterdomain {
    remote_domain: u32,
    remote_port: u32,
}
const _: () = assert!(core::mem::size_of::<EvtchnBindInterdomain>() == 8);

const IOCTL_EVTCHN_BIND_INTERDOMAIN: libc::c_ulong = ioc_none(b'E', 1, 8);
const IOCTL_EVTCHN_BIND_UNBOUND_PORT: libc::c_ulong = ioc_none(b'E', 2, 4);
const IOCTL_EVTCHN_UNBIND: libc::c_ulong = ioc_none(b'E', 3, 4);
const IOCTL_EVTCHN_NOTIFY: libc::c_ulong = ioc_none(b'E', 4, 4);

/// The Linux device that grants this domain's pages to another.
pub const GNTALLOC_DEVICE: &str = "/dev/xen/gntalloc";
/// The Linux device for interdomain event channels.
pub const EVTCHN_DEVICE: &str = "/dev/xen/evtchn";

/// Most pages one allocation may hold (gntalloc's default module limit is 1024 in all).
pub const MAX_GRANT_PAGES: usize = 1024;

fn open_device(path: &str, nonblock: bool) -> Result<File> {
    let flags = libc::O_CLOEXEC | if nonblock { libc::O_NONBLOCK } else { 0 };
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::NotFound {
                " (is the xen-gntalloc / xen-evtchn module loaded?)"
            } else {
                ""
            };
            Error::device(format!("open {path}{hint}"), e)
        })
}

/// The Linux guest's Xen devices.
pub struct LinuxDevices {
    gntalloc: Arc<File>,
}

/// Fails with [`Error::NoXenDevices`] naming whichever of `paths` do not exist: the first
/// thing a user outside a Xen guest (or without the modules) should read.
fn check_present(paths: &[&str]) -> Result<()> {
    let missing: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [one] => Err(Error::NoXenDevices(format!(
            "{one} is missing: is this a Xen guest? load xen-evtchn and xen-gntalloc"
        ))),
        many => Err(Error::NoXenDevices(format!(
            "{} are missing: is this a Xen guest? load xen-evtchn and xen-gntalloc",
            many.join(" and ")
        ))),
    }
}

impl LinuxDevices {
    /// Opens gntalloc, after checking that both devices a connection needs exist (evtchn is
    /// opened per channel, later).
    pub fn open() -> Result<Self> {
        check_present(&[EVTCHN_DEVICE, GNTALLOC_DEVICE])?;
        Ok(LinuxDevices {
            gntalloc: Arc::new(open_device(GNTALLOC_DEVICE, false)?),
        })
    }

    /// Binds a fresh local port to `remote_port` of `remote` (used by the device self-test to
    /// loop an event channel back to this domain).
    pub fn bind_interdomain(&self, remote: DomId, remote_port: u32) -> Result<LinuxEventChannel> {
        let file = open_device(EVTCHN_DEVICE, true)?;
        let mut arg = EvtchnBindInterdomain {
            remote_domain: remote.into(),
            remote_port,
        };
        // SAFETY: IOCTL_EVTCHN_BIND_INTERDOMAIN reads one ioctl_evtchn_bind_interdomain from
        // the pointer, which points at a live struct of exactly that layout.
        let port =
            unsafe { libc::ioctl(file.as_raw_fd(), IOCTL_EVTCHN_BIND_INTERDOMAIN, &mut arg) };
        if port < 0 {
            return Err(Error::device(
                "evtchn bind interdomain",
                io::Error::last_os_error(),
            ));
        }
        Ok(LinuxEventChannel {
            file,
            port: port as u32,
        })
    }
}

/// Pages allocated and granted through `/dev/xen/gntalloc`, mapped into this process.
pub struct GntallocPages {
    device: Arc<File>,
    index: u64,
    base: NonNull<u8>,
    len: usize,
    refs: Vec<u32>,
}

// SAFETY: the mapping is owned by this value and only reached through raw pointers by
// `RegionView`'s atomics, which are sound from any thread.
unsafe impl Send for GntallocPages {}
// SAFETY: as above.
unsafe impl Sync for GntallocPages {}

// SAFETY: `base..base+len` is the MAP_SHARED read/write mapping made in `grant_pages`
// (mmap returns page-aligned addresses), unmapped only in Drop.
unsafe impl GrantedPages for GntallocPages {
    fn grant_refs(&self) -> &[u32] {
        &self.refs
    }
    fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for GntallocPages {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `grant_pages`; nothing refers to it
        // any more (every user holds the Arc this value lives in).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
        let mut arg = GntallocDeallocGref {
            index: self.index,
            count: self.refs.len() as u32,
        };
        // SAFETY: IOCTL_GNTALLOC_DEALLOC_GREF reads one ioctl_gntalloc_dealloc_gref from a
        // live struct of that layout. A failure leaves the pages to be freed at close.
        unsafe {
            libc::ioctl(
                self.device.as_raw_fd(),
                IOCTL_GNTALLOC_DEALLOC_GREF,
                &mut arg,
            )
        };
    }
}

impl XenDevices for LinuxDevices {
    type Pages = GntallocPages;
    type Channel = LinuxEventChannel;

    fn grant_pages(&self, peer: DomId, count: usize, writable: bool) -> Result<GntallocPages> {
        if count == 0 || count > MAX_GRANT_PAGES {
            return Err(Error::BadArguments(format!(
                "{count} pages to grant (1..={MAX_GRANT_PAGES})"
            )));
        }
        // The header plus `count` grant ids, in u64 words for alignment.
        let words = (16 + 4 * count).div_ceil(8);
        let mut buf = vec![0u64; words.max(3)];
        let header = buf.as_mut_ptr().cast::<GntallocAllocGref>();
        // SAFETY: `buf` is at least 24 bytes and 8-aligned, so it holds a GntallocAllocGref.
        unsafe {
            (*header).domid = peer;
            (*header).flags = if writable { GNTALLOC_FLAG_WRITABLE } else { 0 };
            (*header).count = count as u32;
        }
        // SAFETY: the kernel reads the header and writes `index` and `count` grant ids from
        // offset 16; `buf` has room for all of them.
        let rc =
            unsafe { libc::ioctl(self.gntalloc.as_raw_fd(), IOCTL_GNTALLOC_ALLOC_GREF, header) };
        if rc < 0 {
            return Err(Error::device(
                format!("gntalloc: grant {count} pages to domain {peer}"),
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: the ioctl succeeded, so `index` is written; read back from our own buffer.
        let index = unsafe { (*header).index };
        let refs: Vec<u32> = (0..count)
            // SAFETY: grant id `i` lies at byte 16 + 4i of `buf`, inside its length.
            .map(|i| unsafe {
                buf.as_ptr()
                    .cast::<u8>()
                    .add(16 + 4 * i)
                    .cast::<u32>()
                    .read()
            })
            .collect();
        let len = count * PAGE_SIZE;
        let offset = libc::off_t::try_from(index)
            .map_err(|_| Error::Protocol("gntalloc index out of range".into()))?;
        // SAFETY: maps `count` pages of the gntalloc device at the offset the kernel returned;
        // no existing memory is touched (the kernel chooses the address).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.gntalloc.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            let mut arg = GntallocDeallocGref {
                index,
                count: count as u32,
            };
            // SAFETY: releasing the grants just allocated, from a live struct of the right layout.
            unsafe {
                libc::ioctl(
                    self.gntalloc.as_raw_fd(),
                    IOCTL_GNTALLOC_DEALLOC_GREF,
                    &mut arg,
                )
            };
            return Err(Error::device("gntalloc: mmap granted pages", err));
        }
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| Error::Protocol("gntalloc mapped at 0".into()))?;
        Ok(GntallocPages {
            device: self.gntalloc.clone(),
            index,
            base,
            len,
            refs,
        })
    }

    fn notify_on_release(
        &self,
        pages: &GntallocPages,
        byte_offset: usize,
        channel: &LinuxEventChannel,
    ) -> Result<()> {
        if byte_offset >= pages.len {
            return Err(Error::BadArguments(format!(
                "release notify at byte {byte_offset} of {} bytes",
                pages.len
            )));
        }
        let mut arg = GntallocUnmapNotify {
            index: pages.index + byte_offset as u64,
            action: UNMAP_NOTIFY_CLEAR_BYTE | UNMAP_NOTIFY_SEND_EVENT,
            event_channel_port: channel.port,
        };
        // SAFETY: IOCTL_GNTALLOC_SET_UNMAP_NOTIFY reads one ioctl_gntalloc_unmap_notify from a
        // live struct of that layout. The kernel takes a reference on the port, so the event
        // still goes out if the port's file is closed first.
        let rc = unsafe {
            libc::ioctl(
                pages.device.as_raw_fd(),
                IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
                &mut arg,
            )
        };
        if rc < 0 {
            return Err(Error::device(
                "gntalloc: set unmap notify",
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn alloc_unbound(&self, peer: DomId) -> Result<LinuxEventChannel> {
        let file = open_device(EVTCHN_DEVICE, true)?;
        let mut arg = EvtchnPortArg { value: peer.into() };
        // SAFETY: IOCTL_EVTCHN_BIND_UNBOUND_PORT reads one ioctl_evtchn_bind_unbound_port from
        // a live struct of that layout; the result is the new local port.
        let port =
            unsafe { libc::ioctl(file.as_raw_fd(), IOCTL_EVTCHN_BIND_UNBOUND_PORT, &mut arg) };
        if port < 0 {
            return Err(Error::device(
                format!("evtchn: allocate a port for domain {peer}"),
                io::Error::last_os_error(),
            ));
        }
        Ok(LinuxEventChannel {
            file,
            port: port as u32,
        })
    }
}

/// A port bound through its own `/dev/xen/evtchn` file (so reads yield only this port).
pub struct LinuxEventChannel {
    file: File,
    port: u32,
}

impl EventChannel for LinuxEventChannel {
    fn port(&self) -> u32 {
        self.port
    }

    fn notify(&self) -> Result<()> {
        let mut arg = EvtchnPortArg { value: self.port };
        // SAFETY: IOCTL_EVTCHN_NOTIFY reads one ioctl_evtchn_notify from a live struct.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), IOCTL_EVTCHN_NOTIFY, &mut arg) };
        if rc < 0 {
            return Err(Error::device("evtchn notify", io::Error::last_os_error()));
        }
        Ok(())
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn acknowledge(&self) -> Result<bool> {
        let mut fired = false;
        loop {
            let mut ports = [0u32; 16];
            // SAFETY: reads at most size_of_val(&ports) bytes into the live local array.
            let n = unsafe {
                libc::read(
                    self.file.as_raw_fd(),
                    ports.as_mut_ptr().cast(),
                    core::mem::size_of_val(&ports),
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => return Ok(fired),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(Error::device("evtchn read", err)),
                }
            }
            let count = n as usize / 4;
            if count == 0 {
                return Ok(fired);
            }
            for &port in &ports[..count] {
                if port != self.port {
                    // Only our port is bound to this file; anything else is a kernel surprise.
                    continue;
                }
                fired = true;
            }
            // Re-enable delivery: write the port back (the kernel masks it when it fires).
            let unmask = self.port;
            // SAFETY: writes 4 bytes from a live local u32.
            let w =
                unsafe { libc::write(self.file.as_raw_fd(), (&unmask as *const u32).cast(), 4) };
            if w != 4 {
                return Err(Error::device("evtchn unmask", io::Error::last_os_error()));
            }
        }
    }
}

impl Drop for LinuxEventChannel {
    fn drop(&mut self) {
        let mut arg = EvtchnPortArg { value: self.port };
        // SAFETY: IOCTL_EVTCHN_UNBIND reads one ioctl_evtchn_unbind from a live struct; closing
        // the file would unbind too, this just makes it explicit and immediate.
        unsafe { libc::ioctl(self.file.as_raw_fd(), IOCTL_EVTCHN_UNBIND, &mut arg) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_linux_headers() {
        // _IOC(_IOC_NONE, 'G', 5, 24) and friends, as computed by the C headers on x86-64.
        assert_eq!(IOCTL_GNTALLOC_ALLOC_GREF, 0x0018_4705);
        assert_eq!(IOCTL_GNTALLOC_DEALLOC_GREF, 0x0010_4706);
        assert_eq!(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY, 0x0010_4707);
        assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
        assert_eq!(IOCTL_EVTCHN_BIND_UNBOUND_PORT, 0x0004_4502);
        assert_eq!(IOCTL_EVTCHN_UNBIND, 0x0004_4503);
        assert_eq!(IOCTL_EVTCHN_NOTIFY, 0x0004_4504);
    }

    #[test]
    fn missing_devices_are_a_clear_error() {
        let missing = "/nonexistent/xenrpc-test-device";
        assert!(check_present(&["/", "/dev"]).is_ok());
        let err = check_present(&["/", missing]).unwrap_err();
        assert_eq!(err.kind(), "no-xen-devices");
        assert_eq!(
            err.to_string(),
            format!(
                "no Xen devices: {missing} is missing: is this a Xen guest? load xen-evtchn and \
                 xen-gntalloc"
            )
        );
        let err = check_present(&[missing, "/", "/nonexistent/other"]).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("{missing} and /nonexistent/other are missing")),
            "{err}"
        );
        if !std::path::Path::new(GNTALLOC_DEVICE).exists() {
            // Not a Xen guest: the real open says so.
            let err = LinuxDevices::open()
                .err()
                .expect("no gntalloc on this host");
            assert!(err.to_string().contains(GNTALLOC_DEVICE), "{err}");
        }
    }
}
