#!/usr/bin/env bash
# Install sluice: binary, systemd unit, sysusers entry, default configuration,
# host tuning and documentation.
#
#   scripts/install.sh [--no-build]
#
# Environment:
#   DESTDIR     stage into this directory instead of / (for packaging and
#               tests). With DESTDIR set nothing on the live system changes:
#               no user is created and systemd is not told.
#   PREFIX      installation prefix, default /usr.
#   SLUICE_BIN  the binary to install, default target/release/sluice (built
#               with `cargo build --release --locked` when missing, unless
#               --no-build).
#
# An existing /etc/sluice/sluice.toml is never overwritten. The sysctl and
# limits files are ours and are replaced on upgrade: put local values in a
# later-sorting file such as /etc/sysctl.d/90-local.conf.
set -euo pipefail

# The header comment above is the help text.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

repo="$(cd "$(dirname "$0")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
PREFIX="${PREFIX:-/usr}"
case "$PREFIX" in
  /*) ;;
  *) echo "install.sh: PREFIX must be an absolute path, got '$PREFIX'" >&2; exit 2 ;;
esac
PREFIX="${PREFIX%/}"
bin="${SLUICE_BIN:-$repo/target/release/sluice}"

if [ ! -x "$bin" ]; then
  if [ "$build" = 1 ] && [ -z "${SLUICE_BIN:-}" ]; then
    echo "install.sh: $bin is missing; building it" >&2
    (cd "$repo" && cargo build --release --locked)
  else
    echo "install.sh: $bin is missing or not executable (build it with 'cargo build --release', or set SLUICE_BIN)" >&2
    exit 1
  fi
fi

root="$DESTDIR"
unitdir="$root$PREFIX/lib/systemd/system"
sysusersdir="$root$PREFIX/lib/sysusers.d"
docdir="$root$PREFIX/share/doc/sluice"

install -D -m 0755 "$bin" "$root$PREFIX/bin/sluice"

# The unit names /usr/bin/sluice; follow a different PREFIX.
install -d -m 0755 "$unitdir"
sed "s|/usr/bin/sluice|$PREFIX/bin/sluice|; s|/usr/share/doc/sluice|$PREFIX/share/doc/sluice|" \
  "$repo/systemd/sluice.service" >"$unitdir/sluice.service"
chmod 0644 "$unitdir/sluice.service"
install -D -m 0644 "$repo/systemd/sluice.sysusers" "$sysusersdir/sluice.conf"

install -d -m 0755 "$root/etc/sluice"
if [ -e "$root/etc/sluice/sluice.toml" ]; then
  echo "install.sh: keeping the existing $root/etc/sluice/sluice.toml" >&2
else
  install -m 0644 "$repo/config/sluice.toml" "$root/etc/sluice/sluice.toml"
fi

install -D -m 0644 "$repo/tuning/sysctl-sluice.conf" "$root/etc/sysctl.d/60-sluice.conf"
install -D -m 0644 "$repo/tuning/limits-sluice.conf" "$root/etc/security/limits.d/60-sluice.conf"

install -d -m 0755 "$docdir"
install -m 0644 "$repo/README.md" "$repo"/docs/*.md "$docdir/"
install -m 0644 "$repo/config/sluice.toml" "$docdir/sluice.toml.example"

if [ -n "$DESTDIR" ]; then
  echo "install.sh: staged into $DESTDIR (the live system was not changed)"
  exit 0
fi

# Live install: create the user and tell systemd, but leave enabling,
# starting and applying kernel settings to the operator.
if command -v systemd-sysusers >/dev/null; then
  systemd-sysusers "$sysusersdir/sluice.conf"
elif ! getent passwd sluice >/dev/null; then
  useradd --system --home-dir /var/lib/sluice --no-create-home --shell /usr/sbin/nologin \
    --user-group --comment "Sluice outbound SMTP appliance" sluice
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
cat <<MSG
install.sh: installed $PREFIX/bin/sluice. Next:
  sluice check-config /etc/sluice/sluice.toml
  sysctl --system                       # apply /etc/sysctl.d/60-sluice.conf
  sluice tune --check
  systemctl enable --now sluice
MSG
