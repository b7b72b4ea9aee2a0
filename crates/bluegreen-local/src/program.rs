//! Whether a file is a program that can run on this machine: an executable ELF
//! file built for its architecture, or an executable script whose `#!` line names
//! an interpreter that exists. Checked while a request is validated, so that an
//! artifact that could only fail with "Exec format error" is refused before anything
//! is stored or started.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bluegreen_core::{Error, Result};

use crate::error::io_error;

/// ELF object types that run: an executable, or a position-independent one.
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// An ELF file's class, byte order and machine (`EI_CLASS`, `EI_DATA`, `e_machine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ElfTarget {
    /// 1: 32-bit, 2: 64-bit.
    class: u8,
    /// 1: little-endian, 2: big-endian.
    data: u8,
    machine: u16,
}

impl ElfTarget {
    fn name(self) -> String {
        let machine = match self.machine {
            3 => "x86".to_owned(),
            8 => "MIPS".to_owned(),
            20 => "PowerPC".to_owned(),
            21 => "PowerPC 64".to_owned(),
            22 => "s390".to_owned(),
            40 => "ARM".to_owned(),
            62 => "x86-64".to_owned(),
            183 => "AArch64".to_owned(),
            243 => "RISC-V".to_owned(),
            258 => "LoongArch".to_owned(),
            other => format!("machine {other}"),
        };
        let bits = if self.class == 1 { 32 } else { 64 };
        let order = if self.data == 1 { "LSB" } else { "MSB" };
        format!("{machine} ({bits}-bit {order})")
    }
}

const fn elf(class: u8, data: u8, machine: u16) -> ElfTarget {
    ElfTarget {
        class,
        data,
        machine,
    }
}

/// Byte order of 64-bit PowerPC: the one this program is built for.
const PPC64_DATA: u8 = if cfg!(target_endian = "little") { 1 } else { 2 };

/// Architectures (as in [`std::env::consts::ARCH`]) and the ELF targets that run
/// on them.
const RUNS_ON: &[(&str, &[ElfTarget])] = &[
    // 32-bit x86 programs run on x86-64 Linux too
    ("x86_64", &[elf(2, 1, 62), elf(1, 1, 3)]),
    ("x86", &[elf(1, 1, 3)]),
    ("aarch64", &[elf(2, 1, 183)]),
    ("arm", &[elf(1, 1, 40)]),
    ("riscv64", &[elf(2, 1, 243)]),
    ("powerpc64", &[elf(2, PPC64_DATA, 21)]),
    ("s390x", &[elf(2, 2, 22)]),
    ("loongarch64", &[elf(2, 1, 258)]),
];

/// The ELF targets that run on the architecture `arch`; `None` for an architecture
/// this check does not know, where any ELF file passes.
fn runs_on(arch: &str) -> Option<&'static [ElfTarget]> {
    RUNS_ON.iter().find(|(a, _)| *a == arch).map(|(_, t)| *t)
}

