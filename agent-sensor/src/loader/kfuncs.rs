//! The object's `bpf_rdonly_cast` calls (see `agent_sensor_common::RDONLY_CAST_CALL`).
//!
//! aya 0.14 resolves no kfunc calls, so the programs call a helper number no helper has, and
//! the loader rewrites those calls in the object's instructions before aya reads it: into a
//! call of the kfunc by its id in this kernel's BTF, or, on a kernel without it, into the
//! register move the verifier would have made of it (the programs then take their
//! `bpf_probe_read_kernel` side, see `typed_casts` in the eBPF crate).

use agent_sensor_common::RDONLY_CAST_CALL;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KfuncError {
    #[error("the eBPF object is not a 64-bit little-endian ELF file")]
    NotElf,
    #[error("the eBPF object's section headers are out of range")]
    Truncated,
}

/// What the cast calls become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Casts {
    /// A call of the `bpf_rdonly_cast` kfunc, whose id in the kernel's BTF this is.
    Kfunc(u32),
    /// `r0 = r1`: the address comes back untyped.
    Moves,
}

/// An eBPF object with its cast calls rewritten, in 8-byte aligned memory (the ELF reader wants
/// its headers aligned, as `include_bytes_aligned!` gives the embedded object).
pub struct PatchedObject {
    words: Vec<u64>,
    len: usize,
    /// How many calls were rewritten.
    pub casts: usize,
}

impl PatchedObject {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialized bytes; u8 has no alignment.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

const SHT_PROGBITS: u32 = 1;
const SHF_EXECINSTR: u64 = 4;
/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `BPF_LD | BPF_IMM | BPF_DW`: two instruction slots.
const LOAD_IMM64: u8 = 0x18;
/// `BPF_ALU64 | BPF_MOV | BPF_X`.
const MOVE: u8 = 0xbf;
/// `src_reg` of a call of a kernel function by BTF id.
const PSEUDO_KFUNC_CALL: u8 = 2;

fn field<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N], KfuncError> {
    data.get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .ok_or(KfuncError::Truncated)
}

fn u16_at(data: &[u8], at: usize) -> Result<usize, KfuncError> {
    Ok(u16::from_le_bytes(field(data, at)?) as usize)
}

fn u64_at(data: &[u8], at: usize) -> Result<u64, KfuncError> {
    Ok(u64::from_le_bytes(field(data, at)?))
}

/// The byte ranges of the object's executable sections.
fn code_sections(elf: &[u8]) -> Result<Vec<std::ops::Range<usize>>, KfuncError> {
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(KfuncError::NotElf);
    }
    let table = u64_at(elf, 0x28)? as usize;
    let entry_size = u16_at(elf, 0x3a)?;
    let count = u16_at(elf, 0x3c)?;
    let mut sections = Vec::new();
    for index in 0..count {
        let header = index
            .checked_mul(entry_size)
            .and_then(|at| at.checked_add(table))
            .ok_or(KfuncError::Truncated)?;
        let kind = u32::from_le_bytes(field(elf, header + 4)?);
        let flags = u64_at(elf, header + 8)?;
        if kind != SHT_PROGBITS || flags & SHF_EXECINSTR == 0 {
            continue;
        }
        let start = u64_at(elf, header + 0x18)? as usize;
        let size = u64_at(elf, header + 0x20)? as usize;
        let end = start.checked_add(size).ok_or(KfuncError::Truncated)?;
        if end > elf.len() {
            return Err(KfuncError::Truncated);
        }
        sections.push(start..end);
    }
    Ok(sections)
}

