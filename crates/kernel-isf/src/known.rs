//! Types of well-known kernel globals.
//!
//! vmlinux BTF describes only per-CPU variables (the `.data..percpu` DATASEC); the types of ordinary
//! globals are not in it. Volatility needs some of them typed (it calls `object_from_symbol` on
//! them), so this table gives their C declarations, written in a tiny declarator syntax that is
//! resolved against the target's own BTF:
//!
//! * `struct NAME`, `union NAME`: the BTF struct/union of that name;
//! * `struct {a, b}`: the one anonymous struct whose members are exactly `a`, `b` (for globals
//!   declared with an anonymous type, like `tk_core` before Linux 6.13);
//! * anything else (`unsigned int`, `gate_desc`): a base type or a BTF typedef of that name;
//! * suffixes apply left to right: `*` makes a pointer, `[N]` an array of N, `[]` an array of
//!   unknown length (count 0, the way C declares `extern char _text[]`);
//! * `A | B`: use A if it resolves in this kernel's BTF, else B.
//!
//! A declaration that does not resolve (the type is absent from this kernel) leaves the symbol
//! untyped; it is reported in the build summary. The declarations are those of the kernel sources
//! (include/linux/*.h, kernel/*.c), for the kernels that have `/sys/kernel/btf/vmlinux` (5.2 and
//! later); array lengths are given only where they are fixed by the architecture or ABI.

