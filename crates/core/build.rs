//! Builds the resident parasite (blob/parasite.c) into a flat, position-independent image that
//! src/parasite/blob.rs embeds. C rather than Rust `no_std`: rustup here has only the host's
//! standard library and cannot fetch an aarch64 target, while Debian's gcc cross compilers
//! install normally. The build refuses objects with absolute relocations, so the image runs at
//! whatever address the task's mmap returns.
//!
//! Without a compiler for the target architecture the image is left empty and tsdump drains
//! through single injected syscalls instead (the fallback path the blob speeds up).

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCES: [&str; 5] = ["blob/parasite.c", "blob/proto.h", "blob/arch-x86_64.h", "blob/arch-aarch64.h", "blob/blob.ld"];

fn tool(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

fn run(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(out.stdout)
}

/// The image and the offset of its second entry point (blob_thread_entry).
fn build(arch: &str, out: &Path) -> Result<(PathBuf, usize), String> {
    let host = std::env::var("HOST").unwrap_or_default();
    let prefix = match arch {
        _ if host.starts_with(arch) => String::new(),
        "aarch64" => "aarch64-linux-gnu-".to_string(),
        "x86_64" => "x86_64-linux-gnu-".to_string(),
        other => return Err(format!("no parasite for {other}")),
    };
    let cc = std::env::var("TSDUMP_BLOB_CC").unwrap_or_else(|_| tool(&prefix, "gcc"));
    let obj = out.join("parasite.o");
    let elf = out.join("parasite.elf");
    let bin = out.join(format!("parasite-{arch}.bin"));
    let mut flags = vec![
        "-O2", "-fPIE", "-nostdlib", "-ffreestanding", "-fno-builtin", "-fno-stack-protector",
        "-fno-asynchronous-unwind-tables", "-fno-jump-tables", "-Wall", "-Wextra", "-Werror",
    ];
    // -mgeneral-regs-only: the blob must not touch the FPU/vector registers, which hold the
    // task's state while it runs (only the general registers are put back when it is parked).
    flags.push("-mgeneral-regs-only");
    if arch == "x86_64" {
        flags.push("-fcf-protection=none");
    } else {
        flags.push("-mbranch-protection=none");
    }
    run(Command::new(&cc).args(&flags).arg("-c").arg("blob/parasite.c").arg("-o").arg(&obj))?;
    let relocs = String::from_utf8_lossy(&run(Command::new(tool(&prefix, "readelf")).arg("-rW").arg(&obj))?).into_owned();
    let absolute = ["R_X86_64_64", "R_X86_64_32", "R_X86_64_GOT", "R_AARCH64_ABS", "R_AARCH64_ADR_GOT", "R_AARCH64_LD64_GOT"];
    if let Some(line) = relocs.lines().find(|l| absolute.iter().any(|a| l.contains(a))) {
        return Err(format!("the parasite must be position-independent, found: {line}"));
    }
    run(Command::new(tool(&prefix, "ld")).args(["-T", "blob/blob.ld", "-o"]).arg(&elf).arg(&obj))?;
    run(Command::new(tool(&prefix, "objcopy")).args(["-O", "binary", "-j", ".text"]).arg(&elf).arg(&bin))?;
    let syms = String::from_utf8_lossy(&run(Command::new(tool(&prefix, "nm")).arg(&elf))?).into_owned();
    let thread_entry = syms
        .lines()
        .find_map(|l| l.strip_suffix(" T blob_thread_entry"))
        .and_then(|a| usize::from_str_radix(a, 16).ok())
        .ok_or("the parasite has no blob_thread_entry")?;
    Ok((bin, thread_entry))
}

fn main() {
    for s in SOURCES {
        println!("cargo:rerun-if-changed={s}");
    }
    println!("cargo:rerun-if-env-changed=TSDUMP_BLOB_CC");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let native = std::env::var("HOST").unwrap_or_default().starts_with(&target);
    let dest = out.join("parasite.bin");
    let syms = out.join("parasite_syms.rs");
    let write_syms = |thread_entry: usize| {
        let text = format!("/// Offset of blob_thread_entry in the image.\npub const THREAD_ENTRY: usize = {thread_entry:#x};\n");
        std::fs::write(&syms, text).expect("write parasite_syms.rs");
    };
    match build(&target, &out) {
        Ok((bin, thread_entry)) => {
            std::fs::copy(&bin, &dest).expect("copy parasite image");
            write_syms(thread_entry);
        }
        // A native build must produce the parasite: a failure here is a bug, not a missing tool.
        Err(e) if native => panic!("building the parasite: {e}"),
        Err(e) => {
            println!("cargo:warning=no resident parasite for {target} ({e}); the drain will use injected syscalls");
            std::fs::write(&dest, []).expect("write empty parasite image");
            write_syms(0);
        }
    }
    // The other architecture is only compiled, to keep its C honest, where its cross compiler is
    // installed (.ci/run installs gcc-aarch64-linux-gnu).
    for other in ["x86_64", "aarch64"].into_iter().filter(|a| *a != target) {
        let dir = out.join(other);
        std::fs::create_dir_all(&dir).expect("create OUT_DIR/arch");
        match build(other, &dir) {
            Err(e) if !e.contains("No such file") => panic!("building the {other} parasite: {e}"),
            _ => {}
        }
    }
}
