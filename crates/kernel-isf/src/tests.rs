//! Unit tests on hand-built BTF blobs and symbol tables.

use serde_json::{Value, json};

use crate::btf::{Btf, INT_BOOL, INT_SIGNED};
use crate::isf::{Converter, TypeDesc};
use crate::testutil::*;
use crate::*;

fn convert(b: &BtfBuilder) -> (Btf, Value) {
    let btf = Btf::parse(&b.build()).expect("test BTF parses");
    let conv = Converter::new(&btf).expect("converts");
    let v = json!({
        "user_types": serde_json::to_value(&conv.user_types).unwrap(),
        "enums": serde_json::to_value(&conv.enums).unwrap(),
        "base_types": serde_json::to_value(&conv.base_types).unwrap(),
    });
    (btf, v)
}

fn field<'a>(v: &'a Value, ty: &str, name: &str) -> &'a Value {
    let f = &v["user_types"][ty]["fields"][name];
    assert!(
        !f.is_null(),
        "{ty}.{name} missing in {}",
        v["user_types"][ty]
    );
    f
}

#[test]
fn bitfields_in_kind_flag_structs_use_their_storage_unit() {
    let mut b = BtfBuilder::new();
    let uint = b.int("unsigned int", 4, 0);
    let ulong = b.int("long unsigned int", 8, 0);
    let boolean = b.int("_Bool", 1, INT_BOOL);
    let flags = b.strukt(
        "flags",
        16,
        &[
            ("a", uint, 0, 3),
            ("b", uint, 3, 5),
            ("c", uint, 35, 2),    // second unsigned int, bits 3..5
            ("d", boolean, 40, 1), // byte 5 bit 0
            ("e", ulong, 64, 0),   // plain member in a kind_flag struct
        ],
    );
    let (_, v) = convert(&b);
    let _ = flags;
    assert_eq!(
        field(&v, "flags", "a"),
        &json!({"offset": 0, "type": {"kind": "bitfield", "bit_position": 0, "bit_length": 3, "type": {"kind": "base", "name": "unsigned int"}}})
    );
    assert_eq!(field(&v, "flags", "b")["type"]["bit_position"], 3);
    assert_eq!(
        field(&v, "flags", "c"),
        &json!({"offset": 4, "type": {"kind": "bitfield", "bit_position": 3, "bit_length": 2, "type": {"kind": "base", "name": "unsigned int"}}})
    );
    // A _Bool bitfield is extracted from an integer of its size.
    assert_eq!(
        field(&v, "flags", "d"),
        &json!({"offset": 5, "type": {"kind": "bitfield", "bit_position": 0, "bit_length": 1, "type": {"kind": "base", "name": "unsigned char"}}})
    );
    assert_eq!(
        field(&v, "flags", "e"),
        &json!({"offset": 8, "type": {"kind": "base", "name": "long unsigned int"}})
    );
}

#[test]
fn bitfields_in_the_old_int_encoding_are_recognised() {
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, INT_SIGNED);
    let int3 = b.int_bits("int", 4, INT_SIGNED, 0, 3);
    b.strukt("old", 8, &[("x", int, 0, 0), ("y", int3, 32 + 4, 0)]);
    let (_, v) = convert(&b);
    assert_eq!(
        field(&v, "old", "x"),
        &json!({"offset": 0, "type": {"kind": "base", "name": "int"}})
    );
    assert_eq!(
        field(&v, "old", "y"),
        &json!({"offset": 4, "type": {"kind": "bitfield", "bit_position": 4, "bit_length": 3, "type": {"kind": "base", "name": "int"}}})
    );
}

#[test]
fn bitfield_straddling_its_unit_is_read_from_its_first_byte() {
    let mut b = BtfBuilder::new();
    let uint = b.int("unsigned int", 4, 0);
    // __packed: 10 bits starting at bit 28 cross the first 32-bit unit.
    b.strukt("packed", 6, &[("x", uint, 28, 10)]);
    let (_, v) = convert(&b);
    assert_eq!(
        field(&v, "packed", "x"),
        &json!({"offset": 3, "type": {"kind": "bitfield", "bit_position": 4, "bit_length": 10, "type": {"kind": "base", "name": "short unsigned int"}}})
    );
}

