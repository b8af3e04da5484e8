#!/usr/bin/env bash
# Back up a dqd deployment into DEST_DIR/dqd-backup-<UTC time>/ (restore with scripts/restore.sh).
#
#   DATABASE_URL=postgresql://… DATA_PATH=/data MODEL_PATH=/models scripts/backup.sh /backups
#
# What goes in (each part only when there is something to back up):
#   database.pgdump   pg_dump -Fc of DATABASE_URL (PostgreSQL; SQLAlchemy URLs such as
#                     postgresql+psycopg://… are turned into libpq's form, the password goes through
#                     PGPASSWORD, never the command line)
#   database.sqlite3  a consistent copy (SQLite's online backup) of the SQLite database: the file of a
#                     sqlite:/// DATABASE_URL, or DATA_PATH/dqd.db when DATABASE_URL is empty
#   results.tar.gz    DATA_PATH/results: the findings (Parquet) of persisted jobs
#   models.tar.gz     MODEL_PATH: the rules/models repository (unset: the rules bundled with dqd)
#   config.tar.gz     CONFIG_DIR, if set (e.g. /etc/dqd)
#   dqd-config.txt    `dqd config` (the settings in effect, passwords masked), where dqd (or DQD_BIN)
#                     is installed; DQD_BIN= (empty) skips it
#   MANIFEST          what was backed up, from where, when
#   SHA256SUMS        the checksums restore.sh verifies before it touches anything
# The backup is written under a .partial name and renamed when complete. Backups older than KEEP_DAYS
# days (default 7; 0 keeps all) are then deleted from DEST_DIR.
#
# Needs bash, tar, gzip, sha256sum (or shasum), find; pg_dump of at least the server's major version
# for PostgreSQL; python3 or sqlite3 for SQLite.
set -euo pipefail

usage() { echo "usage: $0 DEST_DIR   (env: DATABASE_URL DATA_PATH MODEL_PATH CONFIG_DIR KEEP_DAYS)" >&2; exit 2; }
die() { echo "backup: error: $*" >&2; exit 1; }
log() { echo "backup: $*" >&2; }

[[ $# -eq 1 && -n "$1" && "$1" != -* ]] || usage
dest="$1"
data_path="${DATA_PATH:-./data}"
model_path="${MODEL_PATH:-}"
config_dir="${CONFIG_DIR:-}"
keep_days="${KEEP_DAYS:-7}"
python="${PYTHON:-python3}"
[[ "$keep_days" =~ ^[0-9]+$ ]] || die "KEEP_DAYS=$keep_days is not a whole number of days"

# shellcheck source=dqd-backup-lib.sh
source "$(dirname "$0")/dqd-backup-lib.sh"

mask() { sed -E 's#(://[^:/@]*:)[^@/]*@#\1***@#g'; }

# --- where ---------------------------------------------------------------------------------------------
database_target "back up"

mkdir -p "$dest"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
name="dqd-backup-$stamp"
n=1
while [[ -e "$dest/$name" ]]; do name="dqd-backup-$stamp-$n"; n=$((n + 1)); done
work="$dest/.$name.partial"
mkdir "$work"
trap 'rm -rf "$work"' EXIT
files=()

# --- the database -------------------------------------------------------------------------------------
if [[ "$db_kind" == postgresql ]]; then
  command -v pg_dump >/dev/null || die "pg_dump is not installed (PostgreSQL client of the server's major version)"
  libpq_url "$db_url"
  log "dumping PostgreSQL $(printf '%s' "$PG_URL" | mask) ($(pg_dump --version))"
  PGPASSWORD="$PG_PASSWORD" pg_dump --format=custom --compress=6 --dbname="$PG_URL" --file="$work/database.pgdump" \
    || die "pg_dump failed"
  files+=(database.pgdump)
  db_source="$PG_URL"
else
  [[ -f "$db_file" ]] || die "no SQLite database at $db_file (set DATA_PATH, or DATABASE_URL for PostgreSQL)"
  log "copying SQLite $db_file"
  if command -v "$python" >/dev/null; then
    "$python" - "$db_file" "$work/database.sqlite3" <<'PY'
import sqlite3, sys
src = sqlite3.connect(sys.argv[1], timeout=30)
dst = sqlite3.connect(sys.argv[2])
with dst:
    src.backup(dst)                                  # one step: a consistent snapshot, writers or not
dst.execute("PRAGMA journal_mode=DELETE")            # a self-contained file, no -wal beside it
check = dst.execute("PRAGMA integrity_check").fetchone()[0]
dst.close(); src.close()
if check != "ok":
    sys.exit(f"integrity check of the copy failed: {check}")
PY
  elif command -v sqlite3 >/dev/null; then
    sqlite3 "$db_file" ".timeout 30000" ".backup '$work/database.sqlite3'"
  else
    die "neither $python nor sqlite3 is installed: cannot copy the SQLite database safely"
  fi
  files+=(database.sqlite3)
  db_source="$(cd "$(dirname "$db_file")" && pwd)/$(basename "$db_file")"
fi

# --- files ---------------------------------------------------------------------------------------------
if [[ -d "$data_path/results" ]]; then
  log "archiving $data_path/results"
  tar -czf "$work/results.tar.gz" -C "$data_path" results
  files+=(results.tar.gz)
fi
if [[ -n "$model_path" ]]; then
  [[ -d "$model_path" ]] || die "MODEL_PATH=$model_path is not a directory"
  log "archiving models from $model_path"
  tar -czf "$work/models.tar.gz" -C "$model_path" .
  files+=(models.tar.gz)
fi
if [[ -n "$config_dir" ]]; then
  [[ -d "$config_dir" ]] || die "CONFIG_DIR=$config_dir is not a directory"
  tar -czf "$work/config.tar.gz" -C "$config_dir" .
  files+=(config.tar.gz)
fi
dqd_bin="${DQD_BIN-dqd}"   # DQD_BIN= (empty) skips the settings dump
if command -v "$dqd_bin" >/dev/null; then
  if "$dqd_bin" config 2>/dev/null | mask > "$work/dqd-config.txt"; then
    files+=(dqd-config.txt)
  else
    rm -f "$work/dqd-config.txt"
    log "warning: \`$dqd_bin config\` failed; the settings are not in this backup"
  fi
fi

# --- manifest, checksums, retention ----------------------------------------------------------------------
abs_data="$(cd "$data_path" 2>/dev/null && pwd || printf "%s" "$data_path")"
{
  echo "format=dqd-backup/1"
  echo "created_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host=$(hostname 2>/dev/null || echo unknown)"
  echo "database_kind=$db_kind"
  echo "database=$(printf '%s' "$db_source" | mask)"
  echo "data_path=$abs_data"
  echo "model_path=${model_path:+$(cd "$model_path" && pwd)}"
  echo "config_dir=${config_dir:+$(cd "$config_dir" && pwd)}"
  echo "files=${files[*]}"
} > "$work/MANIFEST"
(cd "$work" && sha256 MANIFEST "${files[@]}" > SHA256SUMS)
mv "$work" "$dest/$name"
trap - EXIT
log "done: $dest/$name (${files[*]})"

if (( keep_days > 0 )); then
  while IFS= read -r old; do
    log "removing $old (older than $keep_days days)"
    rm -rf -- "$old"
  done < <(find "$dest" -mindepth 1 -maxdepth 1 -type d \( -name 'dqd-backup-*' -o -name '.dqd-backup-*.partial' \) \
             ! -name "$name" -mmin "+$((keep_days * 1440))" -print)
fi
printf '%s\n' "$dest/$name"
