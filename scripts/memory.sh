#!/bin/bash
# forensic-capture on-instance script: full memory image, streamed to S3 without touching the instance's disks.
#
# Runs through SSM Run Command (AWS-RunShellScript). The controller prepends the FC_* variables below; the
# command text holds no AWS credentials, only presigned URLs scoped to exact object keys.
#   FC_AVML_URL     presigned GET of the AVML binary for this architecture
#   FC_AVML_SHA256  expected SHA-256 of that binary; nothing runs unless it matches
#   FC_ARCH         the architecture the controller chose AVML for (x86_64 or arm64)
#   FC_AVML_SOURCE  optional: the memory source AVML reads (/proc/kcore, /dev/crash or /dev/mem); by default the
#                   script picks the first usable one, as AVML does for an output it cannot rewind
#   FC_PLAN_URL     presigned GET of upload plan 1: "part-size <bytes>", "parts-url <presigned PUT URL>",
#                   "refresh-at <unix time>", "expires-at <unix time>", "next-plan-url <presigned GET>", then
#                   "part <n> <presigned UploadPart URL>" lines. After refresh-at the script fetches the next plan
#                   (fresh URLs, written by the controller while the upload runs) before its next part; if that
#                   plan is not there by expires-at, it stops with PlanExpired.
#   FC_UPLOAD_CONCURRENCY  optional: how many parts are uploaded at once (default 4, 1 to 16); memory use is that
#                   many parts, plus the one being read
#
# AVML (since 0.17) opens its output with O_NOFOLLOW, so /dev/stdout (a symlink to /proc/self/fd/1) fails with
# ELOOP: it writes into a FIFO this script creates in /dev/shm, and the script streams from the FIFO.
# The image goes AVML -> FIFO -> tee (SHA-256 over the whole stream) -> parts in /dev/shm (memory, up to
# FC_UPLOAD_CONCURRENCY parts' worth, each kept only until its PUT returns) -> presigned UploadPart PUTs, several
# at once, each with the part's Content-MD5 (S3 checks it on arrival). The list of parts (number, ETag, size) goes to the parts URL;
# the controller completes the multipart upload from it (S3 checks every ETag) and checks the object's size.
# Prints "FC-RESULT memory sha256=<hex> bytes=<n> parts=<n>" on success, "FC-ERROR <Reason> <detail>" on failure.
# AWS-RunShellScript may start the script with sh; everything below needs bash.
if [ -z "${BASH_VERSION:-}" ]; then exec /bin/bash "$0" "$@"; fi
set -euo pipefail
umask 077

work="$(mktemp -d /dev/shm/forensic-capture.XXXXXX)"
trap 'rm -rf "$work"' EXIT

fail() { # reason, detail
  echo "FC-ERROR $1 $2"
  echo "FC-ERROR $1 $2" >&2
  exit 1
}

fetch() { # url, output
  curl --fail --silent --show-error --retry 5 --retry-all-errors --retry-delay 1 --output "$2" "$1"
}

: "${FC_AVML_URL:?}" "${FC_AVML_SHA256:?}" "${FC_PLAN_URL:?}" "${FC_ARCH:?}"

# Why memory cannot be taken here, said before anything is downloaded or run.
machine="$(uname -m)"
case "$machine:$FC_ARCH" in
  x86_64:x86_64 | aarch64:arm64) ;;
  *) fail UnsupportedArchitecture "the kernel reports machine $machine; AVML was configured for $FC_ARCH (AVML runs on x86_64 and aarch64)" ;;
esac
lockdown="$(cat /sys/kernel/security/lockdown 2>/dev/null || true)"
case "$lockdown" in
  *"[confidentiality]"*) fail KernelLockdown "kernel lockdown is confidentiality ($lockdown): /proc/kcore, /dev/crash and /dev/mem are closed to every tool" ;;
esac

# One source, chosen up front: the output is a stream, so AVML must not fall back to another source after
# writing part of an image. The order is AVML's own for outputs it cannot rewind.
readable() { head -c 1 "$1" >/dev/null 2>&1; }
source="${FC_AVML_SOURCE:-}"
if [ -z "$source" ]; then
  for candidate in /proc/kcore /dev/crash /dev/mem; do
    if readable "$candidate"; then source="$candidate"; break; fi
  done
fi
if [ -z "$source" ]; then
  case "$lockdown" in
    *"[integrity]"*) fail KernelLockdown "no memory source is readable and kernel lockdown is integrity ($lockdown)" ;;
  esac
  fail NoMemorySource "none of /proc/kcore, /dev/crash, /dev/mem can be read (is the kernel built without them, or are they restricted?)"
fi