#[test]
fn enum_bitfield_keeps_its_enum() {
    let mut b = BtfBuilder::new();
    let e = b.enum32("state", 4, false, &[("OFF", 0), ("ON", 1)]);
    b.strukt("holder", 4, &[("s", e, 2, 1)]);
    let (_, v) = convert(&b);
    assert_eq!(
        field(&v, "holder", "s")["type"],
        json!({"kind": "bitfield", "bit_position": 2, "bit_length": 1, "type": {"kind": "enum", "name": "state"}})
    );
}

#[test]
fn anonymous_union_member_is_flagged_and_its_type_named_stably() {
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, INT_SIGNED);
    let ulong = b.int("long unsigned int", 8, 0);
    let anon = b.union("", 8, &[("a", int, 0, 0), ("b", ulong, 0, 0)]);
    b.strukt("outer", 16, &[("first", int, 0, 0), ("", anon, 64, 0)]);
    let (_, v) = convert(&b);
    let union_name = format!("unnamed_union_{anon}");
    assert_eq!(
        field(&v, "outer", "unnamed_field_1"),
        &json!({"offset": 8, "anonymous": true, "type": {"kind": "union", "name": union_name}})
    );
    assert_eq!(v["user_types"][&union_name]["kind"], "union");
    assert_eq!(v["user_types"][&union_name]["size"], 8);
    assert_eq!(v["user_types"][&union_name]["fields"]["b"]["offset"], 0);
    // Same BTF, same names.
    let (_, again) = convert(&b);
    assert_eq!(v, again);
}

#[test]
fn typedef_and_qualifier_chains_resolve_to_what_they_name() {
    let mut b = BtfBuilder::new();
    let uint = b.int("unsigned int", 4, 0);
    let u32_ = b.typedef("u32", uint);
    let c = b.konst(u32_);
    let vol = b.volatile(c);
    let tag = b.type_tag("rcu", vol);
    let restrict_ptr_target = b.restrict(tag);
    let uid_t = b.typedef("uid_t", restrict_ptr_target);
    let kuid = b.strukt("", 4, &[("val", uid_t, 0, 0)]);
    let kuid_t = b.typedef("kuid_t", kuid);
    b.strukt("cred", 8, &[("uid", kuid_t, 0, 0), ("raw", uid_t, 32, 0)]);
    let (_, v) = convert(&b);
    assert_eq!(
        field(&v, "cred", "raw")["type"],
        json!({"kind": "base", "name": "unsigned int"})
    );
    // The anonymous struct a typedef names takes the typedef's name.
    assert_eq!(
        field(&v, "cred", "uid")["type"],
        json!({"kind": "struct", "name": "kuid_t"})
    );
    assert_eq!(
        field(&v, "kuid_t", "val")["type"],
        json!({"kind": "base", "name": "unsigned int"})
    );
}

#[test]
fn enums_keep_signedness_width_and_values() {
    let mut b = BtfBuilder::new();
    b.enum32(
        "pid_type",
        4,
        false,
        &[("PIDTYPE_PID", 0), ("PIDTYPE_TGID", 1), ("PIDTYPE_MAX", 4)],
    );
    b.enum32("sign", 4, true, &[("NEG", -1), ("POS", 1)]);
    b.enum64("big", 8, false, &[("TOP", u64::MAX as i128)]);
    b.enum32("small", 1, false, &[("ONE", 1)]);
    let anon = b.enum32("", 4, false, &[("LONELY", 7)]);
    let (_, v) = convert(&b);
    assert_eq!(
        v["enums"]["pid_type"],
        json!({"size": 4, "base": "unsigned int", "constants": {"PIDTYPE_PID": 0, "PIDTYPE_TGID": 1, "PIDTYPE_MAX": 4}})
    );
    assert_eq!(
        v["enums"]["sign"],
        json!({"size": 4, "base": "int", "constants": {"NEG": -1, "POS": 1}})
    );
    assert_eq!(v["enums"]["big"]["constants"]["TOP"], json!(u64::MAX));
    assert_eq!(v["enums"]["big"]["base"], "long unsigned int");
    assert_eq!(v["enums"]["small"]["base"], "unsigned char");
    assert_eq!(
        v["enums"][format!("unnamed_enum_{anon}")]["constants"]["LONELY"],
        7
    );
    // Every enum base is a defined base type.
    for (_, e) in v["enums"].as_object().unwrap() {
        let base = e["base"].as_str().unwrap();
        assert!(
            v["base_types"][base].is_object(),
            "enum base {base} undefined"
        );
    }
}

