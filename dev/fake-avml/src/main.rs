//! Test stand-in for AVML 0.21 (built as the project ships it: `--no-default-features`, so `acquire` is its
//! only subcommand). Writes a deterministic LiME-format memory image, so tests of the memory path can check
//! every byte that reaches S3.
//!
//! It accepts exactly AVML's command line (`avml acquire [--compress] [--source SRC] [--max-disk-usage MIB]
//! [--max-disk-usage-percentage P] <FILENAME>`, parsed with the same rules: unknown flags and a missing file
//! name are usage errors, exit status 2) and refuses what AVML refuses: the source must open for reading, and
//! the output is opened with `O_NOFOLLOW`, so a symlinked path such as `/dev/stdout` fails with ELOOP
//! ("Too many levels of symbolic links (os error 40)"). Its one deliberate gap: `--compress` (AVML's snappy
//! format) is refused, because the memory path never uses it.
//!
//! The image size comes from the environment (`FAKE_AVML_SIZE_BYTES`, `FAKE_AVML_RANGES`), which the SSM
//! simulator sets per instance from its agent environment file, so each simulated instance has its own
//! "physical memory"; default 12 MiB in 2 ranges. `FAKE_AVML_BYTES_PER_SECOND` slows the stream down, to make
//! an acquisition last as long as a test needs (an upload that outlives its presigned URLs).
//! Data bytes are a function of their offset only: `data[i] = (i * 2654435761 >> 13) as u8`, per range, except
//! that the first range carries a kernel banner (`FAKE_AVML_BANNER`, default below) at offset 4096, as a real
//! image carries `linux_banner`; `FAKE_AVML_BANNER=` (empty) leaves it out.
//! Broken acquisitions, for the image quality gate's tests: `FAKE_AVML_DATA=zeros` writes valid headers over
//! all-zero memory (no banner), and `FAKE_AVML_TRUNCATE_BYTES=N` stops N bytes before the end and still exits 0.

use std::{
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt,
    path::PathBuf,
};

use clap::{Parser, Subcommand};

const LIME_MAGIC: u32 = 0x4C69_4D45;
const LIME_VERSION: u32 = 1;
const DEFAULT_SIZE: u64 = 12 * 1024 * 1024;
const DEFAULT_RANGES: u64 = 2;
/// Gap left between simulated physical ranges, as real RAM ranges are not contiguous.
const RANGE_GAP: u64 = 1 << 20;
const DEFAULT_BANNER: &str = "Linux version 6.1.0-fake-amd64 (fake-avml@forensic-capture) (gcc 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.0-fake\n";
const BANNER_OFFSET: usize = 4096;

/// A portable volatile memory acquisition tool for Linux.
#[derive(Parser)]
#[command(name = "avml", version = "0.21.0")]
struct Cmd {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Acquire a memory snapshot to a local file (and optionally upload it).
    Acquire(Acquire),
}

#[derive(clap::Args)]
struct Acquire {
    /// compress via snappy
    #[arg(long)]
    compress: bool,
    /// specify input source
    #[arg(long, value_parser = ["/dev/crash", "/dev/mem", "/proc/kcore"])]
    source: Option<String>,
    /// Specify the maximum estimated disk usage (in MiB)
    #[arg(long)]
    max_disk_usage: Option<std::num::NonZeroU64>,
    /// Specify the maximum estimated disk usage to stay under
    #[arg(long, value_parser = disk_usage_percentage)]
    max_disk_usage_percentage: Option<f64>,
    /// name of the file to write to on local system
    filename: PathBuf,
}

fn disk_usage_percentage(s: &str) -> Result<f64, String> {
    let value: f64 = s.parse().map_err(|_| format!("`{s}` isn't a valid value"))?;
    if (0.01..100.0).contains(&value) { Ok(value) } else { Err("value is not a valid percentage in range 0.01-100".into()) }
}

