#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh. Stop dqd first; start it again afterwards.
#
#   DATABASE_URL=postgresql://… DATA_PATH=/data scripts/restore.sh /backups/dqd-backup-20250101T021700Z
#
# 1. Verifies every file against SHA256SUMS (and the manifest's list) before it changes anything.
# 2. Database (into the one this environment names, like dqd itself: DATABASE_URL, or DATA_PATH/dqd.db):
#    PostgreSQL: pg_restore --clean --if-exists --no-owner --no-privileges in one transaction, into an
#    existing database (a new empty one, or the one to roll back); all or nothing.
#    SQLite: the file replaced; the previous one (with its -wal/-shm) moved to DATA_PATH/pre-restore-<time>/.
# 3. DATA_PATH/results replaced; the previous one moved to DATA_PATH/pre-restore-<time>/.
# 4. Models into MODEL_PATH and config into CONFIG_DIR, only when those are set (extracted over them).
# A backup of one database kind restores into the same kind only.
set -euo pipefail

usage() { echo "usage: $0 BACKUP_DIR   (env: DATABASE_URL DATA_PATH MODEL_PATH CONFIG_DIR)" >&2; exit 2; }
die() { echo "restore: error: $*" >&2; exit 1; }
log() { echo "restore: $*" >&2; }

[[ $# -eq 1 && -n "$1" && "$1" != -* ]] || usage
src="$1"
data_path="${DATA_PATH:-./data}"
model_path="${MODEL_PATH:-}"
config_dir="${CONFIG_DIR:-}"

# shellcheck source=dqd-backup-lib.sh
source "$(dirname "$0")/dqd-backup-lib.sh"

manifest() { sed -n "s/^$1=//p" "$src/MANIFEST" | head -n 1; }

# --- 1. verify -------------------------------------------------------------------------------------------
[[ -d "$src" ]] || die "$src is not a directory"
[[ -f "$src/SHA256SUMS" && -f "$src/MANIFEST" ]] || die "$src is not a dqd backup (no SHA256SUMS/MANIFEST)"
[[ "$(manifest format)" == "dqd-backup/1" ]] || die "$src/MANIFEST: unknown format '$(manifest format)'"
(cd "$src" && sha256 -c --quiet SHA256SUMS) >&2 || die "checksums do not match: $src is damaged; nothing was changed"
read -r -a files <<< "$(manifest files)"
for f in MANIFEST "${files[@]}"; do
  grep -Eq "^[0-9a-f]{64}  \\*?$f\$" "$src/SHA256SUMS" || die "$f is not covered by SHA256SUMS; nothing was changed"
done
has() { [[ " ${files[*]} " == *" $1 "* ]]; }
log "verified $src ($(manifest created_at): ${files[*]})"

# --- where to ----------------------------------------------------------------------------------------------
database_target "restore into"
[[ "$(manifest database_kind)" == "$db_kind" ]] \
  || die "the backup holds a $(manifest database_kind) database, the target is $db_kind; nothing was changed"
if [[ "$db_kind" == postgresql ]]; then
  has database.pgdump || die "the backup has no database.pgdump"
  command -v pg_restore >/dev/null || die "pg_restore is not installed"
else
  has database.sqlite3 || die "the backup has no database.sqlite3"
fi

mkdir -p "$data_path"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
aside="$data_path/pre-restore-$stamp"
move_aside() {  # move_aside PATH...: keep what a restore replaces
  local p
  for p in "$@"; do
    if [[ -e "$p" ]]; then
      mkdir -p "$aside"
      mv -- "$p" "$aside/"
    fi
  done
}

# --- 2. database -------------------------------------------------------------------------------------------
if [[ "$db_kind" == postgresql ]]; then
  libpq_url "$db_url"
  log "restoring the database into $PG_URL"
  PGPASSWORD="$PG_PASSWORD" pg_restore --clean --if-exists --no-owner --no-privileges --single-transaction \
    --exit-on-error --dbname="$PG_URL" "$src/database.pgdump" || die "pg_restore failed (the database is unchanged)"
else
  mkdir -p "$(dirname "$db_file")"
  tmp="$db_file.restore-$stamp"
  cp -- "$src/database.sqlite3" "$tmp"
  move_aside "$db_file" "$db_file-wal" "$db_file-shm" "$db_file-journal"
  mv -- "$tmp" "$db_file"
  log "restored the SQLite database to $db_file"
fi

# --- 3. results --------------------------------------------------------------------------------------------
if has results.tar.gz; then
  move_aside "$data_path/results"
  tar -xzf "$src/results.tar.gz" -C "$data_path"
  log "restored $data_path/results"
fi

# --- 4. models, config ---------------------------------------------------------------------------------------
if [[ -n "$model_path" ]] && has models.tar.gz; then
  mkdir -p "$model_path"
  tar -xzf "$src/models.tar.gz" -C "$model_path"
  log "restored the models into $model_path"
fi
if [[ -n "$config_dir" ]] && has config.tar.gz; then
  mkdir -p "$config_dir"
  tar -xzf "$src/config.tar.gz" -C "$config_dir"
  log "restored the config into $config_dir"
fi

[[ -d "$aside" ]] && log "what the restore replaced is in $aside (delete it when all is well)"
abs_data="$(cd "$data_path" && pwd)"
if [[ "$(manifest data_path)" != "$abs_data" ]]; then
  log "warning: the backup was made with DATA_PATH=$(manifest data_path), this is $abs_data: stored jobs name"
  log "         their findings files under the old path; GetJob answers, but their findings_path is stale"
fi
log "done"
