//! Builds a Volatility 3 symbol table (ISF, Intermediate Symbol Format, JSON) for a Linux kernel from
//! what the kernel itself exposes, so a memory image can be analysed by stock Volatility 3
//! (`vol -s DIR -f memory.lime linux.pslist`) without debug packages or a per-kernel build.
//!
//! # Inputs ([`KernelInputs`], usually from [`inputs_from_archive`])
//!
//! * `btf-vmlinux` — `/sys/kernel/btf/vmlinux`: every type of the kernel (CONFIG_DEBUG_INFO_BTF).
//! * `version` — `/proc/version`, the kernel banner. The kernel prints it with the format that builds
//!   `linux_banner` (init/version.c), so it equals the banner bytes in memory; Volatility finds the
//!   ISF for an image by scanning the image for that banner.
//! * `kallsyms` — `/proc/kallsyms` read as root: runtime (KASLR-shifted) addresses.
//! * `System.map-<release>` — link-time addresses, when `/boot` has it.
//!
//! # What comes from where
//!
//! * **Types** are converted from BTF (own parser, [`btf`]): structs and unions with bitfields
//!   (both encodings), enums (32 and 64 bit), arrays, pointers (pointers to functions are
//!   `{"kind": "function"}`), typedefs and qualifiers resolved to what they name, forward
//!   declarations resolved by name. Naming rules:
//!   - an anonymous struct/union/enum that a typedef names takes the typedef's name (`kuid_t`,
//!     `kernel_cap_t`: Volatility refers to those names); other anonymous ones are called
//!     `unnamed_struct_<btf id>` / `unnamed_union_<id>` / `unnamed_enum_<id>` (stable for the same
//!     BTF);
//!   - anonymous members are emitted as `unnamed_field_<index>` with `"anonymous": true`; Volatility
//!     (ISF 6.2.0) lifts their fields into the parent, so `task_struct.__state` and friends work;
//!   - when BTF holds several definitions of one name (different files defining a local struct of the
//!     same name), the one with members, then the most referenced, then the lowest id, keeps the name;
//!     the others become `<name>__btf<id>`; forward declarations that are never defined become empty
//!     placeholder types;
//!   - base types: BTF's integer and float types, plus the GCC spellings of the C integers
//!     (`long unsigned int`, `unsigned int`, `char`, ... which Volatility casts to), `void` and
//!     `pointer` (8 bytes; only 64-bit little-endian kernels are supported).
//! * **Addresses** ([`AddressSource`]) are link-time addresses, as in an ISF made from vmlinux: Volatility
//!   measures the KASLR shift in the image (from the kernel's VMCOREINFO note, `KERNELOFFSET`, or by finding
//!   `init_task`), so runtime addresses would be shifted twice. `System.map-<release>` gives them directly;
//!   symbols only kallsyms lists are moved back by the shift kallsyms shows (measured on `_text`, checked on
//!   `_stext`, `_etext`, `_end`; per-CPU offsets and absolute (`A`) symbols do not move). Without a
//!   System.map, kallsyms' addresses are moved back by the shift of its `_text` from x86_64's default link
//!   address, 0xffffffff81000000 ([`X86_64_LINK_TEXT`]): **an inference**, checked only in that the shift
//!   must be a whole number of 2 MiB KASLR steps below 1 GiB ([`Error::UnknownLinkAddress`] otherwise).
//!   Zeroed kallsyms (kptr_restrict) with a System.map is fine; without one there are no addresses at all.
//!   Symbols of loadable modules are skipped. A name listed twice keeps its global definition, then its
//!   lowest address.
//! * **Symbol types** (BTF types only the per-CPU variables, so most globals have none):
//!   1. BTF `VAR`s in `DATASEC`s (per-CPU variables such as `runqueues`, `current_task`);
//!   2. `linux_banner`: `char[len + 1]` with `constant_data` = base64 of the banner plus its NUL,
//!      which is what Volatility's banner cache reads to identify the ISF;
//!   3. the table [`known::KNOWN_GLOBALS`] of well-known globals and their C declarations
//!      (`init_task` → `struct task_struct`, `_text` → `char[]`, `tk_core` → `struct tk_data`, ...),
//!      resolved against this kernel's BTF. A declaration whose type this BTF lacks leaves the symbol
//!      untyped ([`Summary::unresolved_declarations`]);
//!   4. every other symbol has an address only.
//!
//!   [`Summary::inferred`] lists each symbol typed by 2 or 3 and the declaration used.
//! * **Placeholders**: Volatility's Linux symbol class attaches classes to a fixed list of types and
//!   fails to load a table lacking one ([`known::VOLATILITY_CLASS_TYPES`]); one missing from BTF (for
//!   instance `unix_sock` when AF_UNIX is a module, whose types live in the module's BTF) gets an
//!   empty struct, listed in [`Summary::placeholders`]. The core types ([`known::CORE_TYPES`]) must be
//!   real.
//!
//! # What Volatility 3 (2.28.2) needs, and where it is checked
//!
//! Layer discovery (`automagic/linux.py`): the banner as `linux_banner.constant_data`; the addresses of
//! `init_task` (typed `task_struct`: `comm`, `pid`, `tasks`, `active_mm`, `files`), `init_mm`,
//! `init_files`; a top-level page table (`init_top_pgt` on x86_64 since 4.13). [`build`] fails with
//! [`Error::MissingSymbols`] when one lacks an address; [`build_with`] with
//! [`BuildOptions::allow_missing_symbols`] reports them in [`Summary::missing_symbols`] instead.
//! `linux.pslist` then walks `init_task.tasks` and reads `pid`, `tgid`, `comm`, `real_parent`,
//! `cred` (`kuid_t`/`kgid_t`), `mm`, `signal`, `nsproxy` and, for creation times, `tk_core`.
//!
//! # Untrusted input
//!
//! Everything comes from the machine under investigation. The BTF reader checks every offset, count
//! and type reference and bounds every chain it follows; malformed input is an [`Error`], never a
//! panic. [`inputs_from_archive`] takes at most [`MAX_FILE_BYTES`] per file and [`MAX_TOTAL_BYTES`]
//! in all, so a decompression bomb cannot exhaust the analyst's memory.
//!
//! # Output
//!
//! [`Isf::to_json`] (compact, maps sorted) and [`Isf::to_json_xz`] (xz preset [`XZ_PRESET`], one
//! block, CRC64): the same inputs always give the same bytes. ISF format 6.2.0, the newest Volatility
//! 2.28.2 reads.