#[test]
fn arrays_nest_and_keep_counts() {
    let mut b = BtfBuilder::new();
    let char_ = b.int("char", 1, INT_SIGNED | crate::btf::INT_CHAR);
    let int = b.int("int", 4, INT_SIGNED);
    let comm = b.array(char_, int, 16);
    let row = b.array(int, int, 3);
    let grid = b.array(row, int, 2);
    let flex = b.array(int, int, 0);
    b.strukt(
        "arrays",
        44,
        &[
            ("comm", comm, 0, 0),
            ("grid", grid, 128, 0),
            ("flex", flex, 320, 0),
        ],
    );
    let (_, v) = convert(&b);
    assert_eq!(
        field(&v, "arrays", "comm")["type"],
        json!({"kind": "array", "count": 16, "subtype": {"kind": "base", "name": "char"}})
    );
    assert_eq!(
        field(&v, "arrays", "grid")["type"],
        json!({"kind": "array", "count": 2, "subtype": {"kind": "array", "count": 3, "subtype": {"kind": "base", "name": "int"}}})
    );
    assert_eq!(field(&v, "arrays", "flex")["type"]["count"], 0);
    assert_eq!(
        v["base_types"]["char"],
        json!({"size": 1, "signed": true, "kind": "char", "endian": "little"})
    );
}

#[test]
fn pointers_to_functions_are_function_kind_and_void_pointers_point_to_void() {
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, INT_SIGNED);
    let proto = b.func_proto(int, &[("x", int)]);
    let _f = b.func("handler", proto);
    let fptr = b.ptr(proto);
    let handler_t = b.typedef("handler_t", proto);
    let cproto = b.konst(handler_t);
    let fptr_via_typedef = b.ptr(cproto);
    let voidp = b.ptr(0);
    let ops = b.strukt(
        "ops",
        24,
        &[
            ("direct", fptr, 0, 0),
            ("typedefd", fptr_via_typedef, 64, 0),
            ("data", voidp, 128, 0),
        ],
    );
    let _ = ops;
    let (_, v) = convert(&b);
    let fp = json!({"kind": "pointer", "subtype": {"kind": "function"}});
    assert_eq!(field(&v, "ops", "direct")["type"], fp);
    assert_eq!(field(&v, "ops", "typedefd")["type"], fp);
    assert_eq!(
        field(&v, "ops", "data")["type"],
        json!({"kind": "pointer", "subtype": {"kind": "base", "name": "void"}})
    );
    assert_eq!(
        v["base_types"]["pointer"],
        json!({"size": 8, "signed": false, "kind": "int", "endian": "little"})
    );
    assert_eq!(v["base_types"]["void"]["kind"], "void");
}

#[test]
fn forward_declarations_resolve_by_name_or_become_placeholders() {
    let mut b = BtfBuilder::new();
    let fwd_task = b.fwd("task_struct", false);
    let fwd_never = b.fwd("never_defined", false);
    let p1 = b.ptr(fwd_task);
    let p2 = b.ptr(fwd_never);
    b.strukt("holder", 16, &[("t", p1, 0, 0), ("n", p2, 64, 0)]);
    let int = b.int("int", 4, INT_SIGNED);
    b.strukt("task_struct", 4, &[("pid", int, 0, 0)]);
    let (btf, v) = convert(&b);
    assert_eq!(
        field(&v, "holder", "t")["type"]["subtype"],
        json!({"kind": "struct", "name": "task_struct"})
    );
    assert_eq!(v["user_types"]["task_struct"]["fields"]["pid"]["offset"], 0);
    assert_eq!(
        v["user_types"]["never_defined"],
        json!({"kind": "struct", "size": 0, "fields": {}})
    );
    let conv = Converter::new(&btf).unwrap();
    assert_eq!(conv.stats.forward_only_placeholders, 1);
}