fn main() {
    let Commands::Acquire(args) = Cmd::parse().command;
    if let Err(e) = acquire(&args) {
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
}

fn acquire(args: &Acquire) -> io::Result<()> {
    if args.compress {
        return Err(io::Error::other("fake-avml does not write AVML's compressed format (--compress)"));
    }
    // AVML reads physical memory from the source; without one it probes /proc/kcore, /dev/crash, /dev/mem.
    let source = match &args.source {
        Some(s) => s.clone(),
        None => ["/proc/kcore", "/dev/crash", "/dev/mem"]
            .into_iter()
            .find(|s| std::fs::File::open(s).is_ok())
            .ok_or_else(|| io::Error::other("no source available: /proc/kcore, /dev/crash and /dev/mem cannot be opened"))?
            .to_string(),
    };
    std::fs::File::open(&source).map_err(|e| io::Error::new(e.kind(), format!("unable to create snapshot from source {source}: unable to open {source}: {e}")))?;
    let sink = std::fs::OpenOptions::new()
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .write(true)
        .create(true)
        .truncate(true)
        .open(&args.filename)
        .map_err(|e| io::Error::new(e.kind(), format!("unable to create snapshot file: {e}")))?;
    let image = ImageConfig::from_env();
    let rate = std::env::var("FAKE_AVML_BYTES_PER_SECOND").ok().and_then(|v| v.trim().parse::<u64>().ok()).filter(|r| *r > 0);
    let mut out = BufWriter::with_capacity(1 << 16, Throttled { inner: sink, rate, started: std::time::Instant::now(), written: 0 });
    write_image(&mut out, &image)?;
    out.flush()
}

/// `O_NOFOLLOW` on Linux (x86_64 and aarch64 share the generic value); no libc crate for one constant.
fn libc_o_nofollow() -> i32 {
    if cfg!(target_arch = "aarch64") { 0o100_000 } else { 0o400_000 }
}

/// Holds the output to `rate` bytes per second on average, when set.
struct Throttled<W> {
    inner: W,
    rate: Option<u64>,
    started: std::time::Instant,
    written: u64,
}

impl<W: Write> Write for Throttled<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        if let Some(rate) = self.rate {
            let due = std::time::Duration::from_secs_f64(self.written as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                self.inner.flush()?;
                std::thread::sleep(wait);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct ImageConfig {
    size: u64,
    ranges: u64,
    banner: Vec<u8>,
    zeros: bool,
    truncate: u64,
}

impl ImageConfig {
    fn from_env() -> Self {
        let value = |key: &str| std::env::var(key).ok().and_then(|v| v.trim().parse::<u64>().ok());
        ImageConfig {
            size: value("FAKE_AVML_SIZE_BYTES").unwrap_or(DEFAULT_SIZE),
            ranges: value("FAKE_AVML_RANGES").unwrap_or(DEFAULT_RANGES).max(1),
            banner: std::env::var("FAKE_AVML_BANNER").map(String::into_bytes).unwrap_or_else(|_| DEFAULT_BANNER.as_bytes().to_vec()),
            zeros: std::env::var("FAKE_AVML_DATA").is_ok_and(|v| v == "zeros"),
            truncate: value("FAKE_AVML_TRUNCATE_BYTES").unwrap_or(0),
        }
    }
}

/// Total image length (headers included) is `size`, split over `ranges` LiME ranges.
fn write_image(out: &mut impl Write, image: &ImageConfig) -> io::Result<()> {
    let mut out = Truncated { inner: out, left: image.size.saturating_sub(image.truncate) };
    let out = &mut out;
    let header = 32u64;
    let payload = image.size.saturating_sub(header * image.ranges);
    let mut start = 0x10_0000u64;
    let mut chunk = vec![0u8; 1 << 16];
    let mut banner_pending = !image.banner.is_empty();
    for r in 0..image.ranges {
        let len = payload / image.ranges + if r == image.ranges - 1 { payload % image.ranges } else { 0 };
        if len == 0 {
            continue;
        }
        let end = start + len - 1; // LiME end addresses are inclusive
        out.write_all(&LIME_MAGIC.to_le_bytes())?;
        out.write_all(&LIME_VERSION.to_le_bytes())?;
        out.write_all(&start.to_le_bytes())?;
        out.write_all(&end.to_le_bytes())?;
        out.write_all(&[0u8; 8])?;
        let mut written = 0u64;
        while written < len {
            let n = chunk.len().min((len - written) as usize);
            for (i, b) in chunk[..n].iter_mut().enumerate() {
                let offset = written + i as u64;
                *b = if image.zeros { 0 } else { (offset.wrapping_mul(2_654_435_761) >> 13) as u8 };
            }
            if banner_pending && !image.zeros && written == 0 && n >= BANNER_OFFSET + image.banner.len() {
                chunk[BANNER_OFFSET..BANNER_OFFSET + image.banner.len()].copy_from_slice(&image.banner);
                banner_pending = false;
            }
            out.write_all(&chunk[..n])?;
            written += n as u64;
        }
        start = end + 1 + RANGE_GAP;
    }
    Ok(())
}

/// Passes on the first `left` bytes and silently drops the rest, as an acquisition that stops short would.
struct Truncated<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Truncated<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        self.inner.write_all(&buf[..n])?;
        self.left -= n as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(size: u64, ranges: u64) -> ImageConfig {
        ImageConfig { size, ranges, banner: DEFAULT_BANNER.as_bytes().to_vec(), zeros: false, truncate: 0 }
    }

    #[test]
    fn image_has_the_requested_size_and_valid_lime_headers() {
        let mut image = Vec::new();
        write_image(&mut image, &config(1_000_000, 3)).unwrap();
        assert_eq!(image.len(), 1_000_000);
        let mut at = 0usize;
        let mut ranges = 0;
        while at < image.len() {
            let word = |o: usize| u32::from_le_bytes(image[at + o..at + o + 4].try_into().unwrap());
            let quad = |o: usize| u64::from_le_bytes(image[at + o..at + o + 8].try_into().unwrap());
            assert_eq!(word(0), LIME_MAGIC);
            assert_eq!(word(4), LIME_VERSION);
            let (start, end) = (quad(8), quad(16));
            at += 32 + (end - start + 1) as usize;
            ranges += 1;
        }
        assert_eq!(at, image.len());
        assert_eq!(ranges, 3);
    }

    #[test]
    fn image_is_deterministic_and_carries_the_banner_once() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_image(&mut a, &config(200_000, 2)).unwrap();
        write_image(&mut b, &config(200_000, 2)).unwrap();
        assert_eq!(a, b);
        let banner = DEFAULT_BANNER.as_bytes();
        assert_eq!(a.windows(banner.len()).filter(|w| *w == banner).count(), 1);
    }

    #[test]
    fn broken_acquisitions_are_what_they_say() {
        let mut zeros = Vec::new();
        write_image(&mut zeros, &ImageConfig { zeros: true, ..config(100_000, 1) }).unwrap();
        assert!(zeros[32..].iter().all(|b| *b == 0));
        let mut short = Vec::new();
        write_image(&mut short, &ImageConfig { truncate: 1000, ..config(100_000, 1) }).unwrap();
        assert_eq!(short.len(), 99_000);
    }

    #[test]
    fn command_line_is_avmls() {
        let parse = |s: &str| Cmd::try_parse_from(std::iter::once("avml").chain(s.split_whitespace()));
        assert!(parse("acquire --source /proc/kcore out.lime").is_ok());
        assert!(parse("acquire out.lime").is_ok());
        assert!(parse("acquire /dev/stdout").is_ok(), "parsing accepts it; opening it is what fails");
        assert!(parse("/dev/stdout").is_err(), "no subcommand");
        assert!(parse("acquire").is_err(), "no file name");
        assert!(parse("acquire --bogus out.lime").is_err(), "unknown flag");
        assert!(parse("acquire --source /dev/sda out.lime").is_err(), "not a source AVML knows");
        assert!(parse("acquire --max-disk-usage-percentage 100 out.lime").is_err());
    }
}