pub mod btf;
pub mod isf;
pub mod known;
pub mod symtab;

mod archive;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

use std::collections::BTreeMap;

use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use archive::{MAX_FILE_BYTES, MAX_TOTAL_BYTES};
pub use btf::{Btf, BtfError};
pub use isf::{IsfDocument, TypeDesc};
pub use symtab::{SymbolTable, SymtabError};

use isf::{Converter, LinuxMetadata, Metadata, Producer, SourceFile, Symbol};

/// xz preset used by [`Isf::to_json_xz`]. Fixed, so output bytes depend on the input only. Low, because the
/// controller builds the ISF between the volatile and the memory step: preset 6 took 6.9 s for a 14 MB ISF and
/// gave 1.35 MB, presets 0-3 took 0.3-2.3 s for 1.7-2.0 MB, and the memory step starts only after it.
pub const XZ_PRESET: u32 = 1;

/// Name written as the ISF producer.
pub const PRODUCER: &str = "forensic-capture-kernel-isf";

/// The files collected from the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelInputs {
    /// Raw `/sys/kernel/btf/vmlinux`.
    pub btf: Option<Vec<u8>>,
    /// `/proc/version`.
    pub banner: Option<Vec<u8>>,
    /// `/proc/kallsyms` as read by root.
    pub kallsyms: Option<Vec<u8>>,
    /// `(file name, contents)` of each `System.map-*`.
    pub system_maps: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("symbols archive unreadable: {0}")]
    Archive(String),
    #[error(
        "no BTF: symbols/btf-vmlinux is missing or empty (the kernel lacks CONFIG_DEBUG_INFO_BTF, or /sys/kernel/btf/vmlinux was not readable); the ISF's types come from it"
    )]
    MissingBtf,
    #[error("malformed BTF: {0}")]
    Btf(#[from] BtfError),
    #[error(
        "no kernel banner: symbols/version (the contents of /proc/version) is missing or empty; Volatility identifies the kernel by it"
    )]
    MissingBanner,
    #[error("the kernel banner {0:?} does not start with \"Linux version <release> \"")]
    BadBanner(String),
    #[error(
        "no symbol addresses: neither symbols/kallsyms nor a symbols/System.map-* was collected"
    )]
    MissingSymbolTable,
    #[error(
        "no usable symbol addresses: kallsyms shows every address as 0 (kptr_restrict, or read without CAP_SYSLOG) and no System.map-{release} was collected"
    )]
    ZeroedKallsyms { release: String },
    #[error(
        "kallsyms is unusable and the collected System.map ({found:?}) is not System.map-{release}: its addresses would belong to another kernel"
    )]
    SystemMapMismatch { release: String, found: Vec<String> },
    #[error(transparent)]
    Symtab(#[from] SymtabError),
    #[error("symbols Volatility needs have no address: {}; {hint}", missing.join(", "))]
    MissingSymbols { missing: Vec<String>, hint: String },
    #[error("types Volatility needs are missing from the BTF: {}", .0.join(", "))]
    MissingTypes(Vec<String>),
    #[error("the kernel's link-time addresses cannot be told from what it provided: {detail}; collect /boot/System.map-<release> with the symbols")]
    UnknownLinkAddress { detail: String },
}