#[test]
fn duplicate_struct_names_keep_the_most_referenced_definition() {
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, INT_SIGNED);
    let local = b.strukt("console", 4, &[("local_only", int, 0, 0)]);
    let real = b.strukt("console", 8, &[("name", int, 0, 0), ("flags", int, 32, 0)]);
    let p = b.ptr(real);
    let p2 = b.ptr(real);
    b.strukt("users", 16, &[("a", p, 0, 0), ("b", p2, 64, 0)]);
    let plocal = b.ptr(local);
    b.strukt("one_user", 8, &[("c", plocal, 0, 0)]);
    let (_, v) = convert(&b);
    assert_eq!(v["user_types"]["console"]["size"], 8);
    let renamed = format!("console__btf{local}");
    assert_eq!(
        v["user_types"][&renamed]["fields"]["local_only"]["offset"],
        0
    );
    assert_eq!(
        field(&v, "one_user", "c")["type"]["subtype"]["name"],
        renamed
    );
}

#[test]
fn float_and_decl_tag_are_accepted() {
    let mut b = BtfBuilder::new();
    let d = b.float("double", 8);
    let s = b.strukt("f", 8, &[("x", d, 0, 0)]);
    b.decl_tag("user", s, 0);
    let (_, v) = convert(&b);
    assert_eq!(
        v["base_types"]["double"],
        json!({"size": 8, "signed": true, "kind": "float", "endian": "little"})
    );
    assert_eq!(
        field(&v, "f", "x")["type"],
        json!({"kind": "base", "name": "double"})
    );
}

#[test]
fn dangling_type_references_are_rejected() {
    let mut b = BtfBuilder::new();
    b.ptr(99);
    let e = Btf::parse(&b.build()).unwrap_err();
    assert!(e.message.contains("missing type id 99"), "{e}");
}

#[test]
fn cyclic_typedefs_are_rejected_not_followed_forever() {
    let mut b = BtfBuilder::new();
    let a = b.next_id();
    b.typedef("a", a + 1);
    b.typedef("b", a);
    b.strukt("s", 4, &[("x", a, 0, 0)]);
    let btf = Btf::parse(&b.build()).unwrap();
    assert!(Converter::new(&btf).is_err());
}

#[test]
fn truncated_type_section_is_an_error() {
    let k = mini_kernel();
    let blob = k.builder.build();
    let mut cut = blob.clone();
    // Claim a longer type section than exists.
    let tlen = u32::from_le_bytes(cut[12..16].try_into().unwrap());
    cut[12..16].copy_from_slice(&(tlen + 4096).to_le_bytes());
    assert!(Btf::parse(&cut).is_err());
    // Every prefix of a valid blob is rejected or parsed, never a panic.
    for n in (0..blob.len()).step_by(7) {
        let _ = Btf::parse(&blob[..n]);
    }
}

