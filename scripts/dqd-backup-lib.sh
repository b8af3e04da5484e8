# Shared by backup.sh and restore.sh (sourced, not run): checksums and where DATABASE_URL points.
# The caller defines die() and sets data_path. In the image this file sits beside dqd-backup/dqd-restore.

sha256() {
  if command -v sha256sum >/dev/null; then sha256sum "$@"; else shasum -a 256 "$@"; fi
}

# "postgresql+psycopg://u:p%40ss@h:5432/db?sslmode=require" -> PG_URL without the password, PG_PASSWORD
libpq_url() {
  local rest authority path="" userinfo hostport user password=""
  rest="${1#*://}"
  authority="${rest%%/*}"
  [[ "$rest" == */* ]] && path="/${rest#*/}"
  if [[ "$authority" == *@* ]]; then
    userinfo="${authority%@*}"
    hostport="${authority##*@}"
    user="${userinfo%%:*}"
    [[ "$userinfo" == *:* ]] && password="${userinfo#*:}"
    PG_URL="postgresql://${user}@${hostport}${path}"
  else
    PG_URL="postgresql://${authority}${path}"
  fi
  PG_PASSWORD="$(printf '%b' "${password//%/\\x}")"   # percent-decoding
}

# sqlite:///relative.db, sqlite:////abs/path.db (SQLAlchemy) -> the file path
sqlite_path() {
  local p="${1#*://}"
  p="${p#/}"
  p="${p%%\?*}"
  [[ -n "$p" && "$p" != ":memory:" ]] || die "DATABASE_URL=$1 is an in-memory database: nothing to $2"
  printf '%s' "$p"
}

# The database this environment names, like dqd itself: sets db_url, db_kind (postgresql|sqlite), db_file.
# $1: what the caller does with it, for messages ("back up", "restore into").
database_target() {
  db_url="${DATABASE_URL:-}"
  case "$db_url" in
    "") db_kind=sqlite; db_file="$data_path/dqd.db" ;;
    postgres://*|postgresql://*|postgres+*://*|postgresql+*://*) db_kind=postgresql ;;
    sqlite://*|sqlite+*://*) db_kind=sqlite; db_file="$(sqlite_path "$db_url" "$1")" ;;
    *) die "DATABASE_URL has a scheme this script cannot $1 (PostgreSQL or SQLite only)" ;;
  esac
}
