//! Self-tests of memory: the heap, the frame pool, page mappings in the foreign window.

use alloc::boxed::Box;
use alloc::vec::Vec;

use xen_abi::pte::PteFlags;

use super::{Test, TestError, When};
use crate::fail;
use crate::mm;
use crate::xen::start_info::BootInfo;
use crate::xen::traps;

pub const TESTS: &[Test] = &[
    Test {
        name: "heap",
        when: When::Always,
        run: heap_allocates_and_frees,
    },
    Test {
        name: "map-unmap",
        when: When::Always,
        run: map_and_unmap_in_foreign_window,
    },
    Test {
        name: "image-protection",
        when: When::Always,
        run: image_text_is_read_only,
    },
];

fn heap_allocates_and_frees(_: &BootInfo) -> Result<(), TestError> {
    let mut boxes: Vec<Box<[u64; 32]>> = Vec::new();
    for i in 0..512u64 {
        boxes.push(Box::new([i; 32]));
    }
    for (i, b) in boxes.iter().enumerate() {
        if b.iter().any(|&v| v != i as u64) {
            fail!("box {i} was overwritten");
        }
    }
    drop(boxes);
    // A large block after the small ones were freed: the freed space must be reusable.
    let big: Vec<u8> = alloc::vec![0xab; 1 << 20];
    if big.iter().any(|&b| b != 0xab) || big.len() != 1 << 20 {
        fail!("1 MiB block corrupted");
    }
    Ok(())
}

fn map_and_unmap_in_foreign_window(_: &BootInfo) -> Result<(), TestError> {
    let frame = match mm::alloc_frame() {
        Some(f) => f,
        None => fail!("frame pool is empty"),
    };
    let mfn = mm::pfn_to_mfn(frame);
    let slot = match mm::reserve_foreign_slot() {
        Ok(s) => s,
        Err(e) => fail!("reserving a foreign slot failed: {e}"),
    };
    let va = slot.base + 7 * mm::PAGE_SIZE_U64;
    let flags = PteFlags::WRITABLE | PteFlags::USER | PteFlags::NO_EXECUTE;
    if let Err(e) = mm::map_page(va, mfn, flags) {
        fail!("map_page failed: {e}");
    }
    // Write through the new alias, read through the direct map.
    let written = traps::probe_write((va + 123) as *mut u8, 0x3c);
    let seen = traps::probe_read((frame.va() + 123) as *const u8);
    if let Err(e) = mm::unmap_page(va) {
        fail!("unmap_page failed: {e}");
    }
    let after = traps::probe_read(va as *const u8);
    mm::free_frame(frame);
    if let Err(e) = mm::release_foreign_slot(slot) {
        fail!("releasing the slot failed: {e}");
    }
    match (written, seen, after) {
        (Ok(()), Ok(0x3c), Err(f)) if f.vector == 14 => Ok(()),
        (w, s, a) => fail!("alias write {w:?}, direct read {s:?}, read after unmap {a:?}"),
    }
}

fn image_text_is_read_only(_: &BootInfo) -> Result<(), TestError> {
    let text = image_text_is_read_only as *const () as *mut u8;
    match traps::probe_write(text, 0x90) {
        Ok(()) => fail!("the kernel's text is writable"),
        Err(f) if f.vector == 14 => {}
        Err(f) => fail!("unexpected fault {f:?}"),
    }
    match mm::translate(0) {
        Ok(None) => Ok(()),
        other => fail!("page 0 is mapped: {other:?}"),
    }
}