/// Where symbol addresses came from. They are always link-time addresses, as in an ISF made from vmlinux:
/// Volatility measures the KASLR shift in the image itself (from the kernel's VMCOREINFO note, or by finding
/// `init_task`), so runtime addresses would be shifted twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum AddressSource {
    /// `System.map-<release>`; `added` symbols only kallsyms had were moved back by the KASLR shift kallsyms
    /// showed (`kaslr_shift`, measured on `_text` and checked on `_stext`, `_etext`, `_end`).
    SystemMap { file: String, kaslr_shift: Option<i64>, added: usize },
    /// `/proc/kallsyms` moved back by `kaslr_shift`: its `_text` against x86_64's default link address
    /// (an inference; a System.map makes it unnecessary).
    Kallsyms { kaslr_shift: i64 },
}

/// How a symbol's type was inferred (types from BTF VARs are counted, not listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TypeSource {
    /// `char[len + 1]` from the banner's length.
    Banner,
    /// [`known::KNOWN_GLOBALS`].
    KnownGlobals,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InferredType {
    pub symbol: String,
    /// The C declaration used.
    pub declaration: String,
    pub source: TypeSource,
}

/// What went into an ISF; serialisable for a capture's manifest or logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub kernel_release: String,
    pub user_types: usize,
    pub enums: usize,
    pub base_types: usize,
    pub symbols: usize,
    pub symbols_with_types: usize,
    /// Symbols typed by a BTF VAR (per-CPU variables).
    pub symbols_typed_from_btf: usize,
    pub inferred: Vec<InferredType>,
    /// Known globals present in the symbol table whose declared type this BTF lacks (left untyped).
    pub unresolved_declarations: Vec<String>,
    pub address_source: AddressSource,
    /// Empty structs added for Volatility's class types missing from BTF.
    pub placeholders: Vec<String>,
    /// Required symbols without an address (only with [`BuildOptions::allow_missing_symbols`]).
    pub missing_symbols: Vec<String>,
    pub type_stats: isf::TypeStats,
    pub warnings: Vec<String>,
}