/// (symbol, declaration, where it is declared / why Volatility wants it).
pub const KNOWN_GLOBALS: &[(&str, &str, &str)] = &[
    // Layer discovery (automagic/linux.py find_aslr) and linux.pslist.
    (
        "init_task",
        "struct task_struct",
        "init/init_task.c; pslist walks init_task.tasks, find_aslr scans for it",
    ),
    (
        "init_mm",
        "struct mm_struct",
        "mm/init-mm.c; find_aslr compares init_task.active_mm with its address",
    ),
    (
        "init_files",
        "struct files_struct",
        "fs/file.c; find_aslr derives the virtual shift from it",
    ),
    ("init_fs", "struct fs_struct", "fs/fs_struct.c"),
    ("init_nsproxy", "struct nsproxy", "kernel/nsproxy.c"),
    ("init_pid_ns", "struct pid_namespace", "kernel/pid.c"),
    ("init_uts_ns", "struct uts_namespace", "init/version.c"),
    ("init_user_ns", "struct user_namespace", "kernel/user.c"),
    ("init_ipc_ns", "struct ipc_namespace", "ipc/msgutil.c"),
    (
        "init_time_ns",
        "struct time_namespace",
        "kernel/time/namespace.c",
    ),
    ("init_net", "struct net", "net/core/net_namespace.c"),
    ("init_cred", "struct cred", "kernel/cred.c"),
    ("init_struct_pid", "struct pid", "kernel/pid.c"),
    ("linux_proc_banner", "char[]", "init/version.c"),
    ("saved_command_line", "char *", "init/main.c"),
    // Task creation times (task_struct.get_create_time): tk_core became `struct tk_data` in 6.13.
    (
        "tk_core",
        "struct tk_data | struct {seq, timekeeper}",
        "kernel/time/timekeeping.c",
    ),
    // Lists walked by plugins.
    ("modules", "struct list_head", "kernel/module/main.c; lsmod"),
    (
        "net_namespace_list",
        "struct list_head",
        "net/core/net_namespace.c; sockstat, ip",
    ),
    (
        "tty_drivers",
        "struct list_head",
        "drivers/tty/tty_io.c; tty_check",
    ),
    (
        "bpf_kallsyms",
        "struct list_head",
        "kernel/bpf/core.c; kallsyms",
    ),
    ("super_blocks", "struct list_head", "fs/super.c"),
    (
        "ftrace_ops_list",
        "struct ftrace_ops *",
        "kernel/trace/ftrace.c; ftrace",
    ),
    (
        "ftrace_list_end",
        "struct ftrace_ops",
        "kernel/trace/ftrace.c; ftrace",
    ),
    (
        "ftrace_ops_trampoline_list",
        "struct list_head",
        "kernel/trace/ftrace.c; kallsyms",
    ),
    (
        "ftrace_mod_maps",
        "struct list_head",
        "kernel/trace/ftrace.c; kallsyms",
    ),
    (
        "mod_tree",
        "struct mod_tree_root",
        "kernel/module/main.c (5.19+); module address range",
    ),
    (
        "module_kset",
        "struct kset *",
        "kernel/params.c; hidden_modules",
    ),
    (
        "module_addr_min",
        "long unsigned int",
        "kernel/module.c (before 5.19)",
    ),
    (
        "module_addr_max",
        "long unsigned int",
        "kernel/module.c (before 5.19)",
    ),
    // Kernel log (kmsg).
    (
        "prb",
        "struct printk_ringbuffer *",
        "kernel/printk/printk.c (5.10+)",
    ),
    (
        "printk_rb_static",
        "struct printk_ringbuffer",
        "kernel/printk/printk.c (5.10+)",
    ),
    ("log_buf", "char *", "kernel/printk/printk.c"),
    (
        "log_buf_len",
        "unsigned int",
        "kernel/printk/printk.c (u32)",
    ),
    (
        "log_first_idx",
        "unsigned int",
        "kernel/printk/printk.c (before 5.10, u32)",
    ),
    (
        "log_next_idx",
        "unsigned int",
        "kernel/printk/printk.c (before 5.10, u32)",
    ),
    // Memory model, capabilities, eBPF, resources, notifiers, sockets.
    (
        "vmemmap_base",
        "long unsigned int",
        "arch/x86/kernel/head64.c; page -> physical address",
    ),
    (
        "page_offset_base",
        "long unsigned int",
        "arch/x86/kernel/head64.c",
    ),
    (
        "vmalloc_base",
        "long unsigned int",
        "arch/x86/kernel/head64.c",
    ),
    (
        "phys_base",
        "long unsigned int",
        "arch/x86/kernel/head_64.S",
    ),
    ("cap_last_cap", "int", "kernel/capability.c; capabilities"),
    ("prog_idr", "struct idr", "kernel/bpf/syscall.c; ebpf"),
    (
        "iomem_resource",
        "struct resource",
        "kernel/resource.c; iomem",
    ),
    ("ioport_resource", "struct resource", "kernel/resource.c"),
    (
        "keyboard_notifier_list",
        "struct atomic_notifier_head",
        "drivers/tty/vt/keyboard.c; keyboard_notifiers",
    ),
    (
        "sockfs_dentry_operations",
        "struct dentry_operations",
        "net/socket.c; sockstat",
    ),
    (
        "socket_file_ops",
        "struct file_operations",
        "net/socket.c; sockstat",
    ),
    (
        "registered_fb",
        "struct fb_info *[32]",
        "drivers/video/fbdev/core/fbmem.c (FB_MAX = 32); fbdev",
    ),
    (
        "num_registered_fb",
        "int",
        "drivers/video/fbdev/core/fbmem.c; fbdev",
    ),
    (
        "idt_table",
        "gate_desc[256]",
        "arch/x86/kernel/idt.c (IDT_ENTRIES = 256); check_idt",
    ),
    (
        "kallsyms_num_syms",
        "unsigned int",
        "kernel/kallsyms_internal.h (unsigned int since 4.20); kallsyms",
    ),
    ("pid_max", "int", "kernel/pid.c"),
    ("nr_threads", "int", "kernel/fork.c"),
    ("jiffies_64", "u64", "kernel/time/timer.c"),
    (
        "__start___tracepoints_ptrs",
        "tracepoint_ptr_t[]",
        "include/linux/tracepoint.h; tracepoints",
    ),
    (
        "__stop___tracepoints_ptrs",
        "tracepoint_ptr_t[]",
        "include/linux/tracepoint.h; tracepoints",
    ),
    // Linker-script symbols, declared `extern char NAME[]` in include/asm-generic/sections.h.
    // Volatility uses `object_from_symbol("_text").vol.offset` for the kernel's text range.
    ("_text", "char[]", "asm-generic/sections.h"),
    ("_stext", "char[]", "asm-generic/sections.h"),
    ("_etext", "char[]", "asm-generic/sections.h"),
    ("_sinittext", "char[]", "asm-generic/sections.h"),
    ("_einittext", "char[]", "asm-generic/sections.h"),
    ("_sdata", "char[]", "asm-generic/sections.h"),
    ("_edata", "char[]", "asm-generic/sections.h"),
    ("_end", "char[]", "asm-generic/sections.h"),
    ("__bss_start", "char[]", "asm-generic/sections.h"),
    ("__bss_stop", "char[]", "asm-generic/sections.h"),
    ("__init_begin", "char[]", "asm-generic/sections.h"),
    ("__init_end", "char[]", "asm-generic/sections.h"),
    ("__start_rodata", "char[]", "asm-generic/sections.h"),
    ("__end_rodata", "char[]", "asm-generic/sections.h"),
];

/// Symbols Volatility 3 cannot do without for Linux (automagic/linux.py): the stacker needs
/// `linux_banner` (identification), `init_task` (typed), `init_mm` and `init_files` (addresses), and a
/// top-level page table: x86_64 since 4.13 calls it `init_top_pgt`, older `init_level4_pgt`, 32-bit
/// and other architectures `swapper_pg_dir`.
pub const REQUIRED_SYMBOLS: &[&str] = &["linux_banner", "init_task", "init_mm", "init_files"];
pub const PAGE_TABLE_SYMBOLS: &[&str] = &["init_top_pgt", "init_level4_pgt", "swapper_pg_dir"];

