//! The `start_info` page Xen hands to the entry point, captured once into a private copy.

use xen_sys as abi;

const _: () = assert!(core::mem::size_of::<abi::start_info>() == 1168);
const _: () = assert!(core::mem::offset_of!(abi::start_info, nr_pages) == 32);
const _: () = assert!(core::mem::offset_of!(abi::start_info, shared_info) == 40);
const _: () = assert!(core::mem::offset_of!(abi::start_info, store_mfn) == 56);
const _: () = assert!(core::mem::offset_of!(abi::start_info, console) == 72);
const _: () = assert!(core::mem::offset_of!(abi::start_info, pt_base) == 88);
const _: () = assert!(core::mem::offset_of!(abi::start_info, mfn_list) == 104);
const _: () = assert!(core::mem::offset_of!(abi::start_info, cmd_line) == 128);

/// How this domain is console-connected.
#[derive(Clone, Copy, Debug)]
pub enum ConsoleSource {
    /// dom0: Xen's own console through `console_io`.
    Hypervisor,
    /// domU: a PV console ring page (machine frame) and its event channel.
    Ring { mfn: u64, evtchn: u32 },
}

/// What the kernel needs from `start_info`, copied out at boot.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    pub magic: [u8; 32],
    pub nr_pages: u64,
    /// Machine address of the shared_info page.
    pub shared_info_maddr: u64,
    pub flags: u32,
    pub store_mfn: u64,
    pub store_evtchn: u32,
    pub console: ConsoleSource,
    /// Virtual address of the bootstrap L4 table.
    pub pt_base: u64,
    pub nr_pt_frames: u64,
    /// Virtual address of the pfn → mfn list.
    pub mfn_list: u64,
    pub cmdline: [u8; 1024],
}

impl BootInfo {
    pub const SIF_INITDOMAIN: u32 = abi::SIF_INITDOMAIN;

    /// Copies the start_info page at `va`.
    ///
    /// # Safety
    /// `va` must be the address Xen passed to the entry point, still mapped.
    pub unsafe fn capture(va: usize) -> Self {
        // SAFETY: Xen wrote a complete start_info at `va` before starting us and does not
        // change it afterwards; read_volatile copies it out without assuming alignment tricks.
        let si: abi::start_info = unsafe { core::ptr::read_volatile(va as *const abi::start_info) };
        let is_dom0 = si.flags & abi::SIF_INITDOMAIN != 0;
        // SAFETY: the union's variant is chosen by SIF_INITDOMAIN, as public/xen.h defines.
        let console = unsafe {
            if is_dom0 {
                ConsoleSource::Hypervisor
            } else {
                ConsoleSource::Ring {
                    mfn: si.console.domU.mfn,
                    evtchn: si.console.domU.evtchn,
                }
            }
        };
        let mut magic = [0u8; 32];
        for (d, s) in magic.iter_mut().zip(si.magic.iter()) {
            *d = *s as u8;
        }
        let mut cmdline = [0u8; 1024];
        for (d, s) in cmdline.iter_mut().zip(si.cmd_line.iter()) {
            *d = *s as u8;
        }
        Self {
            magic,
            nr_pages: si.nr_pages,
            shared_info_maddr: si.shared_info,
            flags: si.flags,
            store_mfn: si.store_mfn,
            store_evtchn: si.store_evtchn,
            console,
            pt_base: si.pt_base,
            nr_pt_frames: si.nr_pt_frames,
            mfn_list: si.mfn_list,
            cmdline,
        }
    }

    pub fn is_dom0(&self) -> bool {
        self.flags & Self::SIF_INITDOMAIN != 0
    }

    fn text(bytes: &[u8]) -> &str {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        core::str::from_utf8(&bytes[..end]).unwrap_or("<not utf-8>")
    }

    pub fn magic_str(&self) -> &str {
        Self::text(&self.magic)
    }

    pub fn cmdline_str(&self) -> &str {
        Self::text(&self.cmdline)
    }
}
