#!/usr/bin/env bash
# Installs the system packages the local stack needs, when missing (Debian/Ubuntu, as root).
# Idempotent: does nothing on a machine that has them. `runstream up` names anything missing
# with the command to fix it, so on a laptop without root you can install them yourself.
# Debian's chromium is for the studio's browser tests only (tests/browser/, driven by
# Playwright with executable_path): installed with the rest when root, otherwise only
# named — those tests then skip saying why, and nothing else needs it.
set -euo pipefail

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
[ -x /usr/lib/postgresql/15/bin/pg_ctl ] || need+=(postgresql-15 postgresql-contrib)
tests_need=()
command -v chromium >/dev/null 2>&1 || tests_need+=(chromium)

if [ ${#need[@]} -eq 0 ] && [ ${#tests_need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  if [ ${#tests_need[@]} -ne 0 ]; then
    echo "runstream: the browser tests need: ${tests_need[*]}" \
      "(sudo apt-get install -y ${tests_need[*]}); they skip without it" >&2
  fi
  if [ ${#need[@]} -eq 0 ]; then
    exit 0
  fi
  echo "runstream: missing system packages: ${need[*]}" >&2
  echo "runstream: install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
need+=("${tests_need[@]}")
echo "runstream: installing ${need[*]} with apt-get…" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