fetch "$FC_AVML_URL" "$work/avml" 2>"$work/curl.err" || fail ToolDownloadFailed "could not fetch AVML: $(tail -c 300 "$work/curl.err")"
actual="$(sha256sum "$work/avml" | cut -d' ' -f1)"
[ "$actual" = "$FC_AVML_SHA256" ] || fail ToolChecksumMismatch "AVML SHA-256 is $actual, expected $FC_AVML_SHA256; not running it"
chmod 700 "$work/avml"
# CIS-hardened systems mount /dev/shm noexec. Then the binary moves to /run, if that is a tmpfs too (memory, not
# disk); a disk-backed directory is never used.
avml="$work/avml"
# Exit status 126 is the shell's "found but cannot execute"; any other failure is AVML's own to report later.
version_status=0
"$avml" --version >/dev/null 2>&1 || version_status=$?
if [ "$version_status" -eq 126 ]; then
  [ "$(stat -f -c %T /run 2>/dev/null)" = tmpfs ] ||
    fail ToolNotExecutable "AVML cannot run from /dev/shm (mounted noexec?) and /run is not a tmpfs to run it from instead"
  run_dir="$(mktemp -d /run/forensic-capture.XXXXXX)"
  trap 'rm -rf "$work" "$run_dir"' EXIT
  mv "$work/avml" "$run_dir/avml"
  avml="$run_dir/avml"
  "$avml" --version >/dev/null 2>&1 || fail ToolNotExecutable "AVML runs neither from /dev/shm nor from /run (both noexec?): $("$avml" --version 2>&1 | tail -c 200)"
fi

# Base64 MD5 of a file, for the Content-MD5 header: S3 verifies it on arrival even though the presigned URL
# does not sign it (S3 refuses unsigned x-amz-checksum-* headers on presigned requests, and the SHA-256 is
# not known when the URL is signed), and Object Lock buckets require it on every PUT.
content_md5() { # file
  printf '%b' "$(md5sum "$1" | cut -c1-32 | sed 's/../\\x&/g')" | base64
}

# Reads an upload plan; keeps the part size of the first (every plan of one upload has the same).
load_plan() { # file
  parts_url="" refresh_at="" expires_at="" next_plan_url=""
  part_urls=()
  local kind a b
  while read -r kind a b; do
    case "$kind" in
      part-size) part_size="${part_size:-$a}" ;;
      parts-url) parts_url="$a" ;;
      refresh-at) refresh_at="$a" ;;
      expires-at) expires_at="$a" ;;
      next-plan-url) next_plan_url="$a" ;;
      part) part_urls[a]="$b" ;;
    esac
  done <"$1"
  if [ -z "$part_size" ] || [ -z "$parts_url" ] || [ "${#part_urls[@]}" -eq 0 ]; then
    fail PlanInvalid "the upload plan lacks the part size, the parts URL or part URLs"
  fi
  # The uploads run in a pipeline's subshell: the plan in use is kept in a file for the rest of the script.
  [ "$1" = "$work/plan.current" ] || cp "$1" "$work/plan.current"
}

# Moves to the next plan once this one is due for refresh; waits for the controller to write it, at most until
# this plan's URLs expire.
refresh_plan() {
  [ -n "$next_plan_url" ] && [ "$(date +%s)" -ge "$refresh_at" ] || return 0
  until fetch "$next_plan_url" "$work/plan.next" 2>"$work/curl.err"; do
    [ "$(date +%s)" -lt "$expires_at" ] ||
      fail PlanExpired "the next upload plan did not appear before this one's URLs expired (is the controller running?): $(tail -c 300 "$work/curl.err")"
    sleep 5
  done
  load_plan "$work/plan.next"
}

part_size=""
declare -a part_urls=()
fetch "$FC_PLAN_URL" "$work/plan" 2>"$work/curl.err" || fail PlanDownloadFailed "could not fetch the upload plan: $(tail -c 300 "$work/curl.err")"
load_plan "$work/plan"

concurrency="${FC_UPLOAD_CONCURRENCY:-4}"
case "$concurrency" in
  [1-9] | 1[0-6]) ;;
  *) concurrency=4 ;;
esac

# Uploads part $1 (the file $work/part.$1) to URL $2; writes its ETag to $work/part.$1.etag, or why it failed to
# $work/part.$1.err. Runs in the background, so it reports through files rather than fail.
upload_part() { # n, url
  local n="$1" part="$work/part.$1" status=0
  # The ETag is read from the dumped headers rather than with --write-out '%header{etag}', which needs
  # curl 7.84 or later (Amazon Linux 2 ships 7.79).
  curl --fail --silent --show-error --retry 5 --retry-all-errors --retry-delay 1 \
    --header "Content-MD5: $(content_md5 "$part")" --upload-file "$part" --output /dev/null \
    --dump-header "$part.headers" "$2" 2>"$part.err" || status=$?
  rm -f "$part"
  [ "$status" -eq 0 ] || exit 1
  tr -d '\r' <"$part.headers" | sed -n 's/^[Ee][Tt][Aa][Gg]: *//p' | tail -n 1 >"$part.etag"
  [ -s "$part.etag" ] || {
    echo "S3 returned no ETag" >"$part.err"
    exit 1
  }
}