#[test]
fn build_types_required_symbols_and_the_banner_identifier() {
    let mut k = mini_kernel();
    let runq = k.builder.strukt("rq", 8, &[("nr_running", k.uint, 0, 0)]);
    let v = k.builder.var("runqueues", runq);
    k.builder.datasec(".data..percpu", 8, &[(v, 0x20000, 8)]);
    let isf = build(&inputs(k.builder.build())).expect("builds");
    let doc = serde_json::to_value(&isf.document).unwrap();

    let task = &doc["user_types"]["task_struct"]["fields"];
    assert_eq!(
        task["comm"],
        json!({"offset": TASK_COMM_OFFSET, "type": {"kind": "array", "count": 16, "subtype": {"kind": "base", "name": "char"}}})
    );
    assert_eq!(task["pid"]["offset"], TASK_PID_OFFSET);
    assert_eq!(
        task["tasks"]["type"],
        json!({"kind": "struct", "name": "list_head"})
    );

    assert_eq!(
        doc["symbols"]["init_task"],
        json!({"address": 0xffffffff82e0c940u64, "type": {"kind": "struct", "name": "task_struct"}})
    );
    assert_eq!(doc["symbols"]["init_mm"]["address"], 0xffffffff82e10000u64);
    assert_eq!(
        doc["symbols"]["init_top_pgt"],
        json!({"address": 0xffffffff82e00000u64})
    );
    assert_eq!(
        doc["symbols"]["do_fork"],
        json!({"address": 0xffffffff81100000u64})
    );
    assert_eq!(
        doc["symbols"]["_text"]["type"],
        json!({"kind": "array", "count": 0, "subtype": {"kind": "base", "name": "char"}})
    );
    // Per-CPU variable typed from its BTF VAR.
    assert_eq!(
        doc["symbols"]["runqueues"],
        json!({"address": 0x20000, "type": {"kind": "struct", "name": "rq"}})
    );

    let banner = &doc["symbols"]["linux_banner"];
    assert_eq!(
        banner["type"],
        json!({"kind": "array", "count": BANNER.len() + 1, "subtype": {"kind": "base", "name": "char"}})
    );
    let mut expect = BANNER.to_vec();
    expect.push(0);
    assert_eq!(isf.identifier().unwrap(), expect);
    assert_eq!(
        banner["constant_data"],
        base64::engine::general_purpose::STANDARD.encode(&expect)
    );

    assert_eq!(doc["metadata"]["format"], "6.2.0");
    assert_eq!(doc["metadata"]["producer"]["name"], PRODUCER);
    assert_eq!(doc["metadata"]["linux"]["symbols"][0]["name"], "kallsyms");

    let s = &isf.summary;
    assert_eq!(s.kernel_release, "6.1.0-18-amd64");
    // kallsyms' _text at 0xffffffff9a000000: moved back by 400 MiB to link-time addresses.
    assert_eq!(s.address_source, AddressSource::Kallsyms { kaslr_shift: 0x1900_0000 });
    assert_eq!(s.symbols, 11);
    assert_eq!(s.symbols_typed_from_btf, 1);
    assert!(s.inferred.iter().any(|i| i.symbol == "init_task"
        && i.declaration == "struct task_struct"
        && i.source == TypeSource::KnownGlobals));
    assert!(
        s.inferred
            .iter()
            .any(|i| i.symbol == "linux_banner" && i.source == TypeSource::Banner)
    );
    assert_eq!(
        s.symbols_with_types,
        doc["symbols"]
            .as_object()
            .unwrap()
            .values()
            .filter(|s| s.get("type").is_some())
            .count()
    );
    assert!(s.placeholders.is_empty(), "{:?}", s.placeholders);
    assert!(s.missing_symbols.is_empty());
    assert_eq!(s.user_types, doc["user_types"].as_object().unwrap().len());
}

#[test]
fn known_global_with_anonymous_type_is_matched_by_its_members() {
    let mut k = mini_kernel();
    let tk = k
        .builder
        .strukt("timekeeper", 8, &[("xtime_sec", k.ulong, 0, 0)]);
    let seq = k
        .builder
        .strukt("seqcount_raw_spinlock", 4, &[("seq", k.uint, 0, 0)]);
    let anon = k
        .builder
        .strukt("", 16, &[("seq", seq, 0, 0), ("timekeeper", tk, 64, 0)]);
    let mut inp = inputs(k.builder.build());
    let mut ks = String::from_utf8(inp.kallsyms.take().unwrap()).unwrap();
    ks.push_str("ffffffff9be20000 b tk_core\n");
    inp.kallsyms = Some(ks.into_bytes());
    let isf = build(&inp).unwrap();
    assert_eq!(
        isf.document.symbols["tk_core"].ty,
        Some(TypeDesc::Struct {
            name: format!("unnamed_struct_{anon}")
        })
    );
    let how = isf
        .summary
        .inferred
        .iter()
        .find(|i| i.symbol == "tk_core")
        .unwrap();
    assert_eq!(how.declaration, "struct {seq, timekeeper}");
}

#[test]
fn known_global_whose_type_is_absent_stays_untyped_and_is_reported() {
    let k = mini_kernel();
    let mut inp = inputs(k.builder.build());
    let mut ks = String::from_utf8(inp.kallsyms.take().unwrap()).unwrap();
    ks.push_str("ffffffff9be30000 d prog_idr\n");
    inp.kallsyms = Some(ks.into_bytes());
    let isf = build(&inp).unwrap();
    assert_eq!(
        isf.document.symbols["prog_idr"].ty,
        Some(TypeDesc::Struct { name: "idr".into() }),
        "idr is in the mini kernel"
    );
    // mod_tree's struct mod_tree_root is not in the mini kernel's BTF.
    let mut ks = String::from_utf8(inp.kallsyms.take().unwrap()).unwrap();
    ks.push_str("ffffffff9be40000 d mod_tree\n");
    inp.kallsyms = Some(ks.into_bytes());
    let isf = build(&inp).unwrap();
    assert_eq!(
        isf.document.symbols["mod_tree"],
        isf::Symbol {
            address: 0xffffffff82e40000,
            ty: None,
            constant_data: None
        }
    );
    assert!(
        isf.summary
            .unresolved_declarations
            .iter()
            .any(|u| u.starts_with("mod_tree:")),
        "{:?}",
        isf.summary.unresolved_declarations
    );
}

