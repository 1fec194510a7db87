//! PV entry for the xenrpc service VM: the Xen ELF notes, the hypercall page, and a stub that
//! moves onto the boot stack and hands `start_info` to Rust.
//!
//! Xen's 64-bit PV loader starts the guest at `_start` in ring 3 with `rsi` = virtual address of
//! `start_info`, on a small bootstrap stack, with event upcalls masked. The kernel crate names
//! its Rust entry with [`entry_point!`].
#![no_std]
#![warn(missing_docs)]

/// Size of the stack the kernel runs on until it sets up its own.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

/// `XENFEAT_dom0`: without it in SUPPORTED_FEATURES Xen refuses the image as dom0.
pub const XENFEAT_DOM0: u32 = 11;

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .macro xen_elfnote_begin type:req
        .balign 4
        .long 2f - 1f
        .long 4f - 3f
        .long \type
    1:  .asciz "Xen"
    2:  .balign 4
    3:
    .endm
    .macro xen_elfnote_end
    4:  .balign 4
    .endm
    .macro xen_elfnote_str type:req, value:req
        xen_elfnote_begin \type
        .asciz "\value"
        xen_elfnote_end
    .endm
    .macro xen_elfnote_quad type:req, value:req
        xen_elfnote_begin \type
        .quad \value
        xen_elfnote_end
    .endm
    .macro xen_elfnote_long type:req, value:req
        xen_elfnote_begin \type
        .long \value
        xen_elfnote_end
    .endm

    .pushsection .note.Xen, "a", @note
    xen_elfnote_str 6, xenrpc                 /* GUEST_OS */
    xen_elfnote_str 7, 0.1                 /* GUEST_VERSION */
    xen_elfnote_str 5, xen-3.0                 /* XEN_VERSION */
    xen_elfnote_str 8, generic                 /* LOADER */
    xen_elfnote_quad 3, 0                               /* VIRT_BASE */
    xen_elfnote_quad 4, 0                               /* PADDR_OFFSET */
    xen_elfnote_quad 1, _start                          /* ENTRY */
    xen_elfnote_quad 2, HYPERCALL_PAGE                  /* HYPERCALL_PAGE */
    xen_elfnote_str 10, !writable_page_tables       /* FEATURES */
    xen_elfnote_long 17, (1 << {xenfeat_dom0})          /* SUPPORTED_FEATURES */
    .popsection

    .pushsection .xen_hypercall_page, "ax", @progbits
    .balign 4096
    .globl HYPERCALL_PAGE
    HYPERCALL_PAGE:
    .fill 4096, 1, 0xcc
    .popsection

    .pushsection .bss.boot_stack, "aw", @nobits
    .balign 4096
    .globl xenrpc_boot_stack_guard
    xenrpc_boot_stack_guard:        /* unmapped by the kernel once it runs */
    .skip 4096
    boot_stack_bottom:
    .skip {stack_size}
    boot_stack_top:
    .popsection

    .pushsection .text.xen_entry, "ax", @progbits
    .globl _start
    _start:
        lea rsp, [rip + boot_stack_top]
        mov rdi, rsi
        call xenrpc_rust_entry
        ud2
    .popsection
    "#,
    xenfeat_dom0 = const XENFEAT_DOM0,
    stack_size = const BOOT_STACK_SIZE,
);

/// Names the kernel's Rust entry: `fn(&'static StartInfoPtr) -> !` style signature
/// `fn(start_info: usize) -> !`, receiving the virtual address of `start_info`.
#[macro_export]
macro_rules! entry_point {
    ($main:path) => {
        #[no_mangle]
        extern "C" fn xenrpc_rust_entry(start_info_va: usize) -> ! {
            let main: fn(usize) -> ! = $main;
            main(start_info_va)
        }
    };
}