/// Types Volatility's `LinuxKernelIntermedSymbols` attaches classes to with `set_type_class`, which
/// raises if the type is absent (framework/symbols/linux/__init__.py in 2.28.2). Those not in
/// [`CORE_TYPES`] get an empty placeholder when the BTF lacks them (for instance `unix_sock` when
/// AF_UNIX is a module) so that the table still loads.
pub const VOLATILITY_CLASS_TYPES: &[&str] = &[
    "file",
    "list_head",
    "hlist_head",
    "mm_struct",
    "super_block",
    "task_struct",
    "vm_area_struct",
    "qstr",
    "dentry",
    "fs_struct",
    "files_struct",
    "kobject",
    "cred",
    "inode",
    "idr",
    "address_space",
    "page",
    "vfsmount",
    "net",
    "socket",
    "sock",
    "inet_sock",
    "unix_sock",
];

/// Types without which no Linux plugin can work: their absence is an error, not a placeholder.
pub const CORE_TYPES: &[&str] = &[
    "task_struct",
    "list_head",
    "mm_struct",
    "cred",
    "files_struct",
];

/// A parsed declaration from [`KNOWN_GLOBALS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclBase {
    Struct(String),
    Union(String),
    /// Anonymous struct identified by its member names.
    AnonStruct(Vec<String>),
    /// Base type or typedef name.
    Named(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclSuffix {
    Pointer,
    Array(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decl {
    pub base: DeclBase,
    pub suffixes: Vec<DeclSuffix>,
}

/// Parses `A | B` into its alternatives (the table's entries are checked by the
/// `every_known_global_declaration_parses` test).
pub fn parse_decl(spec: &str) -> Result<Vec<Decl>, String> {
    spec.split(" | ").map(parse_one).collect()
}

fn parse_one(spec: &str) -> Result<Decl, String> {
    let spec = spec.trim();
    let split = if spec.starts_with("struct {") {
        spec.find('}')
            .map(|i| i + 1)
            .ok_or_else(|| format!("unclosed brace in {spec:?}"))?
    } else {
        spec.find(['*', '[']).unwrap_or(spec.len())
    };
    let (base, rest) = spec.split_at(split);
    let base = base.trim();
    let base = if let Some(inner) = base.strip_prefix("struct {") {
        let inner = inner
            .strip_suffix('}')
            .ok_or_else(|| format!("unclosed brace in {spec:?}"))?;
        DeclBase::AnonStruct(
            inner
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    } else if let Some(name) = base.strip_prefix("struct ") {
        DeclBase::Struct(name.trim().to_string())
    } else if let Some(name) = base.strip_prefix("union ") {
        DeclBase::Union(name.trim().to_string())
    } else if base.is_empty() {
        return Err(format!("no type name in {spec:?}"));
    } else {
        DeclBase::Named(base.to_string())
    };
    let mut suffixes = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('*') {
            suffixes.push(DeclSuffix::Pointer);
            rest = r.trim_start();
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = r
                .find(']')
                .ok_or_else(|| format!("unclosed [ in {spec:?}"))?;
            let n = r[..close].trim();
            let count = if n.is_empty() {
                0
            } else {
                n.parse::<u64>()
                    .map_err(|e| format!("array length {n:?} in {spec:?}: {e}"))?
            };
            suffixes.push(DeclSuffix::Array(count));
            rest = r[close + 1..].trim_start();
        } else {
            return Err(format!("unexpected {rest:?} in {spec:?}"));
        }
    }
    Ok(Decl { base, suffixes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_global_declaration_parses() {
        for (sym, spec, _) in KNOWN_GLOBALS {
            parse_decl(spec).unwrap_or_else(|e| panic!("{sym}: {e}"));
        }
        let mut names: Vec<_> = KNOWN_GLOBALS.iter().map(|(s, _, _)| *s).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a symbol is listed twice");
    }

    #[test]
    fn declarator_suffixes_apply_left_to_right() {
        let d = parse_decl("struct fb_info *[32]").unwrap();
        assert_eq!(
            d,
            vec![Decl {
                base: DeclBase::Struct("fb_info".into()),
                suffixes: vec![DeclSuffix::Pointer, DeclSuffix::Array(32)]
            }]
        );
        let d = parse_decl("long unsigned int").unwrap();
        assert_eq!(d[0].base, DeclBase::Named("long unsigned int".into()));
        assert!(d[0].suffixes.is_empty());
        let d = parse_decl("struct tk_data | struct {seq, timekeeper}").unwrap();
        assert_eq!(
            d[1].base,
            DeclBase::AnonStruct(vec!["seq".into(), "timekeeper".into()])
        );
        assert_eq!(
            parse_decl("char[]").unwrap()[0].suffixes,
            vec![DeclSuffix::Array(0)]
        );
        assert!(parse_decl("char[x]").is_err());
        assert!(parse_decl("*").is_err());
    }
}