#[test]
fn missing_volatility_class_types_get_placeholders_but_core_types_are_required() {
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, INT_SIGNED);
    for name in crate::known::VOLATILITY_CLASS_TYPES {
        if *name != "unix_sock" {
            b.strukt(name, 4, &[("x", int, 0, 0)]);
        }
    }
    let isf = build(&inputs(b.build())).unwrap();
    assert_eq!(isf.summary.placeholders, vec!["unix_sock".to_string()]);
    assert_eq!(isf.document.user_types["unix_sock"].size, 0);

    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, INT_SIGNED);
    b.strukt("list_head", 4, &[("x", int, 0, 0)]);
    match build(&inputs(b.build())) {
        Err(Error::MissingTypes(t)) => assert!(
            t.contains(&"task_struct".to_string()) && !t.contains(&"list_head".to_string()),
            "{t:?}"
        ),
        other => panic!("expected MissingTypes, got {other:?}"),
    }
}

#[test]
fn output_is_deterministic_and_the_xz_decompresses_to_the_json() {
    let k = mini_kernel();
    let inp = inputs(k.builder.build());
    let a = build(&inp).unwrap();
    let b = build(&inp).unwrap();
    assert_eq!(a.to_json(), b.to_json());
    let xz_a = a.to_json_xz();
    assert_eq!(xz_a, b.to_json_xz());
    assert_eq!(&xz_a[..6], b"\xfd7zXZ\0");
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut lzma_rust2::XzReader::new(xz_a.as_slice(), false),
        &mut out,
    )
    .unwrap();
    assert_eq!(out, a.to_json());
    // Map keys appear sorted in the text itself (not just after parsing into a sorted map).
    let text = String::from_utf8(a.to_json()).unwrap();
    let symbols_at = text.find("\"symbols\":{").unwrap();
    let pos = |key: &str| {
        text[symbols_at..]
            .find(&format!("\"{key}\":{{\"address\""))
            .unwrap_or_else(|| panic!("{key} not in symbols"))
    };
    let order = [
        "_end",
        "_etext",
        "_stext",
        "_text",
        "do_fork",
        "init_files",
        "init_mm",
        "init_task",
        "init_top_pgt",
        "linux_banner",
        "runqueues",
    ];
    let positions: Vec<usize> = order.iter().map(|k| pos(k)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "symbols not sorted: {positions:?}"
    );
}

#[test]
fn missing_inputs_give_specific_errors() {
    let k = mini_kernel();
    let blob = k.builder.build();

    let mut inp = inputs(blob.clone());
    inp.btf = None;
    assert!(matches!(build(&inp), Err(Error::MissingBtf)));

    let mut inp = inputs(blob.clone());
    inp.banner = Some(b"\n".to_vec());
    assert!(matches!(build(&inp), Err(Error::MissingBanner)));

    let mut inp = inputs(blob.clone());
    inp.banner = Some(b"FreeBSD 14.0-RELEASE\n".to_vec());
    assert!(matches!(build(&inp), Err(Error::BadBanner(_))));

    let mut inp = inputs(blob.clone());
    inp.kallsyms = None;
    let e = build(&inp).unwrap_err();
    assert!(matches!(e, Error::MissingSymbolTable), "{e}");

    let mut inp = inputs(blob.clone());
    inp.kallsyms = Some(
        KALLSYMS
            .lines()
            .map(|l| format!("0000000000000000{}\n", &l[16..]))
            .collect::<String>()
            .into_bytes(),
    );
    let e = build(&inp).unwrap_err();
    assert!(
        matches!(&e, Error::ZeroedKallsyms { release } if release == "6.1.0-18-amd64"),
        "{e}"
    );
    assert!(e.to_string().contains("System.map-6.1.0-18-amd64"), "{e}");

    inp.system_maps = vec![(
        "System.map-5.10.0-28-amd64".into(),
        b"ffffffff81000000 T _text\n".to_vec(),
    )];
    let e = build(&inp).unwrap_err();
    assert!(matches!(e, Error::SystemMapMismatch { .. }), "{e}");

    let mut inp = inputs(blob.clone());
    inp.btf = Some(b"not btf at all, definitely not".to_vec());
    assert!(matches!(build(&inp), Err(Error::Btf(_))));
}