/// A built ISF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isf {
    pub document: IsfDocument,
    pub summary: Summary,
}

impl Isf {
    /// Compact JSON, keys sorted.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.document).expect("the ISF model always serialises")
    }

    /// xz-compressed JSON (preset [`XZ_PRESET`], single-threaded, one block, CRC64), as Volatility
    /// reads `*.json.xz`.
    pub fn to_json_xz(&self) -> Vec<u8> {
        xz(&self.to_json())
    }

    /// A copy of [`Isf::summary`] (the field), for callers that keep it after dropping the ISF.
    pub fn summary(&self) -> Summary {
        self.summary.clone()
    }

    /// The banner bytes Volatility identifies this ISF by (banner plus NUL).
    pub fn identifier(&self) -> Option<Vec<u8>> {
        let data = self
            .document
            .symbols
            .get("linux_banner")?
            .constant_data
            .as_ref()?;
        base64::engine::general_purpose::STANDARD.decode(data).ok()
    }
}

fn xz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut w = lzma_rust2::XzWriter::new(
        Vec::with_capacity(data.len() / 8),
        lzma_rust2::XzOptions::with_preset(XZ_PRESET),
    )
    .expect("valid xz options");
    w.write_all(data).expect("writing to memory");
    w.finish().expect("writing to memory")
}

/// Build options; [`Default`] is what [`build`] uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// Build even when symbols Volatility needs have no address (for inspecting a kernel's types, or
    /// a kernel whose kallsyms lacks data symbols and no System.map was collected). Volatility cannot
    /// analyse an image with such a table.
    pub allow_missing_symbols: bool,
}

/// Reads the collector's `symbols.tar.gz` (a `symbols/` directory; bare file names are accepted too).
/// Missing files are left `None` here; [`build`] says which one it needed.
pub fn inputs_from_archive(tar_gz: &[u8]) -> Result<KernelInputs, Error> {
    archive::read(tar_gz)
}

/// Builds the ISF, failing if Volatility could not use it.
pub fn build(inputs: &KernelInputs) -> Result<Isf, Error> {
    build_with(inputs, &BuildOptions::default())
}

