//! Raw system calls for a child that shares its parent's memory (CLONE_VM) before exec.
//!
//! glibc's wrappers, even `syscall()`, write `errno` through the thread pointer, which such
//! a child shares with the parent thread that cloned it; these do not touch memory at all.

/// Makes system call `number` with six arguments; returns the kernel's raw result
/// (negative errno on failure).
///
/// # Safety
/// The arguments must be valid for the call.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn syscall(number: libc::c_long, args: [usize; 6]) -> isize {
    let result: isize;
    // SAFETY: the x86_64 Linux system call convention; rcx and r11 are clobbered.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") number as isize => result,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result
}

/// See the x86_64 version.
///
/// # Safety
/// The arguments must be valid for the call.
#[cfg(target_arch = "aarch64")]
pub(crate) unsafe fn syscall(number: libc::c_long, args: [usize; 6]) -> isize {
    let result: isize;
    // SAFETY: the aarch64 Linux system call convention.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") number,
            inlateout("x0") args[0] as isize => result,
            in("x1") args[1],
            in("x2") args[2],
            in("x3") args[3],
            in("x4") args[4],
            in("x5") args[5],
            options(nostack),
        );
    }
    result
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("dojjail spawns hosts with raw system calls on x86_64 and aarch64 only");

/// Ends the calling process at once.
///
/// # Safety
/// Nothing runs afterwards: no destructors, no atexit handlers.
pub(crate) unsafe fn exit(code: i32) -> ! {
    loop {
        // SAFETY: exit_group has no memory preconditions.
        unsafe { syscall(libc::SYS_exit_group, [code as usize, 0, 0, 0, 0, 0]) };
    }
}
