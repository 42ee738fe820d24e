#!/usr/bin/env bash
# rill as a package, checked as a user meets it (issue 16; README "Use it from
# your project"). Given a configured and built (static, the default) build
# directory:
#   1. `cmake --install` into a fresh prefix: the public headers need no
#      generated FlatBuffers header; this directory's consumer project builds
#      with find_package(rill), and again with pkg-config, and both run;
#   2. a shared-library build (-DBUILD_SHARED_LIBS=ON): versioned libraries
#      with a SONAME that export rill's symbols only; the consumer builds
#      against them and runs (skip with RILL_PACKAGE_SHARED=0);
#   3. `cpack -G DEB`: the rill and librill-dev packages install with apt on
#      this machine (as root) and pull their dependencies; `rill --help` runs;
#      the consumer builds against /usr with find_package and pkg-config
#      (skip with RILL_PACKAGE_DEB=0; the packages are removed afterwards).
# Usage: bash tests/package/run.sh BUILD_DIR
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
say() { echo "package: $*"; }
fail() { echo "package: FAILED: $*" >&2; exit 1; }

# Runs the consumer's two programs ($1: directory holding them, $2: a label).
run_consumer() {
  local dir=$1 label=$2 out
  out=$("$dir/quickstart" "$work/store-$label-q") || fail "$label: quickstart exited $?"
  grep -q "^version 0 at position 1" <<<"$out" || fail "$label: quickstart printed: $out"
  out=$("$dir/consumer" "$work/store-$label-c") || fail "$label: consumer exited $?"
  grep -q "^events counted: 3$" <<<"$out" || fail "$label: consumer printed: $out"
  say "$label: quickstart and consumer ran"
}

# Builds the consumer with pkg-config into $1 (extra flags after).
build_with_pkg_config() {
  local out=$1
  shift
  mkdir -p "$out"
  # shellcheck disable=SC2046
  c++ -std=c++17 "$src/examples/quickstart/main.cc" -o "$out/quickstart" "$@"
  # shellcheck disable=SC2046
  c++ -std=c++17 "$src/tests/package/consumer.cc" -o "$out/consumer" "$@"
}

# --- 1. cmake --install, static --------------------------------------------------
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" > /dev/null
say "installed into a prefix: $(cd "$prefix" && find . -type f | sort | tr '\n' ' ')"
if grep -rlE '_generated\.h|flatbuffers/' "$prefix/include"; then
  fail "a public header includes FlatBuffers or a generated header"
fi
for f in include/rill/store.h include/rill/projection.h lib/librill_engine.a \
         lib/librill_projections.a lib/cmake/rill/rillConfig.cmake \
         lib/cmake/rill/rillConfigVersion.cmake lib/pkgconfig/rill.pc bin/rill; do
  [ -e "$prefix/$f" ] || fail "$f was not installed"
done
cmake -S "$src/tests/package" -B "$work/cmake-static" -G Ninja \
  -DCMAKE_PREFIX_PATH="$prefix" > /dev/null
cmake --build "$work/cmake-static" > /dev/null
run_consumer "$work/cmake-static" "find_package(rill), static"
# shellcheck disable=SC2046
build_with_pkg_config "$work/pc-static" $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" \
  pkg-config --cflags --libs --static rill)
run_consumer "$work/pc-static" "pkg-config --static"

# --- 2. shared libraries ------------------------------------------------------------
if [ "${RILL_PACKAGE_SHARED:-1}" != 0 ]; then
  cmake -S "$src" -B "$work/shared" -G Ninja -DBUILD_SHARED_LIBS=ON -DRILL_BUILD_TESTS=OFF \
    -DRILL_BUILD_BENCH=OFF -DRILL_BUILD_EXAMPLES=OFF -DRILL_BUILD_TOOLS=OFF > /dev/null
  cmake --build "$work/shared" > /dev/null
  sprefix="$work/shared-prefix"
  cmake --install "$work/shared" --prefix "$sprefix" > /dev/null
  for lib in rill_engine rill_projections; do
    soname=$(readelf -d "$sprefix/lib/lib$lib.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
    [ "$soname" = "lib$lib.so.0" ] || fail "lib$lib.so has SONAME '$soname'"
    # Every exported symbol is rill's (cmake/rill.map).
    foreign=$(nm -DC --defined-only "$sprefix/lib/lib$lib.so" | cut -d' ' -f3- |
      grep -vE '^(rill::|(typeinfo|typeinfo name|vtable|VTT|guard variable) for rill::|(non-)?virtual thunk to rill::|RILL_0$)' || true)
    [ -z "$foreign" ] || fail "lib$lib.so exports symbols that are not rill's: $(head -5 <<<"$foreign")"
    say "lib$lib.so: SONAME $soname, $(nm -D --defined-only "$sprefix/lib/lib$lib.so" | wc -l) symbols exported, all rill's"
  done
  cmake -S "$src/tests/package" -B "$work/cmake-shared" -G Ninja \
    -DCMAKE_PREFIX_PATH="$sprefix" > /dev/null
  cmake --build "$work/cmake-shared" > /dev/null
  ldd "$work/cmake-shared/consumer" | grep -q "librill_projections.so.0 => $sprefix" ||
    fail "the consumer is not linked to the shared libraries"
  run_consumer "$work/cmake-shared" "find_package(rill), shared"
  # shellcheck disable=SC2046
  build_with_pkg_config "$work/pc-shared" $(PKG_CONFIG_PATH="$sprefix/lib/pkgconfig" \
    pkg-config --cflags --libs rill) -Wl,-rpath,"$sprefix/lib"
  run_consumer "$work/pc-shared" "pkg-config, shared"
fi

# --- 3. Debian packages ----------------------------------------------------------
if [ "${RILL_PACKAGE_DEB:-1}" != 0 ]; then
  [ "$(id -u)" = 0 ] || fail "installing the .deb packages needs root (RILL_PACKAGE_DEB=0 skips)"
  rm -f "$build"/*.deb
  (cd "$build" && cpack -G DEB > "$work/cpack.log") || { cat "$work/cpack.log"; fail "cpack"; }
  debs=$(ls "$build"/rill_*.deb "$build"/librill-dev_*.deb)
  for d in $debs; do say "$(basename "$d"): $(dpkg-deb -f "$d" Depends)"; done
  export DEBIAN_FRONTEND=noninteractive
  (cd "$build" && apt-get install -y -qq --no-install-recommends ./rill_*.deb ./librill-dev_*.deb) \
    > "$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt install"; }
  trap 'apt-get remove -y -qq rill librill-dev > /dev/null 2>&1 || true; rm -rf "$work"' EXIT
  /usr/bin/rill --help | head -1 | grep -q "rill" || fail "rill --help"
  say "installed with apt: $(dpkg-query -W -f='${Package} ${Version}, ' rill librill-dev)rill --help runs"
  cmake -S "$src/tests/package" -B "$work/cmake-deb" -G Ninja > /dev/null
  cmake --build "$work/cmake-deb" > /dev/null
  run_consumer "$work/cmake-deb" "find_package(rill) from the .deb"
  # shellcheck disable=SC2046
  build_with_pkg_config "$work/pc-deb" $(pkg-config --cflags --libs --static rill)
  run_consumer "$work/pc-deb" "pkg-config from the .deb"
fi
say "all checks passed"
