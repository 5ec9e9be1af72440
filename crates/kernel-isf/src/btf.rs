//! A small, bounds-checked reader for the BTF type and string sections (`/sys/kernel/btf/vmlinux`).
//!
//! The blob comes from the machine under investigation, so nothing here trusts it: every offset,
//! count and type reference is checked and a malformed blob yields [`BtfError`], never a panic.
//! Only little-endian BTF is accepted (x86_64 and arm64 kernels).
//!
//! Layout facts (from the kernel's `Documentation/bpf/btf.rst`): a 24-byte header (`magic` 0xeB9F,
//! `version` 1, `flags`, `hdr_len`, then offset/length of the type and string sections, relative to
//! the end of the header); the type section is a sequence of 12-byte `btf_type` records, each followed
//! by kind-specific data; type id 0 is `void` and ids count up from 1 in record order.

use std::fmt;

pub const BTF_MAGIC: u16 = 0xeb9f;

/// BTF_INT encoding bits.
pub const INT_SIGNED: u8 = 1;
pub const INT_CHAR: u8 = 2;
pub const INT_BOOL: u8 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfError {
    /// Byte offset into the blob where the problem was found (if meaningful).
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

impl std::error::Error for BtfError {}

fn err(offset: usize, message: impl Into<String>) -> BtfError {
    BtfError {
        offset,
        message: message.into(),
    }
}

/// A struct or union member. `bit_offset` is from the start of the containing type.
/// `bitfield_size` is the width given by the member itself (kind_flag encoding), 0 if none;
/// the older encoding puts the width in the member's INT type instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub type_id: u32,
    pub bit_offset: u32,
    pub bitfield_size: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composite {
    pub name: String,
    pub size: u32,
    pub is_union: bool,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumType {
    pub name: String,
    pub size: u32,
    /// From kind_flag. BTF made before signedness was recorded has it clear; values are then read
    /// as unsigned, which stays consistent with the unsigned base type chosen for such enums.
    pub signed: bool,
    pub values: Vec<(String, i128)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    Volatile,
    Const,
    Restrict,
    TypeTag,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecVar {
    pub type_id: u32,
    pub offset: u32,
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    /// Type id 0.
    Void,
    Int {
        name: String,
        size: u32,
        encoding: u8,
        bit_offset: u8,
        bits: u8,
    },
    Ptr {
        target: u32,
    },
    Array {
        elem: u32,
        index: u32,
        nelems: u32,
    },
    Struct(Composite),
    Enum(EnumType),
    Fwd {
        name: String,
        is_union: bool,
    },
    Typedef {
        name: String,
        target: u32,
    },
    Qualified {
        qualifier: Qualifier,
        target: u32,
    },
    Func {
        name: String,
        proto: u32,
    },
    FuncProto {
        ret: u32,
        params: Vec<(String, u32)>,
    },
    Var {
        name: String,
        target: u32,
        linkage: u32,
    },
    Datasec {
        name: String,
        size: u32,
        vars: Vec<SecVar>,
    },
    Float {
        name: String,
        size: u32,
    },
    DeclTag {
        name: String,
        target: u32,
        component_idx: i32,
    },
}

/// Parsed BTF: `types[id]` is the type with that id (`types[0]` is `Void`).
#[derive(Debug, Clone)]
pub struct Btf {
    pub types: Vec<Type>,
}

struct Reader<'a> {
    data: &'a [u8],
    /// Absolute offset of `data[0]` within the blob, for error messages.
    base: usize,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32, BtfError> {
        let end = self.pos.checked_add(4).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(err(
                self.base + self.pos,
                "type section ends inside a record",
            ));
        };
        let v = u32::from_le_bytes(self.data[self.pos..end].try_into().expect("4 bytes"));
        self.pos = end;
        Ok(v)
    }
}

fn header_u32(blob: &[u8], at: usize) -> Result<u32, BtfError> {
    blob.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| err(at, "BTF header truncated"))
}

/// Resolves a name offset in the string section.
fn string_at(strings: &[u8], strings_base: usize, off: u32) -> Result<String, BtfError> {
    let off = off as usize;
    if off >= strings.len() {
        if off == 0 && strings.is_empty() {
            return Ok(String::new());
        }
        return Err(err(
            strings_base,
            format!("name offset {off} outside the string section"),
        ));
    }
    let rest = &strings[off..];
    let len = rest.iter().position(|&b| b == 0).ok_or_else(|| {
        err(
            strings_base + off,
            "unterminated string in the string section",
        )
    })?;
    Ok(String::from_utf8_lossy(&rest[..len]).into_owned())
}

