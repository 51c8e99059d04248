//! A small reader of the running kernel's BTF, just enough to find struct member offsets and
//! the ids of the types and kfuncs the programs name.
//!
//! The eBPF programs read kernel structs at offsets the daemon resolves here at start-up (with
//! typed loads where the kernel has `bpf_rdonly_cast`, with `bpf_probe_read_kernel` where not),
//! so one build runs on any kernel that has BTF: no offsets from the build machine are compiled
//! in. aya's own BTF type does not expose member lookups, hence this.

use std::{collections::HashMap, path::Path};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF at {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("kernel BTF struct `{strukt}` has no member `{member}`")]
    NoMember { strukt: String, member: String },
    #[error("kernel BTF member `{0}` is a bitfield, which the sensor cannot read")]
    Bitfield(String),
}

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
    bitfield: bool,
}

#[derive(Debug, Clone)]
enum Type {
    Composite {
        members: Vec<Member>,
    },
    /// typedef, const, volatile, restrict, type tag: look through to `target`.
    Alias {
        target: u32,
    },
    Other,
}

/// Parsed struct and union layouts of one BTF blob.
#[derive(Debug)]
pub struct Btf {
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
    /// Functions (`FUNC`) by name, those of `INDEXED_FUNCS` only.
    funcs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn bytes_at(strings: &[u8], off: u32) -> Result<&[u8], BtfError> {
    let rest = strings
        .get(off as usize..)
        .ok_or(BtfError::Malformed("string offset out of range"))?;
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    Ok(&rest[..end])
}

fn string_at(strings: &[u8], off: u32) -> Result<String, BtfError> {
    Ok(String::from_utf8_lossy(bytes_at(strings, off)?).into_owned())
}

/// The functions [`Btf::func_id`] can find: the kfuncs the programs call. Only these are
/// indexed; a kernel has some 60,000 functions, and naming them all tripled the parse time.
const INDEXED_FUNCS: [&str; 1] = ["bpf_rdonly_cast"];

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file("/sys/kernel/btf/vmlinux")
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BtfError> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses a little-endian BTF blob (the header, type and string sections).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let section = |off: usize, len: usize| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some((start, start.checked_add(len)?)))
                .and_then(|(start, end)| data.get(start..end))
                .ok_or(BtfError::Malformed("section out of range"))
        };
        let type_data = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;

        // Type ids start at 1; slot 0 is `void`.
        let mut types = vec![Type::Other];
        let mut structs_by_name = HashMap::new();
        let mut funcs_by_name = HashMap::new();
        let mut at = 0usize;
        while at < type_data.len() {
            let name_off = u32_at(type_data, at)?;
            let info = u32_at(type_data, at + 4)?;
            let size_or_type = u32_at(type_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let id = types.len() as u32;
            let ty = match kind {
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let raw_offset = u32_at(type_data, m + 8)?;
                        let (bit_offset, bitfield) = if kind_flag {
                            (raw_offset & 0x00ff_ffff, raw_offset >> 24 != 0)
                        } else {
                            (raw_offset, false)
                        };
                        members.push(Member {
                            name: string_at(strings, u32_at(type_data, m)?)?,
                            type_id: u32_at(type_data, m + 4)?,
                            bit_offset,
                            bitfield,
                        });
                    }
                    at += vlen * 12;
                    if kind == KIND_STRUCT && vlen > 0 {
                        let name = string_at(strings, name_off)?;
                        if !name.is_empty() {
                            structs_by_name.entry(name).or_insert(id);
                        }
                    }
                    Type::Composite { members }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias {
                        target: size_or_type,
                    }
                }
                KIND_INT | KIND_VAR | KIND_DECL_TAG => {
                    at += 4;
                    Type::Other
                }
                KIND_ARRAY => {
                    at += 12;
                    Type::Other
                }
                KIND_ENUM | KIND_FUNC_PROTO => {
                    at += vlen * 8;
                    Type::Other
                }
                KIND_DATASEC | KIND_ENUM64 => {
                    at += vlen * 12;
                    Type::Other
                }
                KIND_FUNC => {
                    let name = bytes_at(strings, name_off)?;
                    if let Some(known) = INDEXED_FUNCS.iter().find(|f| f.as_bytes() == name) {
                        funcs_by_name.entry(known.to_string()).or_insert(id);
                    }
                    Type::Other
                }
                KIND_PTR | KIND_FWD | KIND_FLOAT => Type::Other,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            types.push(ty);
        }
        Ok(Btf {
            types,
            structs_by_name,
            funcs_by_name,
        })
    }

    fn resolve_alias(&self, mut id: u32) -> u32 {
        // Bounded: alias chains in real BTF are a handful long; a cycle must not hang us.
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(Type::Alias { target }) => id = *target,
                _ => break,
            }
        }
        id
    }

    /// Searches `name` among the members of composite `id`, descending into anonymous members.
    /// Returns the bit offset from the start of `id` and the member.
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, &Member)> {
        let Some(Type::Composite { members }) = self.types.get(self.resolve_alias(id) as usize)
        else {
            return None;
        };
        for member in members {
            if member.name == name {
                return Some((member.bit_offset, member));
            }
        }
        if depth >= 8 {
            return None;
        }
        for member in members.iter().filter(|m| m.name.is_empty()) {
            if let Some((inner, found)) = self.find_member(member.type_id, name, depth + 1) {
                return Some((member.bit_offset + inner, found));
            }
        }
        None
    }

    /// Byte offset of `path` (members separated by dots, e.g. `d_name.len`) inside `strukt`.
    /// Anonymous structs and unions on the way are looked through.
    pub fn member_offset(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let mut id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        let mut bits = 0u32;
        for part in path.split('.') {
            let (offset, member) =
                self.find_member(id, part, 0)
                    .ok_or_else(|| BtfError::NoMember {
                        strukt: strukt.to_string(),
                        member: path.to_string(),
                    })?;
            if member.bitfield || offset % 8 != 0 {
                return Err(BtfError::Bitfield(format!("{strukt}.{path}")));
            }
            bits += offset;
            id = member.type_id;
        }
        Ok(bits / 8)
    }

    pub fn has_struct(&self, strukt: &str) -> bool {
        self.structs_by_name.contains_key(strukt)
    }

    /// Type id of the struct named `strukt` (what `bpf_rdonly_cast` takes).
    pub fn struct_id(&self, strukt: &str) -> Result<u32, BtfError> {
        self.structs_by_name
            .get(strukt)
            .copied()
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))
    }

    /// Type id of the function named `name` (a kfunc's call names it), if the kernel has it
    /// and it is one of `INDEXED_FUNCS`.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.funcs_by_name.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob with: 1 = int, 2 = struct inner { int a; int b; },
    /// 3 = struct outer { int x; union { struct inner in; }; }  (anonymous union = 4).
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0inner\0a\0b\0outer\0x\0in\0".to_vec();
        let s = |name: &str| {
            let pos = strings
                .windows(name.len() + 1)
                .position(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0)
                .unwrap();
            pos as u32
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        push(&[s("inner"), (KIND_STRUCT << 24) | 2, 8]);
        push(&[s("a"), 1, 0]);
        push(&[s("b"), 1, 32]);
        push(&[s("outer"), (KIND_STRUCT << 24) | 2, 12]);
        push(&[s("x"), 1, 0]);
        push(&[0, 4, 32]);
        push(&[0, (KIND_UNION << 24) | 1, 8]);
        push(&[s("in"), 2, 0]);
        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_nested_paths() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("outer", "x").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "in").unwrap(), 4);
        assert_eq!(btf.member_offset("outer", "in.b").unwrap(), 8);
        assert!(matches!(
            btf.member_offset("outer", "nope"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("missing", "x"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn rejects_truncated_and_garbage_input() {
        let blob = sample();
        for cut in [0, 3, 23, 30, blob.len() - 1] {
            assert!(Btf::parse(&blob[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Btf::parse(&[0xffu8; 64]).is_err());
    }

    #[test]
    fn reads_the_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux on this machine");
            return;
        };
        // `pid` follows other members in every kernel: never at offset 0.
        assert!(btf.member_offset("task_struct", "pid").unwrap() > 0);
        assert_eq!(btf.member_offset("path", "mnt").unwrap(), 0);
    }
}
