#!/usr/bin/env bash
# forensic-capture on-instance script: container checkpoints of a pod target, off the node.
#
# The kubelet wrote each archive (CRIU images of the container's memory and state, its writable layer and
# spec) under its checkpoints directory when the controller asked it to. Runs through SSM Run Command
# (AWS-RunShellScript) in one of two modes; the controller prepends:
#   FC_CHECKPOINT_MODE   upload | remove
#   FC_CHECKPOINT_PATHS  the archives, space separated, exactly as the kubelet named them
#   FC_CHECKPOINT_URLS   upload: a presigned PUT for each archive, in the same order
#   FC_CHECKPOINT_PREFIX upload: the file name prefix of this pod's archives (checkpoint-<pod>_<namespace>-),
#                        to report archives an interrupted earlier attempt left on the node
#   FC_CHECKPOINT_LOGS   upload: CRIU logs of checkpoints that failed (the runtime named them), space
#                        separated: their error lines are printed, since the kubelet's answer only names the file
# upload prints "FC-RESULT checkpoint-<n> sha256=<hex> bytes=<n>" per archive (n from 0, in order),
# "FC-RESULT leftover-<n> path=<path>" per other archive of the pod found beside them, and
# "FC-CRIU <n> <line>" per error line of the n-th log; remove deletes the
# archives once the controller has verified their uploads, and prints "FC-RESULT removed-<n> path=<path>".
# "FC-ERROR <Reason> <detail>" on failure. The archives hold the container's memory, and with it its
# secrets: they are never copied anywhere on the node, and removed only in remove mode.
# AWS-RunShellScript may start the script with sh; everything below needs bash.
if [ -z "${BASH_VERSION:-}" ]; then exec /bin/bash "$0" "$@"; fi
set -uo pipefail
umask 077

: "${FC_CHECKPOINT_MODE:?}"
read -r -a paths <<<"${FC_CHECKPOINT_PATHS:-}"
read -r -a logs <<<"${FC_CHECKPOINT_LOGS:-}"

# Only what the kubelet writes: a checkpoint-*.tar directly in a checkpoints directory.
for path in "${paths[@]}"; do
  case "$path" in
    /*/checkpoints/checkpoint-*.tar) ;;
    *) echo "FC-ERROR InvalidCommand $path is not a kubelet checkpoint archive"; exit 1 ;;
  esac
  case "$path" in *..*) echo "FC-ERROR InvalidCommand $path is not a kubelet checkpoint archive"; exit 1 ;; esac
done

# Only what the runtime writes: criu-dump.log in a container's task state directory.
for log in "${logs[@]}"; do
  case "$log" in
    */io.containerd.runtime.v2.task/*/criu-dump.log) ;;
    *) echo "FC-ERROR InvalidCommand $log is not a container runtime's CRIU log"; exit 1 ;;
  esac
  case "$log" in *..*) echo "FC-ERROR InvalidCommand $log is not a container runtime's CRIU log"; exit 1 ;; esac
done

if [ "$FC_CHECKPOINT_MODE" = remove ]; then
  for i in "${!paths[@]}"; do
    rm -f -- "${paths[$i]}" || { echo "FC-ERROR RemoveFailed ${paths[$i]}"; exit 1; }
    echo "FC-RESULT removed-$i path=${paths[$i]}"
  done
  exit 0
fi

# Why CRIU failed, from its own log: the lines it marks as errors, the last few.
for i in "${!logs[@]}"; do
  [ -f "${logs[$i]}" ] || { echo "FC-CRIU $i (the log is gone)"; continue; }
  grep -E '^\([0-9. ]+\) Error|Error \(' "${logs[$i]}" | tail -n 3 | while IFS= read -r line; do echo "FC-CRIU $i $line"; done
done
[ "${#paths[@]}" -gt 0 ] || exit 0

: "${FC_CHECKPOINT_URLS:?}" "${FC_CHECKPOINT_PREFIX:?}"
read -r -a urls <<<"$FC_CHECKPOINT_URLS"
[ "${#urls[@]}" -eq "${#paths[@]}" ] || { echo "FC-ERROR InvalidCommand ${#paths[@]} archives but ${#urls[@]} URLs"; exit 1; }
work="$(mktemp -d /dev/shm/forensic-capture.XXXXXX)" || { echo "FC-ERROR StagingFailed cannot create a directory in /dev/shm"; exit 1; }
trap 'rm -rf "$work"' EXIT

# Base64 MD5 of a file, for the Content-MD5 header S3 checks on arrival (and Object Lock buckets require).
content_md5() { # file
  printf '%b' "$(md5sum "$1" | cut -c1-32 | sed 's/../\\x&/g')" | base64
}

# A single PUT takes at most 5 GiB.
limit=$((5 * 1024 * 1024 * 1024))
for i in "${!paths[@]}"; do
  path="${paths[$i]}"
  [ -f "$path" ] || { echo "FC-ERROR CheckpointMissing $path is not on the node"; exit 1; }
  bytes="$(stat -c %s "$path")"
  [ "$bytes" -le "$limit" ] || { echo "FC-ERROR CheckpointTooLarge $path is $bytes bytes; one upload takes at most $limit"; exit 1; }
  # Hashed from the file as it is sent: the archive is not changed between the two (the kubelet wrote it once).
  sha="$(sha256sum "$path" | cut -d' ' -f1)"
  curl --fail --silent --show-error --retry 5 --retry-all-errors --retry-delay 1 \
    --header "Content-MD5: $(content_md5 "$path")" --upload-file "$path" --output /dev/null "${urls[$i]}" 2>"$work/curl.err" ||
    { echo "FC-ERROR UploadFailed $path: $(tail -c 300 "$work/curl.err")"; exit 1; }
  echo "FC-RESULT checkpoint-$i sha256=$sha bytes=$bytes"
done

# Archives of this pod that are not the ones just sent: an interrupted attempt's, or another tool's.
dir="$(dirname "${paths[0]}")"
n=0
for other in "$dir/$FC_CHECKPOINT_PREFIX"*.tar; do
  [ -f "$other" ] || continue
  case " ${paths[*]} " in *" $other "*) continue ;; esac
  echo "FC-RESULT leftover-$n path=$other"
  n=$((n + 1))
done
exit 0
