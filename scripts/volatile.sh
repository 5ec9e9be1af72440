#!/bin/bash
# forensic-capture on-instance script: volatile data triage and kernel symbol material.
#
# Runs through SSM Run Command (AWS-RunShellScript) before the memory image, because this data changes
# fastest. Everything is staged in /dev/shm (memory), never on the instance's disks. The controller prepends:
#   FC_VOLATILE_URL  presigned PUT for volatile.tar.gz
#   FC_SYMBOLS_URL   presigned PUT for symbols.tar.gz
# and, when the capture's target is a pod on this node:
#   FC_POD_UID        the pod's UID (its cgroups are named after it)
#   FC_CONTAINER_IDS  its containers' runtime IDs, space separated (without the containerd:// prefix)
# Prints "FC-RESULT volatile sha256=<hex> bytes=<n>" and "FC-RESULT symbols sha256=<hex> bytes=<n>" on
# success, "FC-ERROR <Reason> <detail>" on failure. A collector that fails is recorded in index.json with its
# exit code; it does not stop the others.
# AWS-RunShellScript may start the script with sh; everything below needs bash.
if [ -z "${BASH_VERSION:-}" ]; then exec /bin/bash "$0" "$@"; fi
set -uo pipefail
umask 077

: "${FC_VOLATILE_URL:?}" "${FC_SYMBOLS_URL:?}"
work="$(mktemp -d /dev/shm/forensic-capture.XXXXXX)" || { echo "FC-ERROR StagingFailed cannot create a directory in /dev/shm"; exit 1; }
trap 'rm -rf "$work"' EXIT
out="$work/volatile"
mkdir -p "$out"
index_entries=()

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Runs one collector into a section file and records it in the index.
section() { # file, command...
  local file="$1"; shift
  mkdir -p "$(dirname "$out/$file")"
  local started; started="$(now)"
  "$@" >"$out/$file" 2>"$out/$file.stderr"
  local code=$?
  [ -s "$out/$file.stderr" ] || rm -f "$out/$file.stderr"
  local bytes sha
  bytes="$(stat -c %s "$out/$file")"
  sha="$(sha256sum "$out/$file" | cut -d' ' -f1)"
  index_entries+=("{\"section\":\"$file\",\"exitCode\":$code,\"bytes\":$bytes,\"sha256\":\"$sha\",\"collectedAt\":\"$started\"}")
}

processes() {
  ps -eww -o pid,ppid,uid,user,lstart,stat,etimes,args
}

# PID, executable path (as the kernel reports it, "(deleted)" included) and NUL-separated argv.
process_executables() {
  local dir pid exe cmdline
  printf 'pid\texe\tcmdline\n'
  for dir in /proc/[0-9]*; do
    pid="${dir#/proc/}"
    exe="$(readlink "$dir/exe" 2>/dev/null || echo '?')"
    cmdline="$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null)"
    printf '%s\t%s\t%s\n' "$pid" "$exe" "$cmdline"
  done
}

deleted_executables() {
  local dir exe
  for dir in /proc/[0-9]*; do
    exe="$(readlink "$dir/exe" 2>/dev/null)" || continue
    case "$exe" in *" (deleted)") printf '%s\t%s\n' "${dir#/proc/}" "$exe" ;; esac
  done
}

sockets() {
  if command -v ss >/dev/null; then ss -tuanpeo; else cat /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6; fi
}

