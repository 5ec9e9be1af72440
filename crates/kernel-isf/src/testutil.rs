//! Hand-built BTF blobs for tests. Writes the format exactly as the kernel documents it
//! (Documentation/bpf/btf.rst); ids are assigned in call order starting at 1.

pub struct BtfBuilder {
    types: Vec<u8>,
    strings: Vec<u8>,
    count: u32,
}

/// (name, type id, bit offset, bitfield size) of a struct/union member.
pub type M<'a> = (&'a str, u32, u32, u8);

impl BtfBuilder {
    pub fn new() -> Self {
        BtfBuilder {
            types: Vec::new(),
            strings: vec![0],
            count: 0,
        }
    }

    /// The id the next type will get.
    pub fn next_id(&self) -> u32 {
        self.count + 1
    }

    fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn u32(&mut self, v: u32) {
        self.types.extend_from_slice(&v.to_le_bytes());
    }

    fn rec(&mut self, name: &str, kind: u32, kind_flag: bool, vlen: u32, size_or_type: u32) -> u32 {
        let name = self.str(name);
        self.u32(name);
        self.u32((u32::from(kind_flag) << 31) | (kind << 24) | vlen);
        self.u32(size_or_type);
        self.count += 1;
        self.count
    }

    pub fn int(&mut self, name: &str, size: u32, encoding: u8) -> u32 {
        self.int_bits(name, size, encoding, 0, (size * 8) as u8)
    }

    pub fn int_bits(&mut self, name: &str, size: u32, encoding: u8, offset: u8, bits: u8) -> u32 {
        let id = self.rec(name, 1, false, 0, size);
        self.u32((u32::from(encoding) << 24) | (u32::from(offset) << 16) | u32::from(bits));
        id
    }

    pub fn ptr(&mut self, target: u32) -> u32 {
        self.rec("", 2, false, 0, target)
    }

    pub fn array(&mut self, elem: u32, index: u32, nelems: u32) -> u32 {
        let id = self.rec("", 3, false, 0, 0);
        self.u32(elem);
        self.u32(index);
        self.u32(nelems);
        id
    }

    fn composite(&mut self, kind: u32, name: &str, size: u32, members: &[M]) -> u32 {
        let kind_flag = members.iter().any(|m| m.3 != 0);
        let id = self.rec(name, kind, kind_flag, members.len() as u32, size);
        for &(m_name, ty, bit_off, bf) in members {
            let n = self.str(m_name);
            self.u32(n);
            self.u32(ty);
            self.u32(if kind_flag {
                (u32::from(bf) << 24) | bit_off
            } else {
                bit_off
            });
        }
        id
    }

    pub fn strukt(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
        self.composite(4, name, size, members)
    }

    pub fn union(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
        self.composite(5, name, size, members)
    }

    pub fn enum32(&mut self, name: &str, size: u32, signed: bool, values: &[(&str, i64)]) -> u32 {
        let id = self.rec(name, 6, signed, values.len() as u32, size);
        for &(n, v) in values {
            let n = self.str(n);
            self.u32(n);
            self.u32(v as u32);
        }
        id
    }

    pub fn enum64(&mut self, name: &str, size: u32, signed: bool, values: &[(&str, i128)]) -> u32 {
        let id = self.rec(name, 19, signed, values.len() as u32, size);
        for &(n, v) in values {
            let n = self.str(n);
            self.u32(n);
            let raw = v as u64;
            self.u32(raw as u32);
            self.u32((raw >> 32) as u32);
        }
        id
    }

    pub fn fwd(&mut self, name: &str, is_union: bool) -> u32 {
        self.rec(name, 7, is_union, 0, 0)
    }

    pub fn typedef(&mut self, name: &str, target: u32) -> u32 {
        self.rec(name, 8, false, 0, target)
    }

    pub fn volatile(&mut self, target: u32) -> u32 {
        self.rec("", 9, false, 0, target)
    }

    pub fn konst(&mut self, target: u32) -> u32 {
        self.rec("", 10, false, 0, target)
    }

    pub fn restrict(&mut self, target: u32) -> u32 {
        self.rec("", 11, false, 0, target)
    }