/// Checks that `program` can run here; `shown` is how errors name it, and `field`
/// the request's field they name.
///
/// A missing file (or a symbolic link to one) is `NotFound`; a directory, a file
/// without an execute bit, a file that is neither ELF nor `#!` script, an ELF file
/// for another architecture or of a kind that does not run (an object file, a core
/// dump), and a script whose interpreter is missing are `Invalid` naming `field`.
pub(crate) fn check_program(program: &Path, shown: &str, field: &str) -> Result<()> {
    let invalid = |why: String| Error::invalid(field, format!("{shown} cannot run: {why}"));
    let meta = match std::fs::metadata(program) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(match std::fs::read_link(program) {
                Ok(target) => invalid(format!(
                    "it is a symbolic link to {}, which does not exist",
                    target.display()
                )),
                Err(_) => Error::not_found(format!("artifact {shown}")),
            });
        }
        Err(e) => return Err(io_error(program, e)),
    };
    if !meta.is_file() {
        return Err(invalid("it is not a file".into()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o111 == 0 {
        return Err(invalid(format!(
            "it is not executable (mode {:o})",
            mode & 0o777
        )));
    }
    let mut head = Vec::with_capacity(256);
    std::fs::File::open(program)
        .and_then(|f| f.take(256).read_to_end(&mut head))
        .map_err(|e| io_error(program, e))?;
    if head.starts_with(b"\x7fELF") {
        check_elf(&head, std::env::consts::ARCH).map_err(invalid)
    } else if head.starts_with(b"#!") {
        check_interpreter(&head).map_err(invalid)
    } else {
        Err(invalid(
            "it is neither a program (ELF) nor a script with a `#!` line".into(),
        ))
    }
}

/// Checks an ELF header (at least its first 20 bytes) against `arch`.
fn check_elf(head: &[u8], arch: &str) -> std::result::Result<(), String> {
    if head.len() < 20 {
        return Err("its ELF header is cut short".into());
    }
    let (class, data) = (head[4], head[5]);
    if !matches!(class, 1 | 2) || !matches!(data, 1 | 2) {
        return Err(format!(
            "its ELF header is not valid (class {class}, byte order {data})"
        ));
    }
    let half = |at: usize| {
        let bytes = [head[at], head[at + 1]];
        if data == 1 {
            u16::from_le_bytes(bytes)
        } else {
            u16::from_be_bytes(bytes)
        }
    };
    let (kind, machine) = (half(16), half(18));
    if kind != ET_EXEC && kind != ET_DYN {
        let what = match kind {
            1 => "a relocatable object file".to_owned(),
            4 => "a core dump".to_owned(),
            other => format!("an ELF file of type {other}"),
        };
        return Err(format!("it is {what}, not an executable"));
    }
    let target = ElfTarget {
        class,
        data,
        machine,
    };
    match runs_on(arch) {
        Some(targets) if !targets.contains(&target) => Err(format!(
            "it is built for {}, and this machine is {arch} ({})",
            target.name(),
            targets[0].name()
        )),
        _ => Ok(()),
    }
}

/// Checks that the interpreter a `#!` line names exists and is executable.
fn check_interpreter(head: &[u8]) -> std::result::Result<(), String> {
    let line = head[2..].split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let Some(interpreter) = line.split_whitespace().next() else {
        return Err("its `#!` line names no interpreter".into());
    };
    let path = Path::new(interpreter);
    if !path.is_absolute() {
        // the kernel would look it up relative to the working directory: nothing
        // to check here
        return Ok(());
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(format!(
            "its interpreter {interpreter} (the `#!` line) is not an executable file"
        )),
        Err(_) => Err(format!(
            "its interpreter {interpreter} (the `#!` line) does not exist"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 20 bytes of an ELF header.
    fn header(class: u8, data: u8, kind: u16, machine: u16) -> Vec<u8> {
        let mut h = b"\x7fELF".to_vec();
        h.extend([class, data, 1, 0]);
        h.extend([0; 8]);
        let half = |v: u16| {
            if data == 1 {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        h.extend(half(kind));
        h.extend(half(machine));
        h
    }

    #[test]
    fn an_elf_file_runs_only_on_its_architecture() {
        check_elf(&header(2, 1, ET_DYN, 62), "x86_64").unwrap();
        check_elf(&header(2, 1, ET_EXEC, 62), "x86_64").unwrap();
        check_elf(&header(1, 1, ET_EXEC, 3), "x86_64").unwrap();
        check_elf(&header(2, 1, ET_DYN, 183), "aarch64").unwrap();
        check_elf(&header(2, 2, ET_EXEC, 22), "s390x").unwrap();
        let e = check_elf(&header(2, 1, ET_DYN, 183), "x86_64").unwrap_err();
        assert!(e.contains("built for AArch64 (64-bit LSB)"), "{e}");
        assert!(e.contains("this machine is x86_64"), "{e}");
        let e = check_elf(&header(2, 1, ET_DYN, 62), "aarch64").unwrap_err();
        assert!(e.contains("built for x86-64"), "{e}");
        // the same machine in the other byte order is another target
        let e = check_elf(&header(2, 2, ET_DYN, 62), "x86_64").unwrap_err();
        assert!(e.contains("64-bit MSB"), "{e}");
        // an architecture the check does not know lets any ELF file through
        check_elf(&header(2, 1, ET_DYN, 183), "sparc64").unwrap();
    }

    #[test]
    fn an_elf_file_that_is_not_an_executable_is_refused() {
        let e = check_elf(&header(2, 1, 1, 62), "x86_64").unwrap_err();
        assert!(e.contains("relocatable object file"), "{e}");
        let e = check_elf(&header(2, 1, 4, 62), "x86_64").unwrap_err();
        assert!(e.contains("core dump"), "{e}");
        let e = check_elf(&header(3, 1, ET_DYN, 62), "x86_64").unwrap_err();
        assert!(e.contains("not valid"), "{e}");
        let e = check_elf(&header(2, 1, ET_DYN, 62)[..12], "x86_64").unwrap_err();
        assert!(e.contains("cut short"), "{e}");
    }

    #[test]
    fn a_script_needs_an_interpreter_that_exists() {
        check_interpreter(b"#!/bin/sh\necho hi\n").unwrap();
        check_interpreter(b"#! /bin/sh -e\n").unwrap();
        let e = check_interpreter(b"#!/no/such/interpreter\n").unwrap_err();
        assert!(
            e.contains("/no/such/interpreter") && e.contains("does not exist"),
            "{e}"
        );
        let e = check_interpreter(b"#!/etc\n").unwrap_err();
        assert!(e.contains("not an executable file"), "{e}");
        let e = check_interpreter(b"#!\n").unwrap_err();
        assert!(e.contains("names no interpreter"), "{e}");
    }

    /// This very test program is an ELF file for this machine.
    #[test]
    fn the_running_program_passes() {
        let me = std::env::current_exe().unwrap();
        check_program(&me, "me", "source").unwrap();
    }
}
