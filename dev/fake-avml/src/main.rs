//! Test stand-in for AVML. Writes a deterministic LiME-format memory image to the named output (usually
//! /dev/stdout), so tests of the memory path can check every byte that reaches S3.
//!
//! Accepts AVML's command shapes: `fake-avml [acquire] [--compress] [--source SRC] <output>`. The image size
//! comes from the environment (`FAKE_AVML_SIZE_BYTES`, `FAKE_AVML_RANGES`), which the SSM simulator sets per
//! instance from its agent environment file, so each simulated instance has its own "physical memory";
//! default 12 MiB in 2 ranges. `FAKE_AVML_BYTES_PER_SECOND` slows the stream down, to make an acquisition last
//! as long as a test needs (an upload that outlives its presigned URLs).
//! Data bytes are a function of their offset only: `data[i] = (i * 2654435761 >> 13) as u8`, per range.

use std::io::{self, BufWriter, Write};

const LIME_MAGIC: u32 = 0x4C69_4D45;
const LIME_VERSION: u32 = 1;
const DEFAULT_SIZE: u64 = 12 * 1024 * 1024;
const DEFAULT_RANGES: u64 = 2;
/// Gap left between simulated physical ranges, as real RAM ranges are not contiguous.
const RANGE_GAP: u64 = 1 << 20;

fn main() {
    if let Err(e) = run() {
        eprintln!("fake-avml: {e}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let output = parse_output(&args).ok_or_else(|| io::Error::other("usage: fake-avml [acquire] [--source SRC] <output>"))?;
    let (size, ranges) = config();
    let rate = std::env::var("FAKE_AVML_BYTES_PER_SECOND").ok().and_then(|v| v.trim().parse::<u64>().ok()).filter(|r| *r > 0);
    let sink: Box<dyn Write> = if output == "-" || output == "/dev/stdout" {
        Box::new(io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(&output)?)
    };
    let mut out = BufWriter::with_capacity(1 << 16, Throttled { inner: sink, rate, started: std::time::Instant::now(), written: 0 });
    write_image(&mut out, size, ranges)?;
    out.flush()
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

fn parse_output(args: &[String]) -> Option<String> {
    let mut rest = args.iter().peekable();
    if rest.peek().is_some_and(|a| *a == "acquire") {
        rest.next();
    }
    let mut output = None;
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--source" | "--url" | "--sas-url" | "--sas_url" => {
                rest.next();
            }
            a if a.starts_with("--") => {}
            a => output = Some(a.to_string()),
        }
    }
    output
}

fn config() -> (u64, u64) {
    let value = |key: &str| std::env::var(key).ok().and_then(|v| v.trim().parse::<u64>().ok());
    (value("FAKE_AVML_SIZE_BYTES").unwrap_or(DEFAULT_SIZE), value("FAKE_AVML_RANGES").unwrap_or(DEFAULT_RANGES).max(1))
}

/// Total image length (headers included) is `size`, split over `ranges` LiME ranges.
fn write_image(out: &mut impl Write, size: u64, ranges: u64) -> io::Result<()> {
    let header = 32u64;
    let payload = size.saturating_sub(header * ranges);
    let mut start = 0x10_0000u64;
    let mut chunk = vec![0u8; 1 << 16];
    for r in 0..ranges {
        let len = payload / ranges + if r == ranges - 1 { payload % ranges } else { 0 };
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
                *b = (offset.wrapping_mul(2_654_435_761) >> 13) as u8;
            }
            out.write_all(&chunk[..n])?;
            written += n as u64;
        }
        start = end + 1 + RANGE_GAP;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_has_the_requested_size_and_valid_lime_headers() {
        let mut image = Vec::new();
        write_image(&mut image, 1_000_000, 3).unwrap();
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
    fn image_is_deterministic() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_image(&mut a, 200_000, 2).unwrap();
        write_image(&mut b, 200_000, 2).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn output_argument_is_found_in_avml_command_shapes() {
        let parse = |s: &str| parse_output(&s.split_whitespace().map(String::from).collect::<Vec<_>>());
        assert_eq!(parse("acquire /dev/stdout").as_deref(), Some("/dev/stdout"));
        assert_eq!(parse("--source /proc/kcore out.lime").as_deref(), Some("out.lime"));
        assert_eq!(parse("--compress").as_deref(), None);
    }
}
