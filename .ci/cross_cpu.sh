#!/usr/bin/env bash
# CI step: the bundled fp32 and int8 models give bit-identical vectors on every CPU kind.
#
#   bash .ci/cross_cpu.sh [--int8 M.int8.onnx] [--fp32 M.onnx] [--only fp32|int8] [--expect-fail]
#
# Runs bench/cross_cpu.py on its fixed sentences natively, under `qemu-x86_64 -cpu Haswell`
# (AVX2, no VNNI: the canary must show the saturating vpmaddubsw kernel ran) and in an arm64
# Debian root under qemu-aarch64 with cortex-a72 (NEON) and neoverse-n1 (dot product; the canary
# must show an exact kernel), then requires every array to be bit-identical to the native run's.
# --expect-fail inverts the verdict (used to prove that a model with 8-bit weights is caught).
#
# Needs root (apt-get, chroot) and the network to Debian and PyPI on the first run; run it with
# the python whose numpy/onnxruntime it should test (CI: the activated .venv-ci). The arm64 root
# and the wheels are kept in build/cross-cpu/ inside the clone (git-ignored) and reused.
set -euo pipefail
cd "$(dirname "$0")/.."

models=() only=() expect_fail=0
while [ $# -gt 0 ]; do
  case "$1" in
    --int8|--fp32) models+=("$1" "$(realpath "$2")"); shift 2 ;;
    --only) only=(--only "$2"); shift 2 ;;
    --expect-fail) expect_fail=1; shift ;;
    *) echo "usage: $0 [--int8 M.onnx] [--fp32 M.onnx] [--only fp32|int8] [--expect-fail]" >&2
       exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  echo "cross-cpu: needs root (apt-get, debootstrap, chroot)" >&2; exit 1
fi
start=$SECONDS
work=build/cross-cpu root=build/cross-cpu/arm64
run=run-$$ out=build/cross-cpu/run-$$  # this invocation's own: two may run at once
python=$(python -c 'import sys; print(sys.executable)') chroot=$(command -v chroot)
export PYTHONPATH="$PWD/runtime${PYTHONPATH:+:$PYTHONPATH}" ELMO_EDGE_PREPARED=0
mkdir -p "$out"

if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq qemu-user-static debootstrap >/dev/null
fi

# --- the arm64 root: debootstrap's first stage only; its packages unpacked natively ----------
if [ ! -x "$root/usr/bin/python3" ]; then
  rm -rf "$root"
  debootstrap --arch=arm64 --foreign --variant=minbase --include=python3 bookworm "$root" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -5 "$work/debootstrap.log" >&2; exit 1; }
  # the emulated second stage takes minutes; unpacking the same packages natively seconds
  for deb in "$root"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$root"; done
  rm -f "$root"/var/cache/apt/archives/*.deb
fi
# aarch64 wheels of exactly the numpy / onnxruntime / onnx this python has, for CPython 3.11
# (bookworm's python3)
pins=$("$python" - <<'PY'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in ("numpy", "onnxruntime", "onnx", "click")))
PY
)
if [ "$(cat "$work/site.pins" 2>/dev/null)" != "$pins" ]; then
  rm -rf "$root/opt/site" "$work/wheels"
  # shellcheck disable=SC2086
  "$python" -m pip download -q -d "$work/wheels" --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 $pins
  "$python" -m pip install -q --no-deps --target "$root/opt/site" --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    "$work"/wheels/*.whl
  echo "$pins" >"$work/site.pins"
fi
cp /usr/bin/qemu-aarch64-static "$root/usr/bin/"
mkdir -p "$root/opt/$run/in" "$root/opt/$run/out"
trap 'rm -rf "${root:?}/opt/$run"' EXIT
cp -r runtime bench/cross_cpu.py "$root/opt/$run/"
arm_models=()
for ((i = 0; i < ${#models[@]}; i += 2)); do  # the models given, copied into the root
  cp "${models[i + 1]}" "$root/opt/$run/in/${models[i]#--}.onnx"
  arm_models+=("${models[i]}" "/opt/$run/in/${models[i]#--}.onnx")
done
echo "cross-cpu: arm64 root ready ($((SECONDS - start)) s)"

# --- the runs: native, emulated Haswell, emulated ARM cores (two at a time on two cores) ---
# qemu's TCG warns about CPU flags it leaves out (pcid, x2apic, ...): irrelevant in user mode
quiet() { grep -v "TCG doesn't support requested feature" >&2 || true; }
arm() {  # arm CPU LABEL: no /proc or /sys in the root (onnxruntime reads HWCAP instead)
  env -i PATH=/usr/bin:/bin HOME=/tmp PYTHONPATH="/opt/site:/opt/$run/runtime" ELMO_EDGE_PREPARED=0 \
    "$chroot" "$root" /usr/bin/qemu-aarch64-static -cpu "$1" /usr/bin/python3 \
    "/opt/$run/cross_cpu.py" run "/opt/$run/out/$2.npz" --label "$2" "${arm_models[@]}" "${only[@]}" \
    2> >(grep -v -e "^Error in cpuinfo" -e "cpuid_info warning" -e "cpuinfo_initialize failed" \
              -e "telemetry" >&2 || true)
}
"$python" bench/cross_cpu.py run "$out/native.npz" --label native --alone "${models[@]}" "${only[@]}"
qemu-x86_64-static -cpu Haswell "$python" bench/cross_cpu.py run "$out/haswell.npz" \
  --label haswell "${models[@]}" "${only[@]}" 2> >(quiet) &
x86=$!
# an ARM run that fails leaves no emulator behind
trap 'kill "$x86" 2>/dev/null || true; rm -rf "${root:?}/opt/$run"' EXIT
arm cortex-a72 cortex-a72
wait "$x86"
arm neoverse-n1 neoverse-n1
cp "$root/opt/$run"/out/*.npz "$out/"

set +e
"$python" bench/cross_cpu.py compare "$out/native.npz" "$out/haswell.npz" \
  "$out/cortex-a72.npz" "$out/neoverse-n1.npz" \
  --expect-saturated haswell --expect-exact cortex-a72 --expect-exact neoverse-n1
verdict=$?
set -e
echo "cross-cpu: $((SECONDS - start)) s in all"
if [ "$expect_fail" = 1 ]; then
  if [ "$verdict" = 0 ]; then
    echo "cross-cpu: --expect-fail, but every run gave the same vectors" >&2; exit 1
  fi
  echo "cross-cpu: the difference was caught, as expected"; exit 0
fi
exit "$verdict"
