//! dev/build-image: the controller image is reproducible (two builds of the same binary are byte-identical
//! archives with the same manifest digest), a well-formed OCI image layout (every blob is named by its SHA-256
//! and has the size its descriptor says), runs /forensic-capture as 65532:65532, and its one layer holds
//! exactly the binary (debug info stripped), the loader and libraries `ldd` names, the CA bundle, passwd,
//! group, nsswitch.conf and /tmp, owned by root, with numeric owners, mtime 0 and no extended attributes.
//!
//! Needs no stack: python3, ldd, objcopy and gzip. The tar archives are read here by hand (ustar is simple), so
//! nothing shares code with the script's Python tarfile. When `crane` or `skopeo` is on PATH they judge the
//! archive too.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const BINARY: &str = env!("CARGO_BIN_EXE_forensic-capture");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One ustar entry.
#[derive(Debug)]
struct Entry {
    name: String,
    kind: u8,
    mode: u64,
    uid: u64,
    gid: u64,
    mtime: u64,
    uname: String,
    gname: String,
    data: std::ops::Range<usize>,
}

fn octal(field: &[u8]) -> u64 {
    let text = std::str::from_utf8(field).unwrap().trim_matches(|c| c == '\0' || c == ' ');
    if text.is_empty() { 0 } else { u64::from_str_radix(text, 8).unwrap_or_else(|_| panic!("bad octal field {text:?}")) }
}

fn text(field: &[u8]) -> String {
    String::from_utf8(field.split(|&b| b == 0).next().unwrap().to_vec()).unwrap()
}

/// The entries of an uncompressed tar archive, checking each header's checksum and the end-of-archive blocks.
fn tar_entries(tar: &[u8]) -> Vec<Entry> {
    assert_eq!(tar.len() % 512, 0, "a tar archive is whole 512-byte blocks");
    let mut entries = Vec::new();
    let mut at = 0;
    loop {
        let header = &tar[at..at + 512];
        if header.iter().all(|&b| b == 0) {
            assert!(tar[at..].iter().all(|&b| b == 0), "data after the end-of-archive block");
            assert!(tar.len() - at >= 1024, "the archive ends with two zero blocks");
            return entries;
        }
        assert_eq!(&header[257..263], b"ustar\0", "ustar header");
        let sum: u64 = header.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum();
        assert_eq!(octal(&header[148..156]), sum, "header checksum of entry at {at}");
        let (prefix, name) = (text(&header[345..500]), text(&header[..100]));
        let size = octal(&header[124..136]) as usize;
        entries.push(Entry {
            name: if prefix.is_empty() { name } else { format!("{prefix}/{name}") },
            kind: header[156],
            mode: octal(&header[100..108]),
            uid: octal(&header[108..116]),
            gid: octal(&header[116..124]),
            mtime: octal(&header[136..148]),
            uname: text(&header[265..297]),
            gname: text(&header[297..329]),
            data: at + 512..at + 512 + size,
        });
        at += 512 + size.div_ceil(512) * 512;
    }
}

