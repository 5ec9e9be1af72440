//! Tests on the running machine's kernel: /sys/kernel/btf/vmlinux, /proc/kallsyms (as root) and
//! /proc/version. Ground truth comes from outside this crate where the machine has it:
//!
//! * `bpftool btf dump ... format raw` (libbpf's BTF reader) for every struct member offset and enum
//!   value, when bpftool is installed (Debian package `bpftool`);
//! * /proc/kallsyms re-read by the test for addresses;
//! * stock Volatility 3 2.28.2: its schemas and Linux symbol-table loader (tests/volatility/check_isf.py),
//!   and its automagic and `linux.pslist` run on a small synthetic LiME image laid out with the ISF's
//!   offsets; with the project's Volatility (FC_VOLATILITY, or dev/install-volatility);
//! * the C declarations of task_struct, list_head and cred for layout invariants.
//!
//! KERNEL_ISF_SKIP_LIVE=1 skips them on a machine without kernel BTF; KERNEL_ISF_SKIP_VOLATILITY=1
//! skips the Volatility checks (no PyPI). Each skip is printed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use kernel_isf::isf::{Field, IsfDocument, TypeDesc};
use kernel_isf::{BuildOptions, Error, Isf, KernelInputs};
use serde_json::Value;

fn skip(var: &str, what: &str) -> bool {
    if std::env::var_os(var).is_some_and(|v| v != "0" && !v.is_empty()) {
        eprintln!("SKIPPED ({var} is set): {what}");
        return true;
    }
    false
}

fn live_inputs() -> Option<&'static KernelInputs> {
    static INPUTS: OnceLock<KernelInputs> = OnceLock::new();
    if skip("KERNEL_ISF_SKIP_LIVE", "tests on the running kernel") {
        return None;
    }
    Some(INPUTS.get_or_init(|| {
        let read = |p: &str| {
            std::fs::read(p).unwrap_or_else(|e| {
                panic!("reading {p}: {e} (set KERNEL_ISF_SKIP_LIVE=1 where the kernel has no BTF)")
            })
        };
        KernelInputs {
            btf: Some(read("/sys/kernel/btf/vmlinux")),
            banner: Some(read("/proc/version")),
            kallsyms: Some(read("/proc/kallsyms")),
            system_maps: Vec::new(),
        }
    }))
}

/// The ISF of the running kernel, built leniently: kernels without CONFIG_KALLSYMS_ALL lack the
/// data symbols Volatility needs, which the strict test covers separately.
fn live_isf() -> Option<&'static Isf> {
    static ISF: OnceLock<Isf> = OnceLock::new();
    let inputs = live_inputs()?;
    Some(ISF.get_or_init(|| {
        kernel_isf::build_with(
            inputs,
            &BuildOptions {
                allow_missing_symbols: true,
            },
        )
        .expect("live ISF builds")
    }))
}

