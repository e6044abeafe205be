#!/usr/bin/env bash
# Installs the system packages the local stack needs, when missing (Debian/Ubuntu, as root).
# Idempotent: does nothing on a machine that has them. `runstream up` names anything missing
# with the command to fix it, so on a laptop without root you can install them yourself.
set -euo pipefail

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
[ -x /usr/lib/postgresql/15/bin/pg_ctl ] || need+=(postgresql-15 postgresql-contrib)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "runstream: missing system packages: ${need[*]}" >&2
  echo "runstream: install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "runstream: installing ${need[*]} with apt-get…" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
