//! Fake grants (heap pages) and event channels (eventfd pairs), with the unmap notify a
//! killed client's kernel performs.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use xenrpc_proto::mem::HeapRegion;
use xenrpc_proto::SharedMemory;

use super::{drain, eventfd, signal};
use crate::devices::{DomId, EventChannel, GrantedPages, XenDevices, PAGE_SIZE};
use crate::error::{Error, Result};

struct PagesInner {
    region: HeapRegion,
}

/// Heap pages standing in for granted pages.
pub struct FakePages {
    inner: Arc<PagesInner>,
    refs: Vec<u32>,
    xen: FakeXen,
}

/// What gntalloc's unmap notify does when the pages are let go of: clear a byte, send an event.
struct ReleaseNotify {
    pages: Arc<PagesInner>,
    offset: usize,
    to_server: Arc<OwnedFd>,
}

impl ReleaseNotify {
    fn fire(self) {
        // SAFETY: `offset` was checked against the region's length when registered; the
        // region lives while `pages` does; the byte is written atomically, as the server may
        // read it at any moment.
        unsafe {
            std::sync::atomic::AtomicU8::from_ptr(self.pages.region.base().add(self.offset))
                .store(0, Ordering::Release)
        };
        signal(self.to_server.as_raw_fd());
    }
}

// SAFETY: the heap region is page aligned, readable and writable while `inner` lives.
unsafe impl GrantedPages for FakePages {
    fn grant_refs(&self) -> &[u32] {
        &self.refs
    }
    fn base(&self) -> *mut u8 {
        self.inner.region.base()
    }
    fn len(&self) -> usize {
        self.inner.region.len()
    }
}

/// A server-side "mapping" of granted pages (keeps them alive after the client revokes).
pub struct MappedPages {
    inner: Arc<PagesInner>,
    first_page: usize,
    count: usize,
}

// SAFETY: a page-aligned window inside the heap region, which `inner` keeps alive.
unsafe impl GrantedPages for MappedPages {
    fn grant_refs(&self) -> &[u32] {
        &[]
    }
    fn base(&self) -> *mut u8 {
        self.inner
            .region
            .base()
            .wrapping_add(self.first_page * PAGE_SIZE)
    }
    fn len(&self) -> usize {
        self.count * PAGE_SIZE
    }
}

impl Drop for FakePages {
    fn drop(&mut self) {
        let mut grants = self.xen.state.lock().unwrap();
        for r in &self.refs {
            grants.grants.remove(r);
        }
        let (mine, others) = std::mem::take(&mut grants.release_notifies)
            .into_iter()
            .partition(|n| Arc::ptr_eq(&n.pages, &self.inner));
        grants.release_notifies = others;
        drop(grants);
        mine.into_iter().for_each(ReleaseNotify::fire);
    }
}

struct Grant {
    pages: Arc<PagesInner>,
    page: usize,
    peer: DomId,
    writable: bool,
}

struct Port {
    peer: DomId,
    to_client: Arc<OwnedFd>,
    to_server: Arc<OwnedFd>,
    bound: bool,
}

#[derive(Default)]
struct XenState {
    grants: HashMap<u32, Grant>,
    next_gref: u32,
    ports: HashMap<u32, Port>,
    next_port: u32,
    /// When set, `grant_pages` fails (tests of device errors).
    fail_grants: bool,
    release_notifies: Vec<ReleaseNotify>,
}

/// The "hypervisor" shared by a fake client domain and the fake server.
#[derive(Clone, Default)]
pub struct FakeXen {
    state: Arc<Mutex<XenState>>,
}

impl FakeXen {
    pub fn new() -> Self {
        let xen = FakeXen::default();
        {
            let mut s = xen.state.lock().unwrap();
            s.next_gref = 8;
            s.next_port = 5;
        }
        xen
    }

    /// What the client's kernel does when the client process is killed: every registered
    /// release notify fires (its pages stay allocated while the server maps them).
    pub fn kill_client_process(&self) {
        let notifies = std::mem::take(&mut self.state.lock().unwrap().release_notifies);
        notifies.into_iter().for_each(ReleaseNotify::fire);
    }