impl Btf {
    /// Parses a raw BTF blob as found in `/sys/kernel/btf/vmlinux`.
    pub fn parse(blob: &[u8]) -> Result<Btf, BtfError> {
        if blob.len() < 24 {
            return Err(err(
                0,
                format!("BTF blob is {} bytes, shorter than its header", blob.len()),
            ));
        }
        let magic = u16::from_le_bytes([blob[0], blob[1]]);
        if magic == BTF_MAGIC.swap_bytes() {
            return Err(err(0, "big-endian BTF is not supported"));
        }
        if magic != BTF_MAGIC {
            return Err(err(
                0,
                format!("not BTF: magic 0x{magic:04x}, expected 0x{BTF_MAGIC:04x}"),
            ));
        }
        if blob[2] != 1 {
            return Err(err(2, format!("unsupported BTF version {}", blob[2])));
        }
        let hdr_len = header_u32(blob, 4)? as usize;
        if hdr_len < 24 || hdr_len > blob.len() {
            return Err(err(4, format!("bad BTF header length {hdr_len}")));
        }
        let section = |off_at: usize, name: &str| -> Result<(usize, usize), BtfError> {
            let off = header_u32(blob, off_at)? as usize;
            let len = header_u32(blob, off_at + 4)? as usize;
            let start = hdr_len
                .checked_add(off)
                .ok_or_else(|| err(off_at, "section offset overflows"))?;
            let end = start
                .checked_add(len)
                .ok_or_else(|| err(off_at, "section length overflows"))?;
            if end > blob.len() {
                return Err(err(
                    off_at,
                    format!(
                        "{name} section ({start}..{end}) runs past the blob ({} bytes)",
                        blob.len()
                    ),
                ));
            }
            Ok((start, end))
        };
        let (tstart, tend) = section(8, "type")?;
        let (sstart, send) = section(16, "string")?;
        let strings = &blob[sstart..send];
        let name = |off: u32| string_at(strings, sstart, off);

        let mut r = Reader {
            data: &blob[tstart..tend],
            base: tstart,
            pos: 0,
        };
        let mut types = vec![Type::Void];
        while r.pos < r.data.len() {
            let rec_at = r.base + r.pos;
            let name_off = r.u32()?;
            let info = r.u32()?;
            let size_or_type = r.u32()?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 != 0;
            // Each vlen entry needs at least 4 bytes, so a huge vlen in a short section fails fast
            // in the reads below rather than allocating: cap pre-allocation by what remains.
            let cap = |per: usize| vlen.min((r.data.len() - r.pos) / per);
            let t = match kind {
                1 => {
                    let enc = r.u32()?;
                    Type::Int {
                        name: name(name_off)?,
                        size: size_or_type,
                        encoding: ((enc >> 24) & 0x0f) as u8,
                        bit_offset: ((enc >> 16) & 0xff) as u8,
                        bits: (enc & 0xff) as u8,
                    }
                }
                2 => Type::Ptr {
                    target: size_or_type,
                },
                3 => {
                    let elem = r.u32()?;
                    let index = r.u32()?;
                    let nelems = r.u32()?;
                    Type::Array {
                        elem,
                        index,
                        nelems,
                    }
                }
                4 | 5 => {
                    let mut members = Vec::with_capacity(cap(12));
                    for _ in 0..vlen {
                        let m_name = r.u32()?;
                        let m_type = r.u32()?;
                        let m_off = r.u32()?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (m_off & 0x00ff_ffff, (m_off >> 24) as u8)
                        } else {
                            (m_off, 0)
                        };
                        members.push(Member {
                            name: name(m_name)?,
                            type_id: m_type,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    Type::Struct(Composite {
                        name: name(name_off)?,
                        size: size_or_type,
                        is_union: kind == 5,
                        members,
                    })
                }
                6 | 19 => {
                    let mut values = Vec::with_capacity(cap(8));
                    for _ in 0..vlen {
                        let v_name = r.u32()?;
                        let value = if kind == 6 {
                            let raw = r.u32()?;
                            if kind_flag {
                                i128::from(raw as i32)
                            } else {
                                i128::from(raw)
                            }
                        } else {
                            let lo = r.u32()?;
                            let hi = r.u32()?;
                            let raw = (u64::from(hi) << 32) | u64::from(lo);
                            if kind_flag {
                                i128::from(raw as i64)
                            } else {
                                i128::from(raw)
                            }
                        };
                        values.push((name(v_name)?, value));
                    }
                    Type::Enum(EnumType {
                        name: name(name_off)?,
                        size: size_or_type,
                        signed: kind_flag,
                        values,
                    })
                }
                7 => Type::Fwd {
                    name: name(name_off)?,
                    is_union: kind_flag,
                },
                8 => Type::Typedef {
                    name: name(name_off)?,
                    target: size_or_type,
                },
                9 => Type::Qualified {
                    qualifier: Qualifier::Volatile,
                    target: size_or_type,
                },
                10 => Type::Qualified {
                    qualifier: Qualifier::Const,
                    target: size_or_type,
                },
                11 => Type::Qualified {
                    qualifier: Qualifier::Restrict,
                    target: size_or_type,
                },
                18 => Type::Qualified {
                    qualifier: Qualifier::TypeTag,
                    target: size_or_type,
                },
                12 => Type::Func {
                    name: name(name_off)?,
                    proto: size_or_type,
                },
                13 => {
                    let mut params = Vec::with_capacity(cap(8));
                    for _ in 0..vlen {
                        let p_name = r.u32()?;
                        let p_type = r.u32()?;
                        params.push((name(p_name)?, p_type));
                    }
                    Type::FuncProto {
                        ret: size_or_type,
                        params,
                    }
                }
                14 => {
                    let linkage = r.u32()?;
                    Type::Var {
                        name: name(name_off)?,
                        target: size_or_type,
                        linkage,
                    }
                }
                15 => {
                    let mut vars = Vec::with_capacity(cap(12));
                    for _ in 0..vlen {
                        let type_id = r.u32()?;
                        let offset = r.u32()?;
                        let size = r.u32()?;
                        vars.push(SecVar {
                            type_id,
                            offset,
                            size,
                        });
                    }
                    Type::Datasec {
                        name: name(name_off)?,
                        size: size_or_type,
                        vars,
                    }
                }
                16 => Type::Float {
                    name: name(name_off)?,
                    size: size_or_type,
                },
                17 => {
                    let component_idx = r.u32()? as i32;
                    Type::DeclTag {
                        name: name(name_off)?,
                        target: size_or_type,
                        component_idx,
                    }
                }
                other => {
                    return Err(err(
                        rec_at,
                        format!("unknown BTF kind {other} for type id {}", types.len()),
                    ));
                }
            };
            types.push(t);
        }
        let btf = Btf { types };
        btf.check_references()?;
        Ok(btf)
    }

    /// Every type id a record points at must exist.
    fn check_references(&self) -> Result<(), BtfError> {
        let n = self.types.len() as u64;
        let bad = |id: u32, what: &str, from: usize| -> Result<(), BtfError> {
            if u64::from(id) >= n {
                Err(err(
                    0,
                    format!(
                        "type id {from} ({what}) refers to missing type id {id}; the blob has {} types",
                        n - 1
                    ),
                ))
            } else {
                Ok(())
            }
        };
        for (i, t) in self.types.iter().enumerate() {
            match t {
                Type::Ptr { target }
                | Type::Typedef { target, .. }
                | Type::Qualified { target, .. } => bad(*target, "reference", i)?,
                Type::Var { target, .. } | Type::DeclTag { target, .. } => {
                    bad(*target, "reference", i)?
                }
                Type::Array { elem, index, .. } => {
                    bad(*elem, "array element", i)?;
                    bad(*index, "array index", i)?;
                }
                Type::Struct(c) => {
                    for m in &c.members {
                        bad(m.type_id, "member", i)?;
                    }
                }
                Type::Func { proto, .. } => bad(*proto, "function prototype", i)?,
                Type::FuncProto { ret, params } => {
                    bad(*ret, "return type", i)?;
                    for (_, p) in params {
                        bad(*p, "parameter", i)?;
                    }
                }
                Type::Datasec { vars, .. } => {
                    for v in vars {
                        bad(v.type_id, "section variable", i)?;
                    }
                }
                Type::Void
                | Type::Int { .. }
                | Type::Enum(_)
                | Type::Fwd { .. }
                | Type::Float { .. } => {}
            }
        }
        Ok(())
    }

    pub fn get(&self, id: u32) -> &Type {
        // References are checked at parse time; ids from outside fall back to void.
        self.types.get(id as usize).unwrap_or(&Type::Void)
    }

    /// Follows typedefs and qualifiers to the type they name (bounded, so a cyclic blob cannot hang).
    pub fn strip(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_CHAIN {
            match self.get(id) {
                Type::Typedef { target, .. } | Type::Qualified { target, .. } => id = *target,
                _ => return Ok(id),
            }
        }
        Err(err(
            0,
            format!(
                "typedef/qualifier chain longer than {MAX_CHAIN} at type id {id} (cyclic BTF?)"
            ),
        ))
    }
}

/// Longest typedef/qualifier/array chain accepted. Real kernels stay far below this.
pub const MAX_CHAIN: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_truncated_and_foreign_blobs() {
        assert!(
            Btf::parse(&[0u8; 10])
                .unwrap_err()
                .message
                .contains("shorter than its header")
        );
        let mut be = vec![0u8; 24];
        be[0] = 0xeb;
        be[1] = 0x9f;
        assert!(Btf::parse(&be).unwrap_err().message.contains("big-endian"));
        let elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        assert!(Btf::parse(elf).unwrap_err().message.contains("not BTF"));
    }
}