pub fn build_with(inputs: &KernelInputs, options: &BuildOptions) -> Result<Isf, Error> {
    let btf_bytes = inputs
        .btf
        .as_deref()
        .filter(|b| !b.is_empty())
        .ok_or(Error::MissingBtf)?;
    let mut banner = inputs
        .banner
        .clone()
        .filter(|b| !b.iter().all(u8::is_ascii_whitespace))
        .ok_or(Error::MissingBanner)?;
    let mut warnings = Vec::new();
    if !banner.ends_with(b"\n") {
        // /proc/version ends in a newline, as linux_banner does; a collector that captured it with
        // `$(...)` lost it.
        banner.push(b'\n');
        warnings.push("the banner had no trailing newline; one was added, as /proc/version and linux_banner have it".to_string());
    }
    let release = banner_release(&banner)?;

    let btf = Btf::parse(btf_bytes)?;
    let mut conv = Converter::new(&btf)?;

    let (addresses, address_source, sources) = choose_addresses(inputs, &release, &mut warnings)?;

    // Types Volatility's Linux symbol class insists on.
    let missing_core: Vec<String> = known::CORE_TYPES
        .iter()
        .filter(|t| !conv.user_types.contains_key(**t))
        .map(|t| t.to_string())
        .collect();
    if !missing_core.is_empty() {
        return Err(Error::MissingTypes(missing_core));
    }
    let mut placeholders = Vec::new();
    for t in known::VOLATILITY_CLASS_TYPES {
        if !conv.user_types.contains_key(*t) {
            conv.add_placeholder(t);
            placeholders.push(t.to_string());
            warnings.push(format!("struct {t} is not in vmlinux BTF (built as a module?); an empty placeholder lets Volatility load the table"));
        }
    }

    let mut symbols: BTreeMap<String, Symbol> = addresses
        .into_iter()
        .map(|(name, address)| {
            (
                name,
                Symbol {
                    address,
                    ty: None,
                    constant_data: None,
                },
            )
        })
        .collect();

    let mut typed_from_btf = 0;
    for (name, desc) in conv.var_types()? {
        if let Some(sym) = symbols.get_mut(&name) {
            sym.ty = Some(desc);
            typed_from_btf += 1;
        }
    }

    let mut inferred = Vec::new();
    if let Some(sym) = symbols.get_mut("linux_banner") {
        let mut with_nul = banner.clone();
        with_nul.push(0);
        sym.ty = Some(TypeDesc::Array {
            count: with_nul.len() as u64,
            subtype: Box::new(TypeDesc::base("char")),
        });
        sym.constant_data = Some(base64::engine::general_purpose::STANDARD.encode(&with_nul));
        inferred.push(InferredType {
            symbol: "linux_banner".into(),
            declaration: format!("char[{}]", with_nul.len()),
            source: TypeSource::Banner,
        });
    }

    let mut unresolved = Vec::new();
    for (name, spec, _) in known::KNOWN_GLOBALS {
        let Some(sym) = symbols.get_mut(*name) else {
            continue;
        };
        if sym.ty.is_some() {
            continue;
        }
        let decls = known::parse_decl(spec).expect("the table's declarations parse (tested)");
        let mut resolved = None;
        for (decl, alt) in decls.iter().zip(spec.split(" | ")) {
            if let Some(desc) = conv.resolve(decl)? {
                resolved = Some((desc, alt));
                break;
            }
        }
        match resolved {
            Some((desc, alt)) => {
                sym.ty = Some(desc);
                inferred.push(InferredType {
                    symbol: name.to_string(),
                    declaration: alt.to_string(),
                    source: TypeSource::KnownGlobals,
                });
            }
            None => unresolved.push(format!("{name}: {spec}")),
        }
    }

    let mut missing: Vec<String> = known::REQUIRED_SYMBOLS
        .iter()
        .filter(|s| !symbols.contains_key(**s))
        .map(|s| s.to_string())
        .collect();
    if !known::PAGE_TABLE_SYMBOLS
        .iter()
        .any(|s| symbols.contains_key(*s))
    {
        missing.push(known::PAGE_TABLE_SYMBOLS.join(" or "));
    }
    if !missing.is_empty() && !options.allow_missing_symbols {
        let hint = missing_symbols_hint(inputs, &address_source);
        return Err(Error::MissingSymbols { missing, hint });
    }
    for m in &missing {
        warnings.push(format!(
            "{m} has no address: Volatility cannot analyse an image with this table"
        ));
    }

    let document = IsfDocument {
        metadata: Metadata {
            format: isf::ISF_FORMAT,
            producer: Producer {
                name: PRODUCER.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
            linux: LinuxMetadata { symbols: sources },
        },
        base_types: std::mem::take(&mut conv.base_types),
        user_types: std::mem::take(&mut conv.user_types),
        enums: std::mem::take(&mut conv.enums),
        symbols,
    };
    let summary = Summary {
        kernel_release: release,
        user_types: document.user_types.len(),
        enums: document.enums.len(),
        base_types: document.base_types.len(),
        symbols: document.symbols.len(),
        symbols_with_types: document.symbols.values().filter(|s| s.ty.is_some()).count(),
        symbols_typed_from_btf: typed_from_btf,
        inferred,
        unresolved_declarations: unresolved,
        address_source,
        placeholders,
        missing_symbols: missing,
        type_stats: conv.stats.clone(),
        warnings,
    };
    Ok(Isf { document, summary })
}

/// The release from `Linux version <release> (...`.
fn banner_release(banner: &[u8]) -> Result<String, Error> {
    let text = String::from_utf8_lossy(banner);
    let bad = || Error::BadBanner(text.chars().take(200).collect());
    if banner.contains(&0) {
        return Err(bad());
    }
    let rest = text.strip_prefix("Linux version ").ok_or_else(bad)?;
    let release = rest.split_whitespace().next().ok_or_else(bad)?;
    Ok(release.to_string())
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Symbols used to measure and check the shift between System.map and kallsyms.
const SHIFT_ANCHOR: &str = "_text";
const SHIFT_CHECKS: &[&str] = &["_stext", "_etext", "_end"];
/// Where x86_64 kernels are linked: `__START_KERNEL_map` (0xffffffff80000000) plus CONFIG_PHYSICAL_START,
/// which distributions leave at its default, 16 MiB.
pub const X86_64_LINK_TEXT: u64 = 0xffff_ffff_8100_0000;
/// x86_64 KASLR moves the kernel in steps of CONFIG_PHYSICAL_ALIGN (2 MiB, the default) within
/// KERNEL_IMAGE_SIZE (1 GiB): a shift measured against the default link address must fit both.
const KASLR_STEP: u64 = 0x20_0000;
const KASLR_RANGE: u64 = 0x4000_0000;

type Addresses = BTreeMap<String, u64>;

/// Whether an address moves with the kernel image: absolute symbols and per-CPU offsets (below `_text`) do not.
fn relocated(entry: &symtab::SymEntry, text: u64) -> bool {
    entry.address >= text && !entry.kind.eq_ignore_ascii_case(&'a')
}

fn choose_addresses(
    inputs: &KernelInputs,
    release: &str,
    warnings: &mut Vec<String>,
) -> Result<(Addresses, AddressSource, Vec<SourceFile>), Error> {
    let kallsyms = match inputs.kallsyms.as_deref() {
        Some(k) => Some(symtab::parse(k, "kallsyms")?),
        None => None,
    };
    let usable_kallsyms = kallsyms.as_ref().filter(|k| k.lines > 0 && !k.all_zero);
    let wanted_map = format!("System.map-{release}");
    let map = inputs.system_maps.iter().find(|(name, _)| *name == wanted_map);
    for (name, _) in &inputs.system_maps {
        if *name != wanted_map {
            warnings.push(format!("{name} ignored: the running kernel is {release}"));
        }
    }
    let source_file = |name: &str, data: &[u8]| SourceFile {
        kind: "system-map",
        name: name.to_string(),
        hash_type: "sha256",
        hash_value: sha256_hex(data),
    };

    // A map with the running release's name but another build's layout is not this kernel's: kallsyms then
    // decides alone.
    let mut map = map;
    if let (Some((name, data)), Some(k)) = (map, usable_kallsyms) {
        let table = symtab::parse(data, name)?;
        if let (Some(runtime), Some(linked)) = (k.get(SHIFT_ANCHOR), table.get(SHIFT_ANCHOR)) {
            let shift = runtime.wrapping_sub(linked);
            if let Some(check) = SHIFT_CHECKS.iter().find(|c| matches!((k.get(c), table.get(c)), (Some(r), Some(l)) if r.wrapping_sub(l) != shift)) {
                warnings.push(format!("{name} ignored: {check} is shifted differently from {SHIFT_ANCHOR} against kallsyms, so it is not this kernel's map"));
                map = None;
            }
        }
    }
    if let Some((name, data)) = map {
        let table = symtab::parse(data, name)?;
        let mut addresses: Addresses = table.symbols.iter().map(|(n, e)| (n.clone(), e.address)).collect();
        let mut sources = vec![source_file(name, data)];
        let Some(k) = usable_kallsyms else {
            if kallsyms.as_ref().is_some_and(|k| k.all_zero) {
                warnings.push("kallsyms shows only zero addresses; System.map alone gives the addresses".to_string());
            }
            return Ok((addresses, AddressSource::SystemMap { file: name.clone(), kaslr_shift: None, added: 0 }, sources));
        };
        // The shift kallsyms shows (the map passed the layout check above).
        let measured = match (k.get(SHIFT_ANCHOR), table.get(SHIFT_ANCHOR)) {
            (Some(runtime), Some(linked)) => Some((runtime.wrapping_sub(linked) as i64, runtime)),
            _ => None,
        };
        let mut added = 0;
        if let Some((shift, runtime_text)) = measured {
            for (sym, entry) in &k.symbols {
                if addresses.contains_key(sym) {
                    continue;
                }
                let address = if relocated(entry, runtime_text) { entry.address.wrapping_sub(shift as u64) } else { entry.address };
                addresses.insert(sym.clone(), address);
                added += 1;
            }
            sources.push(source_file("kallsyms", inputs.kallsyms.as_deref().unwrap_or_default()));
        }
        return Ok((addresses, AddressSource::SystemMap { file: name.clone(), kaslr_shift: measured.map(|(s, _)| s), added }, sources));
    }

    let Some(k) = usable_kallsyms else {
        if !inputs.system_maps.is_empty() {
            return Err(Error::SystemMapMismatch {
                release: release.to_string(),
                found: inputs.system_maps.iter().map(|(n, _)| n.clone()).collect(),
            });
        }
        return Err(match kallsyms {
            Some(k) if k.all_zero => Error::ZeroedKallsyms { release: release.to_string() },
            _ => Error::MissingSymbolTable,
        });
    };
    let runtime_text = k.get(SHIFT_ANCHOR).ok_or_else(|| Error::UnknownLinkAddress {
        detail: format!("kallsyms has no {SHIFT_ANCHOR}"),
    })?;
    let shift = runtime_text.wrapping_sub(X86_64_LINK_TEXT);
    if shift % KASLR_STEP != 0 || shift >= KASLR_RANGE {
        return Err(Error::UnknownLinkAddress {
            detail: format!(
                "kallsyms puts {SHIFT_ANCHOR} at {runtime_text:#x}, which is not x86_64's default link address {X86_64_LINK_TEXT:#x} moved by a KASLR step of {KASLR_STEP:#x} within {KASLR_RANGE:#x}"
            ),
        });
    }
    if shift != 0 {
        warnings.push(format!(
            "no System.map: kallsyms' addresses moved back by {shift:#x}, measured on {SHIFT_ANCHOR} against x86_64's default link address {X86_64_LINK_TEXT:#x}"
        ));
    }
    let addresses = k
        .symbols
        .iter()
        .map(|(n, e)| (n.clone(), if relocated(e, runtime_text) { e.address - shift } else { e.address }))
        .collect();
    Ok((
        addresses,
        AddressSource::Kallsyms { kaslr_shift: shift as i64 },
        vec![source_file("kallsyms", inputs.kallsyms.as_deref().unwrap_or_default())],
    ))
}

fn missing_symbols_hint(inputs: &KernelInputs, source: &AddressSource) -> String {
    let kallsyms = inputs
        .kallsyms
        .as_deref()
        .and_then(|k| symtab::parse(k, "kallsyms").ok());
    match (source, kallsyms) {
        (AddressSource::Kallsyms { .. }, Some(k)) if k.data_symbol_count() < 1000 => format!(
            "kallsyms lists only {} data symbols, so the kernel lacks CONFIG_KALLSYMS_ALL; collect /boot/System.map-<release> to supply them",
            k.data_symbol_count()
        ),
        (AddressSource::SystemMap { file, .. }, _) => format!("{file} does not define them"),
        _ => "the symbol table does not define them".to_string(),
    }
}
