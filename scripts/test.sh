#!/usr/bin/env bash
# Runs weir's whole test suite on a fresh Debian machine.
#
# Installs what the tests need from Debian when it is missing (a C
# toolchain for crates that build C; Prometheus and promtool, which the
# metrics tests run against weir; etcd and dnsmasq, the registries the
# discovery tests start on loopback ports of their own; apache2-utils, whose
# `htpasswd -B` makes the basic_auth tests' password file), then runs every
# test with the debug profile. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cc >/dev/null || need+=(build-essential)
command -v curl >/dev/null || need+=(curl)
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
command -v etcd >/dev/null || need+=(etcd-server)
command -v dnsmasq >/dev/null || [[ -x /usr/sbin/dnsmasq ]] || need+=(dnsmasq-base)
command -v htpasswd >/dev/null || need+=(apache2-utils)
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need[@]}"
  else
    echo "missing: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
fi

exec cargo test --locked "$@"