/// Fields of a user type with anonymous members lifted into it, as Volatility (ISF 6.2.0) does.
fn flat_fields<'a>(doc: &'a IsfDocument, ty: &str) -> BTreeMap<String, (u64, &'a Field)> {
    fn walk<'a>(
        doc: &'a IsfDocument,
        ty: &str,
        base: u64,
        out: &mut BTreeMap<String, (u64, &'a Field)>,
        depth: usize,
    ) {
        assert!(depth < 16, "anonymous nesting too deep in {ty}");
        let Some(u) = doc.user_types.get(ty) else {
            panic!("user type {ty} missing")
        };
        for (name, f) in &u.fields {
            if f.anonymous {
                let (TypeDesc::Struct { name: inner } | TypeDesc::Union { name: inner }) = &f.ty
                else {
                    panic!("anonymous {name} in {ty} is not a struct/union")
                };
                walk(doc, inner, base + f.offset, out, depth + 1);
            } else {
                assert!(
                    out.insert(name.clone(), (base + f.offset, f)).is_none(),
                    "{ty}.{name} appears twice after lifting"
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(doc, ty, 0, &mut out, 0);
    out
}

fn array_of_char(t: &TypeDesc, count: u64) -> bool {
    matches!(t, TypeDesc::Array { count: c, subtype } if *c == count && **subtype == TypeDesc::base("char"))
}

fn pointer_to(t: &TypeDesc, target: &TypeDesc) -> bool {
    matches!(t, TypeDesc::Pointer { subtype } if **subtype == *target)
}

#[test]
fn live_task_struct_list_head_and_cred_have_their_c_layout() {
    let Some(isf) = live_isf() else { return };
    let doc = &isf.document;
    let task = flat_fields(doc, "task_struct");
    let get = |name: &str| {
        task.get(name)
            .unwrap_or_else(|| panic!("task_struct.{name} missing"))
    };
    let list_head = TypeDesc::Struct {
        name: "list_head".into(),
    };
    let task_t = TypeDesc::Struct {
        name: "task_struct".into(),
    };

    // char comm[TASK_COMM_LEN], TASK_COMM_LEN = 16.
    assert!(
        array_of_char(&get("comm").1.ty, 16),
        "comm: {:?}",
        get("comm").1.ty
    );
    assert_eq!(get("tasks").1.ty, list_head);
    // pid_t pid; pid_t tgid; adjacent since 2.6.
    assert_eq!(get("pid").1.ty, TypeDesc::base("int"));
    assert_eq!(get("tgid").1.ty, TypeDesc::base("int"));
    assert_eq!(get("tgid").0, get("pid").0 + 4);
    assert!(pointer_to(&get("real_parent").1.ty, &task_t));
    assert!(pointer_to(&get("parent").1.ty, &task_t));
    assert!(pointer_to(
        &get("mm").1.ty,
        &TypeDesc::Struct {
            name: "mm_struct".into()
        }
    ));
    assert!(pointer_to(
        &get("files").1.ty,
        &TypeDesc::Struct {
            name: "files_struct".into()
        }
    ));
    let size = doc.user_types["task_struct"].size;
    for (name, (off, _)) in &task {
        assert!(
            *off < size,
            "task_struct.{name} at {off} is outside its {size} bytes"
        );
    }
    // All members Volatility's pslist reads on this kernel.
    for name in [
        "comm",
        "tasks",
        "pid",
        "tgid",
        "real_parent",
        "mm",
        "active_mm",
        "cred",
        "signal",
        "nsproxy",
        "flags",
        "files",
        "start_boottime",
    ] {
        get(name);
    }
    assert!(task.contains_key("__state") || task.contains_key("state"));

    let lh = &doc.user_types["list_head"];
    assert_eq!(lh.size, 16);
    assert_eq!(lh.fields["next"].offset, 0);
    assert_eq!(lh.fields["prev"].offset, 8);
    assert!(pointer_to(&lh.fields["next"].ty, &list_head));

    // kuid_t uid: `typedef struct { uid_t val; } kuid_t;`, named by its typedef.
    let cred = flat_fields(doc, "cred");
    assert_eq!(
        cred["uid"].1.ty,
        TypeDesc::Struct {
            name: "kuid_t".into()
        }
    );
    let kuid = flat_fields(doc, "kuid_t");
    assert_eq!(kuid["val"].1.ty, TypeDesc::base("unsigned int"));
    assert_eq!(
        cred["euid"].0,
        cred["uid"].0 + 16,
        "uid, gid, suid, sgid, euid follow each other"
    );
}

/// bpftool's raw dump: `[ID] STRUCT 'name' size=N vlen=M`, then M lines
/// `\t'member' type_id=T bits_offset=O[ bitfield_size=B]`; enums `\t'NAME' val=V`.
struct RawType {
    kind: String,
    name: String,
    size: u64,
    members: Vec<(String, u64, u64)>,
}

fn bpftool_raw() -> Option<BTreeMap<u32, RawType>> {
    let out = match Command::new("bpftool")
        .args([
            "btf",
            "dump",
            "file",
            "/sys/kernel/btf/vmlinux",
            "format",
            "raw",
        ])
        .output()
    {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => panic!("bpftool failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!(
                "SKIPPED (bpftool not runnable: {e}; install Debian's bpftool): cross-check against libbpf's reading of the BTF"
            );
            return None;
        }
    };
    let text = String::from_utf8(out).expect("bpftool prints UTF-8");
    let mut types = BTreeMap::new();
    let mut current: Option<u32> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('[') {
            let (id, rest) = rest.split_once("] ").expect("[ID] KIND");
            let mut words = rest.splitn(2, ' ');
            let kind = words.next().unwrap().to_string();
            let rest = words.next().unwrap_or("");
            let name = rest.split('\'').nth(1).unwrap_or("").to_string();
            let size = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("size="))
                .map(|s| s.parse().unwrap())
                .unwrap_or(0);
            let id: u32 = id.parse().unwrap();
            current = matches!(kind.as_str(), "STRUCT" | "UNION" | "ENUM" | "ENUM64").then_some(id);
            types.insert(
                id,
                RawType {
                    kind,
                    name,
                    size,
                    members: Vec::new(),
                },
            );
        } else if let (Some(id), Some(rest)) = (current, line.strip_prefix('\t')) {
            let name = rest.split('\'').nth(1).unwrap_or("").to_string();
            let field = |key: &str| {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .map(|s| s.to_string())
            };
            let t = types.get_mut(&id).unwrap();
            if t.kind.starts_with("ENUM") {
                let v = field("val=").expect("enum value");
                // ENUM64 values carry a C suffix (`1ULL`, `-1LL`).
                let v = v.trim_end_matches(['U', 'L']);
                // Values are printed signed or unsigned; keep the bits.
                let bits = v
                    .parse::<i64>()
                    .map(|x| x as u64)
                    .unwrap_or_else(|_| v.parse::<u64>().unwrap());
                t.members.push((name, bits, 0));
            } else {
                let off = field("bits_offset=").expect("bits_offset").parse().unwrap();
                let bf = field("bitfield_size=")
                    .map(|b| b.parse().unwrap())
                    .unwrap_or(0);
                t.members.push((name, off, bf));
            }
        }
    }
    Some(types)
}

#[test]
fn live_every_member_offset_and_enum_value_matches_bpftool() {
    let Some(isf) = live_isf() else { return };
    let Some(raw) = bpftool_raw() else { return };
    let doc = &isf.document;
    let mut names: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for t in raw.values() {
        let ns = if t.kind.starts_with("ENUM") {
            "enum"
        } else {
            "user"
        };
        *names.entry((ns, t.name.as_str())).or_default() += 1;
    }
    let (mut members_checked, mut enum_values_checked, mut mismatches) =
        (0usize, 0usize, Vec::new());
    for (id, t) in &raw {
        let is_enum = t.kind.starts_with("ENUM");
        if !is_enum && !matches!(t.kind.as_str(), "STRUCT" | "UNION") {
            continue;
        }
        // Named types whose name is unique in the BTF, and anonymous ones under their generated name.
        let isf_name = match (t.name.as_str(), is_enum) {
            ("(anon)", false) => format!("unnamed_{}_{id}", t.kind.to_lowercase()),
            ("(anon)", true) => format!("unnamed_enum_{id}"),
            (n, _) if names[&(if is_enum { "enum" } else { "user" }, n)] == 1 => n.to_string(),
            _ => continue,
        };
        if is_enum {
            let Some(e) = doc.enums.get(&isf_name) else {
                continue;
            }; // typedef-named anonymous enum
            assert_eq!(e.size, t.size, "enum {isf_name} size");
            for (name, bits, _) in &t.members {
                let ours = e
                    .constants
                    .get(name)
                    .unwrap_or_else(|| panic!("enum {isf_name} lacks {name}"));
                let ours_bits = if e.size == 8 {
                    *ours as u64
                } else {
                    (*ours as u64) & 0xffff_ffff
                };
                let theirs = if e.size == 8 {
                    *bits
                } else {
                    bits & 0xffff_ffff
                };
                if ours_bits != theirs {
                    mismatches.push(format!(
                        "enum {isf_name}.{name}: ours {ours}, bpftool {bits}"
                    ));
                }
                enum_values_checked += 1;
            }
            continue;
        }
        let Some(u) = doc.user_types.get(&isf_name) else {
            continue;
        }; // typedef-named anonymous struct
        assert_eq!(u.size, t.size, "size of {isf_name}");
        assert_eq!(u.kind, t.kind.to_lowercase(), "kind of {isf_name}");
        for (index, (name, bits_offset, bitfield_size)) in t.members.iter().enumerate() {
            let key = if name == "(anon)" {
                format!("unnamed_field_{index}")
            } else {
                name.clone()
            };
            let Some(f) = u.fields.get(&key) else {
                mismatches.push(format!("{isf_name}.{key} missing"));
                continue;
            };
            let (bit_start, width) = match &f.ty {
                TypeDesc::Bitfield {
                    bit_position,
                    bit_length,
                    ..
                } => (
                    f.offset * 8 + u64::from(*bit_position),
                    u64::from(*bit_length),
                ),
                _ => (f.offset * 8, 0),
            };
            // bpftool shows bitfield_size only for kind_flag structs; older ones encode it in the INT.
            if bit_start != *bits_offset || (*bitfield_size != 0 && width != *bitfield_size) {
                mismatches.push(format!("{isf_name}.{key}: ours bit {bit_start} width {width}, bpftool bit {bits_offset} width {bitfield_size}"));
            }
            members_checked += 1;
        }
    }
    eprintln!(
        "compared {members_checked} members and {enum_values_checked} enum values with bpftool"
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
    assert!(
        members_checked > 10_000,
        "only {members_checked} members compared"
    );
    assert!(
        enum_values_checked > 1_000,
        "only {enum_values_checked} enum values compared"
    );
}

#[test]
fn live_symbol_addresses_are_kallsyms_moved_back_to_link_time() {
    let Some(isf) = live_isf() else { return };
    let kernel_isf::AddressSource::Kallsyms { kaslr_shift } = isf.summary.address_source else {
        panic!("expected kallsyms as the address source: {:?}", isf.summary.address_source)
    };
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let mut seen: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() == 3 {
            seen.entry(parts[2]).or_default().push((u64::from_str_radix(parts[0], 16).unwrap(), parts[1]));
        }
    }
    if seen.values().flatten().all(|&(a, _)| a == 0) {
        panic!("/proc/kallsyms shows only zero addresses: run the tests as root");
    }
    let runtime_text = seen["_text"][0].0;
    assert_eq!(runtime_text.wrapping_sub(kaslr_shift as u64), kernel_isf::X86_64_LINK_TEXT);
    let mut checked = 0;
    for (name, entries) in &seen {
        if let [(addr, kind)] = entries.as_slice() {
            // Per-CPU offsets (below _text) and absolute symbols stay; the image moves back by the shift.
            let moves = *addr >= runtime_text && !kind.eq_ignore_ascii_case("a");
            let expected = if moves { addr - kaslr_shift as u64 } else { *addr };
            assert_eq!(isf.document.symbols.get(*name).map(|s| s.address), Some(expected), "{name}");
            checked += 1;
        }
    }
    assert!(checked > 10_000, "only {checked} unique kallsyms names");
}

#[test]
fn live_strict_build_succeeds_or_names_the_missing_data_symbols() {
    let Some(inputs) = live_inputs() else { return };
    let kallsyms = String::from_utf8_lossy(inputs.kallsyms.as_deref().unwrap()).into_owned();
    let has_init_task = kallsyms.lines().any(|l| l.ends_with(" init_task"));
    match kernel_isf::build(inputs) {
        Ok(isf) => {
            assert!(has_init_task);
            assert_eq!(
                isf.document.symbols["init_task"].ty,
                Some(TypeDesc::Struct {
                    name: "task_struct".into()
                })
            );
        }
        Err(Error::MissingSymbols { missing, hint }) => {
            assert!(
                !has_init_task,
                "init_task is in kallsyms yet reported missing"
            );
            assert!(missing.contains(&"init_task".to_string()), "{missing:?}");
            assert!(hint.contains("CONFIG_KALLSYMS_ALL"), "{hint}");
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn volatility_python() -> Option<PathBuf> {
    if skip(
        "KERNEL_ISF_SKIP_VOLATILITY",
        "the check with Volatility 3's schema and loader",
    ) {
        return None;
    }
    // The project's Volatility (dev/install-volatility: pinned on PyPI, with jsonschema so the ISF is really
    // validated); dev/test exports its `vol` as FC_VOLATILITY, and the python beside it runs the check.
    let vol = match std::env::var_os("FC_VOLATILITY") {
        Some(p) => PathBuf::from(p),
        None => {
            let install = crate_dir().join("../../dev/install-volatility");
            let out = Command::new(&install)
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", install.display()));
            assert!(out.status.success(), "{} failed (set KERNEL_ISF_SKIP_VOLATILITY=1 without PyPI)", install.display());
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        }
    };
    Some(vol.with_file_name("python"))
}

/// This crate's directory, as cargo gives it to the running test (the compile-time path can name another
/// checkout when a shared target directory reuses a build made there, as CI's clone and a working tree do).
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn run_check(python: &Path, isf_path: &Path, request: &Value, cache: &Path) -> Value {
    let script = crate_dir().join("tests/volatility/check_isf.py");
    let mut child = Command::new(python)
        .arg("-W")
        .arg("ignore")
        .arg(&script)
        .arg(isf_path)
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting Volatility's python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "check_isf.py failed");
    serde_json::from_slice(&out.stdout).expect("check_isf.py prints JSON")
}

/// Where the synthetic image below maps the kernel: virtual `KBASE + x` is physical `x`. The
/// made-up symbol addresses use the same base, so Volatility must work out a physical shift
/// (KBASE - 0xffffffff80000000) as it does for a KASLR kernel whose kallsyms addresses are used.
const KBASE: u64 = 0xffff_ffff_8100_0000;
/// Physical placement of the objects in the synthetic image.
const PHYS_PML4: u64 = 0x1000;
const PHYS_PDPT: u64 = 0x2000;
const PHYS_PD: u64 = 0x3000;
const PHYS_BANNER: u64 = 0x10000;
const PHYS_INIT_MM: u64 = 0x20000;
const PHYS_INIT_FILES: u64 = 0x30000;
const PHYS_INIT_TASK: u64 = 0x40000;
const IMAGE_BYTES: u64 = 4 << 20;

/// Symbols Volatility's Linux layer discovery needs, placed for the synthetic image.
const PLACED: &[(&str, u64)] = &[
    ("init_top_pgt", PHYS_PML4),
    ("linux_banner", PHYS_BANNER),
    ("init_mm", PHYS_INIT_MM),
    ("init_files", PHYS_INIT_FILES),
    ("init_task", PHYS_INIT_TASK),
];

/// A strict ISF of the running kernel (its BTF, banner and kallsyms) in which the symbols of
/// [`PLACED`] have the synthetic image's addresses (the machine's kallsyms may lack them: no
/// CONFIG_KALLSYMS_ALL), written as `DIR/symbols/<release>.json.xz`, with the python of a
/// Volatility 3 virtualenv. Addresses of the real kallsyms are checked elsewhere
/// (live_symbol_addresses_are_those_kallsyms_shows).
struct VolatilitySetup {
    isf: Isf,
    dir: PathBuf,
    isf_path: PathBuf,
    python: PathBuf,
}

fn volatility_setup() -> Option<&'static VolatilitySetup> {
    static SETUP: OnceLock<Option<VolatilitySetup>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            let inputs = live_inputs()?;
            let python = volatility_python()?;
            let mut inputs = inputs.clone();
            let placed: BTreeMap<&str, u64> = PLACED.iter().copied().collect();
            let mut kallsyms: String = String::from_utf8_lossy(inputs.kallsyms.as_deref().unwrap())
                .lines()
                .filter(|l| {
                    !l.split_whitespace()
                        .nth(2)
                        .is_some_and(|n| placed.contains_key(n))
                })
                .map(|l| format!("{l}\n"))
                .collect();
            for (name, phys) in PLACED {
                kallsyms.push_str(&format!("{:016x} D {name}\n", KBASE + phys));
            }
            inputs.kallsyms = Some(kallsyms.into_bytes());
            let isf =
                kernel_isf::build(&inputs).expect("strict build with the required symbols present");
            let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
            remove_stale_runs(tmp);
            let dir = tmp.join(format!("kernel-isf-vol-{}", std::process::id()));
            std::fs::create_dir_all(dir.join("symbols")).unwrap();
            std::fs::create_dir_all(dir.join("cache")).unwrap();
            let isf_path = dir
                .join("symbols")
                .join(format!("{}.json.xz", isf.summary.kernel_release));
            std::fs::write(&isf_path, isf.to_json_xz()).unwrap();
            Some(VolatilitySetup {
                isf,
                dir,
                isf_path,
                python,
            })
        })
        .as_ref()
}

/// Removes what earlier runs left (each run keeps its ISF, image and Volatility cache for inspection).
fn remove_stale_runs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600));
        if old
            && e.file_name()
                .to_string_lossy()
                .starts_with("kernel-isf-vol-")
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Stock Volatility validates the ISF against its schemas, loads it with its Linux symbol class,
/// identifies it by the banner, and sees the offsets and symbol types this crate wrote.
#[test]
fn live_isf_passes_volatility_schema_loader_and_banner_identification() {
    let Some(setup) = volatility_setup() else {
        return;
    };
    let doc = &setup.isf.document;
    let task = flat_fields(doc, "task_struct");
    let members = [
        "pid",
        "tgid",
        "comm",
        "tasks",
        "real_parent",
        "mm",
        "active_mm",
        "cred",
        "files",
        "flags",
        "signal",
        "nsproxy",
        "start_boottime",
    ];
    let mut member_pairs: Vec<[&str; 2]> = members.iter().map(|m| ["task_struct", *m]).collect();
    member_pairs.extend([["cred", "uid"], ["list_head", "next"]]);
    let request = serde_json::json!({
        "types": ["task_struct", "list_head", "kuid_t", "unix_sock", "tk_data"],
        "members": member_pairs,
        "symbols": ["init_task", "linux_banner", "_text", "init_top_pgt"],
    });
    let report = run_check(
        &setup.python,
        &setup.isf_path,
        &request,
        &setup.dir.join("cache"),
    );

    assert_eq!(
        report["schema_errors"]["6.3.0"],
        serde_json::json!([]),
        "schema 6.3.0: {}",
        report["schema_errors"]
    );
    assert_eq!(
        report["volatility_validate"],
        true,
        "Volatility's validation (schema {}): {report}",
        kernel_isf::isf::ISF_FORMAT
    );
    assert_eq!(report["load_error"], Value::Null);

    let mut banner = std::fs::read("/proc/version").unwrap();
    banner.push(0);
    use base64::Engine;
    assert_eq!(
        report["identifier"],
        base64::engine::general_purpose::STANDARD.encode(&banner),
        "Volatility's banner cache key"
    );

    assert_eq!(report["natives"]["pointer"], 8);
    for m in members {
        let seen = &report["members"][format!("task_struct.{m}")];
        assert_eq!(seen["offset"], task[m].0, "task_struct.{m}: {seen}");
    }
    assert_eq!(report["members"]["task_struct.comm"]["count"], 16);
    assert_eq!(report["members"]["task_struct.comm"]["subtype"], "isf!char");
    assert_eq!(
        report["members"]["task_struct.tasks"]["type_name"],
        "isf!list_head"
    );
    assert_eq!(report["members"]["task_struct.tasks"]["size"], 16);
    assert_eq!(report["members"]["cred.uid"]["type_name"], "isf!kuid_t");
    assert_eq!(
        report["types"]["task_struct"]["size"],
        doc.user_types["task_struct"].size
    );
    let vol_members: Vec<&str> = report["types"]["task_struct"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(
        vol_members,
        task.keys().map(String::as_str).collect::<Vec<_>>(),
        "Volatility lifts anonymous members the way flat_fields does"
    );
    assert_eq!(
        report["symbols"]["init_task"]["type"]["type_name"],
        "isf!task_struct"
    );
    assert_eq!(
        report["symbols"]["linux_banner"]["type"]["count"],
        banner.len()
    );
    assert_eq!(report["symbols"]["_text"]["type"]["type_name"], "isf!array");
    assert_eq!(
        report["symbols"]["init_top_pgt"]["address"],
        doc.symbols["init_top_pgt"].address
    );
}

/// Physical memory of the synthetic machine.
struct Image(Vec<u8>);

impl Image {
    fn put(&mut self, phys: u64, bytes: &[u8]) {
        let at = phys as usize;
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
    }
    fn u64(&mut self, phys: u64, v: u64) {
        self.put(phys, &v.to_le_bytes());
    }
    fn u32(&mut self, phys: u64, v: u32) {
        self.put(phys, &v.to_le_bytes());
    }
    /// LiME: one range header (magic "EMiL", version 1, first and last address) and the bytes.
    fn lime(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() + 32);
        out.extend_from_slice(&0x4c69_4d45u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&(self.0.len() as u64 - 1).to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&self.0);
        out
    }
}

