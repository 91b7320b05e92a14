#!/usr/bin/env bash
# A consistent copy of a Lockstep data directory while lockstepd keeps running
# (docs/operations.md, "Back up and restore").
#
#   tools/backup.sh DATA_DIR DEST
#
# DEST must not exist and must be on the same filesystem as DATA_DIR: the copy is made of hard
# links (instant, no extra space until the server deletes or replaces files) to the sealed log
# segments and the checkpoints, plus a real copy of the newest segment, the only file the server
# still writes. Archive DEST where you like (tar --sparse, rsync), then delete it.
#
# Why it is consistent: segments are linked, then checkpoints, then segments again. A link keeps
# a segment even if retention deletes it meanwhile, so every checkpoint copied in the middle step
# finds the log it needs: the segments from before it were linked first, the ones written since
# are linked last. The newest segment is copied while it may be written: it can end in a torn
# batch, which recovery cuts, like after a crash. `lockstep verify` then checks the copy; in the
# rare case that the server made and deleted a whole segment between the first and last step
# (tiny segments, constant checkpoints), verify sees the gap and the copy is made again.
#
# Environment: LOCKSTEP (the lockstep CLI; default: the Release build beside this script, else
# `lockstep` on the PATH);
# LOCKSTEP_BACKUP_PAUSE_S (tests only: a pause between the steps, to let the server roll and
# delete segments in between).
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: tools/backup.sh DATA_DIR DEST" >&2
  exit 2
fi
data=$1
dest=$2
lockstep=${LOCKSTEP:-$(dirname "$0")/../build/release/tools/lockstep}
if [[ -n ${LOCKSTEP:-} ]]; then
  lockstep=$(command -v "$LOCKSTEP" || true)  # a path, or a name on the PATH
elif [[ ! -x $lockstep ]]; then
  lockstep=$(command -v lockstep || true)
fi
[[ -d $data/log ]] || { echo "backup: $data is not a Lockstep data directory (no log/)" >&2; exit 2; }
[[ ! -e $dest ]] || { echo "backup: $dest exists; give a new directory" >&2; exit 2; }
[[ -n $lockstep && -x $lockstep ]] || { echo "backup: no lockstep CLI (set LOCKSTEP)" >&2; exit 2; }

# Links every file of DIR matching PATTERN into DEST_DIR that is not there yet. A file deleted
# between the listing and the link is skipped (retention removed it; the checkpoints cover it).
link_new() {  # link_new DIR PATTERN DEST_DIR
  local file name
  for file in "$1"/$2; do
    [[ -e $file ]] || continue
    name=${file##*/}
    [[ -e $3/$name ]] && continue
    if ! ln "$file" "$3/$name" 2>/dev/null && [[ -e $file ]]; then
      echo "backup: cannot link $file into $3: DEST must be on the same filesystem, and the" \
        "script run by the data directory's owner (or root: protected hard links)" >&2
      return 1
    fi
  done
}

# One try; any failed step fails it (set -e does not reach into a function run as a condition).
attempt() {
  local pause=${LOCKSTEP_BACKUP_PAUSE_S:-0} newest size copied
  mkdir -p "$dest/log" "$dest/checkpoints" || return 1
  link_new "$data/log" '*.seg' "$dest/log" || return 1
  sleep "$pause"
  link_new "$data/checkpoints" '*.ckpt' "$dest/checkpoints" || return 1
  sleep "$pause"
  link_new "$data/log" '*.seg' "$dest/log" || return 1
  sleep "$pause"
  newest=$(find "$dest/log" -name '*.seg' -printf '%f\n' | sort | tail -n 1)
  [[ -n $newest ]] || { echo "backup: $data/log holds no segment" >&2; return 1; }
  # A copy of its own: the server may still append to the newest segment. Segments are
  # preallocated to their full size, so a complete copy has the same size (a short one, from a
  # full disk say, must not pass for a torn tail).
  cp --sparse=always "$dest/log/$newest" "$dest/log/$newest.copy" || return 1
  size=$(stat -c %s "$dest/log/$newest") && copied=$(stat -c %s "$dest/log/$newest.copy") || return 1
  [[ $size == "$copied" ]] || { echo "backup: copied $copied of $size bytes of $newest" >&2; return 1; }
  mv -f "$dest/log/$newest.copy" "$dest/log/$newest" || return 1
  sync -f "$dest/log" || return 1
  "$lockstep" verify "$dest"
}

for try in 1 2 3; do
  if attempt; then
    echo "backup: $dest holds a consistent copy of $data"
    exit 0
  fi
  echo "backup: attempt $try did not verify; trying again" >&2
  rm -rf "$dest"
done
echo "backup: no consistent copy after 3 attempts" >&2
exit 1
