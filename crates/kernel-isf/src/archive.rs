//! Reading the collector's `symbols.tar.gz`.

use std::io::Read;

use crate::{Error, KernelInputs};

/// Largest single file taken from the archive. vmlinux BTF is ~6 MB, kallsyms ~10 MB.
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// Largest total of the files taken: the archive comes from the machine under investigation and
/// must not be able to exhaust the analyst's memory with a decompression bomb.
pub const MAX_TOTAL_BYTES: u64 = 1 << 30;

pub(crate) fn read(tar_gz: &[u8]) -> Result<KernelInputs, Error> {
    read_limited(tar_gz, MAX_FILE_BYTES, MAX_TOTAL_BYTES)
}

pub(crate) fn read_limited(
    tar_gz: &[u8],
    max_file: u64,
    max_total: u64,
) -> Result<KernelInputs, Error> {
    let gz = flate2::read::MultiGzDecoder::new(tar_gz);
    let mut archive = tar::Archive::new(gz);
    let mut inputs = KernelInputs::default();
    let mut total: u64 = 0;
    let entries = archive
        .entries()
        .map_err(|e| Error::Archive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::Archive(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| Error::Archive(e.to_string()))?
            .into_owned();
        // `symbols/NAME`, `./symbols/NAME` or a bare `NAME`.
        let parts: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let name = match parts.as_slice() {
            [name] => name.clone(),
            [dir, name] if dir == "symbols" => name.clone(),
            _ => continue,
        };
        let wanted = matches!(name.as_str(), "btf-vmlinux" | "version" | "kallsyms")
            || name.starts_with("System.map-");
        if !wanted {
            continue;
        }
        let mut data = Vec::new();
        (&mut entry)
            .take(max_file + 1)
            .read_to_end(&mut data)
            .map_err(|e| Error::Archive(format!("{}: {e}", path.display())))?;
        if data.len() as u64 > max_file {
            return Err(Error::Archive(format!(
                "{} is larger than {max_file} bytes",
                path.display()
            )));
        }
        total += data.len() as u64;
        if total > max_total {
            return Err(Error::Archive(format!(
                "the symbol files add up to more than {max_total} bytes"
            )));
        }
        match name.as_str() {
            "btf-vmlinux" => inputs.btf = Some(data),
            "version" => inputs.banner = Some(data),
            "kallsyms" => inputs.kallsyms = Some(data),
            _ => inputs.system_maps.push((name, data)),
        }
    }
    inputs.system_maps.sort();
    Ok(inputs)
}