    pub fn type_tag(&mut self, name: &str, target: u32) -> u32 {
        self.rec(name, 18, false, 0, target)
    }

    pub fn func_proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
        let id = self.rec("", 13, false, params.len() as u32, ret);
        for &(n, t) in params {
            let n = self.str(n);
            self.u32(n);
            self.u32(t);
        }
        id
    }

    pub fn func(&mut self, name: &str, proto: u32) -> u32 {
        self.rec(name, 12, false, 1, proto)
    }

    pub fn var(&mut self, name: &str, ty: u32) -> u32 {
        let id = self.rec(name, 14, false, 0, ty);
        self.u32(1);
        id
    }

    pub fn datasec(&mut self, name: &str, size: u32, vars: &[(u32, u32, u32)]) -> u32 {
        let id = self.rec(name, 15, false, vars.len() as u32, size);
        for &(t, off, sz) in vars {
            self.u32(t);
            self.u32(off);
            self.u32(sz);
        }
        id
    }

    pub fn float(&mut self, name: &str, size: u32) -> u32 {
        self.rec(name, 16, false, 0, size)
    }

    pub fn decl_tag(&mut self, name: &str, target: u32, component_idx: i32) -> u32 {
        let id = self.rec(name, 17, false, 0, target);
        self.u32(component_idx as u32);
        id
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_le_bytes());
        out.push(1); // version
        out.push(0); // flags
        out.extend_from_slice(&24u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// Ids of the types in [`mini_kernel`].
pub struct MiniKernel {
    pub builder: BtfBuilder,
    pub uint: u32,
    pub ulong: u32,
}

pub const TASK_COMM_OFFSET: u64 = 24;
pub const TASK_PID_OFFSET: u64 = 16;
pub const TASK_TASKS_OFFSET: u64 = 0;

/// A BTF with the types Volatility's Linux table insists on, the core ones with a few members.
pub fn mini_kernel() -> MiniKernel {
    let mut b = BtfBuilder::new();
    let int = b.int("int", 4, crate::btf::INT_SIGNED);
    let uint = b.int("unsigned int", 4, 0);
    let ulong = b.int("long unsigned int", 8, 0);
    let char_ = b.int("char", 1, crate::btf::INT_SIGNED | crate::btf::INT_CHAR);
    let list_head = b.next_id() + 1;
    let lh_ptr = b.ptr(list_head);
    assert_eq!(
        b.strukt(
            "list_head",
            16,
            &[("next", lh_ptr, 0, 0), ("prev", lh_ptr, 64, 0)]
        ),
        list_head
    );
    let comm = b.array(char_, int, 16);
    let pid_t = b.typedef("pid_t", int);
    b.strukt(
        "task_struct",
        64,
        &[
            ("tasks", list_head, (TASK_TASKS_OFFSET * 8) as u32, 0),
            ("pid", pid_t, (TASK_PID_OFFSET * 8) as u32, 0),
            ("tgid", pid_t, (TASK_PID_OFFSET * 8 + 32) as u32, 0),
            ("comm", comm, (TASK_COMM_OFFSET * 8) as u32, 0),
        ],
    );
    for name in crate::known::VOLATILITY_CLASS_TYPES {
        if !matches!(*name, "task_struct" | "list_head") {
            b.strukt(name, 8, &[("dummy", ulong, 0, 0)]);
        }
    }
    MiniKernel {
        builder: b,
        uint,
        ulong,
    }
}

pub const BANNER: &[u8] = b"Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\n";

pub const KALLSYMS: &str = "\
ffffffff9a000000 T _text
ffffffff9a000000 T _stext
ffffffff9b000000 T _etext
ffffffff9c000000 B _end
ffffffff9be0c940 D init_task
ffffffff9be10000 D init_mm
ffffffff9be11000 D init_files
ffffffff9bc00100 R linux_banner
ffffffff9be00000 D init_top_pgt
0000000000020000 A runqueues
ffffffff9a100000 T do_fork
";

pub fn inputs(btf: Vec<u8>) -> crate::KernelInputs {
    crate::KernelInputs {
        btf: Some(btf),
        banner: Some(BANNER.to_vec()),
        kallsyms: Some(KALLSYMS.as_bytes().to_vec()),
        ..Default::default()
    }
}