/// Every entry sorted, owned by root with numeric owners only, at mtime 0 (SOURCE_DATE_EPOCH unset), and a
/// regular file or a directory: no links, devices or pax headers (which is where extended attributes would be).
fn assert_reproducible_entries(what: &str, entries: &[Entry]) {
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "{what}: entries are sorted");
    for e in entries {
        assert!(matches!(e.kind, b'0' | b'5'), "{what}: {} is of type {:?}; only files and directories", e.name, e.kind as char);
        // 65532 would do for a directory meant to be writable; the image has none (the chart's /tmp is an emptyDir).
        assert_eq!((e.uid, e.gid), (0, 0), "{what}: {} is owned by root", e.name);
        assert_eq!((e.uname.as_str(), e.gname.as_str()), ("", ""), "{what}: {} has numeric owners only", e.name);
        assert_eq!(e.mtime, 0, "{what}: {} has mtime 0", e.name);
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Runs dev/build-image into `dir`; its `name=value` stdout lines.
fn build(dir: &Path) -> BTreeMap<String, String> {
    let output = Command::new(support::repo_root().join("dev/build-image"))
        .args(["--binary", BINARY, "--output"])
        .arg(dir.join("forensic-capture.tar"))
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run dev/build-image");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "dev/build-image failed:\n{stderr}");
    eprint!("{stderr}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap_or_else(|| panic!("not name=value: {line}"));
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// The paths `ldd` names for the binary: the loader and every library (linux-vdso has none).
fn ldd_paths() -> BTreeSet<String> {
    let output = Command::new("ldd").arg(BINARY).output().expect("run ldd");
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let path = line.split("=>").last().unwrap().trim().split(" (").next().unwrap();
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

/// The names of an ELF64 little-endian file's sections.
fn elf_sections(elf: &[u8]) -> Vec<String> {
    assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "an ELF64 little-endian file");
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28), u16_at(0x3A), u16_at(0x3C), u16_at(0x3E));
    let names_at = u64_at(shoff + shstrndx * shentsize + 0x18);
    (0..shnum).map(|i| text(&elf[names_at + u32_at(shoff + i * shentsize)..])).collect()
}

/// A descriptor's blob, after checking the descriptor's media type and size.
fn blob<'a>(blobs: &BTreeMap<String, &'a [u8]>, descriptor: &Value, media_type: &str) -> &'a [u8] {
    assert_eq!(descriptor["mediaType"], media_type, "{descriptor}");
    let data = blobs.get(descriptor["digest"].as_str().unwrap()).unwrap_or_else(|| panic!("no blob for {descriptor}"));
    assert_eq!(descriptor["size"].as_u64(), Some(data.len() as u64), "size of {descriptor}");
    data
}

/// Where the layout keeps the blob of a digest.
fn blob_path(digest: &Value) -> String {
    format!("blobs/sha256/{}", digest.as_str().unwrap().strip_prefix("sha256:").unwrap())
}

fn entry_data<'a>(tar: &'a [u8], entries: &[Entry], name: &str) -> &'a [u8] {
    &tar[entries.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("no {name}")).data.clone()]
}