/// Stock Volatility's automagic (banner scan, KASLR and DTB discovery from init_task, init_mm,
/// init_files and init_top_pgt) and its linux.pslist run on a small synthetic image laid out with
/// this ISF's offsets, and list the processes in it. This proves the table carries everything
/// pslist uses; that the offsets are the kernel's is what the bpftool comparison proves.
#[test]
fn live_isf_drives_stock_volatility_pslist_on_a_synthetic_image() {
    let Some(setup) = volatility_setup() else {
        return;
    };
    let doc = &setup.isf.document;
    let task = flat_fields(doc, "task_struct");
    let cred = flat_fields(doc, "cred");
    let off = |name: &str| {
        task.get(name)
            .unwrap_or_else(|| panic!("task_struct.{name}"))
            .0
    };
    let virt = |phys: u64| KBASE + phys;
    let mut img = Image(vec![0; IMAGE_BYTES as usize]);

    // Page tables: KBASE..KBASE+4MiB onto physical 0..4MiB with two 2 MiB pages.
    let (present_rw, large) = (0x3u64, 0x80u64);
    img.u64(
        PHYS_PML4 + 8 * ((KBASE >> 39) & 511),
        PHYS_PDPT | present_rw,
    );
    img.u64(PHYS_PDPT + 8 * ((KBASE >> 30) & 511), PHYS_PD | present_rw);
    for i in 0..IMAGE_BYTES / (2 << 20) {
        img.u64(
            PHYS_PD + 8 * (((KBASE >> 21) & 511) + i),
            (i * (2 << 20)) | present_rw | large,
        );
    }
    let banner = setup.isf.identifier().unwrap();
    img.put(PHYS_BANNER, &banner);

    // init_task (swapper/0, pid 0) and two processes on its tasks list.
    let tasks = [
        (PHYS_INIT_TASK, 0u32, "swapper/0", 0x0020_0000u32, 0u32),
        (0x50000, 1, "init", 0, 0),
        (0x60000, 2, "kthreadd", 0x0020_0000, 0), // PF_KTHREAD
        (0x70000, 4242, "sshd", 0, 1000),
    ];
    let (phys_signal, phys_nsproxy, phys_cred0, phys_cred1000) =
        (0x90000u64, 0xa0000u64, 0xb0000u64, 0xb1000u64);
    for (phys, uid) in [(phys_cred0, 0u32), (phys_cred1000, 1000)] {
        for field in ["uid", "gid", "euid", "egid"] {
            img.u32(phys + cred[field].0, uid);
        }
    }
    for (i, &(phys, pid, comm, flags, uid)) in tasks.iter().enumerate() {
        let next = tasks[(i + 1) % tasks.len()].0;
        let prev = tasks[(i + tasks.len() - 1) % tasks.len()].0;
        img.u64(phys + off("tasks"), virt(next + off("tasks")));
        img.u64(phys + off("tasks") + 8, virt(prev + off("tasks")));
        img.u32(phys + off("pid"), pid);
        img.u32(phys + off("tgid"), pid);
        let mut name = [0u8; 16];
        name[..comm.len()].copy_from_slice(comm.as_bytes());
        img.put(phys + off("comm"), &name);
        img.u32(phys + off("flags"), flags);
        img.u64(phys + off("real_parent"), virt(PHYS_INIT_TASK));
        img.u64(phys + off("parent"), virt(PHYS_INIT_TASK));
        let c = virt(if uid == 0 { phys_cred0 } else { phys_cred1000 });
        img.u64(phys + off("cred"), c);
        img.u64(phys + off("real_cred"), c);
        img.u64(phys + off("signal"), virt(phys_signal));
        img.u64(phys + off("nsproxy"), virt(phys_nsproxy));
        img.u64(phys + off("active_mm"), virt(PHYS_INIT_MM));
        img.u64(phys + off("files"), virt(PHYS_INIT_FILES));
    }
    let image_path = setup
        .dir
        .join(format!("synthetic-{}.lime", std::process::id()));
    std::fs::write(&image_path, img.lime()).unwrap();

    let vol = setup.python.with_file_name("vol");
    let out = Command::new(&vol)
        .args(["-q", "-r", "json", "-s"])
        .arg(setup.dir.join("symbols"))
        .arg("-f")
        .arg(&image_path)
        .arg("linux.pslist")
        .env("XDG_CACHE_HOME", setup.dir.join("cache"))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", vol.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vol linux.pslist failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("vol printed no JSON ({e}): {stdout}"));
    let seen: Vec<(u64, u64, String, Value)> = rows
        .iter()
        .map(|r| {
            (
                r["PID"].as_u64().unwrap(),
                r["PPID"].as_u64().unwrap(),
                r["COMM"].as_str().unwrap().to_string(),
                r["UID"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, 0, "init".to_string(), Value::from(0)),
            (2, 0, "kthreadd".to_string(), Value::from(0)),
            (4242, 0, "sshd".to_string(), Value::from(1000)),
        ],
        "pslist rows: {stdout}"
    );
    // Volatility shows virtual addresses masked to the layer's 48 bits.
    assert_eq!(
        rows[0]["OFFSET (V)"].as_u64(),
        Some(virt(0x50000) & 0xffff_ffff_ffff),
        "init's task_struct"
    );
}