# Waits for the oldest upload still running (parts finish roughly in order, and the parts list stays in
# order), records it, and fails the whole script if it failed.
declare -a pending=() pending_n=() pending_size=()
total=0
reap_oldest() {
  local pid="${pending[0]}" n="${pending_n[0]}" size="${pending_size[0]}"
  pending=("${pending[@]:1}") pending_n=("${pending_n[@]:1}") pending_size=("${pending_size[@]:1}")
  if ! wait "$pid"; then
    # The other uploads are of no use without this part: stopped, so nothing is left running.
    [ "${#pending[@]}" -eq 0 ] || kill "${pending[@]}" 2>/dev/null || true
    fail PartUploadFailed "part $n: $(tail -c 300 "$work/part.$n.err" 2>/dev/null)"
  fi
  echo "part $n $(cat "$work/part.$n.etag") $size" >>"$work/parts"
  total=$((total + size))
  echo "$n $total" >"$work/progress"
  rm -f "$work/part.$n".*
}

# Reads stdin one part at a time and uploads up to $concurrency parts at once.
upload_parts() {
  local n=1 size
  while :; do
    head -c "$part_size" >"$work/part.$n"
    size="$(stat -c %s "$work/part.$n")"
    if [ "$size" -eq 0 ]; then
      rm -f "$work/part.$n"
      break
    fi
    refresh_plan
    [ -n "${part_urls[n]:-}" ] || fail PlanExhausted "image is larger than the $((n - 1)) parts planned"
    upload_part "$n" "${part_urls[n]}" &
    pending+=("$!") pending_n+=("$n") pending_size+=("$size")
    [ "${#pending[@]}" -lt "$concurrency" ] || reap_oldest
    [ "$size" -eq "$part_size" ] || break
    n=$((n + 1))
  done
  while [ "${#pending[@]}" -gt 0 ]; do
    reap_oldest
  done
}

mkfifo "$work/image.fifo" "$work/hash.fifo"
sha256sum <"$work/hash.fifo" >"$work/sha256" &
hasher=$!
tee "$work/hash.fifo" <"$work/image.fifo" | upload_parts &
uploader=$!
avml_status=0
"$avml" acquire --source "$source" "$work/image.fifo" 2>"$work/avml.err" || avml_status=$?
# AVML may have died before opening its output, leaving the reader waiting to open the FIFO until the SSM
# timeout. Opening it read-write never blocks: it gives a waiting reader a writer, and closing it gives the
# reader end-of-file; this repeats until the upload has ended, since the reader may not have reached its open
# yet. (After a normal end it only delays end-of-file by a moment.)
while kill -0 "$uploader" 2>/dev/null; do
  exec 4<>"$work/image.fifo"
  sleep 0.2
  exec 4<&-
  sleep 0.3
done
upload_status=0
wait "$uploader" || upload_status=$?
wait "$hasher"
# An upload failure has already said why (and makes AVML die of SIGPIPE), so it is checked first.
[ "$upload_status" -eq 0 ] || exit "$upload_status"
if [ "$avml_status" -ne 0 ]; then
  case "$lockdown" in
    *"[integrity]"*) fail KernelLockdown "AVML exited $avml_status reading $source under kernel lockdown ($lockdown): $(tail -c 400 "$work/avml.err")" ;;
  esac
  fail AcquisitionFailed "AVML exited $avml_status reading $source: $(tail -c 500 "$work/avml.err")"
fi
[ -s "$work/progress" ] || fail AcquisitionFailed "AVML wrote no data: $(tail -c 500 "$work/avml.err")"
read -r parts bytes <"$work/progress"
load_plan "$work/plan.current"
refresh_plan
curl --fail-with-body --silent --show-error --retry 5 --retry-all-errors --retry-delay 1 \
  --header "Content-MD5: $(content_md5 "$work/parts")" --upload-file "$work/parts" --output "$work/response" "$parts_url" 2>"$work/curl.err" ||
  fail PartsListUploadFailed "$(tail -c 300 "$work/curl.err") $(tail -c 300 "$work/response" 2>/dev/null | tr -s "\n\r" "  ")"
echo "FC-RESULT memory sha256=$(cut -d' ' -f1 "$work/sha256") bytes=$bytes parts=$parts"
