//! The memory image quality gate. While the controller streams a completed image back to re-hash it, this
//! parser walks the LiME records in the same pass: every range header must be valid and the ranges ascending
//! without overlap, the object must end exactly where the last range does, and the kernel banner
//! ("Linux version ...", the `linux_banner` string Volatility identifies a kernel by) must be present. It also
//! measures how much of the instance's memory the image holds and how much of it is all-zero pages. Pure: the
//! caller feeds bytes.
//!
//! Why: an image that is truncated, mostly zeros or has no banner cannot be analysed, and finding that out
//! weeks later is finding out too late. AWS's Automated Forensic Orchestrator rejects images without a banner
//! for the same reason.

use crate::api::Reason;
use crate::api::ImageQuality;

/// "EMiL" read as a little-endian u32.
const LIME_MAGIC: u32 = 0x4C69_4D45;
const HEADER_LEN: usize = 32;
const PAGE: u64 = 4096;
const BANNER_PREFIX: &[u8] = b"Linux version ";
/// The banner is kept up to its newline, at most this long (the kernel's is well under).
const BANNER_MAX: usize = 300;
/// Distinct banners kept. Memory holds more than `linux_banner`: copies in the page cache, a shell's history,
/// variants built from other format strings. The one to report is the running kernel's, when it is known.
const BANNERS_MAX: usize = 16;
/// An image whose captured pages are (nearly) all zeros holds nothing to analyse. AVML leaves out 16 MiB blocks
/// that are entirely zero, so a real image is mostly pages with data; the captures AFO reported broken were
/// almost entirely zeros.
pub const MAX_ZERO_PAGE_PERCENT: f64 = 99.0;

/// What the image holds, as recorded in status and the manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageLayout {
    pub ranges: u64,
    /// Bytes of physical memory in the image (all ranges, headers excluded).
    pub captured_bytes: u64,
    pub pages: u64,
    pub zero_pages: u64,
    pub lowest_address: Option<u64>,
    pub highest_address: Option<u64>,
    /// Distinct "Linux version <n>..." strings, in image order (at most BANNERS_MAX).
    pub kernel_banners: Vec<String>,
}

/// Why an image is not a usable LiME image: each maps to a stable reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageDefect {
    #[error("not a LiME image: {0}")]
    Malformed(String),
    #[error("the image ends early: {0}")]
    Truncated(String),
}

impl ImageDefect {
    pub fn reason(&self) -> Reason {
        match self {
            ImageDefect::Malformed(_) => Reason::ImageMalformed,
            ImageDefect::Truncated(_) => Reason::ImageTruncated,
        }
    }
}

enum Position {
    /// Collecting a range header; `fill` bytes of it so far.
    Header { fill: usize },
    /// Inside a range's data, with this many bytes left.
    Data { left: u64 },
}

/// Streaming LiME parser: `feed` the object's bytes in order, then `finish`.
pub struct Inspector {
    position: Position,
    header: [u8; HEADER_LEN],
    offset: u64,
    layout: ImageLayout,
    /// Bytes of the current page seen so far, and whether all of them were zero.
    page_fill: u64,
    page_zero: bool,
    /// The end of the banner prefix's possible match across chunk boundaries, and a banner being collected.
    carry: Vec<u8>,
    banner: Option<Vec<u8>>,
    defect: Option<ImageDefect>,
}

impl Default for Inspector {
    fn default() -> Self {
        Self::new()
    }
}