    pub fn fail_grants(&self, fail: bool) {
        self.state.lock().unwrap().fail_grants = fail;
    }

    /// Live grants (revoked ones are gone).
    pub fn grant_count(&self) -> usize {
        self.state.lock().unwrap().grants.len()
    }

    /// Maps granted pages as domain `mapper` would: each ref must be granted to `mapper`, and
    /// (like the server's contiguous mapping) consecutive pages of one allocation.
    pub fn map(&self, mapper: DomId, refs: &[u32], need_write: bool) -> Option<MappedPages> {
        let s = self.state.lock().unwrap();
        let first = s.grants.get(refs.first()?)?;
        for (i, r) in refs.iter().enumerate() {
            let g = s.grants.get(r)?;
            if g.peer != mapper
                || (need_write && !g.writable)
                || !Arc::ptr_eq(&g.pages, &first.pages)
                || g.page != first.page + i
            {
                return None;
            }
        }
        Some(MappedPages {
            inner: first.pages.clone(),
            first_page: first.page,
            count: refs.len(),
        })
    }

    /// Binds to an unbound port allocated for `binder`: (wait fd, notify fd) of the server end.
    pub fn bind(&self, binder: DomId, port: u32) -> Option<(Arc<OwnedFd>, Arc<OwnedFd>)> {
        let mut s = self.state.lock().unwrap();
        let p = s.ports.get_mut(&port)?;
        if p.peer != binder || p.bound {
            return None;
        }
        p.bound = true;
        Some((p.to_server.clone(), p.to_client.clone()))
    }
}

/// The client end of a fake event channel.
pub struct FakeChannel {
    port: u32,
    to_client: Arc<OwnedFd>,
    to_server: Arc<OwnedFd>,
}

impl EventChannel for FakeChannel {
    fn port(&self) -> u32 {
        self.port
    }
    fn notify(&self) -> Result<()> {
        signal(self.to_server.as_raw_fd());
        Ok(())
    }
    fn fd(&self) -> RawFd {
        self.to_client.as_raw_fd()
    }
    fn acknowledge(&self) -> Result<bool> {
        Ok(drain(self.to_client.as_raw_fd()))
    }
}

impl XenDevices for FakeXen {
    type Pages = FakePages;
    type Channel = FakeChannel;

    fn grant_pages(&self, peer: DomId, count: usize, writable: bool) -> Result<FakePages> {
        let mut s = self.state.lock().unwrap();
        if s.fail_grants {
            return Err(Error::device(
                "gntalloc: grant pages",
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        let inner = Arc::new(PagesInner {
            region: HeapRegion::new(count * PAGE_SIZE),
        });
        let mut refs = Vec::new();
        for page in 0..count {
            let r = s.next_gref;
            s.next_gref += 1;
            s.grants.insert(
                r,
                Grant {
                    pages: inner.clone(),
                    page,
                    peer,
                    writable,
                },
            );
            refs.push(r);
        }
        Ok(FakePages {
            inner,
            refs,
            xen: self.clone(),
        })
    }

    fn notify_on_release(
        &self,
        pages: &FakePages,
        byte_offset: usize,
        channel: &FakeChannel,
    ) -> Result<()> {
        if byte_offset >= pages.len() {
            return Err(Error::BadArguments(format!(
                "release notify at byte {byte_offset} of {} bytes",
                pages.len()
            )));
        }
        self.state
            .lock()
            .unwrap()
            .release_notifies
            .push(ReleaseNotify {
                pages: pages.inner.clone(),
                offset: byte_offset,
                to_server: channel.to_server.clone(),
            });
        Ok(())
    }

    fn alloc_unbound(&self, peer: DomId) -> Result<FakeChannel> {
        let mut s = self.state.lock().unwrap();
        let port = s.next_port;
        s.next_port += 1;
        let (to_client, to_server) = (Arc::new(eventfd()), Arc::new(eventfd()));
        s.ports.insert(
            port,
            Port {
                peer,
                to_client: to_client.clone(),
                to_server: to_server.clone(),
                bound: false,
            },
        );
        Ok(FakeChannel {
            port,
            to_client,
            to_server,
        })
    }
}