#[test]
fn kallsyms_without_data_symbols_names_what_is_missing_and_why() {
    let k = mini_kernel();
    let mut inp = inputs(k.builder.build());
    inp.kallsyms = Some(
        b"ffffffff81000000 T _text\nffffffff81100000 T do_fork\nffffffff82000000 T _etext\n"
            .to_vec(),
    );
    match build(&inp) {
        Err(Error::MissingSymbols { missing, hint }) => {
            assert_eq!(
                missing,
                vec![
                    "linux_banner",
                    "init_task",
                    "init_mm",
                    "init_files",
                    "init_top_pgt or init_level4_pgt or swapper_pg_dir"
                ]
            );
            assert!(hint.contains("CONFIG_KALLSYMS_ALL"), "{hint}");
        }
        other => panic!("expected MissingSymbols, got {other:?}"),
    }
    let lenient = build_with(
        &inp,
        &BuildOptions {
            allow_missing_symbols: true,
        },
    )
    .unwrap();
    assert_eq!(lenient.summary.missing_symbols.len(), 5);
    assert_eq!(
        lenient.identifier(),
        None,
        "no linux_banner address, so no identifier"
    );
}

#[test]
fn system_map_gives_link_time_addresses_and_kallsyms_extras_are_moved_back() {
    let k = mini_kernel();
    let mut inp = inputs(k.builder.build());
    // kallsyms without data symbols, runtime base 0xffffffff9a000000; one symbol the map lacks.
    inp.kallsyms = Some(b"ffffffff9a000000 T _text\nffffffff9a000000 T _stext\nffffffff9b000000 T _etext\nffffffff9a100000 T do_fork\nffffffff9a200000 T only_in_kallsyms\n".to_vec());
    let map = "\
ffffffff81000000 T _text
ffffffff81000000 T _stext
ffffffff82000000 T _etext
ffffffff81100000 T do_fork
ffffffff82e0c940 D init_task
ffffffff82e10000 D init_mm
ffffffff82e11000 D init_files
ffffffff82c00100 R linux_banner
ffffffff82e00000 D init_top_pgt
0000000000020000 D runqueues
ffffffff82000100 A abs_marker
";
    inp.system_maps = vec![("System.map-6.1.0-18-amd64".into(), map.as_bytes().to_vec())];
    let isf = build(&inp).unwrap();
    let shift = 0x1900_0000i64;
    assert_eq!(
        isf.summary.address_source,
        AddressSource::SystemMap { file: "System.map-6.1.0-18-amd64".into(), kaslr_shift: Some(shift), added: 1 }
    );
    assert_eq!(isf.document.symbols["init_task"].address, 0xffffffff82e0c940, "link-time, as the map has it");
    assert_eq!(isf.document.symbols["do_fork"].address, 0xffffffff81100000);
    assert_eq!(isf.document.symbols["only_in_kallsyms"].address, 0xffffffff81200000, "moved back by the shift");
    assert_eq!(isf.document.symbols["runqueues"].address, 0x20000, "per-CPU offsets are not moved");
    assert_eq!(isf.document.symbols["abs_marker"].address, 0xffffffff82000100, "absolute symbols are not moved");
    assert_eq!(isf.document.metadata.linux.symbols.len(), 2);

    // A map whose layout differs from the running kernel is ignored, not trusted: kallsyms alone has no
    // init_task here.
    let wrong = map.replace("ffffffff82000000 T _etext", "ffffffff82100000 T _etext");
    inp.system_maps = vec![("System.map-6.1.0-18-amd64".into(), wrong.into_bytes())];
    let e = build(&inp).unwrap_err();
    assert!(matches!(e, Error::MissingSymbols { .. }), "{e}");
    let lenient = build_with(&inp, &BuildOptions { allow_missing_symbols: true }).unwrap();
    assert_eq!(lenient.summary.address_source, AddressSource::Kallsyms { kaslr_shift: shift });
    assert!(
        lenient.summary.warnings.iter().any(|w| w.contains("ignored: _etext is shifted differently")),
        "{:?}",
        lenient.summary.warnings
    );
}

