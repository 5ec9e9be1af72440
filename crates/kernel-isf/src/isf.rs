//! The ISF document model (Volatility 3 schema 6.2.0) and the BTF -> ISF type conversion.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::btf::{Btf, BtfError, Composite, INT_BOOL, INT_CHAR, INT_SIGNED, MAX_CHAIN, Type};
use crate::known::{Decl, DeclBase, DeclSuffix};

/// The ISF format version written. Volatility 2.28.2 reads 6.x files with a minor of at most 2
/// (its newest table class is 6.2.0), and 6.2.0 is the first with `anonymous` fields.
pub const ISF_FORMAT: &str = "6.2.0";

/// A type reference as ISF writes it (`type_descriptor` in the schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TypeDesc {
    Base {
        name: String,
    },
    Pointer {
        subtype: Box<TypeDesc>,
    },
    Array {
        count: u64,
        subtype: Box<TypeDesc>,
    },
    Struct {
        name: String,
    },
    Union {
        name: String,
    },
    Enum {
        name: String,
    },
    Function,
    Bitfield {
        bit_position: u32,
        bit_length: u32,
        #[serde(rename = "type")]
        base: Box<TypeDesc>,
    },
}

impl TypeDesc {
    pub fn base(name: &str) -> TypeDesc {
        TypeDesc::Base {
            name: name.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaseType {
    pub size: u64,
    pub signed: bool,
    /// `int`, `char`, `bool`, `float` or `void`.
    pub kind: &'static str,
    pub endian: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    #[serde(rename = "type")]
    pub ty: TypeDesc,
    pub offset: u64,
    /// An anonymous struct/union member; Volatility (format 6.2.0+) lifts its fields into the parent.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserType {
    /// `struct` or `union`.
    pub kind: &'static str,
    pub size: u64,
    pub fields: BTreeMap<String, Field>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnumDef {
    pub size: u64,
    /// Name of a base type of the enum's size and signedness.
    pub base: String,
    pub constants: BTreeMap<String, i128>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Symbol {
    pub address: u64,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<TypeDesc>,
    /// Base64 of bytes Volatility may use without reading memory (the banner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constant_data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Producer {
    pub name: String,
    pub version: String,
}

/// A source file the ISF was made from (`metadata_nix_item`). The schema's kinds are `dwarf`,
/// `symtab` and `system-map`; kallsyms has System.map's format, so both are `system-map`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceFile {
    pub kind: &'static str,
    pub name: String,
    pub hash_type: &'static str,
    pub hash_value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinuxMetadata {
    pub symbols: Vec<SourceFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    pub format: &'static str,
    pub producer: Producer,
    pub linux: LinuxMetadata,
}

/// The whole ISF document. Maps are ordered, so serialisation is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IsfDocument {
    pub metadata: Metadata,
    pub base_types: BTreeMap<String, BaseType>,
    pub user_types: BTreeMap<String, UserType>,
    pub enums: BTreeMap<String, EnumDef>,
    pub symbols: BTreeMap<String, Symbol>,
}

/// Counts from the type conversion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeStats {
    /// Anonymous structs/unions/enums named after the typedef that names them (`kuid_t`).
    pub anonymous_named_by_typedef: usize,
    /// Anonymous structs/unions/enums given a generated `unnamed_<kind>_<btf id>` name.
    pub anonymous_generated_names: usize,
    /// Second and later definitions of a struct/union/enum name, renamed `<name>__btf<id>`.
    pub duplicate_names_renamed: usize,
    /// Forward-declared types never defined in the BTF, emitted as empty types.
    pub forward_only_placeholders: usize,
    pub bitfields: usize,
    /// Members the conversion could not express (unnamed padding, bitfields wider than 64 bits).
    pub members_skipped: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NamedKind {
    Struct,
    Union,
    Enum,
    Base,
}

/// GCC's spellings, which Volatility's plugins use in casts (`"long unsigned int"`), indexed by
/// (size, signed).
fn canonical_int(size: u64, signed: bool) -> Option<&'static str> {
    Some(match (size, signed) {
        (1, true) => "signed char",
        (1, false) => "unsigned char",
        (2, true) => "short int",
        (2, false) => "short unsigned int",
        (4, true) => "int",
        (4, false) => "unsigned int",
        (8, true) => "long int",
        (8, false) => "long unsigned int",
        _ => return None,
    })
}

/// Base types every table gets (if the BTF did not already define the name): the GCC spellings
/// of the C integer types, `char`, `_Bool`, `void` and `pointer`.
fn standard_base_types(pointer_size: u64) -> Vec<(&'static str, BaseType)> {
    let b = |size, signed, kind| BaseType {
        size,
        signed,
        kind,
        endian: "little",
    };
    vec![
        ("char", b(1, true, "char")),
        ("signed char", b(1, true, "char")),
        ("unsigned char", b(1, false, "char")),
        ("short int", b(2, true, "int")),
        ("short unsigned int", b(2, false, "int")),
        ("int", b(4, true, "int")),
        ("unsigned int", b(4, false, "int")),
        ("long int", b(pointer_size, true, "int")),
        ("long unsigned int", b(pointer_size, false, "int")),
        ("long long int", b(8, true, "int")),
        ("long long unsigned int", b(8, false, "int")),
        ("_Bool", b(1, false, "bool")),
        ("void", b(0, false, "void")),
        ("pointer", b(pointer_size, false, "int")),
    ]
}

fn conv_err(message: String) -> BtfError {
    BtfError { offset: 0, message }
}

/// Converts BTF types to ISF types and resolves declarations against them.
pub struct Converter<'a> {
    btf: &'a Btf,
    /// ISF name and kind per BTF id, for ids that are referenced by name (struct, union, enum,
    /// forward declaration, int, float).
    named: Vec<Option<(String, NamedKind)>>,
    pub pointer_size: u64,
    pub base_types: BTreeMap<String, BaseType>,
    pub user_types: BTreeMap<String, UserType>,
    pub enums: BTreeMap<String, EnumDef>,
    pub stats: TypeStats,
    /// Lowest-id typedef per name.
    typedefs: BTreeMap<String, u32>,
}

impl<'a> Converter<'a> {
    pub fn new(btf: &'a Btf) -> Result<Converter<'a>, BtfError> {
        let n = btf.types.len();
        let pointer_size = btf
            .types
            .iter()
            .find_map(|t| match t {
                Type::Int { name, size, .. }
                    if name == "long unsigned int"
                        || name == "unsigned long"
                        || name == "long int"
                        || name == "long" =>
                {
                    Some(u64::from(*size))
                }
                _ => None,
            })
            .unwrap_or(8);
        if pointer_size != 8 {
            return Err(conv_err(format!(
                "`long` is {pointer_size} bytes: only 64-bit kernels are supported"
            )));
        }
        let mut conv = Converter {
            btf,
            named: vec![None; n],
            pointer_size,
            base_types: BTreeMap::new(),
            user_types: BTreeMap::new(),
            enums: BTreeMap::new(),
            stats: TypeStats::default(),
            typedefs: BTreeMap::new(),
        };
        conv.assign_names()?;
        conv.build_base_types();
        conv.build_user_types()?;
        conv.build_enums();
        Ok(conv)
    }

    fn refcounts(&self) -> Vec<u32> {
        let mut refs = vec![0u32; self.btf.types.len()];
        let mut bump = |id: u32| {
            if let Some(r) = refs.get_mut(id as usize) {
                *r = r.saturating_add(1);
            }
        };
        for t in &self.btf.types {
            match t {
                Type::Ptr { target }
                | Type::Typedef { target, .. }
                | Type::Qualified { target, .. }
                | Type::Var { target, .. } => bump(*target),
                Type::Array { elem, .. } => bump(*elem),
                Type::Struct(c) => c.members.iter().for_each(|m| bump(m.type_id)),
                Type::FuncProto { ret, params } => {
                    bump(*ret);
                    params.iter().for_each(|(_, p)| bump(*p));
                }
                _ => {}
            }
        }
        refs
    }

    fn assign_names(&mut self) -> Result<(), BtfError> {
        let refs = self.refcounts();
        let btf = self.btf;
        let mut user_names: BTreeSet<String> = BTreeSet::new();
        let mut enum_names: BTreeSet<String> = BTreeSet::new();
        // Named structs/unions and enums, grouped by name. The definition that wins the plain name is
        // the one with members, then the most referenced, then the lowest id; the others are renamed.
        let mut comp_groups: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        let mut enum_groups: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (id, t) in btf.types.iter().enumerate() {
            match t {
                Type::Struct(c) if !c.name.is_empty() => {
                    comp_groups.entry(&c.name).or_default().push(id as u32)
                }
                Type::Enum(e) if !e.name.is_empty() => {
                    enum_groups.entry(&e.name).or_default().push(id as u32)
                }
                Type::Typedef { name, .. } => {
                    self.typedefs.entry(name.clone()).or_insert(id as u32);
                }
                _ => {}
            }
        }
        let has_members = |id: u32| match btf.get(id) {
            Type::Struct(c) => !c.members.is_empty(),
            Type::Enum(e) => !e.values.is_empty(),
            _ => false,
        };
        let rank = |ids: &mut Vec<u32>| {
            ids.sort_by_key(|&id| (!has_members(id), std::cmp::Reverse(refs[id as usize]), id));
        };
        let mut winners: BTreeMap<String, NamedKind> = BTreeMap::new();
        for (name, mut ids) in comp_groups {
            rank(&mut ids);
            user_names.insert(name.to_string());
            for (i, &id) in ids.iter().enumerate() {
                let kind = if matches!(btf.get(id), Type::Struct(c) if c.is_union) {
                    NamedKind::Union
                } else {
                    NamedKind::Struct
                };
                let isf_name = if i == 0 {
                    winners.insert(name.to_string(), kind);
                    name.to_string()
                } else {
                    self.stats.duplicate_names_renamed += 1;
                    unique(&mut user_names, format!("{name}__btf{id}"))
                };
                self.named[id as usize] = Some((isf_name, kind));
            }
        }
        for (name, mut ids) in enum_groups {
            rank(&mut ids);
            enum_names.insert(name.to_string());
            let winner_complete = has_members(ids[0]);
            for (i, &id) in ids.iter().enumerate() {
                let isf_name = if i == 0 || (winner_complete && !has_members(id)) {
                    // An empty enum of the same name is a forward declaration of the winner.
                    name.to_string()
                } else {
                    self.stats.duplicate_names_renamed += 1;
                    unique(&mut enum_names, format!("{name}__btf{id}"))
                };
                self.named[id as usize] = Some((isf_name, NamedKind::Enum));
            }
        }
        // Anonymous types named by a typedef: `typedef struct { ... } kuid_t;`.
        for t in &btf.types {
            let Type::Typedef { name, target } = t else {
                continue;
            };
            let slot = *target as usize;
            if self.named[slot].is_some() {
                continue;
            }
            match btf.get(*target) {
                Type::Struct(c) if c.name.is_empty() && !user_names.contains(name) => {
                    user_names.insert(name.clone());
                    let kind = if c.is_union {
                        NamedKind::Union
                    } else {
                        NamedKind::Struct
                    };
                    self.named[slot] = Some((name.clone(), kind));
                    winners.insert(name.clone(), kind);
                    self.stats.anonymous_named_by_typedef += 1;
                }
                Type::Enum(e) if e.name.is_empty() && !enum_names.contains(name) => {
                    enum_names.insert(name.clone());
                    self.named[slot] = Some((name.clone(), NamedKind::Enum));
                    self.stats.anonymous_named_by_typedef += 1;
                }
                _ => {}
            }
        }
        // Remaining anonymous types: generated names, stable for the same BTF.
        for (id, t) in btf.types.iter().enumerate() {
            if self.named[id].is_some() {
                continue;
            }
            let (set, name, kind) = match t {
                Type::Struct(c) if c.is_union => (
                    &mut user_names,
                    format!("unnamed_union_{id}"),
                    NamedKind::Union,
                ),
                Type::Struct(_) => (
                    &mut user_names,
                    format!("unnamed_struct_{id}"),
                    NamedKind::Struct,
                ),
                Type::Enum(_) => (
                    &mut enum_names,
                    format!("unnamed_enum_{id}"),
                    NamedKind::Enum,
                ),
                _ => continue,
            };
            self.stats.anonymous_generated_names += 1;
            self.named[id] = Some((unique(set, name), kind));
        }
        // Forward declarations name the winning definition; never-defined ones become placeholders.
        for (id, t) in btf.types.iter().enumerate() {
            let Type::Fwd { name, is_union } = t else {
                continue;
            };
            let wanted = if *is_union {
                NamedKind::Union
            } else {
                NamedKind::Struct
            };
            let defined = if name.is_empty() {
                None
            } else {
                winners.get(name).copied()
            };
            let (name, kind) = match defined {
                Some(kind) => (name.clone(), kind),
                None => {
                    let name = if name.is_empty() {
                        format!("unnamed_fwd_{id}")
                    } else {
                        name.clone()
                    };
                    if !self.user_types.contains_key(&name) {
                        self.stats.forward_only_placeholders += 1;
                        let kind_str = if *is_union { "union" } else { "struct" };
                        self.user_types.insert(
                            name.clone(),
                            UserType {
                                kind: kind_str,
                                size: 0,
                                fields: BTreeMap::new(),
                            },
                        );
                    }
                    (name, wanted)
                }
            };
            self.named[id] = Some((name, kind));
        }
        Ok(())
    }

    fn build_base_types(&mut self) {
        let btf = self.btf;
        for (id, t) in btf.types.iter().enumerate() {
            let (name, bt) = match t {
                Type::Int {
                    name,
                    size,
                    encoding,
                    ..
                } => {
                    let kind = if encoding & INT_BOOL != 0 {
                        "bool"
                    } else if encoding & INT_CHAR != 0
                        || matches!(name.as_str(), "char" | "signed char" | "unsigned char")
                    {
                        "char"
                    } else {
                        "int"
                    };
                    (
                        name,
                        BaseType {
                            size: u64::from(*size),
                            signed: encoding & INT_SIGNED != 0,
                            kind,
                            endian: "little",
                        },
                    )
                }
                Type::Float { name, size } => (
                    name,
                    BaseType {
                        size: u64::from(*size),
                        signed: true,
                        kind: "float",
                        endian: "little",
                    },
                ),
                _ => continue,
            };
            let mut isf_name = if name.is_empty() {
                format!("unnamed_base_{id}")
            } else {
                name.clone()
            };
            if let Some(existing) = self.base_types.get(&isf_name)
                && *existing != bt
            {
                isf_name = format!("{isf_name}__btf{id}");
                self.stats.duplicate_names_renamed += 1;
            }
            self.base_types.insert(isf_name.clone(), bt);
            self.named[id] = Some((isf_name, NamedKind::Base));
        }
        for (name, bt) in standard_base_types(self.pointer_size) {
            self.base_types.entry(name.to_string()).or_insert(bt);
        }
    }

    fn name_of(&self, id: u32) -> Result<&(String, NamedKind), BtfError> {
        self.named
            .get(id as usize)
            .and_then(|n| n.as_ref())
            .ok_or_else(|| conv_err(format!("type id {id} has no ISF name")))
    }

    /// The ISF descriptor for a BTF type id.
    pub fn desc(&self, id: u32) -> Result<TypeDesc, BtfError> {
        self.desc_depth(id, 0)
    }

    fn desc_depth(&self, id: u32, depth: usize) -> Result<TypeDesc, BtfError> {
        if depth > MAX_CHAIN {
            return Err(conv_err(format!(
                "type nesting deeper than {MAX_CHAIN} at type id {id} (cyclic BTF?)"
            )));
        }
        Ok(match self.btf.get(id) {
            Type::Void => TypeDesc::base("void"),
            Type::Int { .. }
            | Type::Float { .. }
            | Type::Struct(_)
            | Type::Enum(_)
            | Type::Fwd { .. } => {
                let (name, kind) = self.name_of(id)?;
                let name = name.clone();
                match kind {
                    NamedKind::Struct => TypeDesc::Struct { name },
                    NamedKind::Union => TypeDesc::Union { name },
                    NamedKind::Enum => TypeDesc::Enum { name },
                    NamedKind::Base => TypeDesc::Base { name },
                }
            }
            Type::Ptr { target } => {
                let stripped = self.btf.strip(*target)?;
                let subtype = match self.btf.get(stripped) {
                    Type::FuncProto { .. } | Type::Func { .. } => TypeDesc::Function,
                    _ => self.desc_depth(*target, depth + 1)?,
                };
                TypeDesc::Pointer {
                    subtype: Box::new(subtype),
                }
            }
            Type::Array { elem, nelems, .. } => TypeDesc::Array {
                count: u64::from(*nelems),
                subtype: Box::new(self.desc_depth(*elem, depth + 1)?),
            },
            Type::Typedef { target, .. }
            | Type::Qualified { target, .. }
            | Type::Var { target, .. }
            | Type::DeclTag { target, .. } => self.desc_depth(*target, depth + 1)?,
            Type::Func { .. } | Type::FuncProto { .. } => TypeDesc::Function,
            Type::Datasec { name, .. } => {
                return Err(conv_err(format!(
                    "type id {id} is the data section {name}, not a type"
                )));
            }
        })
    }

    fn build_user_types(&mut self) -> Result<(), BtfError> {
        let btf = self.btf;
        for (id, t) in btf.types.iter().enumerate() {
            let Type::Struct(c) = t else { continue };
            let (name, _) = self.name_of(id as u32)?.clone();
            let fields = self.fields(c)?;
            let kind = if c.is_union { "union" } else { "struct" };
            // A real definition replaces a placeholder made for a forward declaration of the name.
            self.user_types.insert(
                name,
                UserType {
                    kind,
                    size: u64::from(c.size),
                    fields,
                },
            );
        }
        Ok(())
    }

    fn fields(&mut self, c: &Composite) -> Result<BTreeMap<String, Field>, BtfError> {
        let btf = self.btf;
        let mut fields = BTreeMap::new();
        for (index, m) in c.members.iter().enumerate() {
            let stripped = btf.strip(m.type_id)?;
            let mut bit_off = u64::from(m.bit_offset);
            let mut bits = u64::from(m.bitfield_size);
            if bits == 0 {
                // Older encoding: the width lives in the member's INT type.
                if let Type::Int {
                    size,
                    bit_offset,
                    bits: int_bits,
                    ..
                } = btf.get(stripped)
                    && (*bit_offset != 0 || u64::from(*int_bits) != u64::from(*size) * 8)
                {
                    bits = u64::from(*int_bits);
                    bit_off += u64::from(*bit_offset);
                }
            }
            if m.name.is_empty() {
                // An anonymous struct/union member; anything else unnamed is padding.
                match btf.get(stripped) {
                    Type::Struct(_) if bits == 0 && bit_off % 8 == 0 => {
                        let ty = self.desc(m.type_id)?;
                        fields.insert(
                            format!("unnamed_field_{index}"),
                            Field {
                                ty,
                                offset: bit_off / 8,
                                anonymous: true,
                            },
                        );
                    }
                    _ => self.stats.members_skipped += 1,
                }
                continue;
            }
            if bits == 0 && bit_off % 8 != 0 {
                // Not byte aligned without a declared width: only an integer can sit there.
                if let Type::Int { size, .. } | Type::Enum(crate::btf::EnumType { size, .. }) =
                    btf.get(stripped)
                {
                    bits = u64::from(*size) * 8;
                }
            }
            if bits == 0 {
                let ty = self.desc(m.type_id)?;
                fields.insert(
                    m.name.clone(),
                    Field {
                        ty,
                        offset: bit_off / 8,
                        anonymous: false,
                    },
                );
                continue;
            }
            match self.bitfield(stripped, bit_off, bits)? {
                Some((offset, ty)) => {
                    self.stats.bitfields += 1;
                    fields.insert(
                        m.name.clone(),
                        Field {
                            ty,
                            offset,
                            anonymous: false,
                        },
                    );
                }
                None => self.stats.members_skipped += 1,
            }
        }
        Ok(fields)
    }

    /// A bitfield of `bits` bits at `bit_off` (from the start of the struct) whose declared type is
    /// `stripped`. Volatility reads the base type at the byte offset and extracts
    /// `[bit_position, bit_position + bit_length)`, so the base type is the declared type's storage
    /// unit containing the field, or, for a field straddling units (packed structs), the smallest
    /// integer starting at the field's first byte that covers it.
    fn bitfield(
        &self,
        stripped: u32,
        bit_off: u64,
        bits: u64,
    ) -> Result<Option<(u64, TypeDesc)>, BtfError> {
        if bits > 64 {
            return Ok(None);
        }
        let (unit, signed, enum_desc) = match self.btf.get(stripped) {
            Type::Int { size, encoding, .. } => {
                (u64::from(*size), encoding & INT_SIGNED != 0, None)
            }
            Type::Enum(e) => (u64::from(e.size), e.signed, Some(self.desc(stripped)?)),
            _ => return Ok(None),
        };
        let unit_bits = unit * 8;
        if unit_bits > 0 && unit <= 8 {
            let start = bit_off - bit_off % unit_bits;
            if bit_off + bits <= start + unit_bits {
                // Integers are expressed with the canonical integer of their size: a bitfield over
                // `_Bool` or `char` is still extracted from an integer.
                let base = match enum_desc {
                    Some(d) => d,
                    None => match canonical_int(unit, signed) {
                        Some(n) => TypeDesc::base(n),
                        None => return Ok(None),
                    },
                };
                return Ok(Some((
                    start / 8,
                    TypeDesc::Bitfield {
                        bit_position: (bit_off - start) as u32,
                        bit_length: bits as u32,
                        base: Box::new(base),
                    },
                )));
            }
        }
        let pos = bit_off % 8;
        let need = (pos + bits).div_ceil(8);
        let Some(size) = [1u64, 2, 4, 8].into_iter().find(|&s| s >= need) else {
            return Ok(None);
        };
        let base = canonical_int(size, signed).expect("size is 1, 2, 4 or 8");
        Ok(Some((
            bit_off / 8,
            TypeDesc::Bitfield {
                bit_position: pos as u32,
                bit_length: bits as u32,
                base: Box::new(TypeDesc::base(base)),
            },
        )))
    }

    fn build_enums(&mut self) {
        let btf = self.btf;
        for (id, t) in btf.types.iter().enumerate() {
            let Type::Enum(e) = t else { continue };
            let Some((name, _)) = self.named[id].clone() else {
                continue;
            };
            let size = u64::from(e.size);
            let Some(base) = canonical_int(size, e.signed) else {
                continue;
            };
            let entry = EnumDef {
                size,
                base: base.to_string(),
                constants: e.values.iter().cloned().collect(),
            };
            // An empty forward declaration never replaces the definition sharing its name.
            if entry.constants.is_empty() && self.enums.contains_key(&name) {
                continue;
            }
            self.enums.insert(name, entry);
        }
    }

    /// Types of variables described by BTF (per-CPU variables in `.data..percpu`). The first VAR of
    /// a name wins; a name declared twice with different types is left out.
    pub fn var_types(&self) -> Result<BTreeMap<String, TypeDesc>, BtfError> {
        let mut out: BTreeMap<String, Option<TypeDesc>> = BTreeMap::new();
        for t in &self.btf.types {
            let Type::Datasec { vars, .. } = t else {
                continue;
            };
            for v in vars {
                let Type::Var { name, target, .. } = self.btf.get(v.type_id) else {
                    continue;
                };
                let desc = self.desc(*target)?;
                out.entry(name.clone())
                    .and_modify(|old| {
                        if old.as_ref() != Some(&desc) {
                            *old = None;
                        }
                    })
                    .or_insert(Some(desc));
            }
        }
        Ok(out
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    /// Resolves a [`Decl`] against this kernel's types, `None` if its base type is absent.
    pub fn resolve(&self, decl: &Decl) -> Result<Option<TypeDesc>, BtfError> {
        let mut desc = match &decl.base {
            DeclBase::Struct(name) => match self.user_types.get(name) {
                Some(u) if u.kind == "struct" => TypeDesc::Struct { name: name.clone() },
                _ => return Ok(None),
            },
            DeclBase::Union(name) => match self.user_types.get(name) {
                Some(u) if u.kind == "union" => TypeDesc::Union { name: name.clone() },
                _ => return Ok(None),
            },
            DeclBase::AnonStruct(members) => {
                let mut found = None;
                for (id, t) in self.btf.types.iter().enumerate() {
                    let Type::Struct(c) = t else { continue };
                    if !c.name.is_empty() || c.is_union || c.members.len() != members.len() {
                        continue;
                    }
                    if c.members
                        .iter()
                        .zip(members)
                        .all(|(m, want)| &m.name == want)
                    {
                        if found.is_some() {
                            return Ok(None); // ambiguous
                        }
                        found = Some(id as u32);
                    }
                }
                match found {
                    Some(id) => self.desc(id)?,
                    None => return Ok(None),
                }
            }
            DeclBase::Named(name) => {
                if let Some(&id) = self.typedefs.get(name) {
                    self.desc(id)?
                } else if self.base_types.contains_key(name) {
                    TypeDesc::base(name)
                } else {
                    return Ok(None);
                }
            }
        };
        for s in &decl.suffixes {
            desc = match s {
                DeclSuffix::Pointer => TypeDesc::Pointer {
                    subtype: Box::new(desc),
                },
                DeclSuffix::Array(count) => TypeDesc::Array {
                    count: *count,
                    subtype: Box::new(desc),
                },
            };
        }
        Ok(Some(desc))
    }

    /// Adds an empty struct under `name` so Volatility can attach its class to it.
    pub fn add_placeholder(&mut self, name: &str) {
        self.user_types.entry(name.to_string()).or_insert(UserType {
            kind: "struct",
            size: 0,
            fields: BTreeMap::new(),
        });
    }
}

fn unique(set: &mut BTreeSet<String>, mut name: String) -> String {
    while set.contains(&name) {
        name.push('_');
    }
    set.insert(name.clone());
    name
}
