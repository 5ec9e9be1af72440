//! Benchmark program (prints figures; asserts nothing about speed): how fast `forensic-capture verify`
//! re-hashes an artifact, against `sha256sum` of the same bytes.
//!   - sha256sum: coreutils over a 1 GiB file in the page cache (the local hashing ceiling);
//!   - in-process SHA-256: the same `sha2` hashing verify uses, over the bytes in memory (no network);
//!   - verify's path: SdkEvidenceStore::object_sha256 streaming the 1 GiB object from S3 (here: moto).
//! Run: `dev/bench hashing` (or, with the stack's environment, `cargo bench --profile dev --bench verify_hashing`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use forensic_capture::aws::s3::{EvidenceStore, SdkEvidenceStore};
use sha2::{Digest, Sha256};

const SIZE: usize = 1 << 30;
const PART: usize = 64 << 20;

/// Deterministic incompressible bytes (xorshift64), so every run hashes the same content.
fn bytes() -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(SIZE);
    while out.len() < SIZE {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out
}

fn mib_per_s(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / seconds
}

#[tokio::main]
async fn main() {
    let data = bytes();
    let dir = std::env::temp_dir().join(format!("fc-hash-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("artifact.bin");
    std::fs::write(&file, &data).unwrap();

    // Warm the page cache, then time sha256sum.
    let _ = std::process::Command::new("cat").arg(&file).stdout(std::process::Stdio::null()).status();
    let started = Instant::now();
    let output = std::process::Command::new("sha256sum").arg(&file).output().expect("sha256sum");
    let coreutils = started.elapsed().as_secs_f64();
    let coreutils_hex = String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or_default().to_string();

    let started = Instant::now();
    let mut hasher = Sha256::new();
    for chunk in data.chunks(64 * 1024) {
        hasher.update(chunk);
    }
    let in_process_hex = hex::encode(hasher.finalize());
    let in_process = started.elapsed().as_secs_f64();
    assert_eq!(in_process_hex, coreutils_hex, "both hashes must agree before their speeds mean anything");

    // Upload the same bytes to the stack's S3 as a multipart object.
    let stack = support::stack();
    let s3 = stack.s3().await;
    let bucket = support::fixtures::bucket(&s3).await;
    let key = "bench/artifact.bin";
    let upload = s3.create_multipart_upload().bucket(&bucket).key(key).send().await.unwrap();
    let upload_id = upload.upload_id().unwrap().to_string();
    let mut parts = Vec::new();
    for (i, chunk) in data.chunks(PART).enumerate() {
        let number = i as i32 + 1;
        let part = s3.upload_part().bucket(&bucket).key(key).upload_id(&upload_id).part_number(number).body(chunk.to_vec().into()).send().await.unwrap();
        parts.push(aws_sdk_s3::types::CompletedPart::builder().part_number(number).e_tag(part.e_tag().unwrap()).build());
    }
    s3.complete_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(aws_sdk_s3::types::CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .unwrap();
    drop(data);

    let store = SdkEvidenceStore { s3, sts: aws_sdk_sts::Client::new(&stack.aws().await), presign_role_arn: None };
    let started = Instant::now();
    let (verify_hex, size) = store.object_sha256(&bucket, key, |_| {}).await.unwrap();
    let verify = started.elapsed().as_secs_f64();
    assert_eq!(verify_hex, coreutils_hex);
    assert_eq!(size as usize, SIZE);
    std::fs::remove_dir_all(&dir).ok();

    println!("SHA-256 of the same 1 GiB (sha256 {coreutils_hex}):");
    println!("  sha256sum (page cache)          {coreutils:>7.2} s  {:>8.1} MiB/s", mib_per_s(SIZE, coreutils));
    println!("  in-process sha2 (memory)        {in_process:>7.2} s  {:>8.1} MiB/s  ratio to sha256sum {:.2}", mib_per_s(SIZE, in_process), coreutils / in_process);
    println!("  verify: stream from S3 + hash   {verify:>7.2} s  {:>8.1} MiB/s  ratio to sha256sum {:.2}", mib_per_s(SIZE, verify), coreutils / verify);
    println!("  (ratio = sha256sum time / this time: 1.00 is as fast as sha256sum)");
}