#[test]
fn kallsyms_that_is_not_a_kaslr_step_from_the_default_link_address_is_refused() {
    let k = mini_kernel();
    let mut inp = inputs(k.builder.build());
    inp.kallsyms = Some(KALLSYMS.replace("ffffffff9a000000 T _text", "ffffffff9a001000 T _text").into_bytes());
    let e = build(&inp).unwrap_err();
    assert!(matches!(e, Error::UnknownLinkAddress { .. }), "{e}");
    assert!(e.to_string().contains("System.map"), "{e}");
}

#[test]
fn zeroed_kallsyms_falls_back_to_the_unshifted_system_map() {
    let k = mini_kernel();
    let mut inp = inputs(k.builder.build());
    inp.kallsyms = Some(b"0000000000000000 T _text\n0000000000000000 D init_task\n".to_vec());
    let map = KALLSYMS.replace("ffffffff9", "ffffffff8");
    inp.system_maps = vec![
        ("System.map-6.1.0-18-amd64".into(), map.into_bytes()),
        ("System.map-5.10.0-1".into(), b"junk\n".to_vec()),
    ];
    let isf = build(&inp).unwrap();
    assert_eq!(
        isf.summary.address_source,
        AddressSource::SystemMap { file: "System.map-6.1.0-18-amd64".into(), kaslr_shift: None, added: 0 }
    );
    assert_eq!(
        isf.document.symbols["init_task"].address,
        0xffffffff8be0c940
    );
    assert!(
        isf.summary
            .warnings
            .iter()
            .any(|w| w.contains("System.map-5.10.0-1 ignored"))
    );
}

#[test]
fn banner_without_newline_gets_the_one_linux_banner_has() {
    let k = mini_kernel();
    let mut inp = inputs(k.builder.build());
    inp.banner = Some(BANNER[..BANNER.len() - 1].to_vec());
    let isf = build(&inp).unwrap();
    let mut expect = BANNER.to_vec();
    expect.push(0);
    assert_eq!(isf.identifier().unwrap(), expect);
}

#[test]
fn archive_yields_the_collected_files() {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, data).unwrap();
    };
    add("symbols/btf-vmlinux", b"BTF");
    add("./symbols/version", BANNER);
    add("symbols/kallsyms", KALLSYMS.as_bytes());
    add("symbols/System.map-6.1.0-18-amd64", b"map");
    add("symbols/os-release", b"ID=debian\n");
    add("elsewhere/kallsyms", b"not this one");
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let tgz = gz.finish().unwrap();

    let inp = inputs_from_archive(&tgz).unwrap();
    assert_eq!(inp.btf.as_deref(), Some(b"BTF".as_slice()));
    assert_eq!(inp.banner.as_deref(), Some(BANNER));
    assert_eq!(inp.kallsyms.as_deref(), Some(KALLSYMS.as_bytes()));
    assert_eq!(
        inp.system_maps,
        vec![("System.map-6.1.0-18-amd64".to_string(), b"map".to_vec())]
    );

    assert!(matches!(
        inputs_from_archive(b"not gzip"),
        Err(Error::Archive(_))
    ));

    // Size caps, shown with small limits: per file, then in total.
    let e = crate::archive::read_limited(&tgz, 100, 1 << 20).unwrap_err();
    assert!(e.to_string().contains("larger than 100 bytes"), "{e}");
    let e = crate::archive::read_limited(&tgz, 1 << 20, 300).unwrap_err();
    assert!(
        e.to_string().contains("add up to more than 300 bytes"),
        "{e}"
    );
}

#[test]
fn type_descriptors_serialise_in_the_isf_schema_shape() {
    let bf = TypeDesc::Bitfield {
        bit_position: 1,
        bit_length: 2,
        base: Box::new(TypeDesc::base("int")),
    };
    assert_eq!(
        serde_json::to_value(&bf).unwrap(),
        json!({"kind": "bitfield", "bit_position": 1, "bit_length": 2, "type": {"kind": "base", "name": "int"}})
    );
    assert_eq!(
        serde_json::to_value(TypeDesc::Function).unwrap(),
        json!({"kind": "function"})
    );
    assert_eq!(
        serde_json::to_value(TypeDesc::Union { name: "u".into() }).unwrap(),
        json!({"kind": "union", "name": "u"})
    );
}
