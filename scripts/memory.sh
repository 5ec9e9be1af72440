#!/bin/bash
# forensic-capture on-instance script: full memory image, streamed to S3 without touching the instance's disks.
#
# Runs through SSM Run Command (AWS-RunShellScript). The controller prepends the FC_* variables below; the
# command text holds no AWS credentials, only presigned URLs scoped to exact object keys.
#   FC_AVML_URL     presigned GET of the AVML binary for this architecture
#   FC_AVML_SHA256  expected SHA-256 of that binary; nothing runs unless it matches
#   FC_AVML_ARGS    AVML arguments that write the LiME image to stdout (default: "acquire /dev/stdout")
#   FC_PLAN_URL     presigned GET of upload plan 1: "part-size <bytes>", "parts-url <presigned PUT URL>",
#                   "refresh-at <unix time>", "expires-at <unix time>", "next-plan-url <presigned GET>", then
#                   "part <n> <presigned UploadPart URL>" lines. After refresh-at the script fetches the next plan
#                   (fresh URLs, written by the controller while the upload runs) before its next part; if that
#                   plan is not there by expires-at, it stops with PlanExpired.
#
# The image goes AVML -> tee (SHA-256 over the whole stream) -> one part at a time in /dev/shm (memory, one
# part's worth) -> presigned UploadPart PUT with the part's Content-MD5 (S3 checks it on arrival). The list of parts (number, ETag, size) goes to the parts URL;
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

: "${FC_AVML_URL:?}" "${FC_AVML_SHA256:?}" "${FC_PLAN_URL:?}"
avml_args="${FC_AVML_ARGS:-acquire /dev/stdout}"

fetch "$FC_AVML_URL" "$work/avml" 2>"$work/curl.err" || fail ToolDownloadFailed "could not fetch AVML: $(tail -c 300 "$work/curl.err")"
actual="$(sha256sum "$work/avml" | cut -d' ' -f1)"
[ "$actual" = "$FC_AVML_SHA256" ] || fail ToolChecksumMismatch "AVML SHA-256 is $actual, expected $FC_AVML_SHA256; not running it"
chmod 700 "$work/avml"

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

# Reads stdin one part at a time; each part lives in /dev/shm only until its PUT returns.
upload_parts() {
  local n=1 size total=0
  while :; do
    head -c "$part_size" >"$work/part"
    size="$(stat -c %s "$work/part")"
    [ "$size" -gt 0 ] || break
    refresh_plan
    [ -n "${part_urls[n]:-}" ] || fail PlanExhausted "image is larger than the $((n - 1)) parts planned"
    etag="$(curl --fail --silent --show-error --retry 5 --retry-all-errors --retry-delay 1 \
      --header "Content-MD5: $(content_md5 "$work/part")" --upload-file "$work/part" --output /dev/null --write-out '%header{etag}' "${part_urls[n]}" 2>"$work/curl.err")" ||
      fail PartUploadFailed "part $n: $(tail -c 300 "$work/curl.err")"
    [ -n "$etag" ] || fail PartUploadFailed "part $n: S3 returned no ETag"
    echo "part $n $etag $size" >>"$work/parts"
    total=$((total + size))
    echo "$n $total" >"$work/progress"
    [ "$size" -eq "$part_size" ] || break
    n=$((n + 1))
  done
  rm -f "$work/part"
}

mkfifo "$work/hash.fifo"
sha256sum <"$work/hash.fifo" >"$work/sha256" &
hasher=$!
set +e
# shellcheck disable=SC2086 # FC_AVML_ARGS is a list of words by design
"$work/avml" $avml_args 2>"$work/avml.err" | tee "$work/hash.fifo" | upload_parts
statuses=("${PIPESTATUS[@]}")
set -e
wait "$hasher"
# An upload failure has already said why (and makes AVML die of SIGPIPE), so it is checked first.
[ "${statuses[2]}" -eq 0 ] || exit "${statuses[2]}"
[ "${statuses[0]}" -eq 0 ] || fail AcquisitionFailed "AVML exited ${statuses[0]}: $(tail -c 500 "$work/avml.err")"
[ -s "$work/progress" ] || fail AcquisitionFailed "AVML wrote no data: $(tail -c 500 "$work/avml.err")"
read -r parts bytes <"$work/progress"
load_plan "$work/plan.current"
refresh_plan
curl --fail-with-body --silent --show-error --retry 5 --retry-all-errors --retry-delay 1 \
  --header "Content-MD5: $(content_md5 "$work/parts")" --upload-file "$work/parts" --output "$work/response" "$parts_url" 2>"$work/curl.err" ||
  fail PartsListUploadFailed "$(tail -c 300 "$work/curl.err") $(tail -c 300 "$work/response" 2>/dev/null | tr -s "\n\r" "  ")"
echo "FC-RESULT memory sha256=$(cut -d' ' -f1 "$work/sha256") bytes=$bytes parts=$parts"
