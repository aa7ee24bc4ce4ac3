#!/usr/bin/env bash
# Runs the cargo-fuzz targets for a bounded time and fails if any of them finds a crash
# or a difference from its reference.
#
#   scripts/fuzz.sh                    # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh   # longer
#   scripts/fuzz.sh framing            # one target
#
# Needs the nightly toolchain (libFuzzer's instrumentation); installs cargo-fuzz if it
# is missing. Seeds come from fuzz/corpus/<target>/ (committed); inputs found while
# running go to fuzz/corpus-work/<target>/ (ignored), crashes to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-60}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(framing)
fi

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo "+$toolchain" install cargo-fuzz --locked
fi

for target in "${targets[@]}"; do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "corpus-work/$target" "corpus/$target"
    # The first corpus folder receives new inputs; the committed seeds are only read.
    cargo "+$toolchain" fuzz run "$target" "corpus-work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1
done
echo "== fuzzing passed"