/// A copy of `object` with every call of [`RDONLY_CAST_CALL`] made what `casts` says.
pub fn patch(object: &[u8], casts: Casts) -> Result<PatchedObject, KfuncError> {
    let mut patched = PatchedObject {
        words: vec![0; object.len().div_ceil(8)],
        len: object.len(),
        casts: 0,
    };
    patched.bytes_mut().copy_from_slice(object);
    let sections = code_sections(object)?;
    let elf = patched.bytes_mut();
    let mut rewritten = 0;
    for section in sections {
        let mut at = section.start;
        while at + 8 <= section.end {
            let insn = &mut elf[at..at + 8];
            let code = insn[0];
            let helper = insn[1] >> 4 == 0;
            let imm = u32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            if code == CALL && helper && imm == RDONLY_CAST_CALL {
                let new = match casts {
                    // dst r0, src PSEUDO_KFUNC_CALL, off 0 (vmlinux's BTF), imm the id.
                    Casts::Kfunc(id) => (CALL, PSEUDO_KFUNC_CALL << 4, id),
                    // dst r0, src r1.
                    Casts::Moves => (MOVE, 1 << 4, 0),
                };
                insn[0] = new.0;
                insn[1] = new.1;
                insn[2..4].copy_from_slice(&0u16.to_le_bytes());
                insn[4..8].copy_from_slice(&new.2.to_le_bytes());
                rewritten += 1;
            }
            at += if code == LOAD_IMM64 { 16 } else { 8 };
        }
    }
    patched.casts = rewritten;
    Ok(patched)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF with a null section and one executable section holding `code`.
    fn elf_with_code(code: &[[u8; 8]]) -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        let text_at = elf.len();
        for insn in code {
            elf.extend_from_slice(insn);
        }
        let table = elf.len();
        elf[0x28..0x30].copy_from_slice(&(table as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&2u16.to_le_bytes());
        elf.extend_from_slice(&[0u8; 64]);
        let mut text = [0u8; 64];
        text[4..8].copy_from_slice(&SHT_PROGBITS.to_le_bytes());
        text[8..16].copy_from_slice(&(SHF_EXECINSTR | 2).to_le_bytes());
        text[0x18..0x20].copy_from_slice(&(text_at as u64).to_le_bytes());
        text[0x20..0x28].copy_from_slice(&((code.len() * 8) as u64).to_le_bytes());
        elf.extend_from_slice(&text);
        elf
    }

    fn insn(code: u8, regs: u8, imm: u32) -> [u8; 8] {
        let mut insn = [code, regs, 0, 0, 0, 0, 0, 0];
        insn[4..].copy_from_slice(&imm.to_le_bytes());
        insn
    }

    fn code_of(patched: &PatchedObject) -> Vec<[u8; 8]> {
        patched.bytes()[64..64 + 4 * 8]
            .chunks(8)
            .map(|c| c.try_into().unwrap())
            .collect()
    }

    #[test]
    fn cast_calls_become_kfunc_calls_or_moves_and_nothing_else_changes() {
        let cast = insn(CALL, 0, RDONLY_CAST_CALL);
        let helper = insn(CALL, 0, 14);
        // The second half of a 64-bit load that looks like a cast call is data, not a call.
        let load = insn(LOAD_IMM64, 1, 0);
        let load_high = insn(CALL, 0, RDONLY_CAST_CALL);
        let elf = elf_with_code(&[cast, helper, load, load_high]);

        let kfunc = patch(&elf, Casts::Kfunc(65475)).unwrap();
        assert_eq!(kfunc.casts, 1);
        assert_eq!(
            code_of(&kfunc),
            [insn(CALL, 0x20, 65475), helper, load, load_high]
        );
        assert_eq!(kfunc.bytes().len(), elf.len());
        assert_eq!(kfunc.bytes()[..64], elf[..64]);

        let moves = patch(&elf, Casts::Moves).unwrap();
        assert_eq!(moves.casts, 1);
        assert_eq!(
            code_of(&moves),
            [insn(MOVE, 0x10, 0), helper, load, load_high]
        );
    }

    #[test]
    fn a_broken_object_is_an_error_not_a_panic() {
        assert!(matches!(
            patch(b"not an elf", Casts::Moves),
            Err(KfuncError::NotElf)
        ));
        let mut elf = elf_with_code(&[insn(CALL, 0, RDONLY_CAST_CALL)]);
        let len = elf.len();
        elf[0x28..0x30].copy_from_slice(&(len as u64).to_le_bytes());
        assert!(matches!(
            patch(&elf, Casts::Moves),
            Err(KfuncError::Truncated)
        ));
        elf.truncate(40);
        assert!(patch(&elf, Casts::Moves).is_err());
    }

    #[test]
    fn the_embedded_object_has_cast_calls() {
        let object = super::super::SENSOR_OBJECT;
        if object.is_empty() {
            return; // built with AYA_BUILD_SKIP=1
        }
        assert!(patch(object, Casts::Moves).unwrap().casts > 0);
    }
}
