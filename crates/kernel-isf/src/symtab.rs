//! Parsing of `/proc/kallsyms` and `System.map` (both `ADDRESS TYPE NAME [MODULE]` lines).

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymEntry {
    pub address: u64,
    /// nm-style type letter: upper case is global, lower case local.
    pub kind: char,
}

/// One symbol per name. Where a name occurs more than once (static functions of the same name in
/// different files), a global definition wins over a local one, then the lowest address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolTable {
    pub symbols: BTreeMap<String, SymEntry>,
    /// Lines that carried a symbol of the kernel image (module symbols are not counted).
    pub lines: usize,
    /// True when there were symbols and every one of them had address 0, which is what kallsyms
    /// shows to a reader without CAP_SYSLOG or under kptr_restrict=2.
    pub all_zero: bool,
    /// Symbols of loadable modules (`[name]` suffix) that were skipped.
    pub module_symbols_skipped: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {message}")]
pub struct SymtabError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl SymbolTable {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).map(|e| e.address)
    }

    /// Symbols in data sections (D, B, R and their local forms). A kallsyms without any beyond the
    /// few section markers means the kernel lacks CONFIG_KALLSYMS_ALL.
    pub fn data_symbol_count(&self) -> usize {
        self.symbols
            .values()
            .filter(|e| matches!(e.kind.to_ascii_lowercase(), 'd' | 'b' | 'r'))
            .count()
    }
}

/// Parses kallsyms or System.map text. `file` names the source in errors.
/// Lines of loadable modules are skipped: this ISF describes the kernel image only.
pub fn parse(text: &[u8], file: &str) -> Result<SymbolTable, SymtabError> {
    let text = String::from_utf8_lossy(text);
    let mut table = SymbolTable::default();
    let mut any_nonzero = false;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let bad = |message: String| SymtabError {
            file: file.to_string(),
            line: line_no,
            message,
        };
        let mut parts = line.split_whitespace();
        let Some(addr) = parts.next() else { continue };
        let kind = parts
            .next()
            .ok_or_else(|| bad(format!("expected `ADDRESS TYPE NAME`, got {line:?}")))?;
        let name = parts
            .next()
            .ok_or_else(|| bad(format!("expected `ADDRESS TYPE NAME`, got {line:?}")))?;
        let module = parts.next();
        if parts.next().is_some() {
            return Err(bad(format!("unexpected extra fields in {line:?}")));
        }
        let address =
            u64::from_str_radix(addr, 16).map_err(|e| bad(format!("address {addr:?}: {e}")))?;
        let mut kind_chars = kind.chars();
        let kind = match (kind_chars.next(), kind_chars.next()) {
            (Some(c), None) if c.is_ascii_alphabetic() || c == '?' || c == '-' => c,
            _ => return Err(bad(format!("symbol type {kind:?} is not a single letter"))),
        };
        if let Some(m) = module {
            if m.starts_with('[') && m.ends_with(']') {
                table.module_symbols_skipped += 1;
                continue;
            }
            return Err(bad(format!("unexpected fourth field {m:?}")));
        }
        // Undefined symbols have no address in the image.
        if kind == 'U' || kind == 'u' {
            continue;
        }
        table.lines += 1;
        any_nonzero |= address != 0;
        let entry = SymEntry { address, kind };
        table
            .symbols
            .entry(name.to_string())
            .and_modify(|old| {
                if prefer(entry, *old) {
                    *old = entry;
                }
            })
            .or_insert(entry);
    }
    table.all_zero = table.lines > 0 && !any_nonzero;
    Ok(table)
}

/// Whether `new` should replace `old` for the same name.
fn prefer(new: SymEntry, old: SymEntry) -> bool {
    let global = |e: SymEntry| e.kind.is_ascii_uppercase();
    match (global(new), global(old)) {
        (true, false) => true,
        (false, true) => false,
        _ => new.address < old.address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kallsyms_lines_and_skips_module_symbols() {
        let text = b"ffffffff81000000 T _text\nffffffff82a0c940 D init_task\n0000000000000000 A fixed_percpu_data\nffffffffc0a01000 t mod_fn\t[nf_tables]\n";
        let t = parse(text, "kallsyms").unwrap();
        assert_eq!(t.get("_text"), Some(0xffff_ffff_8100_0000));
        assert_eq!(t.get("init_task"), Some(0xffff_ffff_82a0_c940));
        assert_eq!(t.get("fixed_percpu_data"), Some(0));
        assert_eq!(t.get("mod_fn"), None);
        assert_eq!(t.module_symbols_skipped, 1);
        assert_eq!(t.lines, 3);
        assert!(!t.all_zero);
        assert_eq!(t.data_symbol_count(), 1);
    }

    #[test]
    fn all_zero_addresses_are_detected() {
        let text = b"0000000000000000 T _text\n0000000000000000 D init_task\n";
        let t = parse(text, "kallsyms").unwrap();
        assert!(t.all_zero);
        let empty = parse(b"", "kallsyms").unwrap();
        assert!(!empty.all_zero, "an empty table is not a zeroed one");
    }

    #[test]
    fn duplicate_names_prefer_global_then_lowest_address() {
        let text = b"ffffffff81000300 t cleanup\nffffffff81000100 t cleanup\nffffffff81000500 T shared\nffffffff81000400 t shared\n";
        let t = parse(text, "System.map").unwrap();
        assert_eq!(t.get("cleanup"), Some(0xffff_ffff_8100_0100));
        assert_eq!(t.get("shared"), Some(0xffff_ffff_8100_0500));
    }

    #[test]
    fn undefined_symbols_are_dropped() {
        let t = parse(
            b"                 U undefined_thing\n0000000000001000 T real\n".as_slice(),
            "System.map",
        );
        // A line with only two fields is malformed, even if nm prints undefined symbols that way.
        assert!(t.is_err());
        let t = parse(
            b"0000000000000000 U undefined_thing\n0000000000001000 T real\n",
            "System.map",
        )
        .unwrap();
        assert_eq!(t.get("undefined_thing"), None);
        assert_eq!(t.get("real"), Some(0x1000));
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let e = parse(
            b"ffffffff81000000 T _text\nzzzz T bad\n",
            "System.map-6.1.0",
        )
        .unwrap_err();
        assert_eq!(e.file, "System.map-6.1.0");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("address"), "{e}");
        let e = parse(b"ffffffff81000000 TT _text\n", "kallsyms").unwrap_err();
        assert!(e.message.contains("single letter"), "{e}");
    }
}