fn gunzip(path: &Path) -> Vec<u8> {
    let output = Command::new("gzip").arg("-dc").arg(path).output().expect("run gzip");
    assert!(output.status.success(), "gzip -dc {}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    output.stdout
}

#[test]
fn help_describes_the_options() {
    let output = Command::new(support::repo_root().join("dev/build-image")).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in ["--binary PATH", "--output PATH", "SOURCE_DATE_EPOCH", "User 65532:65532", "oci-archive:"] {
        assert!(help.contains(expected), "--help mentions {expected}:\n{help}");
    }
}

#[test]
fn image_is_reproducible_minimal_and_well_formed() {
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(support::unique("image"));
    let dirs = [work.join("a"), work.join("b")];
    let [first, second] = std::thread::scope(|s| dirs.each_ref().map(|dir| s.spawn(move || build(dir))).map(|h| h.join().unwrap()));

    // Reproducible: the same digest and the same bytes.
    assert_eq!(first["image"], format!("forensic-capture:{VERSION}"));
    assert_eq!(first["digest"], second["digest"], "both builds have the same manifest digest");
    let archive = std::fs::read(&first["archive"]).unwrap();
    assert!(archive == std::fs::read(&second["archive"]).unwrap(), "both archives are byte-identical");
    let digest = &first["digest"];

    // The OCI image layout, with Docker's manifest.json beside it.
    let outer = tar_entries(&archive);
    assert_reproducible_entries("archive", &outer);
    let files: BTreeMap<&str, &[u8]> =
        outer.iter().filter(|e| e.kind == b'0').map(|e| (e.name.as_str(), &archive[e.data.clone()])).collect();
    let json_file = |name: &str| -> Value {
        serde_json::from_slice(files.get(name).unwrap_or_else(|| panic!("the archive has {name}"))).unwrap()
    };
    assert_eq!(json_file("oci-layout"), json!({"imageLayoutVersion": "1.0.0"}));
    let mut blobs = BTreeMap::new();
    for (name, data) in &files {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256(data), format!("sha256:{hex}"), "blob {name} is named by its digest");
            blobs.insert(format!("sha256:{hex}"), *data);
        }
    }
    let index = json_file("index.json");
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let [entry] = index["manifests"].as_array().unwrap().as_slice() else { panic!("one image in {index}") };
    assert_eq!(entry["digest"], digest.as_str(), "the printed digest is the index's manifest");
    // What `ctr images import` names the image, and what the chart's forensic-capture:<appVersion> resolves to.
    assert_eq!(entry["annotations"]["io.containerd.image.name"], format!("docker.io/library/forensic-capture:{VERSION}"));
    assert_eq!(entry["annotations"]["org.opencontainers.image.ref.name"], VERSION);
    let manifest: Value = serde_json::from_slice(blob(&blobs, entry, "application/vnd.oci.image.manifest.v1+json")).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    let config: Value = serde_json::from_slice(blob(&blobs, &manifest["config"], "application/vnd.oci.image.config.v1+json")).unwrap();
    let [layer] = manifest["layers"].as_array().unwrap().as_slice() else { panic!("one layer in {manifest}") };
    let layer_gz = blob(&blobs, layer, "application/vnd.oci.image.layer.v1.tar+gzip");
    assert_eq!(blobs.len(), 3, "the layout holds the manifest, config and layer, nothing else");
    assert_eq!(
        json_file("manifest.json"),
        json!([{"Config": blob_path(&manifest["config"]["digest"]), "RepoTags": [format!("forensic-capture:{VERSION}")],
                "Layers": [blob_path(&layer["digest"])]}]),
        "Docker's manifest.json names the same config and layer"
    );
    let mut expected_outer: BTreeSet<String> = ["blobs/", "blobs/sha256/", "index.json", "manifest.json", "oci-layout"].map(String::from).into();
    expected_outer.extend(blobs.keys().map(|d| format!("blobs/sha256/{}", d.strip_prefix("sha256:").unwrap())));
    assert_eq!(outer.iter().map(|e| e.name.clone()).collect::<BTreeSet<_>>(), expected_outer);

    // The config: non-root, the binary as entrypoint, nothing else to run.
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], if cfg!(target_arch = "x86_64") { "amd64" } else { "arm64" });
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["config"]["Entrypoint"], json!(["/forensic-capture"]));
    assert!(config["config"].get("Cmd").is_none() && config["config"].get("Env").is_none(), "{config}");
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(config["config"]["Labels"]["org.opencontainers.image.version"], VERSION);

    // The layer: gzip without name or timestamp, and its uncompressed digest is the config's diff_id.
    assert_eq!(&layer_gz[..3], b"\x1f\x8b\x08", "gzip");
    assert_eq!(layer_gz[3] & 0x08, 0, "no file name in the gzip header");
    assert_eq!(&layer_gz[4..8], [0; 4], "no timestamp in the gzip header");
    let layer_file = work.join("layer.tar.gz");
    std::fs::write(&layer_file, layer_gz).unwrap();
    let layer_tar = gunzip(&layer_file);
    assert_eq!(config["rootfs"], json!({"type": "layers", "diff_ids": [sha256(&layer_tar)]}));
    let entries = tar_entries(&layer_tar);
    assert_reproducible_entries("layer", &entries);

    // Exactly these, plus the directories above them.
    let libraries = ldd_paths();
    assert!(libraries.iter().any(|p| p.contains("/ld-linux")), "ldd names the loader: {libraries:?}");
    let mut expected_files: BTreeSet<String> =
        ["forensic-capture", "etc/passwd", "etc/group", "etc/nsswitch.conf", "etc/ssl/certs/ca-certificates.crt"].map(String::from).into();
    expected_files.extend(libraries.iter().map(|p| p.trim_start_matches('/').to_string()));
    let mut expected = BTreeSet::from(["tmp/".to_string()]);
    for file in &expected_files {
        expected.extend(Path::new(file).ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()).map(|a| format!("{}/", a.display())));
    }
    expected.extend(expected_files.iter().cloned());
    let names: BTreeSet<String> = entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, expected, "the layer holds the binary, what ldd names, the CA bundle, passwd, group, nsswitch.conf and /tmp");

    let content = |name: &str| entry_data(&layer_tar, &entries, name);
    for e in &entries {
        let mode = match e.name.as_str() {
            "tmp/" => 0o1777,
            name if name.ends_with('/') => 0o755,
            "forensic-capture" => 0o755,
            name if expected_files.contains(name) && name.starts_with("etc/") => 0o644,
            _ => e.mode, // libraries: checked against the host below
        };
        assert_eq!(e.mode, mode, "mode of {}", e.name);
        assert_eq!(e.kind == b'5', e.name.ends_with('/'), "{} is a directory exactly when it ends with /", e.name);
    }
    for library in &libraries {
        let host = std::fs::canonicalize(library).unwrap();
        let name = library.trim_start_matches('/');
        assert!(content(name) == std::fs::read(&host).unwrap().as_slice(), "{name} is the host's {}", host.display());
        let host_mode = u64::from(std::fs::metadata(&host).unwrap().permissions().mode() & 0o755);
        assert_eq!(entries.iter().find(|e| e.name == name).unwrap().mode, host_mode, "mode of {name}");
    }

    // The binary: the one cargo built, without debug info but with its symbol table.
    // DWARF lives in .debug_* sections; .debug_gdb_scripts is loaded with the program (gdb's pretty-printer
    // names) and stays.
    let dwarf = |sections: &[String]| sections.iter().filter(|s| s.starts_with(".debug_") && *s != ".debug_gdb_scripts").count();
    let input_sections = elf_sections(&std::fs::read(BINARY).unwrap());
    assert!(dwarf(&input_sections) > 0, "the input binary has debug info: {input_sections:?}");
    let sections = elf_sections(content("forensic-capture"));
    assert_eq!(dwarf(&sections), 0, "debug info is stripped: {sections:?}");
    assert!(sections.iter().any(|s| s == ".symtab"), "the symbol table stays: {sections:?}");
    assert!(sections.iter().any(|s| s == ".text"));

    // The user, and the CA bundle: Debian's Mozilla roots, not certificates added to this machine.
    let passwd = String::from_utf8(content("etc/passwd").to_vec()).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("nonroot:x:65532:65532:")), "{passwd}");
    assert!(passwd.lines().all(|l| !l.starts_with("root:")), "{passwd}");
    assert_eq!(content("etc/group"), b"nonroot:x:65532:\n");
    let bundle = String::from_utf8(content("etc/ssl/certs/ca-certificates.crt").to_vec()).unwrap();
    let roots = bundle.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(roots > 100, "the Mozilla roots: {roots} certificates");
    for local in std::fs::read_dir("/usr/local/share/ca-certificates").into_iter().flatten() {
        let pem = std::fs::read_to_string(local.unwrap().path()).unwrap_or_default();
        if let Some(first_line) = pem.lines().skip_while(|l| !l.starts_with("-----BEGIN")).nth(1) {
            assert!(!bundle.contains(first_line), "a certificate added to this machine is not in the image");
        }
    }

    // Real OCI tools, where installed.
    let archive_path = &first["archive"];
    if let Ok(output) = Command::new("crane").args(["validate", "--tarball", archive_path]).output() {
        assert!(output.status.success(), "crane validate: {}", String::from_utf8_lossy(&output.stderr));
    } else {
        eprintln!("crane is not installed: the layout was checked by this test only");
    }
    if let Ok(output) = Command::new("skopeo").args(["inspect", "--raw", &format!("oci-archive:{archive_path}")]).output() {
        assert!(output.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(&sha256(&output.stdout), digest, "skopeo reads the same manifest");
    } else {
        eprintln!("skopeo is not installed: the layout was checked by this test only");
    }
    std::fs::remove_dir_all(&work).unwrap();
}