impl Inspector {
    pub fn new() -> Self {
        Inspector {
            position: Position::Header { fill: 0 },
            header: [0; HEADER_LEN],
            offset: 0,
            layout: ImageLayout::default(),
            page_fill: 0,
            page_zero: true,
            carry: Vec::new(),
            banner: None,
            defect: None,
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.defect.is_none() {
            match self.position {
                Position::Header { fill } => {
                    let n = (HEADER_LEN - fill).min(data.len());
                    self.header[fill..fill + n].copy_from_slice(&data[..n]);
                    data = &data[n..];
                    self.offset += n as u64;
                    if fill + n == HEADER_LEN {
                        self.range_header();
                    } else {
                        self.position = Position::Header { fill: fill + n };
                    }
                }
                Position::Data { left } => {
                    let n = left.min(data.len() as u64) as usize;
                    self.range_data(&data[..n]);
                    data = &data[n..];
                    self.offset += n as u64;
                    if left == n as u64 {
                        self.close_page();
                        self.position = Position::Header { fill: 0 };
                    } else {
                        self.position = Position::Data { left: left - n as u64 };
                    }
                }
            }
        }
    }

    fn range_header(&mut self) {
        let at = self.offset - HEADER_LEN as u64;
        let word = |o: usize| u32::from_le_bytes(self.header[o..o + 4].try_into().expect("4 bytes"));
        let quad = |o: usize| u64::from_le_bytes(self.header[o..o + 8].try_into().expect("8 bytes"));
        let (magic, version, start, end) = (word(0), word(4), quad(8), quad(16));
        let defect = if magic != LIME_MAGIC {
            Some(format!("no LiME header at byte {at} (found magic {magic:#010x}, expected {LIME_MAGIC:#010x})"))
        } else if version != 1 {
            Some(format!("the range header at byte {at} has LiME version {version}; only version 1 (uncompressed) is analysable"))
        } else if end < start {
            Some(format!("the range header at byte {at} ends ({end:#x}) before it starts ({start:#x})"))
        } else if let Some(previous) = self.layout.highest_address.filter(|h| start <= *h) {
            Some(format!("the range at byte {at} starts at {start:#x}, not after the previous range's end {previous:#x}"))
        } else {
            None
        };
        if let Some(message) = defect {
            self.defect = Some(ImageDefect::Malformed(message));
            return;
        }
        // LiME end addresses are inclusive.
        let length = end - start + 1;
        self.layout.ranges += 1;
        self.layout.captured_bytes += length;
        self.layout.lowest_address.get_or_insert(start);
        self.layout.highest_address = Some(end);
        self.position = Position::Data { left: length };
    }

    fn range_data(&mut self, data: &[u8]) {
        let mut rest = data;
        while !rest.is_empty() {
            let n = ((PAGE - self.page_fill) as usize).min(rest.len());
            self.page_zero &= rest[..n].iter().all(|b| *b == 0);
            self.page_fill += n as u64;
            rest = &rest[n..];
            if self.page_fill == PAGE {
                self.close_page();
            }
        }
        if self.layout.kernel_banners.len() < BANNERS_MAX {
            self.find_banners(data);
        }
    }

    /// Ends the current page (a range's last page may be short).
    fn close_page(&mut self) {
        if self.page_fill > 0 {
            self.layout.pages += 1;
            self.layout.zero_pages += u64::from(self.page_zero);
        }
        self.page_fill = 0;
        self.page_zero = true;
    }

    fn find_banners(&mut self, mut data: &[u8]) {
        if self.banner.is_some() {
            data = &data[self.collect_banner(data)..];
        }
        // A banner may start in the previous chunk: look at the seam between the two first.
        let mut seam = std::mem::take(&mut self.carry);
        let carried = seam.len();
        seam.extend_from_slice(&data[..data.len().min(BANNER_PREFIX.len() + 1)]);
        if let Some(i) = banner_start(&seam).filter(|i| *i < carried) {
            self.banner = Some(seam[i..carried].to_vec());
            data = &data[self.collect_banner(data)..];
        }
        while self.banner.is_none() && self.layout.kernel_banners.len() < BANNERS_MAX {
            let Some(i) = banner_start(data) else { break };
            self.banner = Some(Vec::new());
            data = &data[i + self.collect_banner(&data[i..])..];
        }
        // Enough of the end to recognise a prefix cut by the next chunk boundary (the seam holds all of a short
        // chunk, so nothing is lost when chunks are tiny).
        let keep = BANNER_PREFIX.len();
        self.carry = if data.len() >= keep { data[data.len() - keep..].to_vec() } else { seam[seam.len().saturating_sub(keep)..].to_vec() };
        if self.banner.is_some() {
            self.carry.clear();
        }
    }

    /// Adds to the banner being read, up to its newline (or NUL); returns how many bytes of `data` it used.
    fn collect_banner(&mut self, data: &[u8]) -> usize {
        let banner = self.banner.as_mut().expect("collecting a banner");
        let end = data.iter().position(|b| *b == b'\n' || *b == 0);
        let take = end.unwrap_or(data.len()).min(BANNER_MAX.saturating_sub(banner.len()));
        banner.extend_from_slice(&data[..take]);
        if end.is_some() || banner.len() >= BANNER_MAX {
            self.accept_banner();
        }
        take
    }

    fn accept_banner(&mut self) {
        let bytes = self.banner.take().unwrap_or_default();
        let banner = String::from_utf8_lossy(&bytes).into_owned();
        if !self.layout.kernel_banners.contains(&banner) {
            self.layout.kernel_banners.push(banner);
        }
    }

    /// The image's layout, or why it is not a usable image.
    pub fn finish(mut self) -> Result<ImageLayout, ImageDefect> {
        if let Some(defect) = self.defect {
            return Err(defect);
        }
        if self.banner.is_some() {
            self.accept_banner();
        }
        match self.position {
            Position::Header { fill: 0 } if self.offset == 0 => Err(ImageDefect::Truncated("the object is empty".into())),
            Position::Header { fill: 0 } => Ok(self.layout),
            Position::Header { fill } => Err(ImageDefect::Truncated(format!(
                "the object ends {fill} bytes into the range header at byte {} ({} ranges complete)",
                self.offset - fill as u64,
                self.layout.ranges
            ))),
            Position::Data { left } => Err(ImageDefect::Truncated(format!(
                "the object ends at byte {} inside range {} with {left} of its bytes missing",
                self.offset, self.layout.ranges
            ))),
        }
    }
}

/// Where "Linux version <digit>" starts in `bytes`, if it does.
fn banner_start(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = bytes[from..].iter().position(|b| *b == b'L').map(|i| i + from) {
        let rest = &bytes[i..];
        if rest.len() > BANNER_PREFIX.len() && rest.starts_with(BANNER_PREFIX) && rest[BANNER_PREFIX.len()].is_ascii_digit() {
            return Some(i);
        }
        if rest.len() <= BANNER_PREFIX.len() && BANNER_PREFIX.starts_with(rest) {
            return None; // may complete in the next chunk; the carry handles it
        }
        from = i + 1;
    }
    None
}

/// Refused by the gate: a stable reason and a message naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

fn one_decimal(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Judges a parsed image against the instance it came from: its memory size, and the banner its kernel reported
/// (`/proc/version`), which is the one recorded when the image holds it. The quality is returned in both cases,
/// so a refused image is still recorded with what it holds.
pub fn assess(layout: &ImageLayout, memory_bytes: Option<u64>, min_coverage_percent: f64, reported_banner: Option<&str>) -> (ImageQuality, Option<Refusal>) {
    let reported = reported_banner.map(str::trim_end).filter(|b| layout.kernel_banners.iter().any(|found| found == b));
    let kernel_banner = reported.map(str::to_string).or_else(|| layout.kernel_banners.first().cloned());
    let zero_page_percent = if layout.pages == 0 { 100.0 } else { one_decimal(layout.zero_pages as f64 * 100.0 / layout.pages as f64) };
    let coverage_percent = memory_bytes.filter(|m| *m > 0).map(|m| one_decimal(layout.captured_bytes as f64 * 100.0 / m as f64));
    // Kubernetes schemas know int64, not uint64; no image comes near i64::MAX bytes.
    let quality = ImageQuality {
        ranges: layout.ranges as i64,
        captured_bytes: layout.captured_bytes as i64,
        memory_bytes: memory_bytes.map(|m| m as i64),
        coverage_percent,
        zero_page_percent,
        kernel_banner: kernel_banner.clone(),
    };
    let refusal = if zero_page_percent >= MAX_ZERO_PAGE_PERCENT {
        Some(Refusal {
            reason: Reason::ImageMostlyZero,
            message: format!(
                "{zero_page_percent}% of the image's {} pages are all zeros (refused at {MAX_ZERO_PAGE_PERCENT}% or more): the acquisition read no real memory",
                layout.pages
            ),
        })
    } else if kernel_banner.is_none() {
        Some(Refusal {
            reason: Reason::KernelBannerMissing,
            message: format!("no kernel banner (\"Linux version ...\") in {} bytes of memory: the image cannot be matched to a kernel for analysis", layout.captured_bytes),
        })
    } else if let Some(coverage) = coverage_percent.filter(|c| min_coverage_percent > 0.0 && *c < min_coverage_percent) {
        Some(Refusal {
            reason: Reason::ImageIncomplete,
            message: format!(
                "the image holds {} bytes, {coverage}% of the instance's {} bytes of memory (the minimum is {min_coverage_percent}%)",
                layout.captured_bytes,
                memory_bytes.unwrap_or_default()
            ),
        })
    } else {
        None
    };
    (quality, refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANNER: &str = "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)";

    fn header(start: u64, end: u64) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&LIME_MAGIC.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&start.to_le_bytes());
        h.extend_from_slice(&end.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h
    }

    /// A LiME image of `ranges` (start, pages), data 0x5a with the banner in the first range at `banner_at`.
    fn image(ranges: &[(u64, u64)], banner_at: Option<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, (start, pages)) in ranges.iter().enumerate() {
            out.extend(header(*start, start + pages * PAGE - 1));
            let mut data = vec![0x5a; (pages * PAGE) as usize];
            if let (0, Some(at)) = (n, banner_at) {
                data[at..at + BANNER.len() + 1].copy_from_slice(format!("{BANNER}\n").as_bytes());
            }
            out.extend(data);
        }
        out
    }

    fn inspect_in_chunks(bytes: &[u8], chunk: usize) -> Result<ImageLayout, ImageDefect> {
        let mut inspector = Inspector::new();
        for piece in bytes.chunks(chunk) {
            inspector.feed(piece);
        }
        inspector.finish()
    }

    #[test]
    fn a_valid_image_is_measured_the_same_whatever_the_chunking() {
        let bytes = image(&[(0x1000, 4), (0x10_0000, 8)], Some(5000));
        for chunk in [1, 7, 31, 32, 33, 4096, 1 << 20] {
            let layout = inspect_in_chunks(&bytes, chunk).unwrap();
            assert_eq!(layout.ranges, 2, "chunk {chunk}");
            assert_eq!(layout.captured_bytes, 12 * PAGE);
            assert_eq!((layout.pages, layout.zero_pages), (12, 0));
            assert_eq!(layout.kernel_banners, vec![BANNER.to_string()], "chunk {chunk}");
            assert_eq!((layout.lowest_address, layout.highest_address), (Some(0x1000), Some(0x10_0000 + 8 * PAGE - 1)));
        }
    }

    #[test]
    fn a_truncated_image_is_refused_with_where_it_ends() {
        let bytes = image(&[(0x1000, 4), (0x10_0000, 8)], Some(0));
        let cut = inspect_in_chunks(&bytes[..bytes.len() - 100], 4096).unwrap_err();
        assert_eq!(cut.reason(), Reason::ImageTruncated);
        assert!(cut.to_string().contains("inside range 2 with 100 of its bytes missing"), "{cut}");
        let in_header = inspect_in_chunks(&bytes[..32 + 4 * PAGE as usize + 10], 4096).unwrap_err();
        assert!(in_header.to_string().contains("10 bytes into the range header"), "{in_header}");
        assert_eq!(inspect_in_chunks(&[], 1).unwrap_err().reason(), Reason::ImageTruncated);
    }

    #[test]
    fn headers_that_are_not_lime_or_out_of_order_are_refused() {
        let mut bad_magic = image(&[(0x1000, 1)], None);
        bad_magic[0] = b'X';
        assert_eq!(inspect_in_chunks(&bad_magic, 64).unwrap_err().reason(), Reason::ImageMalformed);
        let descending = image(&[(0x10_0000, 1), (0x1000, 1)], None);
        let defect = inspect_in_chunks(&descending, 64).unwrap_err();
        assert!(defect.to_string().contains("not after the previous range's end"), "{defect}");
        let overlapping = image(&[(0x1000, 2), (0x2000, 1)], None);
        assert_eq!(inspect_in_chunks(&overlapping, 64).unwrap_err().reason(), Reason::ImageMalformed);
        let mut trailing = image(&[(0x1000, 1)], None);
        trailing.extend_from_slice(&[0xff; 40]);
        assert_eq!(inspect_in_chunks(&trailing, 64).unwrap_err().reason(), Reason::ImageMalformed);
    }

    #[test]
    fn a_zeroed_image_is_refused_as_mostly_zero() {
        let mut bytes = header(0x1000, 0x1000 + 100 * PAGE - 1);
        bytes.extend(vec![0u8; 100 * PAGE as usize]);
        let layout = inspect_in_chunks(&bytes, 8192).unwrap();
        assert_eq!((layout.pages, layout.zero_pages), (100, 100));
        let (quality, refusal) = assess(&layout, Some(1 << 30), 1.0, None);
        assert_eq!(refusal.unwrap().reason, Reason::ImageMostlyZero);
        assert_eq!(quality.zero_page_percent, 100.0);
    }

    #[test]
    fn an_image_without_a_banner_is_refused() {
        let layout = inspect_in_chunks(&image(&[(0x1000, 16)], None), 4096).unwrap();
        assert_eq!(assess(&layout, Some(16 * PAGE), 1.0, None).1.unwrap().reason, Reason::KernelBannerMissing);
        // "Linux version" not followed by a version number is not a banner.
        let mut bytes = image(&[(0x1000, 2)], None);
        bytes[100..114].copy_from_slice(b"Linux version ");
        bytes[114] = b'x';
        assert!(inspect_in_chunks(&bytes, 4096).unwrap().kernel_banners.is_empty());
    }

    #[test]
    fn coverage_below_the_minimum_is_refused_and_zero_turns_it_off() {
        let layout = inspect_in_chunks(&image(&[(0x1000, 16)], Some(0)), 4096).unwrap();
        let memory = 100 * 16 * PAGE; // the image holds 1%
        let (quality, refusal) = assess(&layout, Some(memory), 5.0, None);
        assert_eq!(quality.coverage_percent, Some(1.0));
        assert_eq!(refusal.unwrap().reason, Reason::ImageIncomplete);
        assert_eq!(assess(&layout, Some(memory), 0.0, None).1, None);
        assert_eq!(assess(&layout, Some(memory), 1.0, None).1, None);
    }

    #[test]
    fn a_banner_straddling_two_chunks_is_found() {
        let bytes = image(&[(0x1000, 2)], Some(4090));
        let header_len = HEADER_LEN;
        for split in [header_len + 4090 + 1, header_len + 4090 + 5, header_len + 4090 + 13, header_len + 4090 + 14, header_len + 4096] {
            let mut inspector = Inspector::new();
            inspector.feed(&bytes[..split]);
            inspector.feed(&bytes[split..]);
            assert_eq!(inspector.finish().unwrap().kernel_banners, vec![BANNER.to_string()], "split at {split}");
        }
    }

    #[test]
    fn the_banner_the_kernel_reported_is_recorded_over_other_copies_in_memory() {
        let mut bytes = image(&[(0x1000, 4)], Some(9000));
        // An earlier variant (as the guest's memory really holds) and a repeat of the real one.
        let variant = b"Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) # SMP PREEMPT_DYNAMIC\n";
        bytes[100..100 + variant.len()].copy_from_slice(variant);
        let repeat = format!("{BANNER}\n");
        bytes[12000..12000 + repeat.len()].copy_from_slice(repeat.as_bytes());
        let layout = inspect_in_chunks(&bytes, 4096).unwrap();
        assert_eq!(layout.kernel_banners.len(), 2, "{:?}", layout.kernel_banners);
        let (quality, _) = assess(&layout, None, 0.0, Some(&format!("{BANNER}\n")));
        assert_eq!(quality.kernel_banner.as_deref(), Some(BANNER));
        let (unknown, _) = assess(&layout, None, 0.0, None);
        assert!(unknown.kernel_banner.unwrap().contains("# SMP"), "the first one found, when the kernel's own is not known");
        let (elsewhere, refusal) = assess(&layout, None, 0.0, Some("Linux version 5.10.0-other"));
        assert!(elsewhere.kernel_banner.unwrap().contains("# SMP") && refusal.is_none());
    }
}
