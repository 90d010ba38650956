#!/usr/bin/env bash
# Rehearse a slow cluster on one machine: runs a command inside a fresh network
# namespace whose loopback is shaped by tc's token-bucket filter, with Open MPI
# forced onto TCP over that loopback (no shared-memory transport), so every byte
# the ranks exchange crosses the shaped link.
#
#   scripts/shaped_net.sh --rate 10mbit -- keel launch -n 2 -- train ...
#   scripts/shaped_net.sh --rate none   -- ...   (same namespace and TCP path, unshaped)
#
# Needs root (ip netns, tc). The namespace is removed on exit. Rates use tc's
# syntax (100mbit, 10mbit, 1gbit). netem is not available on these machines, so
# only bandwidth is shaped (no added delay or loss); tbf's latency bounds the queue.
set -euo pipefail

rate="" burst="32kb" latency="50ms" name="keel-shaped-$$"
usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rate) rate="${2:?--rate needs a value}"; shift 2 ;;
    --burst) burst="${2:?--burst needs a value}"; shift 2 ;;
    --latency) latency="${2:?--latency needs a value}"; shift 2 ;;
    --name) name="${2:?--name needs a value}"; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "shaped_net.sh: unknown argument '$1' (expected --rate R [--burst B] [--latency L] -- command)" >&2; exit 2 ;;
  esac
done
[[ -n "$rate" ]] || { echo "shaped_net.sh: --rate is required (e.g. 10mbit, or none)" >&2; exit 2; }
[[ $# -gt 0 ]] || { echo "shaped_net.sh: no command given after --" >&2; exit 2; }
if [[ "$rate" != none && ! "$rate" =~ ^[0-9.]+([kmg]?bit|[kmg]?bps)$ ]]; then
  echo "shaped_net.sh: --rate '$rate' is not a tc rate such as 100mbit or 10mbit" >&2; exit 2
fi
for tool in ip tc; do
  command -v "$tool" >/dev/null || { echo "shaped_net.sh: '$tool' not found (install iproute2)" >&2; exit 1; }
done

ip netns add "$name"
trap 'ip netns del "$name" 2>/dev/null || true' EXIT
# Loopback's default 64 KiB MTU exceeds the token bucket's burst, and tbf drops
# every packet larger than its burst: lower the MTU (measured, see docs).
ip netns exec "$name" ip link set lo mtu 1500 up
if [[ "$rate" != none ]]; then
  ip netns exec "$name" tc qdisc add dev lo root tbf rate "$rate" burst "$burst" latency "$latency"
fi
echo "shaped_net.sh: namespace $name, loopback $(ip netns exec "$name" tc qdisc show dev lo | head -1)" >&2

# Open MPI reads these in every mpirun started below (keel launch included).
export OMPI_MCA_btl="tcp,self" OMPI_MCA_btl_tcp_if_include="lo" OMPI_MCA_oob_tcp_if_include="lo" \
  OMPI_MCA_pml="ob1" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set +e
ip netns exec "$name" "$@"
rc=$?
exit $rc