listening_open_files() {
  local pids
  pids="$(ss -tulnpH 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -un | paste -sd, -)"
  [ -n "$pids" ] || { echo "no listening processes found"; return 0; }
  if command -v lsof >/dev/null; then
    lsof -nP -p "$pids"
  else
    local pid
    for pid in ${pids//,/ }; do echo "== $pid"; ls -l "/proc/$pid/fd"; done
  fi
}

logins() {
  echo "== who"; who -a 2>&1
  echo "== w"; w 2>&1
  echo "== last"; last -Fxwn 200 2>&1
  echo "== lastlog"; lastlog 2>&1
}

kernel_modules() {
  cat /proc/modules
  echo "== tainted: $(cat /proc/sys/kernel/tainted 2>/dev/null)"
}

recent_temp_files() {
  find /tmp /var/tmp /dev/shm -xdev -type f -mtime -14 -not -path "$work/*" \
    -printf '%TY-%Tm-%TdT%TH:%TM:%TS\t%s\t%u\t%m\t%p\n' 2>/dev/null | sort
}

# Copies files (if present) under a section directory, keeping their paths.
copy_files() { # section dir, paths...
  local dest="$out/$1" path; shift
  for path in "$@"; do
    [ -f "$path" ] || continue
    mkdir -p "$dest$(dirname "$path")"
    cp -p "$path" "$dest$path" 2>/dev/null
  done
  find "$dest" -type f 2>/dev/null | sed "s|^$dest||" | sort
}

persistence() {
  shopt -s nullglob
  copy_files persistence /etc/crontab /etc/cron.d/* /etc/cron.hourly/* /etc/cron.daily/* /etc/cron.weekly/* \
    /etc/cron.monthly/* /var/spool/cron/* /var/spool/cron/crontabs/* /etc/anacrontab /etc/rc.local \
    /etc/ld.so.preload /etc/systemd/system/*.service /etc/systemd/system/*.timer /etc/systemd/system/*/*.service \
    /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys \
    /root/.config/systemd/user/* /home/*/.config/systemd/user/* /etc/profile.d/*
  echo "== systemd units"
  systemctl list-unit-files --no-pager --no-legend 2>&1 | head -2000
}

shell_histories() {
  shopt -s nullglob
  copy_files shell-histories /root/.bash_history /root/.zsh_history /root/.sh_history /root/.python_history \
    /home/*/.bash_history /home/*/.zsh_history /home/*/.sh_history /home/*/.python_history
}

# Pod targets. Every process whose cgroup names the pod (cgroupfs writes pod<uid>, the systemd driver
# pod<uid with underscores>), with the container it belongs to.
pod_processes() {
  local uid_us="${FC_POD_UID//-/_}" dir cg id container
  printf 'pid\tcontainer\tcomm\texe\tcgroup\n'
  for dir in /proc/[0-9]*; do
    cg="$(cat "$dir/cgroup" 2>/dev/null)" || continue
    case "$cg" in *"pod$FC_POD_UID"* | *"pod$uid_us"*) ;; *) continue ;; esac
    container="-"
    for id in ${FC_CONTAINER_IDS:-}; do
      case "$cg" in *"$id"*) container="$id" ;; esac
    done
    printf '%s\t%s\t%s\t%s\t%s\n' "${dir#/proc/}" "$container" "$(cat "$dir/comm" 2>/dev/null)" \
      "$(readlink "$dir/exe" 2>/dev/null || echo '?')" "$(head -n 1 <<<"$cg")"
  done
}

# The pod's cgroup directories, each with the processes in it.
pod_cgroups() {
  local uid_us="${FC_POD_UID//-/_}" dir
  find /sys/fs/cgroup -type d \( -name "*pod$FC_POD_UID*" -o -name "*pod$uid_us*" \) 2>/dev/null | sort |
    while read -r dir; do
      printf '%s\t%s\n' "$dir" "$(tr '\n' ' ' <"$dir/cgroup.procs" 2>/dev/null)"
    done
}

# Each container's writable layer: the runtime mounts the container's root as an overlay whose upperdir holds
# everything the container wrote or changed (read from PID 1's mount table: the host's, not this shell's).
container_layers() {
  local id upper
  for id in ${FC_CONTAINER_IDS:-}; do
    upper="$(awk -v id="$id" '$5 ~ ("/" id "/rootfs$") { for (i = 1; i <= NF; i++) if ($i == "-") { n = split($(i + 3), o, ","); for (j = 1; j <= n; j++) if (o[j] ~ /^upperdir=/) print substr(o[j], 10) } }' /proc/1/mountinfo | head -n 1)"
    if [ -z "$upper" ]; then
      printf '# container %s: no overlay root mounted (not running, or not an overlay snapshotter)\n' "$id"
      continue
    fi
    printf '# container %s writable layer %s\n' "$id" "$upper"
    printf 'type\tmode\towner\tbytes\tmodified\tpath\n'
    find "$upper" -xdev -mindepth 1 -printf '%y\t%m\t%U:%G\t%s\t%TY-%Tm-%TdT%TH:%TM:%.2TSZ\t%P\n' 2>/dev/null | sort -t "$(printf '\t')" -k6
  done
}

section processes.txt processes
section process-executables.tsv process_executables
section deleted-executables.tsv deleted_executables
section sockets.txt sockets
section listening-open-files.txt listening_open_files
section kernel-modules.txt kernel_modules
section logins.txt logins
section users.txt getent passwd
section persistence.txt persistence
section recent-temp-files.tsv recent_temp_files
section shell-histories.txt shell_histories
if [ -n "${FC_POD_UID:-}" ]; then
  section pod/processes.tsv pod_processes
  section pod/cgroups.tsv pod_cgroups
  section pod/container-layers.tsv container_layers
fi

{
  printf '{"format":"forensic-capture-volatile/1","host":"%s","collectedAt":"%s","sections":[' "$(hostname)" "$(now)"
  (IFS=,; printf '%s' "${index_entries[*]}")
  printf ']}\n'
} >"$out/index.json"

symbols="$work/symbols"
mkdir -p "$symbols"
uname -a >"$symbols/uname.txt"
# The kernel banner, byte for byte as linux_banner in memory: Volatility identifies the kernel by it, and the
# controller puts it in the symbols it builds for analysis.
cat /proc/version >"$symbols/version"
cp /etc/os-release "$symbols/os-release" 2>/dev/null
cp "/boot/System.map-$(uname -r)" "$symbols/" 2>/dev/null
cp /sys/kernel/btf/vmlinux "$symbols/btf-vmlinux" 2>/dev/null
cat /proc/kallsyms >"$symbols/kallsyms" 2>/dev/null

# Base64 MD5 of a file, for the Content-MD5 header: S3 verifies it on arrival even though the presigned URL
# does not sign it (S3 refuses unsigned x-amz-checksum-* headers on presigned requests, and the SHA-256 is
# not known when the URL is signed), and Object Lock buckets require it on every PUT.
content_md5() { # file
  printf '%b' "$(md5sum "$1" | cut -c1-32 | sed 's/../\\x&/g')" | base64
}

# Packs a directory and PUTs it to a presigned URL; prints its FC-RESULT line.
upload() { # name, directory, url
  local archive="$work/$1.tar.gz"
  tar -czf "$archive" -C "$(dirname "$2")" "$(basename "$2")" || { echo "FC-ERROR ArchiveFailed $1"; exit 1; }
  curl --fail --silent --show-error --retry 5 --retry-all-errors --retry-delay 1 \
    --header "Content-MD5: $(content_md5 "$archive")" --upload-file "$archive" --output /dev/null "$3" 2>"$work/curl.err" ||
    { echo "FC-ERROR UploadFailed $1: $(tail -c 300 "$work/curl.err")"; exit 1; }
  echo "FC-RESULT $1 sha256=$(sha256sum "$archive" | cut -d' ' -f1) bytes=$(stat -c %s "$archive")"
}

upload volatile "$out" "$FC_VOLATILE_URL"
upload symbols "$symbols" "$FC_SYMBOLS_URL"
